//! Records: raw records as ingested from a source, output records made by a feed's pipeline,
//! and the errors a pipeline reports about records it could not process.

use crate::{FeedId, RecordId, SourceId, Timestamp, VendorId};
use serde::{Deserialize, Serialize};

/// Most records in one ingest request.
pub const MAX_RECORDS_PER_REQUEST: usize = 1000;
/// Longest vendor-given record id.
pub const MAX_EXTERNAL_ID_LEN: usize = 256;

/// One record as sent to `POST /v1/sources/{id}/records`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngestRecord {
    /// The vendor's id of the record; a second record with the same id is a duplicate.
    pub id: Option<String>,
    /// When the event happened (RFC 3339); defaults to the time of ingest.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub ts: Option<Timestamp>,
    /// The record itself.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// The JSON body of `POST /v1/sources/{id}/records`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"records": [
    {"id": "t-1001", "ts": "2026-11-26T14:00:00Z", "data": {"sym": "AAPL", "price": 187.5, "qty": 100}},
    {"id": "t-1002", "data": {"sym": "MSFT", "price": 99.0, "qty": 5}}
]})))]
pub struct IngestBatch {
    /// 1 to 1000 records.
    pub records: Vec<IngestRecord>,
}

/// A record the ingest refused, by its position in the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejected {
    /// Index of the record in the request.
    pub index: usize,
    /// Why it was refused.
    pub error: String,
}

/// The answer of an ingest: what was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngestResult {
    /// New records stored durably (in the aws shape: records queued durably, whose repeats of
    /// earlier requests the ingest handler then skips).
    pub accepted: usize,
    /// Records whose id the source had already seen (in the aws shape: repeats within the
    /// request).
    pub duplicates: usize,
    /// Records refused, with reasons; the others were kept.
    pub rejected: Vec<Rejected>,
}

/// A raw record stored for a source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    /// Derived from (source, vendor id) when the vendor gave one, so duplicates collide.
    pub id: RecordId,
    /// The owning tenant.
    pub tenant_id: VendorId,
    /// The source it came from.
    pub source_id: SourceId,
    /// The vendor's id, if given.
    pub external_id: Option<String>,
    /// Event time.
    #[serde(with = "time::serde::rfc3339")]
    pub ts: Timestamp,
    /// When it was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: Timestamp,
    /// When retention removes it.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: Timestamp,
    /// The record.
    pub data: serde_json::Value,
}

impl RawRecord {
    /// The id of the raw record for a vendor id in a source.
    pub fn id_for(source: &SourceId, external_id: &str) -> RecordId {
        RecordId::from_uuid(crate::id::derive(&["raw", source.as_str(), external_id]))
    }
}

/// A record produced by a feed's pipeline, as delivered to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputRecord {
    /// Derived from (feed, pipeline version, raw record) or (feed, rule, window, group).
    pub id: RecordId,
    /// The feed.
    pub feed_id: FeedId,
    /// The selling tenant.
    pub tenant_id: VendorId,
    /// The pipeline version that made it.
    pub pipeline_version: u32,
    /// Event time (of the raw record, or the window's end).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: Timestamp,
    /// When it was produced.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// When retention removes it.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: Timestamp,
    /// The record.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

impl OutputRecord {
    /// The id of the output a pipeline version makes from a raw record, prefixed with the
    /// time the raw record was received so outputs are stored in arrival order.
    pub fn id_for(feed: &FeedId, version: u32, raw: &RawRecord) -> RecordId {
        RecordId::from_uuid(crate::id::derive_at(
            raw.received_at,
            &["out", feed.as_str(), &version.to_string(), raw.id.as_str()],
        ))
    }

    /// The id of a window aggregate.
    pub fn window_id_for(
        feed: &FeedId,
        rule: usize,
        window_start: Timestamp,
        group: &str,
    ) -> RecordId {
        let start = window_start.unix_timestamp().to_string();
        RecordId::from_uuid(crate::id::derive_at(
            window_start,
            &["win", feed.as_str(), &rule.to_string(), &start, group],
        ))
    }
}

/// A record a feed's pipeline could not process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedError {
    /// The feed.
    pub feed_id: FeedId,
    /// The raw record that failed (absent for window failures).
    pub record_id: Option<RecordId>,
    /// The pipeline version.
    pub pipeline_version: u32,
    /// Index of the failing rule.
    pub rule: usize,
    /// What went wrong.
    pub message: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
}
