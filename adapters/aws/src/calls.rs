//! Every AWS call the process makes, counted by service and operation: the figures the cost
//! per million records is priced from, and what `/metrics` shows.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What the calls to one operation amount to, as AWS bills them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Billed {
    /// Attempts sent.
    pub calls: u64,
    /// Requests as SQS and SNS bill them: each started 64 KiB of a call's payload.
    pub chunks: u64,
    /// DynamoDB write request units, estimated from the items written (1 per started KiB of
    /// each item as sent, twice that inside a transaction), once `estimate_units` is on.
    pub write_units: f64,
    /// DynamoDB read request units, estimated from what came back (1 per started 4 KiB of
    /// each answer; 1 per key of a `BatchGetItem`).
    pub read_units: f64,
}

/// Counts of calls per (service, operation). Cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<(String, String), Billed>>>,
    /// Whether DynamoDB request units are estimated too: that reads every request body as
    /// JSON, so only `wharf aws cost` turns it on, never a serving process.
    units: Arc<AtomicBool>,
    /// The time spent awaiting answers (measured with the estimates).
    waiting: Arc<Mutex<Waiting>>,
}

/// Calls awaiting their answer, since when at least one has been, and the wall time so far
/// with at least one awaiting.
#[derive(Debug, Default)]
struct Waiting {
    calls: usize,
    since: Option<std::time::Instant>,
    total: std::time::Duration,
}

/// Whether `operation` is one of the event-source pollers' (Lambda's own in AWS).
pub fn is_poll(operation: &str) -> bool {
    POLLS.contains(&operation)
}

/// Operations of the event-source pollers (Lambda's own in AWS): long polls whose waits are
/// no handler's time, so they are left out of the waiting time.
const POLLS: [&str; 4] = [
    "ReceiveMessage",
    "GetRecords",
    "GetShardIterator",
    "DescribeStream",
];

impl CallCounter {
    /// Estimates DynamoDB request units from here on (see [`Billed`]).
    pub fn estimate_units(&self) {
        self.units.store(true, Ordering::Relaxed);
    }

    fn estimating(&self) -> bool {
        self.units.load(Ordering::Relaxed)
    }

    /// Wall time, since `estimate_units`, during which at least one call (other than the
    /// pollers' long polls) awaited its answer: how long the process waited on AWS, or on
    /// the emulator standing in for it.
    pub fn waited(&self) -> std::time::Duration {
        let waiting = self.waiting();
        waiting.total
            + waiting
                .since
                .map_or(std::time::Duration::ZERO, |at| at.elapsed())
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sent(&self) {
        let mut waiting = self.waiting();
        if waiting.calls == 0 {
            waiting.since = Some(std::time::Instant::now());
        }
        waiting.calls += 1;
    }

    fn answered(&self) {
        let mut waiting = self.waiting();
        waiting.calls = waiting.calls.saturating_sub(1);
        if waiting.calls == 0
            && let Some(at) = waiting.since.take()
        {
            waiting.total += at.elapsed();
        }
    }

    /// The counts so far, ordered by service, then operation.
    pub fn snapshot(&self) -> Vec<(String, String, u64)> {
        self.billed()
            .into_iter()
            .map(|(service, op, b)| (service, op, b.calls))
            .collect()
    }

    /// What each operation amounts to so far, ordered by service, then operation.
    pub fn billed(&self) -> Vec<(String, String, Billed)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((service, op), b)| (service.clone(), op.clone(), *b))
            .collect()
    }

    /// Calls to one operation so far.
    pub fn count(&self, service: &str, operation: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(service.to_owned(), operation.to_owned()))
            .map_or(0, |b| b.calls)
    }

    /// Calls to an operation so far, whatever service it belongs to.
    pub fn operation(&self, operation: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|((_, op), _)| op == operation)
            .map(|(_, b)| b.calls)
            .sum()
    }

    fn with(&self, service: &str, operation: &str, change: impl FnOnce(&mut Billed)) {
        change(
            self.counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((service.to_owned(), operation.to_owned()))
                .or_default(),
        );
    }
}

/// Started units of `size` in `len` bytes, at least one.
fn units(len: usize, size: usize) -> f64 {
    len.div_ceil(size).max(1) as f64
}

/// DynamoDB write units of a request body, estimated from its items' JSON.
fn write_units(operation: &str, body: &[u8]) -> f64 {
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
        return 0.0;
    };
    let item_units = |v: &serde_json::Value| units(v.to_string().len(), 1024);
    match operation {
        "PutItem" => item_units(&request["Item"]),
        "UpdateItem" | "DeleteItem" => 1.0,
        "BatchWriteItem" => request["RequestItems"]
            .as_object()
            .into_iter()
            .flat_map(|tables| tables.values())
            .flat_map(|writes| writes.as_array().cloned().unwrap_or_default())
            .map(|w| match w.get("PutRequest") {
                Some(put) => item_units(&put["Item"]),
                None => 1.0,
            })
            .sum(),
        "TransactWriteItems" => request["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                2.0 * match t.get("Put") {
                    Some(put) => item_units(&put["Item"]),
                    None => 1.0,
                }
            })
            .sum(),
        _ => 0.0,
    }
}

/// Items a `BatchGetItem` asks for: each costs a read unit whatever comes back.
fn keys_asked(body: &[u8]) -> f64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|r| {
            r["RequestItems"].as_object().map(|tables| {
                tables
                    .values()
                    .map(|t| t["Keys"].as_array().map_or(0, Vec::len))
                    .sum::<usize>() as f64
            })
        })
        .unwrap_or(1.0)
}

const READS: [&str; 5] = [
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "TransactGetItems",
];

/// Counts each attempt sent, so a retried call counts (and is billed) as AWS counts it.
impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "WharfCallCounter"
    }

    fn read_before_attempt(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut awaited = false;
        if let Some(meta) = cfg.load::<Metadata>() {
            let body = context.request().body().bytes().unwrap_or_default();
            let (service, operation) = (meta.service(), meta.name());
            let estimating = self.estimating();
            awaited = estimating && !is_poll(operation);
            self.with(service, operation, |b| {
                b.calls += 1;
                b.chunks += units(body.len(), 64 * 1024) as u64;
                if estimating && service.eq_ignore_ascii_case("dynamodb") {
                    b.write_units += write_units(operation, body);
                    if operation == "BatchGetItem" {
                        b.read_units += keys_asked(body);
                    }
                }
            });
        }
        if awaited {
            cfg.interceptor_state().store_put(Awaited);
            self.sent();
        }
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.estimating()
            && let Some(meta) = cfg.load::<Metadata>()
            && meta.service().eq_ignore_ascii_case("dynamodb")
            && READS.contains(&meta.name())
        {
            let answer = context.response().body().bytes().map_or(0, <[u8]>::len);
            self.with(meta.service(), meta.name(), |b| {
                b.read_units += units(answer, 4096);
            });
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Awaited>().is_some() {
            cfg.interceptor_state().unset::<Awaited>();
            self.answered();
        }
        Ok(())
    }
}

/// Marks an attempt counted in the waiting time, so its end is counted too.
#[derive(Debug, Clone, Copy)]
struct Awaited;

impl aws_smithy_types::config_bag::Storable for Awaited {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// `/metrics` shows every count as `wharf_aws_calls_total{service, operation}`.
impl wharf_core::ports::Metrics for CallCounter {
    fn render(&self) -> String {
        let mut out = String::from(
            "# HELP wharf_aws_calls_total AWS API calls made (attempts), by service and operation.\n\
             # TYPE wharf_aws_calls_total counter\n",
        );
        for (service, operation, n) in self.snapshot() {
            out.push_str(&format!(
                "wharf_aws_calls_total{{service=\"{service}\",operation=\"{operation}\"}} {n}\n"
            ));
        }
        out
    }
}

/// The ingest endpoint of the aws shape queues what it accepted.
#[async_trait::async_trait]
impl wharf_core::ports::IngestQueue for crate::ingest::SqsIngestQueue {
    async fn enqueue(
        &self,
        records: &[wharf_core::domain::RawRecord],
    ) -> wharf_core::ports::Result<()> {
        self.send(records).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_units_follow_items_and_transactions() {
        let small = r#"{"pk":{"S":"a"},"doc":{"S":"x"}}"#;
        let big = format!(
            r#"{{"pk":{{"S":"a"}},"doc":{{"S":"{}"}}}}"#,
            "x".repeat(1500)
        );
        let put = format!(r#"{{"TableName":"t","Item":{big}}}"#);
        assert_eq!(write_units("PutItem", put.as_bytes()), 2.0);
        let batch = format!(
            r#"{{"RequestItems":{{"t":[{{"PutRequest":{{"Item":{small}}}}},{{"PutRequest":{{"Item":{big}}}}},{{"DeleteRequest":{{"Key":{small}}}}}]}}}}"#
        );
        assert_eq!(write_units("BatchWriteItem", batch.as_bytes()), 4.0);
        let transaction = format!(
            r#"{{"TransactItems":[{{"Put":{{"TableName":"t","Item":{small}}}}},{{"Update":{{"TableName":"t"}}}}]}}"#
        );
        assert_eq!(
            write_units("TransactWriteItems", transaction.as_bytes()),
            4.0
        );
        assert_eq!(write_units("Query", b"{}"), 0.0);
        let get = r#"{"RequestItems":{"t":{"Keys":[{},{},{}]},"u":{"Keys":[{}]}}}"#;
        assert_eq!(keys_asked(get.as_bytes()), 4.0);
    }
}
