//! Every AWS call the process makes, counted by service and operation: the figures the cost
//! per million records is priced from, and what `/metrics` shows.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts of calls per (service, operation). Cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
}

impl CallCounter {
    /// The counts so far, ordered by service, then operation.
    pub fn snapshot(&self) -> Vec<(String, String, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((service, op), n)| (service.clone(), op.clone(), *n))
            .collect()
    }

    /// Calls to one operation so far.
    pub fn count(&self, service: &str, operation: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(service.to_owned(), operation.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Calls to an operation so far, whatever service it belongs to.
    pub fn operation(&self, operation: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|((_, op), _)| op == operation)
            .map(|(_, n)| n)
            .sum()
    }

    fn add(&self, service: &str, operation: &str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((service.to_owned(), operation.to_owned()))
            .or_default() += 1;
    }
}

/// Counts each attempt sent, so a retried call counts (and is billed) as AWS counts it.
impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "WharfCallCounter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            self.add(meta.service(), meta.name());
        }
        Ok(())
    }
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
