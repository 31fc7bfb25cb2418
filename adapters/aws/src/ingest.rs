//! The ingest queue's sending side: records the ingest endpoint accepted, packed into SQS
//! messages (as many records per message as fit) and sent with `SendMessageBatch` (up to 10
//! messages and 256 KiB per call). The endpoint answers 202 once every message is queued.

use crate::{Clients, aws_error};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use wharf_core::CoreError;
use wharf_core::domain::RawRecord;
use wharf_core::ingest_queue::{MAX_MESSAGE_BYTES, pack};
use wharf_core::ports::Result;

/// Messages per `SendMessageBatch` call (SQS's limit).
const BATCH_MESSAGES: usize = 10;
/// Sends of a batch's failed entries before giving up.
const SEND_ATTEMPTS: u32 = 3;

/// Sends raw records to the ingest queue.
#[derive(Debug, Clone)]
pub struct SqsIngestQueue {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsIngestQueue {
    pub fn new(clients: &Clients, queue_url: impl Into<String>) -> SqsIngestQueue {
        SqsIngestQueue {
            sqs: clients.sqs.clone(),
            queue_url: queue_url.into(),
        }
    }

    /// Queues `records`; answers the number of messages sent. A record too large for a
    /// message is a validation error naming its index, and then nothing is sent.
    pub async fn send(&self, records: &[RawRecord]) -> Result<usize> {
        let bodies = pack(records, MAX_MESSAGE_BYTES)?;
        let mut start = 0;
        while start < bodies.len() {
            // As many messages as fit in one call's 10 messages and 256 KiB.
            let mut end = start;
            let mut bytes = 0;
            while end < bodies.len()
                && end - start < BATCH_MESSAGES
                && bytes + bodies[end].len() <= MAX_MESSAGE_BYTES
            {
                bytes += bodies[end].len();
                end += 1;
            }
            self.send_batch(&bodies[start..end]).await?;
            start = end;
        }
        Ok(bodies.len())
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<()> {
        let mut pending: Vec<(String, &String)> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (i.to_string(), b))
            .collect();
        for _ in 0..SEND_ATTEMPTS {
            let entries = pending
                .iter()
                .map(|(id, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(id)
                        .message_body(*body)
                        .build()
                        .map_err(CoreError::internal)
                })
                .collect::<Result<Vec<_>>>()?;
            let answer = self
                .sqs
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| aws_error("queueing records", e))?;
            let failed: Vec<&str> = answer.failed().iter().map(|f| f.id()).collect();
            if let Some(f) = answer.failed().iter().find(|f| f.sender_fault()) {
                return Err(CoreError::internal(format!(
                    "the ingest queue refused a message: {}",
                    f.message().unwrap_or(f.code())
                )));
            }
            pending.retain(|(id, _)| failed.contains(&id.as_str()));
            if pending.is_empty() {
                return Ok(());
            }
        }
        Err(CoreError::unavailable(format!(
            "{} messages not queued after {SEND_ATTEMPTS} attempts",
            pending.len()
        )))
    }
}
