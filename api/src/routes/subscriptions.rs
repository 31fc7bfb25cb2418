//! The caller's subscriptions.

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery, Caller, IdempotencyKey, JsonBody, PageParams};
use crate::idempotency::{self, Reply};
use crate::problem::{ApiError, ReadErrors, WriteErrors};
use axum::Json;
use axum::extract::State;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::{
    ConfirmedEmail, NewSubscription, RotatedSecret, Subscription, SubscriptionPatch,
    SubscriptionView, SubscriptionWithSecret,
};
use wharf_core::{Page, SubscriptionId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update, cancel))
        .routes(routes!(rotate_secret))
        .routes(routes!(confirm_email))
}

/// Confirm an email channel's address: the link mailed to the address when the subscription
/// was made or its address changed (local shape; in the aws shape the feed's topic mails its
/// own confirmation). Nothing is mailed to an address before. Opening the link again answers
/// the same; an expired link is a 410, and sending the channel again mails a fresh one.
#[utoipa::path(get, path = "/v1/email-confirmations/{token}", tag = "subscriptions",
    params(("token" = String, Path, description = "From the confirmation link")),
    responses((status = 200, body = ConfirmedEmail), (status = 404, description = "Not a confirmation link of a current address", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link expired", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn confirm_email(
    State(s): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Result<Json<ConfirmedEmail>, ApiError> {
    Ok(Json(s.services.confirm_email(&token).await?))
}

/// Subscribe to a published feed with a plan and a delivery channel.
///
/// A webhook channel's answer carries its `signing_secret` (`whsec_…`), shown only here.
/// Webhook hosts must resolve to public addresses unless the server allows private ones.
/// A channel this server's shape cannot serve is a 422 naming the shapes that can.
#[utoipa::path(operation_id = "create_subscription", post, path = "/v1/subscriptions", tag = "subscriptions", request_body = NewSubscription, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses((status = 201, body = SubscriptionWithSecret), WriteErrors))]
async fn create(
    State(s): State<AppState>,
    who: Caller,
    key: IdempotencyKey,
    body: JsonBody<NewSubscription>,
) -> Result<Response, ApiError> {
    idempotency::once(
        &s,
        &who.scope(),
        key.0,
        "POST /v1/subscriptions",
        &body.raw,
        || async {
            let created = s.services.create_subscription(&who, body.value).await?;
            Reply::created_once(&created, &created.withheld())
        },
    )
    .await
}

/// List the caller's subscriptions.
#[utoipa::path(operation_id = "list_subscriptions", get, path = "/v1/subscriptions", tag = "subscriptions", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = Page<Subscription>), ReadErrors))]
async fn list(
    State(s): State<AppState>,
    who: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> Result<Json<Page<Subscription>>, ApiError> {
    Ok(Json(s.services.list_subscriptions(&who, &q.page()).await?))
}

/// Read a subscription: whole to its subscriber; to an admin of the selling vendor, a summary
/// with the channel's kind and a webhook's host but not the subscriber's URL, address or filter.
#[utoipa::path(operation_id = "get_subscription", get, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = SubscriptionId, Path)), security(("bearer" = [])),
    responses((status = 200, body = SubscriptionView), ReadErrors))]
async fn get(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SubscriptionId>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(s.services.read_subscription(&who, &id).await?))
}

/// Pause (`status: paused`), resume (`status: active`), or change the channel, filter or batching.
#[utoipa::path(operation_id = "update_subscription", patch, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = SubscriptionId, Path)),
    request_body = SubscriptionPatch, security(("bearer" = [])), responses((status = 200, body = SubscriptionWithSecret), WriteErrors))]
async fn update(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SubscriptionId>,
    body: JsonBody<SubscriptionPatch>,
) -> Result<Json<SubscriptionWithSecret>, ApiError> {
    Ok(Json(
        s.services
            .update_subscription(&who, &id, body.value)
            .await?,
    ))
}

/// Cancel a subscription for good (it stays listed as `cancelled`).
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = SubscriptionId, Path)), security(("bearer" = [])),
    responses((status = 200, body = Subscription), WriteErrors))]
async fn cancel(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SubscriptionId>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(s.services.cancel_subscription(&who, &id).await?))
}

/// Issue a new webhook signing secret; during the overlap both secrets sign each delivery.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/rotate-secret", tag = "subscriptions", params(("id" = SubscriptionId, Path)),
    security(("bearer" = [])), responses((status = 200, body = RotatedSecret), WriteErrors))]
async fn rotate_secret(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SubscriptionId>,
) -> Result<Json<RotatedSecret>, ApiError> {
    Ok(Json(s.services.rotate_secret(&who, &id).await?))
}
