//! The ingest queue's sending side: records the ingest endpoint accepted, packed into SQS
//! messages (as many records per message as fit) and sent with `SendMessageBatch` (up to 10
//! messages and 256 KiB per call). The endpoint answers 202 once every message is queued.

use crate::{Clients, aws_error};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use wharf_core::CoreError;
use wharf_core::domain::{QueueMessage, RawRecord};
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

/// The queues of `sqs` sources: `{prefix}-{source id}`, tagged with the tenant and source
/// they feed, dead-lettering to the ingest queue's dead-letter queue after the same number of
/// receives.
#[derive(Debug, Clone)]
pub struct SqsSourceQueues {
    clients: Clients,
}

/// Tags naming what a source queue feeds.
const TENANT_TAG: &str = "wharf:tenant";
const SOURCE_TAG: &str = "wharf:source";

impl SqsSourceQueues {
    pub fn new(clients: &Clients) -> SqsSourceQueues {
        SqsSourceQueues {
            clients: clients.clone(),
        }
    }

    /// The prefix of every source queue's name.
    pub fn name_prefix(clients: &Clients) -> String {
        format!("{}-src_", clients.settings.queue_prefix)
    }

    /// The URLs of every source queue.
    async fn list(clients: &Clients) -> Result<Vec<String>> {
        let mut urls = Vec::new();
        let mut token = None;
        loop {
            let page = clients
                .sqs
                .list_queues()
                .queue_name_prefix(Self::name_prefix(clients))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| aws_error("listing source queues", e))?;
            urls.extend(page.queue_urls.unwrap_or_default());
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok(urls),
            }
        }
    }

    /// The tenant and source a source queue feeds, from its tags.
    async fn tagged_source(
        clients: &Clients,
        queue_url: &str,
    ) -> Result<(wharf_core::TenantId, wharf_core::SourceId)> {
        let tags = clients
            .sqs
            .list_queue_tags()
            .queue_url(queue_url)
            .send()
            .await
            .map_err(|e| aws_error("reading a source queue's tags", e))?
            .tags
            .unwrap_or_default();
        let tag = |name: &str| {
            tags.get(name)
                .cloned()
                .ok_or_else(|| CoreError::internal(format!("queue {queue_url} lacks tag {name}")))
        };
        Ok((
            wharf_core::TenantId::parse(&tag(TENANT_TAG)?).map_err(CoreError::internal)?,
            wharf_core::SourceId::parse(&tag(SOURCE_TAG)?).map_err(CoreError::internal)?,
        ))
    }
}

#[async_trait::async_trait]
impl wharf_core::ports::SourceQueues for SqsSourceQueues {
    async fn create_queue(&self, source: &wharf_core::domain::Source) -> Result<String> {
        let clients = &self.clients;
        let prefix = &clients.settings.queue_prefix;
        let dlq = clients
            .sqs
            .get_queue_url()
            .queue_name(format!("{prefix}-ingest-dlq"))
            .send()
            .await
            .map_err(|e| aws_error("finding the dead-letter queue", e))?
            .queue_url
            .ok_or_else(|| CoreError::internal("GetQueueUrl answered no URL"))?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": crate::bootstrap::queue_arn(clients, &dlq).await?,
            "maxReceiveCount": crate::bootstrap::MAX_RECEIVES.to_string(),
        })
        .to_string();
        let name = format!("{prefix}-{}", source.id);
        let url = crate::bootstrap::create_queue(clients, &name, Some(redrive)).await?;
        clients
            .sqs
            .tag_queue()
            .queue_url(&url)
            .tags(TENANT_TAG, source.tenant_id.as_str())
            .tags(SOURCE_TAG, source.id.as_str())
            .send()
            .await
            .map_err(|e| aws_error("tagging a source queue", e))?;
        Ok(url)
    }

    async fn delete_queue(&self, source: &wharf_core::domain::Source) -> Result<()> {
        let Some(url) = &source.queue_url else {
            return Ok(());
        };
        match self.clients.sqs.delete_queue().queue_url(url).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                Ok(())
            }
            Err(e) => Err(aws_error("deleting a source queue", e)),
        }
    }

    fn is_source_queue(&self, queue: &str) -> bool {
        queue.starts_with(&Self::name_prefix(&self.clients))
    }

    async fn source_of(&self, queue: &str) -> Result<(wharf_core::TenantId, wharf_core::SourceId)> {
        let url = self
            .clients
            .sqs
            .get_queue_url()
            .queue_name(queue)
            .send()
            .await
            .map_err(|e| aws_error(&format!("finding queue {queue}"), e))?
            .queue_url
            .ok_or_else(|| CoreError::internal("GetQueueUrl answered no URL"))?;
        Self::tagged_source(&self.clients, &url).await
    }

    async fn queues(&self) -> Result<Vec<String>> {
        Self::list(&self.clients).await
    }

    async fn receive(&self, url: &str) -> Result<Vec<QueueMessage>> {
        let name = url.rsplit('/').next().unwrap_or_default();
        Ok(receive(&self.clients, url, 0)
            .await?
            .iter()
            .map(|m| queue_message(m, name))
            .collect())
    }

    async fn delete(&self, url: &str, messages: &[QueueMessage]) -> Result<()> {
        delete(
            &self.clients,
            url,
            messages.iter().filter_map(|m| m.receipt.clone()),
        )
        .await
    }
}

/// Up to ten messages of the queue at `url`, waiting up to `wait_secs` for the first, with
/// every system and message attribute.
pub(crate) async fn receive(
    clients: &Clients,
    url: &str,
    wait_secs: i32,
) -> Result<Vec<aws_sdk_sqs::types::Message>> {
    Ok(clients
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_secs)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| aws_error("receiving messages", e))?
        .messages
        .unwrap_or_default())
}

/// Deletes handled messages by their receipt handles.
pub(crate) async fn delete(
    clients: &Clients,
    url: &str,
    receipts: impl Iterator<Item = String>,
) -> Result<()> {
    let entries = receipts
        .enumerate()
        .map(|(i, receipt)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(receipt)
                .build()
                .map_err(CoreError::internal)
        })
        .collect::<Result<Vec<_>>>()?;
    if entries.is_empty() {
        return Ok(());
    }
    clients
        .sqs
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| aws_error("deleting handled messages", e))?;
    Ok(())
}

/// A received message as the handlers take it.
fn queue_message(m: &aws_sdk_sqs::types::Message, queue: &str) -> QueueMessage {
    let sent_at = m
        .attributes
        .as_ref()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp))
        .and_then(|ms| crate::lambda::epoch_millis(ms));
    QueueMessage {
        id: m.message_id.clone().unwrap_or_default(),
        queue: queue.to_owned(),
        body: m.body.clone().unwrap_or_default(),
        sent_at,
        attributes: m
            .message_attributes
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.string_value.clone()?)))
            .collect(),
        receipt: m.receipt_handle.clone(),
    }
}
