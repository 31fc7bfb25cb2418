//! Liveness, readiness, the OpenAPI document and the Swagger UI (served from the binary).

use crate::AppState;
use crate::problem::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `/openapi.json` and `/docs`.
pub fn docs(doc: utoipa::openapi::OpenApi) -> axum::Router<AppState> {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .url("/openapi.json", doc)
        .into()
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    status: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "Store unreachable", body = crate::problem::Problem, content_type = "application/problem+json")))]
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    state.services.store.ping()?;
    Ok((StatusCode::OK, Json(Health { status: "ok" })))
}

/// Figures for Prometheus (text format 0.0.4): the shape, and in the aws shape every AWS call
/// the process made, by service and operation.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let shape = state.services.settings.shape.as_str();
    let mut body = format!(
        "# HELP wharf_info The running Wharf.\n# TYPE wharf_info gauge\nwharf_info{{shape=\"{shape}\",version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    for source in &state.services.metrics {
        body.push_str(&source.render());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
