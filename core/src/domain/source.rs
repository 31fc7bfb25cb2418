//! Upstream sources of raw records.

use super::{Interval, Shape, check_name};
use crate::error::Problems;
use crate::{CoreError, SourceId, Timestamp, VendorId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How records arrive in a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SourceKind {
    /// Pushed to `POST /v1/sources/{id}/records`.
    Push,
    /// Sent to the source's own SQS queue (aws shape).
    Sqs,
    /// Fetched from `url` every `every`.
    HttpPoll,
}

impl SourceKind {
    /// Shapes that can run this kind of source.
    pub fn shapes(self) -> &'static [Shape] {
        match self {
            SourceKind::Sqs => &[Shape::Aws],
            SourceKind::Push | SourceKind::HttpPoll => &[Shape::Local, Shape::Aws],
        }
    }
}

/// Default and maximum record retention.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
const MAX_RETENTION_DAYS: u32 = 3650;

/// An upstream source owned by a vendor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    /// The source's id.
    pub id: SourceId,
    /// The owning tenant.
    pub tenant_id: VendorId,
    /// Display name.
    pub name: String,
    /// How records arrive.
    pub kind: SourceKind,
    /// For `http_poll`: the URL fetched.
    pub url: Option<String>,
    /// The queue to send records to (`sqs` sources): made by Wharf when the source is
    /// created, one JSON record or `{"records": [...]}` per message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_url: Option<String>,
    /// For `http_poll`: the polling interval, e.g. `5m`.
    pub every: Option<Interval>,
    /// JSON Schema every record's `data` must satisfy.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub schema: Option<serde_json::Value>,
    /// Days raw and output records are kept.
    pub retention_days: u32,
    /// For `http_poll`: when the source was last polled.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_polled_at: Option<Timestamp>,
    /// For `http_poll`: when a poll last succeeded.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_success_at: Option<Timestamp>,
    /// For `http_poll`: why the last poll failed; cleared by the next success.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
}

/// The body of `POST /v1/sources`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "ticks", "kind": "push", "retention_days": 30})))]
pub struct NewSource {
    /// Display name.
    pub name: String,
    /// How records arrive.
    pub kind: SourceKind,
    /// Required for `http_poll`.
    pub url: Option<String>,
    /// Required for `http_poll`, e.g. `30s`, `5m`, `1h`.
    pub every: Option<Interval>,
    /// Optional JSON Schema for record data.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub schema: Option<serde_json::Value>,
    /// Days to keep records (default 30).
    pub retention_days: Option<u32>,
}

/// The body of `PATCH /v1/sources/{id}`; absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourcePatch {
    /// New display name.
    pub name: Option<String>,
    /// New polling URL (`http_poll` only).
    pub url: Option<String>,
    /// New polling interval (`http_poll` only).
    pub every: Option<Interval>,
    /// New schema; `null` keeps the current one.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub schema: Option<serde_json::Value>,
    /// New retention.
    pub retention_days: Option<u32>,
}

impl Source {
    /// Checks the fields that depend on each other and on the running shape.
    pub fn validate(&self, shape: Shape) -> Result<(), CoreError> {
        let mut p = Problems::default();
        check_name(&mut p, "name", &self.name, 100);
        if !self.kind.shapes().contains(&shape) {
            p.add("kind", shape_message(self.kind.shapes()));
        }
        match self.kind {
            SourceKind::HttpPoll => {
                match self.url.as_deref().map(url::Url::parse) {
                    None => p.add("url", "is required for http_poll sources"),
                    Some(Err(e)) => p.add("url", format!("is not a URL: {e}")),
                    Some(Ok(u)) if !matches!(u.scheme(), "http" | "https") => {
                        p.add("url", "must be an http or https URL")
                    }
                    Some(Ok(_)) => {}
                }
                match &self.every {
                    None => p.add("every", "is required for http_poll sources"),
                    Some(every) if every.duration() < Duration::from_secs(10) => {
                        p.add("every", "must be at least 10s")
                    }
                    Some(_) => {}
                }
            }
            SourceKind::Push | SourceKind::Sqs => {
                if self.url.is_some() {
                    p.add("url", "is only for http_poll sources");
                }
                if self.every.is_some() {
                    p.add("every", "is only for http_poll sources");
                }
            }
        }
        match &self.schema {
            Some(schema) if !schema.is_object() => {
                p.add("schema", "must be a JSON Schema object");
            }
            Some(schema) => {
                if let Err(e) = jsonschema::validator_for(schema) {
                    p.add(
                        "schema",
                        format!("is not a valid JSON Schema: {e} (at `{}`)", e.schema_path()),
                    );
                }
            }
            None => {}
        }
        if self.retention_days == 0 || self.retention_days > MAX_RETENTION_DAYS {
            p.add(
                "retention_days",
                format!("must be between 1 and {MAX_RETENTION_DAYS}"),
            );
        }
        p.finish()
    }
}

/// "is only available in the aws shape" and the like.
pub(crate) fn shape_message(shapes: &[Shape]) -> String {
    if shapes.is_empty() {
        return "is not available in this version of Wharf".to_owned();
    }
    let names: Vec<&str> = shapes.iter().map(|s| s.as_str()).collect();
    format!(
        "is only available in the {} shape; this server runs another one",
        names.join(" or ")
    )
}
