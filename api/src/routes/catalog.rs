//! The public catalog: published public feeds of active vendors.

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery};
use crate::problem::{ApiError, PublicReadErrors};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::CatalogEntry;
use wharf_core::{FeedId, Page, PageRequest};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CatalogQuery {
    /// Words to find in the name or description.
    q: Option<String>,
    /// Page size, 1 to 200.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Browse published public feeds, with plans, schema and a sample; `?q=` searches.
#[utoipa::path(operation_id = "list_catalog", get, path = "/v1/catalog", tag = "catalog", params(CatalogQuery),
    responses((status = 200, body = Page<CatalogEntry>), PublicReadErrors))]
async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<CatalogQuery>,
) -> Result<Json<Page<CatalogEntry>>, ApiError> {
    let page = PageRequest {
        limit: q.limit.unwrap_or(0),
        cursor: q.cursor,
    };
    Ok(Json(s.services.catalog(q.q.as_deref(), &page).await?))
}

/// One catalog entry.
#[utoipa::path(operation_id = "get_catalog_entry", get, path = "/v1/catalog/{feed_id}", tag = "catalog", params(("feed_id" = FeedId, Path)),
    responses((status = 200, body = CatalogEntry), PublicReadErrors))]
async fn get(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<FeedId>,
) -> Result<Json<CatalogEntry>, ApiError> {
    Ok(Json(s.services.catalog_entry(&id).await?))
}
