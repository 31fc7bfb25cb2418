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

use super::AwsShape;
use super::publish::Publisher;
use aws_lambda_events::event::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_lambda_events::event::streams::{
    DynamoDbBatchItemFailure, DynamoDbEventResponse, SqsBatchItemFailure, SqsEventResponse,
};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use base64::Engine as _;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use wharf_aws::Clients;
use wharf_aws::ingest::SqsSourceQueues;
use wharf_core::domain::{Channel, RawRecord, Subscription, SubscriptionStatus};
use wharf_core::domain::{IngestBatch, IngestRecord};
use wharf_core::{CoreError, FeedId, PageRequest, Services, SourceId, SubscriptionId, TenantId};
use wharf_workers::deliver::{self, DeliveryConfig};
use wharf_workers::ingest::Message;
use wharf_workers::process::{FeedsOfSources, Processor};

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
    clients: Clients,
    store: Arc<wharf_aws::DynamoStore>,
    publisher: Publisher,
    delivery_queue_url: String,
    processor: Processor,
    delivery: DeliveryConfig,
    deliveries: Deliveries,
    /// The tenant and source of each source queue seen, by queue name.
    source_queues: Mutex<HashMap<String, (TenantId, SourceId)>>,
    /// Invocations and their time, by handler (what Lambda would bill).
    invocations: Mutex<std::collections::BTreeMap<&'static str, (u64, std::time::Duration)>>,
}

impl Handlers {
    /// Handlers on the aws shape's services.
    pub fn new(shape: &AwsShape, delivery: DeliveryConfig, deliveries: Deliveries) -> Handlers {
        Handlers {
            services: shape.services.clone(),
            clients: shape.clients.clone(),
            store: shape.store.clone(),
            publisher: Publisher::new(shape),
            delivery_queue_url: shape.delivery_queue_url.clone(),
            processor: Processor::default(),
            delivery,
            deliveries,
            source_queues: Mutex::new(HashMap::new()),
            invocations: Mutex::default(),
        }
    }

    /// Invocations so far and their total time, by handler.
    pub fn invocations(&self) -> Vec<(&'static str, u64, std::time::Duration)> {
        self.invocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, (n, time))| (*name, *n, *time))
            .collect()
    }

    fn invoked(&self, handler: &'static str, started: std::time::Instant) {
        let mut all = self
            .invocations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = all.entry(handler).or_default();
        entry.0 += 1;
        entry.1 += started.elapsed();
    }

    /// The SQS ingest handler: messages of the ingest queue carry records the ingest endpoint
    /// accepted; messages of an `sqs` source's own queue carry what its vendor sent (one
    /// record, or `{"records": [...]}`), checked like a push.
    pub async fn ingest(&self, event: SqsEvent) -> SqsEventResponse {
        let started = std::time::Instant::now();
        let answer = self.ingest_batch(event).await;
        self.invoked("ingest", started);
        answer
    }

    async fn ingest_batch(&self, event: SqsEvent) -> SqsEventResponse {
        let prefix = SqsSourceQueues::name_prefix(&self.clients);
        let mut queued: Vec<Message> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for m in event.records {
            let Some(id) = m.message_id else { continue };
            let body = m.body.unwrap_or_default();
            let queue = m
                .event_source_arn
                .as_deref()
                .and_then(|arn| arn.rsplit(':').next())
                .unwrap_or_default()
                .to_owned();
            if queue.starts_with(&prefix) {
                let sent_at = m
                    .attributes
                    .get("SentTimestamp")
                    .and_then(|ms| ms.parse::<i128>().ok())
                    .and_then(|ms| {
                        time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()
                    });
                let message = wharf_core::services::QueuedMessage { id: &id, sent_at };
                if let Err(e) = self.ingest_source_message(&queue, &message, &body).await {
                    tracing::warn!(message = %id, queue, error = %e, "source queue message not stored");
                    failed.push(id);
                }
            } else {
                queued.push(Message { id, body });
            }
        }
        let done = wharf_workers::ingest::handle(
            self.services.store.as_ref(),
            self.services.notifier.as_ref(),
            &queued,
        )
        .await;
        tracing::info!(
            messages = queued.len(),
            new = done.new,
            duplicates = done.duplicates,
            failed = done.outcome.failed.len(),
            "ingest batch"
        );
        failed.extend(done.outcome.failed);
        sqs_failures(failed)
    }

    /// Stores one message a vendor sent to its source's queue. Records the source's schema
    /// refuses are kept out and named in the source's `last_error`; a message that is not
    /// records at all fails, so the queue retries it and then dead-letters it.
    async fn ingest_source_message(
        &self,
        queue: &str,
        message: &wharf_core::services::QueuedMessage<'_>,
        body: &str,
    ) -> Result<(), CoreError> {
        let id = message.id;
        let (tenant, source_id) = self.source_of_queue(queue).await?;
        let mut source = self.services.store.get_source(&tenant, &source_id).await?;
        let records = parse_source_message(body)?;
        let result = self
            .services
            .ingest_from_source_queue(&source, records, message)
            .await?;
        if let Some(first) = result.rejected.first() {
            source.last_error = Some(format!(
                "message {id}: {} of its records refused; record {}: {}",
                result.rejected.len(),
                first.index,
                first.error
            ));
            source.updated_at = self.services.clock.now();
            self.services.store.update_source(&source).await?;
        }
        Ok(())
    }

    async fn source_of_queue(&self, queue: &str) -> Result<(TenantId, SourceId), CoreError> {
        if let Some(found) = self
            .source_queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
        {
            return Ok(found.clone());
        }
        let url = self
            .clients
            .sqs
            .get_queue_url()
            .queue_name(queue)
            .send()
            .await
            .map_err(|e| CoreError::unavailable(format!("finding queue {queue}: {e}")))?
            .queue_url
            .ok_or_else(|| CoreError::internal("GetQueueUrl answered no URL"))?;
        let found = SqsSourceQueues::source_of(&self.clients, &url).await?;
        self.source_queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.to_owned(), found.clone());
        Ok(found)
    }

    /// Receives one batch from the queue at `url` (waiting up to `wait_secs` for it), hands
    /// it to `sender` (the delivery queue) or `ingest` (any other) as Lambda's SQS event, and deletes the messages that succeeded; failed
    /// ones come back after the queue's visibility timeout. Answers how many were received.
    pub async fn poll_queue(&self, url: &str, arn: &str, wait_secs: i32) -> anyhow::Result<usize> {
        let sqs = &self.clients.sqs;
        let messages = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await?
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            return Ok(0);
        }
        let region = self
            .clients
            .settings
            .region
            .as_deref()
            .unwrap_or("us-east-1");
        let event = serde_json::from_value(super::emulate::sqs_event(&messages, arn, region))?;
        let handled = if url == self.delivery_queue_url {
            self.sender(event).await
        } else {
            self.ingest(event).await
        };
        let failed: Vec<String> = handled
            .batch_item_failures
            .into_iter()
            .filter_map(|f| f.item_identifier)
            .collect();
        let entries = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.message_id.as_ref().is_some_and(|id| !failed.contains(id)))
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(m.receipt_handle.clone())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !entries.is_empty() {
            sqs.delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await?;
        }
        Ok(messages.len())
    }

    /// Drains the queues of `sqs` sources, a bounded number of batches each (the schedule's
    /// share of the work: records sent to a source queue are stored within a tick).
    async fn drain_source_queues(&self) -> Result<usize, CoreError> {
        let mut received = 0;
        for url in SqsSourceQueues::list(&self.clients).await? {
            let arn = wharf_aws::bootstrap::queue_arn(&self.clients, &url).await?;
            for _ in 0..MAX_PASSES {
                match self.poll_queue(&url, &arn, 0).await {
                    Ok(0) => break,
                    Ok(n) => received += n,
                    Err(e) => {
                        tracing::warn!(queue = url, error = %e, "cannot drain a source queue");
                        break;
                    }
                }
            }
        }
        Ok(received)
    }

    /// The DynamoDB Streams handler.
    pub async fn stream(&self, event: StreamEvent) -> DynamoDbEventResponse {
        let started = std::time::Instant::now();
        let answer = self.stream_batch(event).await;
        self.invoked("stream", started);
        answer
    }

    async fn stream_batch(&self, event: StreamEvent) -> DynamoDbEventResponse {
        // Raw parts in stream order, each with its sequence number and sort key (the unit
        // its outputs are stored once for); the feeds of new output parts.
        let mut raws: Vec<(String, String, Vec<RawRecord>)> = Vec::new();
        let mut outputs: Vec<(String, TenantId, FeedId)> = Vec::new();
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
            let packed = || {
                base64::engine::general_purpose::STANDARD
                    .decode(image["docz"]["B"].as_str().unwrap_or_default())
                    .map_err(CoreError::internal)
            };
            let parsed = match kind {
                "raw_pack" => match image["sk"]["S"].as_str() {
                    // The part's sort key names it: the unit its outputs are stored once for.
                    Some(unit) if !unit.is_empty() => packed()
                        .and_then(|p| wharf_aws::store::part_records_of::<RawRecord>(&p))
                        .map(|r| raws.push((seq.clone(), unit.to_owned(), r))),
                    _ => Err(CoreError::internal("a raw part without its sort key")),
                },
                "output_pack" => {
                    let (tenant, feed) = (
                        image["tenant_id"]["S"].as_str().unwrap_or_default(),
                        image["feed_id"]["S"].as_str().unwrap_or_default(),
                    );
                    tenant
                        .parse::<TenantId>()
                        .and_then(|t| feed.parse::<FeedId>().map(|f| (t, f)))
                        .map(|(t, f)| outputs.push((seq.clone(), t, f)))
                        .map_err(|_| CoreError::internal("an output part without its feed"))
                }
                _ => Ok(()),
            };
            if let Err(e) = parsed {
                // The table's own item: retrying would fail the same way forever.
                tracing::error!(error = %e, sequence = %seq, kind, "unreadable stream item");
            }
        }
        let mut failed: Vec<String> = Vec::new();
        let mut feeds = FeedsOfSources::default();
        for (seq, unit, records) in &raws {
            match self
                .processor
                .handle(&self.services, records, Some(unit), &mut feeds)
                .await
            {
                Ok(done) => tracing::info!(
                    records = records.len(),
                    outputs = done.outputs,
                    errors = done.errors,
                    "processed raw records"
                ),
                Err(e) => {
                    // Lambda retries from this part on; the parts after it are retried too.
                    tracing::warn!(error = %e, "processing failed; the batch is retried");
                    failed.push(seq.clone());
                    break;
                }
            }
        }
        let feeds: BTreeSet<(TenantId, FeedId)> = outputs
            .iter()
            .map(|(_, tenant, feed)| (tenant.clone(), feed.clone()))
            .collect();
        for (tenant, feed) in feeds {
            let published = self.publisher.publish(&tenant, &feed).await;
            if let Ok(done) = published {
                tracing::info!(
                    feed.id = %feed,
                    records = done.records,
                    metered = done.metered,
                    posted = done.posted,
                    "published"
                );
            }
            if let Err(e) = published {
                tracing::warn!(feed.id = %feed, error = %e, "publishing failed; retried");
                if let Some((seq, ..)) = outputs.iter().find(|(_, _, f)| *f == feed) {
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

    /// The webhook sender: each message of the delivery queue is a record a feed's topic
    /// passed on (`wharf.wake`), and wakes delivery to that feed's webhook subscriptions,
    /// which read their records from the table, batch, sign, retry and meter as the local
    /// shape does. A feed whose delivery fails has its messages reported failed.
    pub async fn sender(&self, event: SqsEvent) -> SqsEventResponse {
        let started = std::time::Instant::now();
        let answer = self.sender_batch(event).await;
        self.invoked("sender", started);
        answer
    }

    async fn sender_batch(&self, event: SqsEvent) -> SqsEventResponse {
        let mut feeds: std::collections::BTreeMap<(TenantId, FeedId), Vec<String>> =
            Default::default();
        let mut failed: Vec<String> = Vec::new();
        for m in event.records {
            let Some(id) = m.message_id else { continue };
            let attribute = |name: &str| {
                m.message_attributes
                    .get(name)
                    .and_then(|a| a.string_value.clone())
            };
            let parsed = attribute("wharf.tenant")
                .zip(attribute("wharf.feed"))
                .and_then(|(t, f)| TenantId::parse(&t).ok().zip(FeedId::parse(&f).ok()));
            match parsed {
                Some(key) => feeds.entry(key).or_default().push(id),
                None => {
                    // Not a topic's message: left to the dead-letter queue, where it is seen.
                    tracing::warn!(message = %id, "delivery message without a feed");
                    failed.push(id);
                }
            }
        }
        for ((tenant, feed), ids) in feeds {
            if let Err(e) = self.wake_webhooks(&tenant, &feed).await {
                tracing::warn!(feed.id = %feed, error = %e, "webhook delivery failed; retried");
                failed.extend(ids);
            }
        }
        sqs_failures(failed)
    }

    /// Delivers a feed's new outputs to its active webhook subscriptions.
    async fn wake_webhooks(&self, tenant: &TenantId, feed: &FeedId) -> Result<(), CoreError> {
        let mut awaited = tokio::task::JoinSet::new();
        for sub in self
            .services
            .every_subscription_of_feed(tenant, feed)
            .await?
        {
            self.deliver_to(sub, &mut awaited);
        }
        join_all(awaited).await
    }

    /// Delivers what waits for active push subscriptions: a batch held for its `max_wait_ms`,
    /// or records a failed publish left (the schedule's share of delivery).
    async fn flush_waiting(&self) -> Result<(), CoreError> {
        let store = &self.services.store;
        let mut page = PageRequest::first(wharf_core::page::MAX_LIMIT);
        let mut awaited = tokio::task::JoinSet::new();
        loop {
            let subs = store.list_active_subscriptions(&page).await?;
            for sub in subs.items {
                if !is_pushed(&sub) {
                    continue;
                }
                let position = store.delivery_position(&sub.tenant_id, &sub.id).await?;
                if position < store.output_head(&sub.tenant_id, &sub.feed_id).await? {
                    self.deliver_to(sub, &mut awaited);
                }
            }
            match subs.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        join_all(awaited).await
    }

    /// Starts delivering to `sub` if it is an active push subscription: in `awaited` (on
    /// Lambda), or in its own task that goes on while there is work (`wharf serve`).
    fn deliver_to(
        &self,
        sub: Subscription,
        awaited: &mut tokio::task::JoinSet<Result<(), CoreError>>,
    ) {
        if !is_pushed(&sub) {
            return;
        }
        let (services, config) = (self.services.clone(), self.delivery.clone());
        match &self.deliveries {
            Deliveries::Awaited => {
                awaited.spawn(async move { drain(&services, &sub, &config).await });
            }
            Deliveries::Detached(running_map) => {
                let mut running = running_map.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(r) = running.get_mut(&sub.id) {
                    r.again = true; // its task passes once more before it ends
                    return;
                }
                running.insert(sub.id.clone(), Running { again: false });
                let registry = Arc::clone(running_map);
                tokio::spawn(async move {
                    loop {
                        if let Err(e) = drain(&services, &sub, &config).await {
                            tracing::warn!(subscription.id = %sub.id, error = %e, "delivery failed");
                        }
                        let mut running = registry.lock().unwrap_or_else(PoisonError::into_inner);
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

    /// The API Gateway WebSocket API's routes. `$connect` carries `?subscription_id=` and the
    /// subscriber's token (`Authorization: Bearer` or `?access_token=`, as browsers cannot set
    /// headers) and stores a connection of that websocket subscription; `$disconnect` removes
    /// it; `$default` ignores what a client sends. The publisher posts records to connections.
    pub async fn websocket(
        &self,
        event: ApiGatewayWebsocketProxyRequest,
    ) -> ApiGatewayProxyResponse {
        let context = &event.request_context;
        let connection = context.connection_id.clone().unwrap_or_default();
        let outcome = match context.route_key.as_deref().unwrap_or("$default") {
            "$connect" => self.connect(&event, &connection).await,
            "$disconnect" => self.store.delete_connection(&connection).await.map(|_| ()),
            _ => Ok(()),
        };
        let mut response = ApiGatewayProxyResponse::default();
        match outcome {
            Ok(()) => response.status_code = 200,
            Err(e) => {
                response.status_code = match &e {
                    CoreError::Validation(_) => 400,
                    CoreError::Unauthenticated(_) => 401,
                    CoreError::Forbidden(_) => 403,
                    CoreError::NotFound(_) => 404,
                    CoreError::Conflict(_) => 409,
                    CoreError::Unavailable(_) => 503,
                    CoreError::Internal(_) => 500,
                };
                tracing::info!(connection, status = response.status_code, error = %e, "socket refused");
            }
        }
        response
    }

    async fn connect(
        &self,
        event: &ApiGatewayWebsocketProxyRequest,
        connection: &str,
    ) -> Result<(), CoreError> {
        let query = &event.query_string_parameters;
        let header = event
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_owned());
        let token = header
            .or_else(|| query.first("access_token").map(str::to_owned))
            .ok_or_else(|| CoreError::Unauthenticated("missing bearer token".into()))?;
        let id = query
            .first("subscription_id")
            .and_then(|id| SubscriptionId::parse(id).ok())
            .ok_or_else(|| {
                CoreError::invalid("subscription_id", "must name a websocket subscription")
            })?;
        let who = self.services.authenticate(&token).await?;
        let (sub, _) = self.services.live_open(&who, &id, None).await?;
        self.store
            .put_connection(&wharf_aws::store::Connection {
                id: connection.to_owned(),
                tenant_id: sub.tenant_id,
                subscription_id: sub.id,
                connected_at: self.services.clock.now(),
            })
            .await
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
        let from_queues = self.drain_source_queues().await?;
        self.flush_waiting().await?;
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
        if windows + retried + polled + from_queues > 0 {
            tracing::info!(windows, retried, polled, from_queues, "schedule tick");
        }
        Ok(())
    }
}

/// Delivery passes over one subscription while there is work (at most `MAX_PASSES`).
async fn drain(
    services: &Services,
    sub: &Subscription,
    config: &DeliveryConfig,
) -> Result<(), CoreError> {
    deliver::drain(services, sub, config, MAX_PASSES)
        .await
        .map(|_| ())
}

/// The records of a source queue message: `{"records": [...]}` or one record.
fn parse_source_message(body: &str) -> Result<Vec<IngestRecord>, CoreError> {
    let value: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| CoreError::invalid("body", format!("is not JSON: {e}")))?;
    let parsed = if value.get("records").is_some() {
        serde_json::from_value::<IngestBatch>(value).map(|b| b.records)
    } else {
        serde_json::from_value::<IngestRecord>(value).map(|r| vec![r])
    };
    parsed.map_err(|e| {
        CoreError::invalid(
            "body",
            format!("is neither a record nor {{\"records\": [...]}}: {e}"),
        )
    })
}

/// Whether `sub` is an active webhook subscription (the one channel the aws shape sends
/// itself; the others are the topic's or API Gateway's).
fn is_pushed(sub: &Subscription) -> bool {
    matches!(sub.channel, Channel::Webhook { .. }) && sub.status == SubscriptionStatus::Active
}

/// SQS's partial batch response failing the messages `failed`.
fn sqs_failures(failed: Vec<String>) -> SqsEventResponse {
    let mut response = SqsEventResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut failure = SqsBatchItemFailure::default();
            failure.item_identifier = Some(id);
            failure
        })
        .collect();
    response
}

/// Waits for every delivery in `tasks`; the last error, if any.
async fn join_all(mut tasks: tokio::task::JoinSet<Result<(), CoreError>>) -> Result<(), CoreError> {
    let mut outcome = Ok(());
    while let Some(done) = tasks.join_next().await {
        let done = done.map_err(|e| CoreError::internal(format!("a delivery task failed: {e}")));
        if let Err(e) = done.and_then(|r| r) {
            outcome = Err(e);
        }
    }
    outcome
}
