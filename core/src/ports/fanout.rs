//! Ports of the queues, topics and sockets records travel through in the aws shape (the
//! ingest queue, source queues, feed topics, a gateway's WebSocket connections), and the port
//! by which event sources drive the pipeline's handlers.

use super::Result;
use crate::domain::*;
use crate::{FeedId, SourceId, SubscriptionId, TenantId};
use async_trait::async_trait;

/// Where the aws shape's ingest endpoint puts accepted records: a queue (SQS) the ingest
/// handler drains into the store with dedup. Absent in the local shape, which stores them at
/// once.
#[async_trait]
pub trait IngestQueue: Send + Sync {
    /// Queues `records` durably; when this returns, they will be stored.
    async fn enqueue(&self, records: &[RawRecord]) -> Result<()>;
}

/// The queues of `sqs` sources (aws shape): each such source gets its own queue, which the
/// vendor sends records to and the schedule drains through the ingest handler.
#[async_trait]
pub trait SourceQueues: Send + Sync {
    /// Creates the queue of `source`; answers its URL.
    async fn create_queue(&self, source: &Source) -> Result<String>;
    /// Deletes the queue of `source`; a queue already gone is not an error.
    async fn delete_queue(&self, source: &Source) -> Result<()>;
    /// Whether the queue named `queue` is a source's (by its name alone).
    fn is_source_queue(&self, queue: &str) -> bool;
    /// The tenant and source the queue named `queue` feeds.
    async fn source_of(&self, queue: &str) -> Result<(TenantId, SourceId)>;
    /// Every source queue, by URL.
    async fn queues(&self) -> Result<Vec<String>>;
    /// Up to ten messages waiting on the queue at `url`, without waiting for more; each
    /// comes again after a while unless it is deleted.
    async fn receive(&self, url: &str) -> Result<Vec<QueueMessage>>;
    /// Deletes messages `receive` gave (they were handled).
    async fn delete(&self, url: &str, messages: &[QueueMessage]) -> Result<()>;
}

/// Fan-out through a topic per published feed (aws shape: SNS). The native channels (`sqs`,
/// `email`, `mobile_push`) are subscriptions of that topic, which deliver without Wharf; the
/// delivery queue is one too, and wakes Wharf's own sender.
#[async_trait]
pub trait Fanout: Send + Sync {
    /// Creates the topic of a feed being published; one that exists is kept.
    async fn open_topic(&self, feed: &Feed) -> Result<()>;
    /// Deletes the topic of a feed archived or deleted, and with it every subscription of it;
    /// a topic already gone is not an error.
    async fn close_topic(&self, feed: &Feed) -> Result<()>;
    /// Subscribes the native channel of `sub` to its feed's topic, with its filter where the
    /// topic can apply it; answers the link to keep on the subscription.
    async fn subscribe(&self, sub: &Subscription) -> Result<NativeLink>;
    /// Removes a link `subscribe` made; one already gone is not an error.
    async fn unsubscribe(&self, link: &NativeLink) -> Result<()>;
    /// The link as the topic sees it now (an email recipient may have confirmed since).
    async fn refresh(&self, link: &NativeLink) -> Result<NativeLink>;
    /// Publishes records to a feed's topic; `Ok` once the topic accepted every one.
    async fn publish(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        messages: &[TopicMessage],
    ) -> Result<()>;
    /// The last output position published to a feed's topic; `None` before the first.
    async fn topic_position(&self, tenant: &TenantId, feed: &FeedId) -> Result<Option<u64>>;
    /// Moves a feed's topic position from `from` (`None`: not started) to `to`; `false` when
    /// another publisher moved it first.
    async fn move_topic_position(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        from: Option<u64>,
        to: u64,
    ) -> Result<bool>;
}

/// WebSocket connections a gateway holds for websocket subscriptions (aws shape: API
/// Gateway), and posting to them. (`wharf serve` serves sockets itself and has none.)
#[async_trait]
pub trait Sockets: Send + Sync {
    /// Records a connection.
    async fn connect(&self, connection: &Connection) -> Result<()>;
    /// Forgets a connection; answers what it was, if it was known.
    async fn disconnect(&self, connection: &str) -> Result<Option<Connection>>;
    /// A connection, if it is known.
    async fn connection(&self, connection: &str) -> Result<Option<Connection>>;
    /// Closes a connection at the gateway (where this process can) and forgets it.
    async fn close(&self, connection: &str) -> Result<()>;
    /// The open connections of a subscription.
    async fn connections_of(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
    ) -> Result<Vec<Connection>>;
    /// Whether this process can post to connections (it knows the gateway's management
    /// endpoint); a process that only records connections cannot.
    fn posts(&self) -> bool;
    /// Posts `frames` to a connection, in order; `false` when the gateway says it is gone.
    async fn post(&self, connection: &str, frames: &[Vec<u8>]) -> Result<bool>;
}

/// The pipeline's handlers, as event sources drive them: Lambda's event source mappings, or
/// the stand-ins of `wharf serve --backend aws`. Each answers which items failed, so they come
/// again.
#[async_trait]
pub trait EventHandlers: Send + Sync {
    /// Messages of the ingest queue and of source queues: records to store.
    async fn ingest(&self, messages: Vec<QueueMessage>) -> BatchOutcome;
    /// Messages of the delivery queue: feeds whose webhook subscriptions have records.
    async fn sender(&self, messages: Vec<QueueMessage>) -> BatchOutcome;
    /// New raw records and outputs, as the table's stream reports them.
    async fn stream(&self, changes: Vec<StreamChange>) -> BatchOutcome;
    /// A tick of the schedule: windows, retries, polls, source queues, retention.
    async fn schedule(&self, tick: Tick) -> Result<()>;
}
