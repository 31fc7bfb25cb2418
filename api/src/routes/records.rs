//! Data in and out: ingest into a source, a feed's pipeline errors, usage, a subscription's
//! delivery log, replays, and the pull channel.

use crate::AppState;
use crate::extract::{ApiPath, ApiQuery, Caller, PageParams, RawBody};
use crate::problem::{ApiError, ReadErrors, WriteErrors};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wharf_core::domain::DeliveryAttempt;
use wharf_core::domain::{FeedError, IngestBatch, IngestFormat, IngestResult, ParsedBody};
use wharf_core::services::{Granularity, PulledPage, ReplayAccepted, ReplayRange, UsagePoint};
use wharf_core::{FeedId, Page, SourceId, SubscriptionId, Timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ingest))
        .routes(routes!(feed_errors))
        .routes(routes!(usage))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
        .routes(routes!(pull))
}

/// Push records into a source (a vendor token, or an API key with the `ingest` scope).
///
/// JSON `{"records": [{"id"?, "ts"?, "data": {…}}]}` or NDJSON (`application/x-ndjson`, one
/// record per line); at most 1000 records and 1 MiB (413 beyond, nothing stored). The 202 is
/// sent once the accepted records are durably stored. Records failing the source's JSON Schema
/// are rejected by index and the rest kept; a record whose `id` the source has seen is a
/// duplicate, not a second record.
#[utoipa::path(post, path = "/v1/sources/{id}/records", tag = "sources", params(("id" = SourceId, Path)),
    request_body(content(
        (IngestBatch = "application/json"),
        (String = "application/x-ndjson", example = "{\"id\":\"t-1\",\"data\":{\"sym\":\"AAPL\",\"price\":187.5}}\n")
    )),
    security(("bearer" = [])), responses((status = 202, body = IngestResult), WriteErrors))]
async fn ingest(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SourceId>,
    body: RawBody,
) -> Result<(StatusCode, Json<IngestResult>), ApiError> {
    let format = IngestFormat::of_media_type(&body.media_type).ok_or(
        ApiError::UnsupportedMediaType("application/json or application/x-ndjson"),
    )?;
    let mut parsed = ParsedBody::parse(format, &body.bytes)?;
    let records = std::mem::take(&mut parsed.records);
    let result = s.services.ingest(&who, &id, records).await?;
    Ok((StatusCode::ACCEPTED, Json(parsed.merge(result))))
}

/// Records the feed's pipeline could not process, newest first, with the failing rule.
#[utoipa::path(get, path = "/v1/feeds/{id}/errors", tag = "feeds", params(("id" = FeedId, Path), PageParams),
    security(("bearer" = [])), responses((status = 200, body = Page<FeedError>), ReadErrors))]
async fn feed_errors(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<FeedId>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> Result<Json<Page<FeedError>>, ApiError> {
    Ok(Json(s.services.feed_errors(&who, &id, &q.page()).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// Only this subscription.
    subscription_id: Option<SubscriptionId>,
    /// Start (RFC 3339, inclusive).
    #[serde(with = "time::serde::rfc3339")]
    #[param(value_type = String, format = DateTime)]
    from: Timestamp,
    /// End (RFC 3339, exclusive).
    #[serde(with = "time::serde::rfc3339")]
    #[param(value_type = String, format = DateTime)]
    to: Timestamp,
    /// `hour` (default) or `day`.
    granularity: Option<Granularity>,
}

/// Acknowledged deliveries counted per subscription and hour or day: a subscriber sees its
/// own, vendor staff their tenant's, platform staff everything. JSON, or CSV under
/// `Accept: text/csv`.
#[utoipa::path(get, path = "/v1/usage", tag = "subscriptions", params(UsageQuery), security(("bearer" = [])),
    responses((status = 200, description = "Usage; CSV under `Accept: text/csv`",
        content((Vec<UsagePoint> = "application/json"), (String = "text/csv"))), ReadErrors))]
async fn usage(
    State(s): State<AppState>,
    who: Caller,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<axum::response::Response, ApiError> {
    let points = s
        .services
        .usage(
            &who,
            q.subscription_id.as_ref(),
            q.from,
            q.to,
            q.granularity.unwrap_or_default(),
        )
        .await?;
    if !crate::csv_export::wanted(&headers) {
        return Ok(Json(points).into_response());
    }
    let rows = points.iter().map(|p| {
        vec![
            p.subscription_id.to_string(),
            wharf_core::rfc3339(p.period_start),
            p.deliveries.to_string(),
            p.backfill.to_string(),
        ]
    });
    let header = ["subscription_id", "period_start", "deliveries", "backfill"];
    Ok(crate::csv_export::answer(&header, rows))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    /// `delivered`, `failed`, `gave_up` or `disabled`.
    status: Option<String>,
    /// Page size, 1 to 200.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The delivery log: every attempt with its status code, error and next retry.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/deliveries", tag = "subscriptions", params(("id" = SubscriptionId, Path), DeliveryQuery),
    security(("bearer" = [])), responses((status = 200, body = Page<DeliveryAttempt>), ReadErrors))]
async fn deliveries(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SubscriptionId>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Page<DeliveryAttempt>>, ApiError> {
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page();
    Ok(Json(
        s.services
            .delivery_log(&who, &id, q.status.as_deref(), &page)
            .await?,
    ))
}

/// Deliver the records of an event-time range again; replays are not billed again.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/replay", tag = "subscriptions", params(("id" = SubscriptionId, Path)),
    request_body = ReplayRange, security(("bearer" = [])), responses((status = 202, body = ReplayAccepted), WriteErrors))]
async fn replay(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SubscriptionId>,
    body: crate::extract::JsonBody<ReplayRange>,
) -> Result<(StatusCode, Json<ReplayAccepted>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(s.services.replay(&who, &id, body.value).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PullQuery {
    /// A cursor from a previous answer; absent: continue after what was last fetched.
    after: Option<String>,
    /// At most this many records (1 to 1000, default 100).
    limit: Option<usize>,
}

/// The pull channel: records in feed order after a cursor. A record counts as delivered the
/// first time it is fetched.
#[utoipa::path(get, path = "/v1/subscriptions/{id}/records", tag = "subscriptions", params(("id" = SubscriptionId, Path), PullQuery),
    security(("bearer" = [])), responses((status = 200, body = PulledPage), ReadErrors))]
async fn pull(
    State(s): State<AppState>,
    who: Caller,
    ApiPath(id): ApiPath<SubscriptionId>,
    ApiQuery(q): ApiQuery<PullQuery>,
) -> Result<Json<PulledPage>, ApiError> {
    Ok(Json(
        s.services
            .pull(&who, &id, q.after.as_deref(), q.limit.unwrap_or(100))
            .await?,
    ))
}
