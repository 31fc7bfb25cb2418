//! The aws shape's Lambda handlers, each a function of the event Lambda delivers:
//! - `ingest` (SQS): stores the records of each message with dedup; a message that cannot be
//!   read or stored is reported in `batchItemFailures`, so SQS delivers it again and, after
//!   the queue's `maxReceiveCount`, moves it to the dead-letter queue;
//! - `stream` (DynamoDB Streams): new raw records go through the stateless rules, new output
//!   records are published (delivered to their feed's push subscriptions); a failure reports
//!   the sequence number of the first record it concerns, and Lambda retries from there;
//! - `schedule` (EventBridge): closes due windows, retries due deliveries and polls due
//!   sources; the retention rule's event also removes what has expired.
//!
//! Every step is idempotent (records and outputs keep derived ids, positions move on a
//! condition, metering marks deliveries), so a batch handled twice changes nothing twice.

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_lambda_events::event::streams::{
    DynamoDbBatchItemFailure, DynamoDbEventResponse, SqsBatchItemFailure, SqsEventResponse,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use wharf_core::domain::{Channel, OutputRecord, RawRecord, SubscriptionStatus};
use wharf_core::{CoreError, FeedId, PageRequest, Services, SubscriptionId, TenantId};
use wharf_workers::deliver::{self, DeliveryConfig};
use wharf_workers::ingest::Message;
use wharf_workers::process::Processor;

/// The name a schedule rule ends with when its event should also run the retention sweep.
pub const RETENTION_RULE_SUFFIX: &str = "-retention";
/// Delivery passes one publish makes per subscription before leaving the rest to the next
/// records or the schedule (bounds one invocation's time).
const MAX_PASSES: usize = 50;

/// How publishing waits for deliveries.
pub enum Deliveries {
    /// Each subscription is delivered to concurrently and the invocation waits for all (on
    /// Lambda nothing runs between invocations).
    Awaited,
    /// Each subscription's delivery runs in its own task that keeps going while there is
    /// work, so a slow endpoint delays only itself (`wharf serve`, a long-running process).
    Detached(Arc<Mutex<HashMap<SubscriptionId, Running>>>),
}

/// Whether records came for a subscription while its delivery task was running. The task
/// reads it under the same lock `publish` sets it under, so no record is left behind.
pub struct Running {
    again: bool,
}

/// The handlers with what they keep across invocations of one cold start.
pub struct Handlers {
    services: Services,
    processor: Processor,
    delivery: DeliveryConfig,
    deliveries: Deliveries,
}

impl Handlers {
    /// Handlers on `services`.
    pub fn new(services: Services, delivery: DeliveryConfig, deliveries: Deliveries) -> Handlers {
        Handlers {
            services,
            processor: Processor::default(),
            delivery,
            deliveries,
        }
    }

    /// The SQS ingest handler.
    pub async fn ingest(&self, event: SqsEvent) -> SqsEventResponse {
        let messages: Vec<Message> = event
            .records
            .into_iter()
            .filter_map(|m| {
                Some(Message {
                    id: m.message_id?,
                    body: m.body.unwrap_or_default(),
                })
            })
            .collect();
        let done = wharf_workers::ingest::handle(
            self.services.store.as_ref(),
            self.services.notifier.as_ref(),
            &messages,
        )
        .await;
        tracing::info!(
            messages = messages.len(),
            new = done.new,
            duplicates = done.duplicates,
            failed = done.outcome.failed.len(),
            "ingest batch"
        );
        let mut response = SqsEventResponse::default();
        response.batch_item_failures = done
            .outcome
            .failed
            .into_iter()
            .map(|id| {
                let mut failure = SqsBatchItemFailure::default();
                failure.item_identifier = Some(id);
                failure
            })
            .collect();
        response
    }

    /// The DynamoDB Streams handler.
    pub async fn stream(&self, event: StreamEvent) -> DynamoDbEventResponse {
        let mut raws: Vec<(String, RawRecord)> = Vec::new();
        let mut outputs: Vec<(String, OutputRecord)> = Vec::new();
        for record in event.records {
            if record.event_name != "INSERT" {
                continue;
            }
            let Some(seq) = record.change.sequence_number.clone() else {
                continue;
            };
            let image = match serde_json::to_value(&record.change.new_image) {
                Ok(image) => image,
                Err(e) => {
                    tracing::error!(error = %e, sequence = %seq, "unreadable stream image");
                    continue;
                }
            };
            let kind = image["kind"]["S"].as_str().unwrap_or_default();
            let doc = image["doc"]["S"].as_str().unwrap_or_default();
            let parsed = match kind {
                "raw" => serde_json::from_str(doc).map(|r| raws.push((seq.clone(), r))),
                "output" => serde_json::from_str(doc).map(|o| outputs.push((seq.clone(), o))),
                _ => Ok(()),
            };
            if let Err(e) = parsed {
                // The table's own item: retrying would fail the same way forever.
                tracing::error!(error = %e, sequence = %seq, kind, "unreadable stream item");
            }
        }
        let mut failed: Vec<String> = Vec::new();
        if let Some((first, _)) = raws.first() {
            let records: Vec<RawRecord> = raws.iter().map(|(_, r)| r.clone()).collect();
            match self.processor.handle(&self.services, &records).await {
                Ok(done) => tracing::info!(
                    records = records.len(),
                    outputs = done.outputs,
                    errors = done.errors,
                    "processed raw records"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "processing failed; the batch is retried");
                    failed.push(first.clone());
                }
            }
        }
        let feeds: BTreeSet<(TenantId, FeedId)> = outputs
            .iter()
            .map(|(_, o)| (o.tenant_id.clone(), o.feed_id.clone()))
            .collect();
        for (tenant, feed) in feeds {
            if let Err(e) = self.publish(&tenant, &feed).await {
                tracing::warn!(feed.id = %feed, error = %e, "publishing failed; retried");
                if let Some((seq, _)) = outputs.iter().find(|(_, o)| o.feed_id == feed) {
                    failed.push(seq.clone());
                }
            }
        }
        let mut response = DynamoDbEventResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|seq| {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(seq);
                failure
            })
            .collect();
        response
    }

    /// Delivers a feed's new outputs to its active push subscriptions.
    async fn publish(&self, tenant: &TenantId, feed: &FeedId) -> Result<(), CoreError> {
        let mut page = PageRequest::first(wharf_core::page::MAX_LIMIT);
        let mut awaited = tokio::task::JoinSet::new();
        loop {
            let subs = self
                .services
                .store
                .list_subscriptions_of_feed(tenant, feed, &page)
                .await?;
            for sub in subs.items {
                let pushed = matches!(sub.channel, Channel::Webhook { .. } | Channel::Email { .. });
                if !pushed || sub.status != SubscriptionStatus::Active {
                    continue;
                }
                let (services, config) = (self.services.clone(), self.delivery.clone());
                match &self.deliveries {
                    Deliveries::Awaited => {
                        awaited.spawn(async move { drain(&services, &sub, &config).await });
                    }
                    Deliveries::Detached(running_map) => {
                        let mut running =
                            running_map.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(r) = running.get_mut(&sub.id) {
                            r.again = true; // its task passes once more before it ends
                            continue;
                        }
                        running.insert(sub.id.clone(), Running { again: false });
                        let registry = Arc::clone(running_map);
                        tokio::spawn(async move {
                            loop {
                                if let Err(e) = drain(&services, &sub, &config).await {
                                    tracing::warn!(subscription.id = %sub.id, error = %e, "delivery failed");
                                }
                                let mut running =
                                    registry.lock().unwrap_or_else(PoisonError::into_inner);
                                match running.get_mut(&sub.id) {
                                    Some(r) if r.again => r.again = false,
                                    _ => {
                                        running.remove(&sub.id);
                                        break;
                                    }
                                }
                            }
                        });
                    }
                }
            }
            match subs.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        let mut outcome = Ok(());
        while let Some(done) = awaited.join_next().await {
            let done =
                done.map_err(|e| CoreError::internal(format!("a delivery task failed: {e}")));
            if let Err(e) = done.and_then(|r| r) {
                outcome = Err(e);
            }
        }
        outcome
    }

    /// The EventBridge schedule handler.
    pub async fn schedule(&self, event: EventBridgeEvent) -> Result<(), CoreError> {
        let services = &self.services;
        let windows = wharf_workers::schedule::close_due_windows(services).await?;
        let mut retried = 0;
        for _ in 0..MAX_PASSES {
            match deliver::retry_due(services, &self.delivery, 200).await? {
                0 => break,
                n => retried += n,
            }
        }
        let polled = wharf_workers::poll::poll_due(services).await?;
        let retention = event
            .resources
            .iter()
            .flatten()
            .any(|r| r.ends_with(RETENTION_RULE_SUFFIX));
        if retention {
            let now = services.clock.now();
            let records = services.store.expire_records(now).await?;
            let cut = time::Duration::try_from(services.settings.log_retention)
                .ok()
                .and_then(|keep| now.checked_sub(keep));
            let (attempts, errors) = match cut {
                Some(cut) => (
                    services.store.expire_attempts(cut).await?,
                    services.store.expire_feed_errors(cut).await?,
                ),
                None => (0, 0),
            };
            tracing::info!(records, attempts, errors, "retention sweep");
        }
        if windows + retried + polled > 0 {
            tracing::info!(windows, retried, polled, "schedule tick");
        }
        Ok(())
    }
}

/// Delivery passes over one subscription while there is work (at most `MAX_PASSES`).
async fn drain(
    services: &Services,
    sub: &wharf_core::domain::Subscription,
    config: &DeliveryConfig,
) -> Result<(), CoreError> {
    for _ in 0..MAX_PASSES {
        match deliver::deliver_push(services, sub, config).await {
            Ok(0) => break,
            Ok(_) => {}
            // Another invocation moved the position first: it delivers.
            Err(CoreError::Conflict(_)) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
