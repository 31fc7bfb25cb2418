//! Ports of the queues and topics records travel through in the aws shape: the ingest queue,
//! source queues and feed topics.

use super::Result;
use crate::domain::*;
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
/// vendor sends records to and the ingest handler drains.
#[async_trait]
pub trait SourceQueues: Send + Sync {
    /// Creates the queue of `source`; answers its URL.
    async fn create_queue(&self, source: &Source) -> Result<String>;
    /// Deletes the queue of `source`; a queue already gone is not an error.
    async fn delete_queue(&self, source: &Source) -> Result<()>;
}

/// Fan-out through a topic per published feed (aws shape: SNS). The native channels (`sqs`,
/// `email`, `mobile_push`) are subscriptions of that topic, which deliver without Wharf.
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
}
