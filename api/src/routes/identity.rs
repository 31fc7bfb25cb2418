//! Sign-up, login, tokens, the caller, vendors and their approval, and the JWKS.

use crate::AppState;
use crate::extract::{
    ApiPath, ApiQuery, Caller, ClientAddress, IdempotencyKey, JsonBody, PageParams,
};
use crate::idempotency::{self, Reply};
use crate::problem::{ApiError, PublicReadErrors, PublicWriteErrors, ReadErrors, WriteErrors};
use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::{Subscriber, TokenPair, Vendor, VendorStatus};
use wharf_core::services::{Me, NewSubscriberAccount, NewVendor, VendorSignup};
use wharf_core::throttle::Counted;
use wharf_core::{CoreError, Page, VendorId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_vendor, list_vendors))
        .routes(routes!(get_vendor))
        .routes(routes!(approve_vendor))
        .routes(routes!(create_subscriber))
        .routes(routes!(token))
        .routes(routes!(refresh))
        .routes(routes!(me))
        .routes(routes!(jwks))
}

/// Sign up a vendor and its first admin user.
///
/// The vendor is `active`, or `pending` when the platform requires approval.
#[utoipa::path(post, path = "/v1/vendors", tag = "identity", request_body = NewVendor,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses((status = 201, body = VendorSignup), PublicWriteErrors))]
async fn create_vendor(
    State(s): State<AppState>,
    ClientAddress(from): ClientAddress,
    key: IdempotencyKey,
    body: JsonBody<NewVendor>,
) -> Result<Response, ApiError> {
    s.services.admit_from(Counted::Signup, from)?;
    idempotency::once(
        &s,
        "anonymous",
        key.0,
        "POST /v1/vendors",
        &body.raw,
        || async { Reply::created(&s.services.signup_vendor(body.value).await?) },
    )
    .await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct VendorQuery {
    /// Only vendors in this state.
    status: Option<VendorStatus>,
    /// Page size, 1 to 200.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List vendors (platform admin).
#[utoipa::path(get, path = "/v1/vendors", tag = "identity", params(VendorQuery), security(("bearer" = [])),
    responses((status = 200, body = Page<Vendor>), ReadErrors))]
async fn list_vendors(
    State(s): State<AppState>,
    who: Caller,
    ApiQuery(q): ApiQuery<VendorQuery>,
) -> Result<Json<Page<Vendor>>, ApiError> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page();
    Ok(Json(s.services.list_vendors(&who, q.status, &page).await?))
}

/// Read a vendor: its own staff or a platform admin.
#[utoipa::path(get, path = "/v1/vendors/{id}", tag = "identity", params(("id" = VendorId, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vendor), ReadErrors))]
async fn get_vendor(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<VendorId>,
) -> Result<Json<Vendor>, ApiError> {
    Ok(Json(s.services.get_vendor(&who, &id).await?))
}

/// Activate a pending vendor (platform admin).
#[utoipa::path(post, path = "/v1/vendors/{id}/approve", tag = "identity", params(("id" = VendorId, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vendor), WriteErrors))]
async fn approve_vendor(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<VendorId>,
) -> Result<Json<Vendor>, ApiError> {
    Ok(Json(s.services.approve_vendor(&who, &id).await?))
}

/// Sign up a subscriber account.
#[utoipa::path(post, path = "/v1/subscribers", tag = "identity", request_body = NewSubscriberAccount,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses((status = 201, body = Subscriber), PublicWriteErrors))]
async fn create_subscriber(
    State(s): State<AppState>,
    ClientAddress(from): ClientAddress,
    key: IdempotencyKey,
    body: JsonBody<NewSubscriberAccount>,
) -> Result<Response, ApiError> {
    s.services.admit_from(Counted::Signup, from)?;
    idempotency::once(
        &s,
        "anonymous",
        key.0,
        "POST /v1/subscribers",
        &body.raw,
        || async { Reply::created(&s.services.signup_subscriber(body.value).await?) },
    )
    .await
}

/// Email and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ops@acme.example", "password": "correct horse battery"}))]
struct Credentials {
    email: String,
    password: String,
}

/// Log in: exchange email and password for an access and a refresh token.
#[utoipa::path(post, path = "/v1/auth/token", tag = "identity", request_body = Credentials,
    responses((status = 200, body = TokenPair), PublicWriteErrors))]
async fn token(
    State(s): State<AppState>,
    ClientAddress(from): ClientAddress,
    body: JsonBody<Credentials>,
) -> Result<Json<TokenPair>, ApiError> {
    s.services.admit_from(Counted::Login, from)?;
    Ok(Json(
        s.services
            .login(&body.value.email, &body.value.password)
            .await?,
    ))
}

/// A refresh token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

/// Exchange a refresh token (single use) for new tokens.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "identity", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), PublicWriteErrors))]
async fn refresh(
    State(s): State<AppState>,
    ClientAddress(from): ClientAddress,
    body: JsonBody<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    s.services.admit_from(Counted::Refresh, from)?;
    Ok(Json(
        s.services
            .identity
            .refresh(&body.value.refresh_token)
            .await?,
    ))
}

/// Who the caller is: id, roles, tenant.
#[utoipa::path(get, path = "/v1/me", tag = "identity", security(("bearer" = [])), responses((status = 200, body = Me), ReadErrors))]
async fn me(State(s): State<AppState>, who: Caller) -> Json<Me> {
    Json(s.services.me(&who))
}

/// A JSON Web Key Set.
#[derive(serde::Serialize, ToSchema)]
struct Jwks {
    /// Public keys, by `kid`.
    #[schema(value_type = Vec<Object>)]
    keys: Vec<serde_json::Value>,
}

/// The public keys of the local token issuer.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity", responses((status = 200, body = Jwks), PublicReadErrors))]
async fn jwks(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    s.services
        .identity
        .jwks()
        .map(Json)
        .ok_or(ApiError::Core(CoreError::NotFound("key set")))
}
