//! Storing what queues carry (the aws shape's ingest handler):
//! - a message of the ingest queue holds raw records the ingest endpoint accepted, stored
//!   with dedup ([`handle`]); storing a message twice stores nothing new, as records keep
//!   their ids and the store skips known ones;
//! - a message of an `sqs` source's own queue holds what its vendor sent (one record, or
//!   `{"records": [...]}`), checked like a push ([`source_message`]); the records the schema
//!   refuses are named in the source's `last_error`.
//!
//! A message that cannot be read or stored is reported failed, so the queue delivers it again
//! and, after a bounded number of receives, moves it to the dead-letter queue.

use wharf_core::domain::{BatchOutcome, BodyError, IngestFormat, ParsedBody, QueueMessage, Source};
use wharf_core::ingest_queue::unpack;
use wharf_core::ports::{Notifier, RecordStore};
use wharf_core::{CoreError, Services};

/// What a batch of ingest queue messages stored, besides which messages failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// The messages to retry.
    pub outcome: BatchOutcome,
    /// Records stored for the first time.
    pub new: usize,
    /// Records already stored (a message delivered again, or a vendor's resend).
    pub duplicates: usize,
}

/// Stores each ingest queue message's records.
pub async fn handle(
    store: &dyn RecordStore,
    notifier: &dyn Notifier,
    messages: &[QueueMessage],
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

/// Stores one message a vendor sent to `source`'s own queue. Records the source's schema
/// refuses are kept out and named in the source's `last_error`; a message that is not records
/// at all fails.
#[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %source.tenant_id, source.id = %source.id))]
pub async fn source_message(
    services: &Services,
    mut source: Source,
    message: &QueueMessage,
) -> Result<(), CoreError> {
    let mut parsed =
        ParsedBody::parse(IngestFormat::Message, message.body.as_bytes()).map_err(|e| {
            let why = match e {
                BodyError::Malformed(why) => why,
                BodyError::Invalid(field) => format!("{} {}", field.path, field.message),
                BodyError::TooMany => "more records than one request may carry".into(),
            };
            CoreError::invalid("body", why)
        })?;
    let records = std::mem::take(&mut parsed.records);
    let result = services
        .ingest_from_source_queue(&source, records, message)
        .await?;
    let result = parsed.merge(result);
    if let Some(first) = result.rejected.first() {
        source.last_error = Some(format!(
            "message {}: {} of its records refused; record {}: {}",
            message.id,
            result.rejected.len(),
            first.index,
            first.error
        ));
        source.updated_at = services.clock.now();
        services.store.update_source(&source).await?;
    }
    Ok(())
}
