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

/// How an ingest body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestFormat {
    /// `{"records": [...]}` (`application/json`).
    Json,
    /// One record per line (`application/x-ndjson` and its aliases).
    Ndjson,
    /// A message on a source's queue: `{"records": [...]}`, or one record.
    Message,
}

impl IngestFormat {
    /// The format of a push body by its media type (lowercase, no parameters).
    pub fn of_media_type(media_type: &str) -> Option<IngestFormat> {
        match media_type {
            "application/json" => Some(IngestFormat::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(IngestFormat::Ndjson)
            }
            _ => None,
        }
    }
}

/// Why an ingest body cannot be taken at all (a record that does not parse is rejected by
/// index instead, and the rest kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON (or NDJSON) at all.
    Malformed(String),
    /// JSON, but not the shape an ingest body has.
    Invalid(crate::FieldError),
    /// More than [`MAX_RECORDS_PER_REQUEST`] records.
    TooMany,
}

/// An ingest body taken apart: the records that parsed, those that did not (by index), and
/// each parsed record's index in the body.
#[derive(Debug, Clone)]
pub struct ParsedBody {
    /// The records that parsed, in body order.
    pub records: Vec<IngestRecord>,
    /// The records that did not, by their index in the body.
    pub rejected: Vec<Rejected>,
    /// The index in the body of each of `records`.
    pub positions: Vec<usize>,
}

impl ParsedBody {
    /// Reads an ingest body; see [`IngestFormat`].
    pub fn parse(format: IngestFormat, bytes: &[u8]) -> Result<ParsedBody, BodyError> {
        let values = match format {
            IngestFormat::Ndjson => ndjson_values(bytes)?,
            IngestFormat::Json | IngestFormat::Message => {
                // Fast path: a batch of well-formed records parses in one pass; only a batch
                // with a bad record is taken apart record by record to reject it by index.
                if let Ok(batch) = serde_json::from_slice::<IngestBatch>(bytes) {
                    return ParsedBody::whole(batch.records);
                }
                let value: serde_json::Value = serde_json::from_slice(bytes)
                    .map_err(|e| BodyError::Malformed(format!("malformed JSON: {e}")))?;
                match value {
                    serde_json::Value::Object(mut fields) if fields.contains_key("records") => {
                        envelope_records(&mut fields)?
                    }
                    one if format == IngestFormat::Message => vec![one],
                    _ => return Err(invalid("records", "missing field `records`")),
                }
            }
        };
        if values.len() > MAX_RECORDS_PER_REQUEST {
            return Err(BodyError::TooMany);
        }
        if values.is_empty() {
            return Err(invalid("records", "send at least one record"));
        }
        let mut parsed = ParsedBody {
            records: Vec::with_capacity(values.len()),
            rejected: Vec::new(),
            positions: Vec::with_capacity(values.len()),
        };
        for (index, value) in values.into_iter().enumerate() {
            match serde_json::from_value::<IngestRecord>(value) {
                Ok(r) => {
                    parsed.records.push(r);
                    parsed.positions.push(index);
                }
                Err(e) => parsed.rejected.push(Rejected {
                    index,
                    error: e.to_string(),
                }),
            }
        }
        Ok(parsed)
    }

    fn whole(records: Vec<IngestRecord>) -> Result<ParsedBody, BodyError> {
        if records.len() > MAX_RECORDS_PER_REQUEST {
            return Err(BodyError::TooMany);
        }
        if records.is_empty() {
            return Err(invalid("records", "send at least one record"));
        }
        Ok(ParsedBody {
            positions: (0..records.len()).collect(),
            records,
            rejected: Vec::new(),
        })
    }

    /// The answer of storing `records`, with its rejections (by position among `records`)
    /// and the parse's merged by index in the body.
    pub fn merge(self, mut result: IngestResult) -> IngestResult {
        for r in &mut result.rejected {
            r.index = self.positions.get(r.index).copied().unwrap_or(r.index);
        }
        let mut rejected = self.rejected;
        rejected.append(&mut result.rejected);
        rejected.sort_by_key(|r| r.index);
        result.rejected = rejected;
        result
    }
}

fn invalid(path: &str, message: &str) -> BodyError {
    BodyError::Invalid(crate::FieldError::new(path, message))
}

fn ndjson_values(bytes: &[u8]) -> Result<Vec<serde_json::Value>, BodyError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| BodyError::Malformed("NDJSON must be UTF-8".into()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .map_err(|e| BodyError::Malformed(format!("line {}: malformed JSON: {e}", n + 1)))
        })
        .collect()
}

/// The `records` array of `{"records": [...]}`, which has no other field.
fn envelope_records(
    fields: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<serde_json::Value>, BodyError> {
    if let Some(other) = fields.keys().find(|k| k.as_str() != "records") {
        return Err(invalid(
            other,
            &format!("unknown field `{other}`, expected `records`"),
        ));
    }
    match fields.remove("records") {
        Some(serde_json::Value::Array(values)) => Ok(values),
        _ => Err(invalid("records", "must be an array of records")),
    }
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
