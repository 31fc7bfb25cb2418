//! Pipeline handlers over core's ports: process (stateless rules), schedule (windows),
//! deliver (webhooks) and the metering that goes with acknowledgement. Each is a function of
//! a batch of work and the services, so the local loops and the Lambda entry points share them.

pub mod deliver;
pub mod ingest;
pub mod poll;
pub mod process;
pub mod schedule;

use serde::Serialize;

/// What a handler did with a batch: the ids of the items that failed and must be retried
/// (SQS message ids or stream sequence numbers), as Lambda's partial batch response wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// Identifiers of failed items; empty when the whole batch succeeded.
    pub failed: Vec<String>,
}

impl BatchOutcome {
    /// Whether every item succeeded.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
    }
}
