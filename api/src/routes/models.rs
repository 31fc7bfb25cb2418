//! The model registry of the caller's tenant: ONNX files by name, each upload a version.

use crate::AppState;
use crate::extract::{ApiPath, Caller, JsonBody};
use crate::problem::{ApiError, ReadErrors, UploadErrors, UploadUrlErrors, WriteErrors};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::ModelVersion;
use wharf_core::services::{MAX_MODEL_BYTES, MAX_UPLOAD_BYTES, ModelSummary, ModelUpload};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(upload_model, get_model))
        .routes(routes!(delete_model_version))
        .routes(routes!(start_upload))
        .routes(routes!(register_upload))
        // A model file may be larger than other bodies; the handler checks the size itself.
        .layer(DefaultBodyLimit::max(MAX_MODEL_BYTES + 1))
}

/// The upload URLs of the local shape (the aws shape's are S3's), which take files of up to
/// 250 MiB.
pub fn upload_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive_upload))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES + 1))
}

/// The body of `POST /v1/models/{name}/versions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UploadedModel {
    /// What `POST /v1/models/{name}/uploads` answered.
    upload_id: String,
}

/// Start an upload of a model file too large for `PUT /v1/models/{name}` (up to 250 MiB):
/// PUT the file to `upload_url` (no other credentials), then register it with
/// `POST /v1/models/{name}/versions`.
#[utoipa::path(operation_id = "startModelUpload", post, path = "/v1/models/{name}/uploads", tag = "models",
    params(("name" = String, Path)), security(("bearer" = [])),
    responses((status = 201, body = ModelUpload), WriteErrors))]
async fn start_upload(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<(StatusCode, Json<ModelUpload>), ApiError> {
    let upload = s.services.start_model_upload(&who, &name).await?;
    Ok((StatusCode::CREATED, Json(upload)))
}

/// Check an uploaded file as `PUT /v1/models/{name}` checks one, and register it as the
/// next version; the upload is consumed.
#[utoipa::path(operation_id = "registerUploadedModel", post, path = "/v1/models/{name}/versions", tag = "models",
    params(("name" = String, Path)), request_body = UploadedModel, security(("bearer" = [])),
    responses((status = 201, body = ModelVersion), WriteErrors))]
async fn register_upload(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(name): ApiPath<String>,
    body: JsonBody<UploadedModel>,
) -> Result<(StatusCode, Json<ModelVersion>), ApiError> {
    let model = s
        .services
        .register_uploaded_model(&who, &name, &body.value.upload_id)
        .await?;
    Ok((StatusCode::CREATED, Json(model)))
}

/// The upload URL of the local shape: the file, as `application/octet-stream`. The token is
/// the credential; 404 for one Wharf did not make, 410 once it expired.
#[utoipa::path(operation_id = "receiveModelUpload", put, path = "/v1/model-uploads/{token}", tag = "models",
    params(("token" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204), UploadUrlErrors))]
async fn receive_upload(
    State(s): State<AppState>,
    ApiPath(token): ApiPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = octets(&headers, body, MAX_UPLOAD_BYTES)?;
    s.services
        .receive_model_upload(&token, body.to_vec())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of an upload: `application/octet-stream`, at most `most` bytes.
fn octets(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    most: usize,
) -> Result<Bytes, ApiError> {
    let octets = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    if !octets {
        return Err(ApiError::UnsupportedMediaType("application/octet-stream"));
    }
    let too_large = || ApiError::TooLarge(format!("a model file is at most {most} bytes"));
    let body = body.map_err(|_| too_large())?;
    if body.len() > most {
        return Err(too_large());
    }
    Ok(body)
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
    let body = octets(&headers, body, MAX_MODEL_BYTES)?;
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
