//! Feeds of the caller's tenant: definition, pipeline versions, plans and subscribers.

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery, Caller, IdempotencyKey, JsonBody, PageParams};
use crate::idempotency::{self, Reply};
use crate::problem::{ApiError, ReadErrors, WriteErrors};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::{Feed, FeedPatch, NewFeed, PipelineSpec, Subscription};
use wharf_core::services::PlanMoveScheduled;
use wharf_core::{FeedId, Page};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update, delete))
        .routes(routes!(put_pipeline))
        .routes(routes!(subscriptions))
        .routes(routes!(move_plan))
}

/// Define a feed: a source, a pipeline (version 1) and plans.
///
/// Every CEL expression is compiled; a bad one is a 422 whose `errors[].path` names the rule
/// (`pipeline.rules[2].expr`) and whose message gives the line and column.
#[utoipa::path(operation_id = "create_feed", post, path = "/v1/feeds", tag = "feeds", request_body = NewFeed, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses((status = 201, body = Feed), WriteErrors))]
async fn create(
    State(s): State<AppState>,
    who: Caller,
    key: IdempotencyKey,
    body: JsonBody<NewFeed>,
) -> Result<Response, ApiError> {
    idempotency::once(
        &s,
        &who.scope(),
        key.0,
        "POST /v1/feeds",
        &body.raw,
        || async { Reply::created(&s.services.create_feed(&who, body.value).await?) },
    )
    .await
}

/// List the tenant's feeds.
#[utoipa::path(operation_id = "list_feeds", get, path = "/v1/feeds", tag = "feeds", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = Page<Feed>), ReadErrors))]
async fn list(
    State(s): State<AppState>,
    who: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> Result<Json<Page<Feed>>, ApiError> {
    Ok(Json(s.services.list_feeds(&who, &q.page()).await?))
}

/// Read a feed.
#[utoipa::path(operation_id = "get_feed", get, path = "/v1/feeds/{id}", tag = "feeds", params(("id" = FeedId, Path)), security(("bearer" = [])),
    responses((status = 200, body = Feed), ReadErrors))]
async fn get(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<FeedId>,
) -> Result<Json<Feed>, ApiError> {
    Ok(Json(s.services.get_feed(&who, &id).await?))
}

/// Change a feed's name, description, plans, visibility, status (draft → published → archived) or sample.
#[utoipa::path(operation_id = "update_feed", patch, path = "/v1/feeds/{id}", tag = "feeds", params(("id" = FeedId, Path)), request_body = FeedPatch,
    security(("bearer" = [])), responses((status = 200, body = Feed), WriteErrors))]
async fn update(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<FeedId>,
    body: JsonBody<FeedPatch>,
) -> Result<Json<Feed>, ApiError> {
    Ok(Json(s.services.update_feed(&who, &id, body.value).await?))
}

/// Delete a feed that has never had subscriptions (archive it otherwise).
#[utoipa::path(operation_id = "delete_feed", delete, path = "/v1/feeds/{id}", tag = "feeds", params(("id" = FeedId, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), WriteErrors))]
async fn delete(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<FeedId>,
) -> Result<StatusCode, ApiError> {
    s.services.delete_feed(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Save a new pipeline version; output records carry the version that made them.
#[utoipa::path(put, path = "/v1/feeds/{id}/pipeline", tag = "feeds", params(("id" = FeedId, Path)), request_body = PipelineSpec,
    security(("bearer" = [])), responses((status = 200, body = Feed), WriteErrors))]
async fn put_pipeline(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<FeedId>,
    body: JsonBody<PipelineSpec>,
) -> Result<Json<Feed>, ApiError> {
    Ok(Json(s.services.put_pipeline(&who, &id, body.value).await?))
}

/// Who subscribes to a feed.
#[utoipa::path(get, path = "/v1/feeds/{id}/subscriptions", tag = "feeds", params(("id" = FeedId, Path), PageParams),
    security(("bearer" = [])), responses((status = 200, body = Page<Subscription>), ReadErrors))]
async fn subscriptions(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<FeedId>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> Result<Json<Page<Subscription>>, ApiError> {
    Ok(Json(
        s.services.feed_subscriptions(&who, &id, &q.page()).await?,
    ))
}

/// Move the running subscriptions of a plan that are on earlier versions to the version on
/// sale, from the start of next month (no month is rated at two prices); each subscriber is
/// told the new prices by email. Asking again moves nothing more.
#[utoipa::path(post, path = "/v1/feeds/{id}/plans/{plan_id}/move", tag = "feeds",
    params(("id" = FeedId, Path), ("plan_id" = String, Path, description = "A plan on sale")),
    security(("bearer" = [])), responses((status = 200, body = PlanMoveScheduled), WriteErrors))]
async fn move_plan(
    State(s): State<AppState>,
    who: Caller,
    ApiPath((id, plan_id)): ApiPath<(FeedId, String)>,
) -> Result<Json<PlanMoveScheduled>, ApiError> {
    Ok(Json(
        s.services.schedule_plan_move(&who, &id, &plan_id).await?,
    ))
}
