//! Reference rows for `enrich` rules.

use crate::AppState;
use crate::extract::{ApiPath, Caller, JsonBody};
use crate::problem::{ApiError, ReadErrors, WriteErrors};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(put, get))
}

/// Store a row (any JSON value) under `key` in `table`.
#[utoipa::path(put, path = "/v1/reference/{table}/{key}", tag = "reference",
    params(("table" = String, Path, description = "[a-z0-9_-]{1,64}"), ("key" = String, Path)),
    request_body(content = Object, example = json!({"name": "Apple Inc.", "sector": "tech"})), security(("bearer" = [])),
    responses((status = 201, description = "Created", body = Object), (status = 200, description = "Replaced", body = Object), WriteErrors))]
async fn put(
    State(s): State<AppState>,
    who: Caller,
    ApiPath((table, key)): ApiPath<(String, String)>,
    body: JsonBody<serde_json::Value>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let created = s
        .services
        .put_reference(&who, &table, &key, body.value.clone())
        .await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(body.value),
    ))
}

/// Read a row.
#[utoipa::path(operation_id = "get_reference_row", get, path = "/v1/reference/{table}/{key}", tag = "reference",
    params(("table" = String, Path), ("key" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Object), ReadErrors))]
async fn get(
    State(s): State<AppState>,
    who: Caller,
    ApiPath((table, key)): ApiPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(s.services.get_reference(&who, &table, &key).await?))
}
