//! Publishing a feed's new outputs where topics and gateways carry them (the aws shape):
//! what the stream handler does once per feed with new outputs.
//!
//! When any active subscription of the feed is delivered through its topic (a native channel,
//! or a webhook through the delivery queue), the outputs after the topic's position are
//! published ([`Fanout::publish`]) and the position moves. Native channels are metered right
//! after the topic accepted the records, through [`Services::acknowledge`]: each active,
//! confirmed native subscription's position moves to the last record published and its usage
//! grows by the records its filter matches, in one conditional write, so a publish that runs
//! twice (a retried stream batch, two shards racing) may deliver a record twice but counts it
//! once. Websocket subscriptions with connections at a gateway get their records posted to
//! each connection ([`Sockets`]).
//!
//! [`Fanout::publish`]: wharf_core::ports::Fanout::publish
//! [`Sockets`]: wharf_core::ports::Sockets

use crate::deliver::record_json;
use wharf_core::domain::{
    Counted, FeedStatus, Route, Subscription, SubscriptionStatus, TopicMessage,
};
use wharf_core::ports::{Fanout, Sockets};
use wharf_core::{CoreError, FeedId, Services, SubscriptionId, TenantId};

/// Records read and published per pass.
const CHUNK: usize = 100;
/// Passes one publish makes before leaving the rest to the next records.
const MAX_PASSES: usize = 50;
/// Records posted to a socket per read.
const SOCKET_BATCH: usize = 200;
/// Topic messages per publish call; one in this many wakes the sender.
const WAKE_EVERY: usize = 10;

/// What one publish did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Records sent to the topic.
    pub records: usize,
    /// Deliveries counted for native channels.
    pub metered: u64,
    /// Records posted to gateway connections.
    pub posted: usize,
}

/// The feed's listeners, read once per publish.
#[derive(Default)]
struct Listeners {
    native: Vec<Subscription>,
    webhooks: Vec<SubscriptionId>,
    sockets: Vec<Subscription>,
}

/// Publishes what a feed has produced since its last publish. Without topics (the local
/// shape) there is nothing to publish.
#[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %tenant, feed.id = %feed))]
pub async fn publish(
    services: &Services,
    tenant: &TenantId,
    feed: &FeedId,
) -> Result<Published, CoreError> {
    let Some(fanout) = services.fanout.as_deref() else {
        return Ok(Published::default());
    };
    // An archived feed has no topic; what it still produced stays pullable.
    if services.store.get_feed(tenant, feed).await?.status == FeedStatus::Archived {
        return Ok(Published::default());
    }
    let listeners = listeners(services, tenant, feed).await?;
    let mut done = Published::default();
    if !listeners.native.is_empty() || !listeners.webhooks.is_empty() {
        for _ in 0..MAX_PASSES {
            if !topic_pass(services, fanout, tenant, feed, &listeners, &mut done).await? {
                break;
            }
        }
    }
    if let Some(sockets) = services.sockets.as_deref().filter(|s| s.posts()) {
        for sub in &listeners.sockets {
            done.posted += post_to_sockets(services, sockets, sub).await?;
        }
    }
    Ok(done)
}

async fn listeners(
    services: &Services,
    tenant: &TenantId,
    feed: &FeedId,
) -> Result<Listeners, CoreError> {
    let mut listeners = Listeners::default();
    for sub in services.every_subscription_of_feed(tenant, feed).await? {
        if sub.status != SubscriptionStatus::Active {
            continue;
        }
        match services.route(&sub.channel) {
            Route::Sender => listeners.webhooks.push(sub.id),
            Route::Socket => listeners.sockets.push(sub),
            Route::Topic if sub.native.is_some() => {
                let sub = services.confirmed(sub).await?;
                if sub.native.as_ref().is_some_and(|l| !l.pending_confirmation) {
                    listeners.native.push(sub);
                }
            }
            Route::Topic | Route::Pull => {}
        }
    }
    Ok(listeners)
}

/// Where the topic's first publish starts: where the furthest-behind subscription it serves
/// is (each starts at the head when it is made).
async fn first_position(
    services: &Services,
    tenant: &TenantId,
    feed: &FeedId,
    listeners: &Listeners,
) -> Result<u64, CoreError> {
    let store = &services.store;
    let mut start = store.output_head(tenant, feed).await?;
    let served = listeners.native.iter().map(|sub| &sub.id);
    for id in served.chain(&listeners.webhooks) {
        start = start.min(store.delivery_position(tenant, id).await?);
    }
    Ok(start)
}

/// Publishes one chunk after the topic's position and meters it; `true` when there may be
/// more.
async fn topic_pass(
    services: &Services,
    fanout: &dyn Fanout,
    tenant: &TenantId,
    feed: &FeedId,
    listeners: &Listeners,
    done: &mut Published,
) -> Result<bool, CoreError> {
    let Some(from) = fanout.topic_position(tenant, feed).await? else {
        let start = first_position(services, tenant, feed, listeners).await?;
        fanout
            .move_topic_position(tenant, feed, None, start)
            .await?;
        return Ok(true);
    };
    let rows = services
        .store
        .output_after(tenant, feed, from, CHUNK)
        .await?;
    let Some(&(last, _)) = rows.last() else {
        return Ok(false);
    };
    let mut rows = rows;
    let mut marks = Vec::with_capacity(listeners.native.len());
    for sub in &listeners.native {
        let (back, admitted) = services.filter_marks(sub, rows).await?;
        rows = back;
        marks.push(admitted);
    }
    let messages = topic_messages(&rows, listeners, &marks)?;
    fanout.publish(tenant, feed, &messages).await?;
    done.records += rows.len();
    for (sub, admitted) in listeners.native.iter().zip(&marks) {
        let at = services.store.delivery_position(tenant, &sub.id).await?;
        if at >= last {
            continue;
        }
        let counted = rows
            .iter()
            .zip(admitted)
            .filter(|((p, _), admitted)| **admitted && *p > at.max(from))
            .count() as u64;
        // `false`: another publisher counted this range. (A topic carries only new records:
        // native channels are granted no backfill.)
        if services
            .acknowledge(sub, at, last, Counted::usage(counted), &[])
            .await?
        {
            done.metered += counted;
        }
    }
    fanout
        .move_topic_position(tenant, feed, Some(from), last)
        .await?;
    Ok(rows.len() == CHUNK)
}

/// The topic's messages for `rows`: each names the native subscriptions whose filter Wharf
/// evaluated and found matching (`marks`: per native listener, per row), and one in ten (and
/// the last) wakes the sender when the feed has webhooks.
fn topic_messages(
    rows: &[(u64, wharf_core::domain::OutputRecord)],
    listeners: &Listeners,
    marks: &[Vec<bool>],
) -> Result<Vec<TopicMessage>, CoreError> {
    rows.iter()
        .enumerate()
        .map(|(i, (position, record))| {
            Ok(TopicMessage {
                position: *position,
                body: record_json(record)?,
                matched: listeners
                    .native
                    .iter()
                    .zip(marks)
                    .filter(|(sub, admitted)| {
                        sub.native.as_ref().is_some_and(|l| l.filtered_by_wharf)
                            && admitted.get(i).copied().unwrap_or(false)
                    })
                    .map(|(sub, _)| sub.id.to_string())
                    .collect(),
                wake: !listeners.webhooks.is_empty()
                    && (i % WAKE_EVERY == WAKE_EVERY - 1 || i == rows.len() - 1),
            })
        })
        .collect()
}

/// Posts a websocket subscription's new records to each of its connections; records count
/// once, when at least one connection took them. A connection the gateway reports gone is
/// forgotten.
async fn post_to_sockets(
    services: &Services,
    sockets: &dyn Sockets,
    sub: &Subscription,
) -> Result<usize, CoreError> {
    let now = services.clock.now();
    let (expired, mut connections): (Vec<_>, Vec<_>) = sockets
        .connections_of(&sub.tenant_id, &sub.id)
        .await?
        .into_iter()
        .partition(|c| c.expires_at.is_some_and(|at| at <= now));
    for connection in expired {
        // A socket whose token expired gets no more records: it is told why and closed.
        let notice = br#"{"type":"closed","reason":"token expired"}"#.to_vec();
        let _ = sockets.post(&connection.id, &[notice]).await;
        sockets.close(&connection.id).await?;
        tracing::info!(connection = connection.id, "socket token expired; closed");
    }
    let mut posted = 0;
    for _ in 0..MAX_PASSES {
        if connections.is_empty() {
            break;
        }
        let after = services
            .store
            .delivery_position(&sub.tenant_id, &sub.id)
            .await?;
        let (items, reached) = services.live_read(sub, after, SOCKET_BATCH).await?;
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
        let mut open = Vec::new();
        for connection in connections {
            match sockets.post(&connection.id, &frames).await {
                Ok(true) => open.push(connection),
                Ok(false) => {
                    tracing::info!(connection = connection.id, "socket gone; forgotten");
                    sockets.disconnect(&connection.id).await?;
                }
                Err(e) => {
                    tracing::warn!(connection = connection.id, error = %e, "cannot post to a socket");
                }
            }
        }
        if open.is_empty() {
            break;
        }
        connections = open;
        services.live_acknowledge(sub, &items, reached).await?;
        posted += items.len();
    }
    Ok(posted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::domain::{NativeLink, OutputRecord};
    use wharf_core::{RecordId, VendorId};

    fn rows(n: u64) -> Vec<(u64, OutputRecord)> {
        (1..=n)
            .map(|p| {
                let at = time::OffsetDateTime::UNIX_EPOCH;
                let record = OutputRecord {
                    id: RecordId::new(),
                    feed_id: FeedId::new(),
                    tenant_id: VendorId::new(),
                    pipeline_version: 1,
                    ts: at,
                    created_at: at,
                    expires_at: at,
                    data: serde_json::json!({ "n": p }),
                };
                (p, record)
            })
            .collect()
    }

    #[test]
    fn one_message_in_ten_and_the_last_wake_the_sender_when_the_feed_has_webhooks() {
        let listeners = Listeners {
            webhooks: vec![SubscriptionId::new()],
            ..Listeners::default()
        };
        let messages = topic_messages(&rows(25), &listeners, &[]).unwrap_or_default();
        let woken: Vec<u64> = messages
            .iter()
            .filter(|m| m.wake)
            .map(|m| m.position)
            .collect();
        assert_eq!(woken, vec![10, 20, 25]);
        let quiet = topic_messages(&rows(25), &Listeners::default(), &[]).unwrap_or_default();
        assert!(quiet.iter().all(|m| !m.wake), "no webhooks, no wake-ups");
    }

    #[test]
    fn messages_name_the_subscriptions_whose_filter_wharf_evaluates_and_matches() {
        let link = |by_wharf: bool| NativeLink {
            id: "arn".into(),
            pending_confirmation: false,
            filtered_by_wharf: by_wharf,
        };
        let native = |filter: &str, by_wharf: bool| {
            let mut sub = crate::deliver::fixtures::sub(Some(filter), None);
            sub.native = Some(link(by_wharf));
            sub
        };
        // Numbers from JSON are doubles in CEL.
        let (even, odd_by_sns) = (
            native("record.n == 2.0", true),
            native("record.n != 2.0", false),
        );
        let (even_id, odd_id) = (even.id.to_string(), odd_by_sns.id.to_string());
        let listeners = Listeners {
            native: vec![even, odd_by_sns],
            ..Listeners::default()
        };
        let rows = rows(3);
        let marks: Vec<Vec<bool>> = listeners
            .native
            .iter()
            .map(|sub| crate::deliver::fixtures::marks(sub, &rows))
            .collect();
        let messages = topic_messages(&rows, &listeners, &marks).unwrap_or_default();
        let matched: Vec<&Vec<String>> = messages.iter().map(|m| &m.matched).collect();
        assert_eq!(matched, [&vec![], &vec![even_id], &vec![]]);
        assert!(
            !messages.iter().any(|m| m.matched.contains(&odd_id)),
            "SNS filters that one"
        );
        let body: serde_json::Value = serde_json::from_str(&messages[0].body).unwrap_or_default();
        assert_eq!(body["data"]["n"], 1);
    }
}
