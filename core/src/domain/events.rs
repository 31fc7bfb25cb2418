//! What event sources hand the pipeline's handlers, whatever carries it: queue messages, the
//! changes a table's stream reports, WebSocket connection events and schedule ticks, and what
//! a handler answers about a batch. The aws adapter decodes Lambda's events into these; the
//! stand-ins of `wharf serve --backend aws` decode the same events the same way.

use crate::{FeedId, SubscriptionId, TenantId, Timestamp};
use std::collections::BTreeMap;

/// One message of a queue: the ingest queue, a source's own queue, or the delivery queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The queue's id of the message (the same at every delivery), reported back when it fails.
    pub id: String,
    /// The name of the queue it came from.
    pub queue: String,
    /// The body.
    pub body: String,
    /// When it was first sent, when the queue says.
    pub sent_at: Option<Timestamp>,
    /// Its string attributes, by name.
    pub attributes: BTreeMap<String, String>,
    /// The handle that deletes it, for whoever deletes handled messages (not Lambda).
    pub receipt: Option<String>,
}

/// A change a table's stream reports that the pipeline acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamChange {
    /// Raw records stored together: the stateless rules run over them as one unit of work,
    /// whose outputs are stored once.
    RawRecords {
        /// The change's sequence number, reported back when it fails.
        sequence: String,
        /// Names the stored batch, the same every time the change is delivered.
        unit: String,
        /// The records.
        records: Vec<super::RawRecord>,
    },
    /// A feed has new output records to publish.
    Outputs {
        /// The change's sequence number, reported back when it fails.
        sequence: String,
        /// The feed's tenant.
        tenant: TenantId,
        /// The feed.
        feed: FeedId,
    },
}

/// What a handler made of a batch: the ids of the items that failed and must come again
/// (message ids, or stream sequence numbers), as Lambda's partial batch response wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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

/// A WebSocket API's event about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketEvent {
    /// A client connects: it names a websocket subscription and presents a token.
    Connect {
        /// The gateway's id of the connection.
        connection: String,
        /// `Authorization: Bearer …`, or `?access_token=`.
        token: Option<String>,
        /// `?subscription_id=`.
        subscription: Option<String>,
    },
    /// The connection is gone.
    Disconnect {
        /// The gateway's id of the connection.
        connection: String,
    },
    /// The client sent a message: a fresh token (`{"type": "token", "token": …}`) keeps its
    /// connection open; anything else is ignored.
    Message {
        /// The gateway's id of the connection.
        connection: String,
        /// What the client sent.
        body: String,
    },
}

/// A tick of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// This tick also removes what has expired.
    pub retention: bool,
}

/// A WebSocket connection a gateway holds for a websocket subscription.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connection {
    /// The gateway's connection id.
    pub id: String,
    /// The selling tenant.
    pub tenant_id: TenantId,
    /// The subscription whose records it carries.
    pub subscription_id: SubscriptionId,
    /// When it connected.
    #[serde(with = "time::serde::rfc3339")]
    pub connected_at: Timestamp,
    /// When the token it presented expires: it is closed then unless the client sent a
    /// fresh one.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<Timestamp>,
}

/// One output record as a feed's topic publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMessage {
    /// Its position in the feed.
    pub position: u64,
    /// The record's JSON, as every channel carries it.
    pub body: String,
    /// The subscriptions whose filter Wharf evaluated and found matching (for topic
    /// filter policies that could not express the filter).
    pub matched: Vec<String>,
    /// Whether this message wakes Wharf's own sender (webhook delivery).
    pub wake: bool,
}
