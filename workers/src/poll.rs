//! `http_poll` sources: each is fetched every `every`; the answer's records are ingested with
//! the same dedup and schema checks as a push, and the outcome is kept on the source
//! (`last_polled_at`, `last_success_at`, `last_error`) for the vendor to see.
//!
//! The answer may be `{"records": [{"id"?, "ts"?, "data"}]}` (the push format), a JSON array
//! of objects (each one a record's data, its `id` field the record id), or NDJSON of such
//! objects.

use crate::lanes::Lanes;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use wharf_core::domain::{IngestRecord, Source};
use wharf_core::{CoreError, PageRequest, Services, SourceId};

/// Most bytes read from one poll.
const MAX_BODY: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sources being polled at once, overall and per tenant.
const POLLS_AT_ONCE: usize = 32;
const POLLS_PER_TENANT: usize = 4;

/// Polls sources as they come due, each poll a task of its own: a slow or failing source
/// delays only itself, a tenant's polls beyond its share wait for each other, and a poll's
/// failure is recorded on its source.
pub struct Poller {
    lanes: Arc<Lanes<SourceId>>,
}

impl Default for Poller {
    fn default() -> Self {
        Poller {
            lanes: Lanes::new(POLLS_AT_ONCE, POLLS_PER_TENANT),
        }
    }
}

impl Poller {
    /// Starts a poll of every due source not being polled; answers the polls started.
    pub async fn start_due(&self, services: &Services) -> Result<Vec<JoinHandle<()>>, CoreError> {
        let now = services.clock.now();
        let mut started = Vec::new();
        let mut page = PageRequest::first(wharf_core::page::MAX_LIMIT);
        loop {
            let sources = services.store.list_poll_sources(&page).await?;
            for source in sources.items {
                let every = source
                    .every
                    .as_ref()
                    .map_or(Duration::from_secs(60), |e| e.duration());
                if source.last_polled_at.is_some_and(|t| t + every > now) {
                    continue;
                }
                let (tenant, id) = (source.tenant_id.clone(), source.id.clone());
                let services = services.clone();
                let polled = self.lanes.spawn(&tenant, id, async move {
                    if let Err(e) = poll(&services, &source).await {
                        tracing::warn!(tenant.id = %source.tenant_id, source.id = %source.id, error = %e, "cannot record a poll");
                    }
                });
                started.extend(polled);
            }
            match sources.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(started),
            }
        }
    }

    /// Polls every due source and waits for those polls (a schedule tick). Returns how many
    /// were polled.
    pub async fn poll_due(&self, services: &Services) -> Result<usize, CoreError> {
        let started = self.start_due(services).await?;
        let polled = started.len();
        for poll in started {
            poll.await.map_err(CoreError::internal)?;
        }
        Ok(polled)
    }

    /// Completes once no poll is running.
    pub async fn until_idle(&self) {
        self.lanes.until_idle().await;
    }
}

/// Parses a poll answer into records.
fn records(body: &[u8]) -> Result<Vec<IngestRecord>, String> {
    let as_record = |value: serde_json::Value| {
        let id = match value.get("id") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        IngestRecord {
            id,
            ts: None,
            data: value,
        }
    };
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        return match value {
            serde_json::Value::Object(mut o) if o.contains_key("records") => {
                let records = o.remove("records").unwrap_or_default();
                serde_json::from_value::<Vec<IngestRecord>>(records)
                    .map_err(|e| format!("the answer's records do not parse: {e}"))
            }
            serde_json::Value::Array(items) => Ok(items.into_iter().map(as_record).collect()),
            other => Ok(vec![as_record(other)]),
        };
    }
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_owned())?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map(as_record)
                .map_err(|e| format!("the answer is neither JSON nor NDJSON: {e}"))
        })
        .collect()
}

/// Polls one source now and records the outcome on it, failures included (a source that
/// cannot be read, or whose records cannot be stored, is polled again only when due).
#[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %source.tenant_id, source.id = %source.id))]
pub async fn poll(services: &Services, source: &Source) -> Result<(), CoreError> {
    let now = services.clock.now();
    let url = source.url.clone().unwrap_or_default();
    let outcome: Result<String, String> = match services.http.get(&url, TIMEOUT, MAX_BODY).await {
        Ok((status, body)) if (200..300).contains(&status) => match records(&body) {
            Ok(records) => {
                let mut summary = Vec::new();
                let mut failed = None;
                for chunk in records.chunks(wharf_core::domain::MAX_RECORDS_PER_REQUEST) {
                    match services.ingest_into(source, chunk.to_vec()).await {
                        Ok(result) => summary.extend(result.rejected.into_iter().map(|r| r.error)),
                        Err(e) => {
                            failed =
                                Some(format!("the records could not be stored: {}", e.reason()));
                            break;
                        }
                    }
                }
                match (failed, summary.first()) {
                    (Some(e), _) => Err(e),
                    (None, None) => Ok(String::new()),
                    (None, Some(first)) => {
                        Err(format!("{} records rejected, e.g.: {first}", summary.len()))
                    }
                }
            }
            Err(e) => Err(e),
        },
        Ok((status, _)) => Err(format!("the source answered {status}")),
        Err(e) => Err(e.reason()),
    };
    // Re-read so a vendor's change made during the poll is kept; only the status fields move.
    let mut current = services
        .store
        .get_source(&source.tenant_id, &source.id)
        .await?;
    current.last_polled_at = Some(now);
    match outcome {
        Ok(_) => {
            current.last_success_at = Some(now);
            current.last_error = None;
        }
        Err(e) => {
            tracing::info!(tenant.id = %source.tenant_id, source.id = %source.id, error = %e, "poll failed");
            current.last_error = Some(e);
        }
    }
    services.store.update_source(&current).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(body: &str) -> Vec<(Option<String>, serde_json::Value)> {
        records(body.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|r| (r.id, r.data))
            .collect()
    }

    #[test]
    fn a_poll_answer_may_be_the_push_format_an_array_or_ndjson() {
        let push = r#"{"records": [{"id": "a", "data": {"px": 1}}]}"#;
        assert_eq!(
            ids(push),
            vec![(Some("a".into()), serde_json::json!({"px": 1}))]
        );
        let array = r#"[{"id": 7, "px": 1}, {"px": 2}]"#;
        assert_eq!(
            ids(array),
            vec![
                (Some("7".into()), serde_json::json!({"id": 7, "px": 1})),
                (None, serde_json::json!({"px": 2}))
            ]
        );
        let ndjson = "{\"id\": \"x\", \"px\": 1}\n\n{\"px\": 2}\n";
        assert_eq!(ids(ndjson).len(), 2);
        assert_eq!(
            ids(r#"{"px": 3}"#),
            vec![(None, serde_json::json!({"px": 3}))]
        );
    }

    #[test]
    fn an_answer_that_is_not_records_says_why() {
        assert!(records(b"not json\nat all").is_err());
        assert!(records(br#"{"records": "nope"}"#).is_err());
        assert!(records(&[0xff, 0xfe]).is_err());
    }
}
