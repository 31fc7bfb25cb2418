//! The model registry of the caller's tenant: ONNX files by name, each upload a version.

use crate::AppState;
use crate::extract::{ApiPath, Caller};
use crate::problem::{ApiError, ReadErrors, UploadErrors, WriteErrors};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::ModelVersion;
use wharf_core::services::{MAX_MODEL_BYTES, ModelSummary};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(upload_model, get_model))
        .routes(routes!(delete_model_version))
        // A model file may be larger than other bodies; the handler checks the size itself.
        .layer(DefaultBodyLimit::max(MAX_MODEL_BYTES + 1))
}

/// Upload an ONNX file (at most 5 MiB) as the next version of the model `name`. The engine
/// loads and plans it first: a file that is not a model, uses an operator the engine lacks
/// or has a shape it cannot plan is a 422 saying so, and nothing is stored. The answer says
/// what the model takes and gives (a dimension it leaves open shows as its name, or null).
#[utoipa::path(operation_id = "uploadModel", put, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "`[a-z0-9_-]{1,64}`")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    security(("bearer" = [])),
    responses((status = 201, body = ModelVersion), UploadErrors))]
async fn upload_model(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ModelVersion>), ApiError> {
    let octets = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    if !octets {
        return Err(ApiError::UnsupportedMediaType("application/octet-stream"));
    }
    let body = body.map_err(|e| {
        ApiError::TooLarge(format!(
            "a model file is at most {MAX_MODEL_BYTES} bytes ({e})"
        ))
    })?;
    if body.len() > MAX_MODEL_BYTES {
        return Err(ApiError::TooLarge(format!(
            "a model file is at most {MAX_MODEL_BYTES} bytes"
        )));
    }
    let model = s
        .services
        .register_model(&who, &name, body.to_vec())
        .await?;
    Ok((StatusCode::CREATED, Json(model)))
}

/// List the tenant's models, each with its latest version.
#[utoipa::path(operation_id = "listModels", get, path = "/v1/models", tag = "models",
    security(("bearer" = [])), responses((status = 200, body = Vec<ModelSummary>), ReadErrors))]
async fn list_models(
    State(s): State<AppState>,
    who: Caller,
) -> Result<Json<Vec<ModelSummary>>, ApiError> {
    Ok(Json(s.services.list_models(&who).await?))
}

/// The versions of the model `name`, oldest first.
#[utoipa::path(operation_id = "getModel", get, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Vec<ModelVersion>), ReadErrors))]
async fn get_model(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Vec<ModelVersion>>, ApiError> {
    Ok(Json(s.services.model_versions(&who, &name).await?))
}

/// Delete one version of a model; 409 while a feed's pipeline uses it.
#[utoipa::path(operation_id = "deleteModelVersion", delete, path = "/v1/models/{name}/versions/{version}", tag = "models",
    params(("name" = String, Path), ("version" = u32, Path)), security(("bearer" = [])),
    responses((status = 204), WriteErrors))]
async fn delete_model_version(
    State(s): State<AppState>,
    who: Caller,
    ApiPath((name, version)): ApiPath<(String, u32)>,
) -> Result<StatusCode, ApiError> {
    s.services
        .delete_model_version(&who, &name, version)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
