//! Upstream sources of the caller's tenant.

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
use wharf_core::domain::{NewSource, Source, SourcePatch};
use wharf_core::{Page, SourceId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get, update, delete))
}

/// Register a source: `push`, `sqs` (aws shape) or `http_poll` (`url`, `every`).
#[utoipa::path(operation_id = "create_source", post, path = "/v1/sources", tag = "sources", request_body = NewSource, security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses((status = 201, body = Source), WriteErrors))]
async fn create(
    State(s): State<AppState>,
    who: Caller,
    key: IdempotencyKey,
    body: JsonBody<NewSource>,
) -> Result<Response, ApiError> {
    idempotency::once(
        &s,
        &who.scope(),
        key.0,
        "POST /v1/sources",
        &body.raw,
        || async { Reply::created(&s.services.create_source(&who, body.value).await?) },
    )
    .await
}

/// List the tenant's sources.
#[utoipa::path(operation_id = "list_sources", get, path = "/v1/sources", tag = "sources", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = Page<Source>), ReadErrors))]
async fn list(
    State(s): State<AppState>,
    who: Caller,
    ApiQuery(q): ApiQuery<PageParams>,
) -> Result<Json<Page<Source>>, ApiError> {
    Ok(Json(s.services.list_sources(&who, &q.page()).await?))
}

/// Read a source.
#[utoipa::path(operation_id = "get_source", get, path = "/v1/sources/{id}", tag = "sources", params(("id" = SourceId, Path)), security(("bearer" = [])),
    responses((status = 200, body = Source), ReadErrors))]
async fn get(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SourceId>,
) -> Result<Json<Source>, ApiError> {
    Ok(Json(s.services.get_source(&who, &id).await?))
}

/// Change a source's name, polling settings, schema or retention.
#[utoipa::path(operation_id = "update_source", patch, path = "/v1/sources/{id}", tag = "sources", params(("id" = SourceId, Path)), request_body = SourcePatch,
    security(("bearer" = [])), responses((status = 200, body = Source), WriteErrors))]
async fn update(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SourceId>,
    body: JsonBody<SourcePatch>,
) -> Result<Json<Source>, ApiError> {
    Ok(Json(s.services.update_source(&who, &id, body.value).await?))
}

/// Delete a source no feed uses.
#[utoipa::path(operation_id = "delete_source", delete, path = "/v1/sources/{id}", tag = "sources", params(("id" = SourceId, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), WriteErrors))]
async fn delete(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SourceId>,
) -> Result<StatusCode, ApiError> {
    s.services.delete_source(&who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
