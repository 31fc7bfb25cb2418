//! Wharf's REST API: one axum router over the core services, and the OpenAPI document
//! generated from the same handlers. Handlers are thin: extractors, one service call, a DTO.

mod csv_export;
pub mod extract;
pub mod idempotency;
pub mod problem;
mod routes;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use wharf_core::Services;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The core services.
    pub services: Services,
    /// The live sockets this process serves, per subscription.
    pub sockets: routes::live::OpenSockets,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wharf",
        description = "Multi-tenant backend for selling data feeds: vendors register sources and define feeds, \
pipelines and price plans; subscribers sign up, browse the catalog and subscribe.\n\n\
Authenticate with `Authorization: Bearer <access token>` from `POST /v1/auth/token`, or with an ingest \
API key (`Bearer wk_…`). Errors are RFC 9457 `application/problem+json`. Lists are cursor-paginated \
(`?limit=&cursor=` → `{items, next_cursor}`). Creating POSTs accept an `Idempotency-Key` header.\n\n\
Pipeline expressions are CEL over the variable `record`; window aggregates may call `count()`, `sum(x)`, \
`avg(x)`, `min(x)`, `max(x)` and `last(x)`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    // Named by parameters only, which utoipa does not collect by itself.
    components(schemas(wharf_core::services::Granularity)),
    tags(
        (name = "identity", description = "Sign-up, login, tokens, vendors"),
        (name = "api-keys", description = "Ingest API keys"),
        (name = "sources", description = "Upstream sources"),
        (name = "feeds", description = "Feeds, pipelines and plans"),
        (name = "models", description = "ONNX models for model rules"),
        (name = "reference", description = "Reference data for enrich rules"),
        (name = "catalog", description = "Public catalog of published feeds"),
        (name = "subscriptions", description = "Subscriptions and delivery channels"),
        (name = "billing", description = "Billing runs, invoices and vendor payouts"),
        (name = "operations", description = "Health and readiness")
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or wk_ API key")
                    .build(),
            ),
        );
    }
}

fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::identity::router())
        .merge(routes::invitations::router())
        .merge(routes::api_keys::router())
        .merge(routes::sources::router())
        .merge(routes::feeds::router())
        .merge(routes::models::router())
        .merge(routes::models::upload_router())
        .merge(routes::reference::router())
        .merge(routes::catalog::router())
        .merge(routes::subscriptions::router())
        .merge(routes::records::router())
        .merge(routes::billing::router())
        .merge(routes::live::router())
        .merge(routes::ops::router())
}

/// The OpenAPI document of the whole API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// The application router.
pub fn router(services: Services) -> Router {
    let (router, doc) = api().split_for_parts();
    router
        .merge(routes::ops::docs(doc))
        .fallback(problem::no_route)
        .method_not_allowed_fallback(|| async { problem::ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState {
            services,
            sockets: routes::live::OpenSockets::default(),
        })
}
