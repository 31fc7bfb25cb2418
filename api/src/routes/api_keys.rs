//! Ingest API keys of the caller's tenant.

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
use wharf_core::domain::ApiKey;
use wharf_core::services::{CreatedApiKey, NewApiKey};
use wharf_core::{ApiKeyId, Page};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, delete))
}

/// Create an ingest key; its secret is in this answer only and stored hashed.
#[utoipa::path(operation_id = "create_api_key", post, path = "/v1/api-keys", tag = "api-keys", request_body = NewApiKey, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses((status = 201, body = CreatedApiKey), WriteErrors))]
async fn create(
    State(s): State<AppState>,
    who: Caller,
    key: IdempotencyKey,
    body: JsonBody<NewApiKey>,
) -> Result<Response, ApiError> {
    idempotency::once(
        &s,
        &who.scope(),
        key.0,
        "POST /v1/api-keys",
        &body.raw,
        || async {
            let created = s.services.create_api_key(&who, body.value).await?;
            Reply::created_once(&created, &created.withheld())
        },
    )
    .await
}

/// List the tenant's keys (without secrets).
#[utoipa::path(operation_id = "list_api_keys", get, path = "/v1/api-keys", tag = "api-keys", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = Page<ApiKey>), ReadErrors))]
async fn list(
    State(s): State<AppState>,
    who: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> Result<Json<Page<ApiKey>>, ApiError> {
    Ok(Json(s.services.list_api_keys(&who, &q.page()).await?))
}

/// Read a key (without its secret).
#[utoipa::path(operation_id = "get_api_key", get, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = ApiKeyId, Path)), security(("bearer" = [])),
    responses((status = 200, body = ApiKey), ReadErrors))]
async fn get(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<Json<ApiKey>, ApiError> {
    Ok(Json(s.services.get_api_key(&who, &id).await?))
}

/// Revoke a key; it stops working at once.
#[utoipa::path(operation_id = "delete_api_key", delete, path = "/v1/api-keys/{id}", tag = "api-keys", params(("id" = ApiKeyId, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Revoked"), WriteErrors))]
async fn delete(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<StatusCode, ApiError> {
    s.services.delete_api_key(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
