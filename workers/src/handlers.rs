//! The aws shape's handlers, each a function of what an event source delivers, over the
//! services and ports alone (the aws adapter decodes Lambda's events into these inputs):
//! - `ingest` stores the records of ingest queue and source queue messages;
//! - `stream` runs new raw records through the stateless rules and publishes new outputs;
//! - `sender` delivers to a woken feed's webhook subscriptions;
//! - `schedule` closes due windows, retries due deliveries, polls due sources, drains source
//!   queues, flushes held batches, closes due months and, on the retention tick, removes
//!   what has expired;
//! - `websocket` connects and disconnects a gateway's sockets.
//!
//! Every step is idempotent (records and outputs keep derived ids, positions move on a
//! condition), so a batch handled twice changes nothing twice.

use crate::deliver::{self, DeliveryConfig};
use crate::poll::Poller;
use crate::process::{FeedsOfSources, Processor};
use crate::schedule::Windows;
use crate::supervisor::Supervisor;
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use wharf_core::domain::{
    BatchOutcome, Connection, QueueMessage, SocketEvent, StreamChange, Subscription, Tick,
};
use wharf_core::ports::EventHandlers;
use wharf_core::{CoreError, FeedId, PageRequest, Services, SourceId, SubscriptionId, TenantId};

/// Delivery passes one wake-up makes per subscription before leaving the rest to the next
/// records or the schedule (bounds one invocation's time).
const MAX_PASSES: usize = 50;
/// The message attributes naming the feed a delivery queue message wakes.
pub const TENANT_ATTRIBUTE: &str = "wharf.tenant";
/// See [`TENANT_ATTRIBUTE`].
pub const FEED_ATTRIBUTE: &str = "wharf.feed";

/// How deliveries the handlers start are run.
pub enum Deliveries {
    /// Each subscription is delivered to concurrently and the invocation waits for all (on
    /// Lambda nothing runs between invocations).
    Awaited,
    /// Each subscription's delivery runs in its own supervised task that goes on while there
    /// is work, so a slow endpoint delays only itself (`wharf serve`).
    Supervised(Box<Supervisor>),
}

/// The handlers, with what they keep across invocations of one cold start.
pub struct Handlers {
    services: Services,
    processor: Processor,
    windows: Windows,
    poller: Poller,
    delivery: DeliveryConfig,
    deliveries: Deliveries,
    /// The tenant and source of each source queue seen, by queue name.
    source_queues: Mutex<HashMap<String, (TenantId, SourceId)>>,
}

impl Handlers {
    /// Handlers over `services`.
    pub fn new(services: Services, delivery: DeliveryConfig, deliveries: Deliveries) -> Handlers {
        Handlers {
            services,
            processor: Processor::default(),
            windows: Windows::default(),
            poller: Poller::default(),
            delivery,
            deliveries,
            source_queues: Mutex::new(HashMap::new()),
        }
    }

    /// A gateway's WebSocket event; answers the HTTP status the gateway gives the client.
    /// `Connect` carries `?subscription_id=` and the subscriber's token, and stores a
    /// connection of that websocket subscription; `Disconnect` forgets it.
    #[tracing::instrument(name = "websocket handler", skip_all)]
    pub async fn websocket(&self, event: SocketEvent) -> u16 {
        let outcome = match &event {
            SocketEvent::Connect {
                connection,
                token,
                subscription,
            } => {
                self.connect(connection, token.as_deref(), subscription.as_deref())
                    .await
            }
            SocketEvent::Disconnect { connection } => match &self.services.sockets {
                Some(sockets) => sockets.disconnect(connection).await.map(|_| ()),
                None => Ok(()),
            },
            SocketEvent::Message { connection, body } => {
                self.socket_message(connection, body).await
            }
        };
        match outcome {
            Ok(()) => 200,
            Err(e) => {
                tracing::info!(status = e.status(), error = %e, "socket refused");
                e.status()
            }
        }
    }

    async fn connect(
        &self,
        connection: &str,
        token: Option<&str>,
        subscription: Option<&str>,
    ) -> Result<(), CoreError> {
        let sockets = self
            .services
            .sockets
            .as_ref()
            .ok_or_else(|| CoreError::internal("no gateway sockets are configured"))?;
        let token =
            token.ok_or_else(|| CoreError::Unauthenticated("missing bearer token".into()))?;
        let id = subscription
            .and_then(|id| SubscriptionId::parse(id).ok())
            .ok_or_else(|| {
                CoreError::invalid("subscription_id", "must name a websocket subscription")
            })?;
        let who = self.services.authenticate(token).await?;
        let (sub, _) = self.services.live_open(&who, &id, None).await?;
        let open = sockets.connections_of(&sub.tenant_id, &sub.id).await?;
        self.services.room_for_socket(open.len())?;
        sockets
            .connect(&Connection {
                id: connection.to_owned(),
                tenant_id: sub.tenant_id,
                subscription_id: sub.id,
                connected_at: self.services.clock.now(),
                expires_at: wharf_core::credentials::verified_token_expiry(token),
            })
            .await
    }

    /// A client's message: a fresh token keeps the connection open past the old one's
    /// expiry; a token that does not verify, or does not read this subscription, closes it.
    async fn socket_message(&self, connection: &str, body: &str) -> Result<(), CoreError> {
        #[derive(serde::Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum ClientMessage {
            Token { token: String },
        }
        let Ok(ClientMessage::Token { token }) = serde_json::from_str(body) else {
            return Ok(());
        };
        let Some(sockets) = &self.services.sockets else {
            return Ok(());
        };
        let Some(mut known) = sockets.connection(connection).await? else {
            return Ok(());
        };
        let sub = self
            .services
            .store
            .get_subscription(&known.tenant_id, &known.subscription_id)
            .await?;
        match self.services.live_token(&sub, &token).await {
            Ok(expires_at) => {
                known.expires_at = expires_at;
                sockets.connect(&known).await
            }
            Err(e) => {
                sockets.close(connection).await?;
                Err(e)
            }
        }
    }

    async fn source_of_queue(&self, queue: &str) -> Result<(TenantId, SourceId), CoreError> {
        let cached = self
            .source_queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
            .cloned();
        if let Some(found) = cached {
            return Ok(found);
        }
        let queues = self.source_queue_port()?;
        let found = queues.source_of(queue).await?;
        self.source_queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.to_owned(), found.clone());
        Ok(found)
    }

    fn source_queue_port(&self) -> Result<&dyn wharf_core::ports::SourceQueues, CoreError> {
        self.services
            .source_queues
            .as_deref()
            .ok_or_else(|| CoreError::internal("no source queues in this shape"))
    }

    /// Stores one message of a source's own queue.
    async fn ingest_source_message(&self, message: &QueueMessage) -> Result<(), CoreError> {
        let (tenant, source) = self.source_of_queue(&message.queue).await?;
        let source = self.services.store.get_source(&tenant, &source).await?;
        crate::ingest::source_message(&self.services, source, message).await
    }

    /// Drains the queues of `sqs` sources, a bounded number of batches each (the schedule's
    /// share of the work: records sent to a source queue are stored within a tick).
    async fn drain_source_queues(&self) -> Result<usize, CoreError> {
        let Some(queues) = self.services.source_queues.as_deref() else {
            return Ok(0);
        };
        let mut received = 0;
        for url in queues.queues().await? {
            for _ in 0..MAX_PASSES {
                let messages = match queues.receive(&url).await {
                    Ok(m) if m.is_empty() => break,
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(queue = url, error = %e, "cannot drain a source queue");
                        break;
                    }
                };
                received += messages.len();
                let failed = self.ingest(messages.clone()).await.failed;
                let handled: Vec<QueueMessage> = messages
                    .into_iter()
                    .filter(|m| !failed.contains(&m.id))
                    .collect();
                queues.delete(&url, &handled).await?;
            }
        }
        Ok(received)
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

    /// Delivers what waits for active subscriptions Wharf's sender delivers: a batch held
    /// for its `max_wait_ms`, or records a failed publish left (the schedule's share).
    async fn flush_waiting(&self) -> Result<(), CoreError> {
        let store = &self.services.store;
        let mut page = PageRequest::first(wharf_core::page::MAX_LIMIT);
        let mut awaited = tokio::task::JoinSet::new();
        loop {
            let subs = store.list_active_subscriptions(&page).await?;
            for sub in subs.items {
                if !self.services.is_sent_by_wharf(&sub) {
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

    /// Starts delivering to `sub` if Wharf's sender delivers it: in `awaited` (on Lambda), or
    /// through the supervisor (`wharf serve`).
    fn deliver_to(
        &self,
        sub: Subscription,
        awaited: &mut tokio::task::JoinSet<Result<(), CoreError>>,
    ) {
        if !self.services.is_sent_by_wharf(&sub) {
            return;
        }
        match &self.deliveries {
            Deliveries::Awaited => {
                let (services, config) = (self.services.clone(), self.delivery.clone());
                awaited.spawn(async move {
                    deliver::drain(&services, &sub, &config, MAX_PASSES)
                        .await
                        .map(|_| ())
                });
            }
            Deliveries::Supervised(supervisor) => supervisor.wake(sub),
        }
    }

    /// Runs each unit of raw records through the stateless rules, the units of different
    /// tenants side by side (each tenant's in order, in its own compute lane), so a tenant
    /// with expensive rules does not hold back the others' units of the same batch. On a
    /// failure, the first failed unit in stream order is reported: the stream retries from
    /// there, and units already stored are stored once.
    async fn process(
        &self,
        units: &[(&String, &String, &Vec<wharf_core::domain::RawRecord>)],
    ) -> Vec<String> {
        let feeds = FeedsOfSources::default();
        let mut tenants: Vec<(&TenantId, Vec<usize>)> = Vec::new();
        for (i, (_, _, records)) in units.iter().enumerate() {
            let Some(tenant) = records.first().map(|r| &r.tenant_id) else {
                continue;
            };
            match tenants.iter_mut().find(|(t, _)| *t == tenant) {
                Some((_, of)) => of.push(i),
                None => tenants.push((tenant, vec![i])),
            }
        }
        let feeds = &feeds;
        let failed = futures_util::future::join_all(tenants.iter().map(|(_, of)| async move {
            for &i in of {
                let (_, unit, records) = units[i];
                match self
                    .processor
                    .handle(&self.services, records, Some(unit.as_str()), feeds)
                    .await
                {
                    Ok(done) => tracing::info!(
                        records = records.len(),
                        outputs = done.outputs,
                        errors = done.errors,
                        "processed raw records"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "processing failed; the batch is retried");
                        return Some(i);
                    }
                }
            }
            None
        }))
        .await;
        failed
            .into_iter()
            .flatten()
            .min()
            .map(|i| vec![units[i].0.clone()])
            .unwrap_or_default()
    }

    /// Publishes each feed with new outputs; a feed that fails has its first change failed.
    async fn publish(&self, outputs: &[(&String, &TenantId, &FeedId)]) -> Vec<String> {
        let feeds: BTreeSet<(&TenantId, &FeedId)> = outputs
            .iter()
            .map(|(_, tenant, feed)| (*tenant, *feed))
            .collect();
        let mut failed = Vec::new();
        for (tenant, feed) in feeds {
            match crate::publish::publish(&self.services, tenant, feed).await {
                Ok(done) => tracing::info!(
                    tenant.id = %tenant,
                    feed.id = %feed,
                    records = done.records,
                    metered = done.metered,
                    posted = done.posted,
                    "published"
                ),
                Err(e) => {
                    tracing::warn!(tenant.id = %tenant, feed.id = %feed, error = %e, "publishing failed; retried");
                    if let Some((sequence, ..)) = outputs.iter().find(|(_, _, f)| *f == feed) {
                        failed.push((*sequence).clone());
                    }
                }
            }
        }
        failed
    }
}

#[async_trait]
impl EventHandlers for Handlers {
    #[tracing::instrument(name = "ingest handler", skip_all, fields(messages = messages.len()))]
    async fn ingest(&self, messages: Vec<QueueMessage>) -> BatchOutcome {
        let (from_sources, queued): (Vec<QueueMessage>, Vec<QueueMessage>) =
            messages.into_iter().partition(|m| {
                self.services
                    .source_queues
                    .as_ref()
                    .is_some_and(|q| q.is_source_queue(&m.queue))
            });
        let mut failed = Vec::new();
        for message in &from_sources {
            if let Err(e) = self.ingest_source_message(message).await {
                tracing::warn!(message = %message.id, queue = message.queue, error = %e, "source queue message not stored");
                failed.push(message.id.clone());
            }
        }
        let done = crate::ingest::handle(
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
        BatchOutcome { failed }
    }

    #[tracing::instrument(name = "sender handler", skip_all, fields(messages = messages.len()))]
    async fn sender(&self, messages: Vec<QueueMessage>) -> BatchOutcome {
        let mut feeds: BTreeMap<(TenantId, FeedId), Vec<String>> = BTreeMap::new();
        let mut failed = Vec::new();
        for m in messages {
            let named = m
                .attributes
                .get(TENANT_ATTRIBUTE)
                .zip(m.attributes.get(FEED_ATTRIBUTE));
            match named.and_then(|(t, f)| TenantId::parse(t).ok().zip(FeedId::parse(f).ok())) {
                Some(key) => feeds.entry(key).or_default().push(m.id),
                None => {
                    // Not a topic's message: left to the dead-letter queue, where it is seen.
                    tracing::warn!(message = %m.id, "delivery message without a feed");
                    failed.push(m.id);
                }
            }
        }
        for ((tenant, feed), ids) in feeds {
            if let Err(e) = self.wake_webhooks(&tenant, &feed).await {
                tracing::warn!(tenant.id = %tenant, feed.id = %feed, error = %e, "webhook delivery failed; retried");
                failed.extend(ids);
            }
        }
        BatchOutcome { failed }
    }

    #[tracing::instrument(name = "stream handler", skip_all, fields(changes = changes.len()))]
    async fn stream(&self, changes: Vec<StreamChange>) -> BatchOutcome {
        let mut units = Vec::new();
        let mut outputs = Vec::new();
        for change in &changes {
            match change {
                StreamChange::RawRecords {
                    sequence,
                    unit,
                    records,
                } => units.push((sequence, unit, records)),
                StreamChange::Outputs {
                    sequence,
                    tenant,
                    feed,
                } => outputs.push((sequence, tenant, feed)),
            }
        }
        let mut failed = self.process(&units).await;
        failed.extend(self.publish(&outputs).await);
        BatchOutcome { failed }
    }

    #[tracing::instrument(name = "schedule handler", level = "debug", skip_all, fields(retention = tick.retention))]
    async fn schedule(&self, tick: Tick) -> Result<(), CoreError> {
        let services = &self.services;
        let windows = self.windows.close_due(services).await?;
        let mut retried = 0;
        for _ in 0..MAX_PASSES {
            match deliver::retry_due(services, &self.delivery, 200).await? {
                0 => break,
                n => retried += n,
            }
        }
        let polled = self.poller.poll_due(services).await?;
        let from_queues = self.drain_source_queues().await?;
        self.flush_waiting().await?;
        let closed = services.close_due_months().await?.len();
        let ended = services.end_deprecated_feeds().await?;
        let collected = services.collect_payments().await?;
        let (overdue, transferred) = (collected.overdue, collected.transferred);
        if tick.retention {
            let swept = crate::retention::sweep(services).await?;
            tracing::info!(
                records = swept.records,
                attempts = swept.attempts,
                errors = swept.errors,
                "retention sweep"
            );
        }
        if windows + retried + polled + from_queues + closed + ended + overdue + transferred > 0 {
            tracing::info!(
                windows,
                retried,
                polled,
                from_queues,
                closed,
                ended,
                overdue,
                transferred,
                "schedule tick"
            );
        }
        Ok(())
    }
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
