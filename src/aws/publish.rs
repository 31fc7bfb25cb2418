//! The aws shape's publisher: what the stream handler does with a feed's new outputs.
//!
//! Once per feed with new outputs it reads the feed's active subscriptions and, when any is
//! delivered through the topic (a native channel, or a webhook through the delivery queue),
//! publishes the outputs after the topic's position with `PublishBatch` and then moves that
//! position. Native channels are metered right after SNS accepted the records: each active,
//! confirmed native subscription's position moves to the last record published and its usage
//! grows by the records its filter matches, in one conditional write, so a publish that runs
//! twice (a retried stream batch, two shards racing) may deliver a record twice but counts
//! it once. WebSocket subscriptions with sockets open through API Gateway get their records
//! posted to each connection (Lambda only; `wharf serve` serves sockets itself).

use aws_sdk_apigatewaymanagement::primitives::Blob;
use std::sync::Arc;
use wharf_aws::DynamoStore;
use wharf_aws::fanout::{Outgoing, PUBLISH_BATCH, SnsFanout};
use wharf_core::domain::{Channel, FeedStatus, Subscription, SubscriptionStatus};
use wharf_core::pipeline::SubscriptionFilter;
use wharf_core::{CoreError, FeedId, Services, SubscriptionId, TenantId};
use wharf_workers::deliver::record_json;

/// Records read and published per pass.
const CHUNK: usize = 100;
/// Passes one publish makes before leaving the rest to the next records.
const MAX_PASSES: usize = 50;
/// Records posted to a socket per read.
const SOCKET_BATCH: usize = 200;

/// What one publish did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Records sent to the topic.
    pub records: usize,
    /// Deliveries counted for native channels.
    pub metered: u64,
    /// Records posted to WebSocket connections.
    pub posted: usize,
}

/// The feed's listeners, read once per publish.
struct Listeners {
    native: Vec<(Subscription, Option<SubscriptionFilter>)>,
    webhooks: Vec<SubscriptionId>,
    sockets: Vec<Subscription>,
}

/// Publishes feeds' outputs to their topics and sockets.
pub struct Publisher {
    services: Services,
    store: Arc<DynamoStore>,
    fanout: Arc<SnsFanout>,
    sockets: Option<aws_sdk_apigatewaymanagement::Client>,
}

impl Publisher {
    pub fn new(shape: &super::AwsShape) -> Publisher {
        Publisher {
            services: shape.services.clone(),
            store: shape.store.clone(),
            fanout: shape.fanout.clone(),
            sockets: shape
                .websocket_endpoint
                .as_deref()
                .map(|e| shape.clients.websocket(e)),
        }
    }

    /// Publishes what a feed has produced since its last publish.
    pub async fn publish(&self, tenant: &TenantId, feed: &FeedId) -> Result<Published, CoreError> {
        // An archived feed has no topic; what it still produced stays pullable.
        if self.services.store.get_feed(tenant, feed).await?.status == FeedStatus::Archived {
            return Ok(Published::default());
        }
        let listeners = self.listeners(tenant, feed).await?;
        let mut done = Published::default();
        if !listeners.native.is_empty() || !listeners.webhooks.is_empty() {
            for _ in 0..MAX_PASSES {
                match self.topic_pass(tenant, feed, &listeners, &mut done).await? {
                    Pass::More => continue,
                    Pass::Done => break,
                }
            }
        }
        for sub in &listeners.sockets {
            done.posted += self.post_to_sockets(sub).await?;
        }
        Ok(done)
    }

    async fn listeners(&self, tenant: &TenantId, feed: &FeedId) -> Result<Listeners, CoreError> {
        let mut listeners = Listeners {
            native: Vec::new(),
            webhooks: Vec::new(),
            sockets: Vec::new(),
        };
        for sub in self
            .services
            .every_subscription_of_feed(tenant, feed)
            .await?
        {
            if sub.status != SubscriptionStatus::Active {
                continue;
            }
            match &sub.channel {
                Channel::Webhook { .. } => listeners.webhooks.push(sub.id),
                Channel::Websocket {} if self.sockets.is_some() => listeners.sockets.push(sub),
                channel if self.services.is_native(channel) && sub.native.is_some() => {
                    let sub = self.services.confirmed(sub).await?;
                    if sub.native.as_ref().is_some_and(|l| !l.pending_confirmation) {
                        let filter = SubscriptionFilter::of(&sub);
                        listeners.native.push((sub, filter));
                    }
                }
                _ => {}
            }
        }
        Ok(listeners)
    }

    /// Publishes one chunk after the topic's position and meters it.
    async fn topic_pass(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        listeners: &Listeners,
        done: &mut Published,
    ) -> Result<Pass, CoreError> {
        let store = &self.services.store;
        let Some(from) = self.store.topic_position(tenant, feed).await? else {
            // The first publish starts where the furthest-behind subscription it serves is
            // (each starts at the head when it is made).
            let mut start = store.output_head(tenant, feed).await?;
            let served = listeners.native.iter().map(|(sub, _)| &sub.id);
            for id in served.chain(&listeners.webhooks) {
                start = start.min(store.delivery_position(tenant, id).await?);
            }
            self.store
                .move_topic_position(tenant, feed, None, start)
                .await?;
            return Ok(Pass::More);
        };
        let rows = store.output_after(tenant, feed, from, CHUNK).await?;
        let Some(&(last, _)) = rows.last() else {
            return Ok(Pass::Done);
        };
        let outgoing = rows
            .iter()
            .enumerate()
            .map(|(i, (position, record))| {
                Ok(Outgoing {
                    position: *position,
                    body: record_json(record)?,
                    matched: listeners
                        .native
                        .iter()
                        .filter(|(sub, filter)| {
                            sub.native.as_ref().is_some_and(|l| l.filtered_by_wharf)
                                && SubscriptionFilter::admits(filter.as_ref(), &record.data)
                        })
                        .map(|(sub, _)| sub.id.to_string())
                        .collect(),
                    wake: !listeners.webhooks.is_empty()
                        && (i % PUBLISH_BATCH == PUBLISH_BATCH - 1 || i == rows.len() - 1),
                })
            })
            .collect::<Result<Vec<_>, CoreError>>()?;
        self.fanout.publish(tenant, feed, &outgoing).await?;
        done.records += rows.len();
        let now = self.services.clock.now();
        for (sub, filter) in &listeners.native {
            let at = store.delivery_position(tenant, &sub.id).await?;
            if at >= last {
                continue;
            }
            let counted = rows
                .iter()
                .filter(|(p, r)| {
                    *p > at.max(from) && SubscriptionFilter::admits(filter.as_ref(), &r.data)
                })
                .count() as u64;
            match store
                .advance(tenant, &sub.id, at, last, counted, now, &[])
                .await
            {
                Ok(()) => done.metered += counted,
                // Another publisher counted this range.
                Err(CoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.store
            .move_topic_position(tenant, feed, Some(from), last)
            .await?;
        Ok(if rows.len() < CHUNK {
            Pass::Done
        } else {
            Pass::More
        })
    }

    /// Posts a websocket subscription's new records to each of its connections; records
    /// count once, when at least one connection took them. A connection API Gateway reports
    /// gone is forgotten.
    async fn post_to_sockets(&self, sub: &Subscription) -> Result<usize, CoreError> {
        let Some(api) = &self.sockets else {
            return Ok(0);
        };
        let mut connections = self.store.connections_of(&sub.tenant_id, &sub.id).await?;
        let mut posted = 0;
        for _ in 0..MAX_PASSES {
            if connections.is_empty() {
                break;
            }
            let after = self
                .services
                .store
                .delivery_position(&sub.tenant_id, &sub.id)
                .await?;
            let (items, reached) = self.services.live_read(sub, after, SOCKET_BATCH).await?;
            if reached <= after {
                break;
            }
            let frames = items
                .iter()
                .map(|(position, record)| {
                    serde_json::to_vec(
                        &serde_json::json!({"cursor": position.to_string(), "record": record}),
                    )
                    .map_err(CoreError::internal)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut took = false;
            let mut open = Vec::new();
            for connection in connections {
                match post_all(api, &connection.id, &frames).await {
                    Ok(()) => {
                        took = true;
                        open.push(connection);
                    }
                    Err(Gone::Yes) => {
                        tracing::info!(connection = connection.id, "socket gone; forgotten");
                        self.store.delete_connection(&connection.id).await?;
                    }
                    Err(Gone::No(e)) => {
                        tracing::warn!(connection = connection.id, error = %e, "cannot post to a socket");
                    }
                }
            }
            connections = open;
            if !took {
                break;
            }
            self.services.live_acknowledge(sub, &items, reached).await?;
            posted += items.len();
        }
        Ok(posted)
    }
}

enum Pass {
    More,
    Done,
}

enum Gone {
    Yes,
    No(String),
}

async fn post_all(
    api: &aws_sdk_apigatewaymanagement::Client,
    connection: &str,
    frames: &[Vec<u8>],
) -> Result<(), Gone> {
    for frame in frames {
        if let Err(e) = api
            .post_to_connection()
            .connection_id(connection)
            .data(Blob::new(frame.clone()))
            .send()
            .await
        {
            let gone = e.as_service_error().is_some_and(|s| s.is_gone_exception())
                || e.raw_response().is_some_and(|r| r.status().as_u16() == 410);
            return Err(if gone {
                Gone::Yes
            } else {
                Gone::No(aws_smithy_types::error::display::DisplayErrorContext(e).to_string())
            });
        }
    }
    Ok(())
}
