//! The ingest handler: a batch of ingest queue messages (SQS in the aws shape), each the
//! raw records the ingest endpoint accepted, stored with dedup. A message that cannot be
//! read, or whose records cannot be stored, is reported failed so the queue delivers it
//! again; after a bounded number of receives it goes to the dead-letter queue. Storing a
//! message twice stores nothing new: records keep their ids, and the store skips known ones.

use crate::BatchOutcome;
use wharf_core::ingest_queue::unpack;
use wharf_core::ports::{Notifier, RecordStore};

/// One queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The queue's id of the message, reported back when it fails.
    pub id: String,
    /// The body `wharf_core::ingest_queue::pack` made.
    pub body: String,
}

/// What the batch stored, besides which messages failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// The messages to retry.
    pub outcome: BatchOutcome,
    /// Records stored for the first time.
    pub new: usize,
    /// Records already stored (a message delivered again, or a vendor's resend).
    pub duplicates: usize,
}

/// Stores each message's records; see the module documentation.
pub async fn handle(
    store: &dyn RecordStore,
    notifier: &dyn Notifier,
    messages: &[Message],
) -> Ingested {
    let mut done = Ingested::default();
    for message in messages {
        let records = match unpack(&message.body) {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(message = %message.id, error = %e, "unreadable ingest message");
                done.outcome.failed.push(message.id.clone());
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        match store.append_raw(&records).await {
            Ok(new) => {
                done.new += new;
                done.duplicates += records.len() - new;
            }
            Err(e) => {
                tracing::warn!(message = %message.id, error = %e, "cannot store ingest message");
                done.outcome.failed.push(message.id.clone());
            }
        }
    }
    if done.new > 0 {
        notifier.raw_appended();
    }
    done
}
