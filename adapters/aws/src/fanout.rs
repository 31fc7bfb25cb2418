//! Per-feed SNS topics and the native channels subscribed to them.
//!
//! A published feed has a topic `{prefix}-{tenant}-{feed}`. The publisher sends each output
//! record to it (`PublishBatch`, 10 per call) as the JSON a webhook carries, with message
//! attributes:
//! - `wharf.tenant`, `wharf.feed` (String) and `wharf.position` (Number);
//! - `wharf.match` (String.Array): the subscriptions whose filter Wharf evaluated and found
//!   matching (filters SNS cannot express, below);
//! - `wharf.wake` = `webhooks` on the last record of each call when the feed has webhook
//!   subscriptions: the delivery queue's subscription passes only those, so the sender is
//!   woken once per ten records, not once per record.
//!
//! Native channels are SNS subscriptions of the topic: `sqs` (raw message delivery: the queue
//! receives the record's JSON), `email` (SNS email, pending until the recipient confirms) and
//! `mobile_push` (an SNS platform application endpoint). Every one has a filter policy, so a
//! change replaces the policy rather than removing it:
//! - a subscription without a filter matches `wharf.feed` (every record of its feed);
//! - a filter [`filter_policy`] can translate becomes a `MessageBody` policy over the record's
//!   `data`, so SNS filters without Wharf;
//! - any other filter is evaluated by Wharf at publish time, and the policy matches the
//!   subscription's id in `wharf.match`.

use crate::{Clients, DynamoStore, aws_error};
use async_trait::async_trait;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use wharf_core::domain::{Channel, Feed, NativeLink, Subscription, TopicMessage};
use wharf_core::expr::{Expr, Literal, Test, conjunction};
use wharf_core::ports::{Fanout, Result};
use wharf_core::{CoreError, FeedId, TenantId};

/// Entries per `PublishBatch` call (SNS's limit).
pub const PUBLISH_BATCH: usize = 10;
/// The attribute naming the subscriptions Wharf found matching.
pub const MATCH_ATTRIBUTE: &str = "wharf.match";
/// The attribute that wakes the webhook sender through the delivery queue.
pub const WAKE_ATTRIBUTE: &str = "wharf.wake";

/// Per-feed topics on SNS.
pub struct SnsFanout {
    clients: Clients,
    /// Where each topic's position is kept.
    store: DynamoStore,
    /// The webhook delivery queue every topic feeds.
    delivery_queue_url: String,
    /// Its ARN, read when the first topic is made (not at every cold start).
    delivery_queue_arn: Mutex<Option<String>>,
    /// Topic ARNs by tenant and feed (CreateTopic answers the ARN and is idempotent).
    topics: Mutex<HashMap<(TenantId, FeedId), String>>,
}

impl SnsFanout {
    pub fn new(clients: &Clients, delivery_queue_url: impl Into<String>) -> SnsFanout {
        SnsFanout {
            clients: clients.clone(),
            store: DynamoStore::new(clients.clone()),
            delivery_queue_url: delivery_queue_url.into(),
            delivery_queue_arn: Mutex::new(None),
            topics: Mutex::new(HashMap::new()),
        }
    }

    /// The topic name of a feed: `{prefix}-{tenant}-{feed}` (the IAM policy grants SNS on
    /// `{prefix}-*`).
    pub fn topic_name(&self, tenant: &TenantId, feed: &FeedId) -> String {
        format!("{}-{tenant}-{feed}", self.clients.settings.queue_prefix)
    }

    /// The topic's ARN, creating the topic and its delivery queue subscription if they are
    /// missing (once per cold start: both calls are idempotent, and a topic made before the
    /// delivery queue existed gets its subscription).
    pub async fn topic_arn(&self, tenant: &TenantId, feed: &FeedId) -> Result<String> {
        let key = (tenant.clone(), feed.clone());
        if let Some(arn) = self.cache().get(&key) {
            return Ok(arn.clone());
        }
        let arn = self.create_topic(tenant, feed).await?;
        let delivery_queue = self.delivery_queue_arn().await?;
        let delivery = self
            .clients
            .sns
            .subscribe()
            .topic_arn(&arn)
            .protocol("sqs")
            .endpoint(delivery_queue)
            .attributes("RawMessageDelivery", "true")
            .attributes(
                "FilterPolicy",
                json!({ WAKE_ATTRIBUTE: ["webhooks"] }).to_string(),
            )
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| aws_error("subscribing the delivery queue to a topic", e))?;
        tracing::info!(topic = arn, delivery = ?delivery.subscription_arn, "feed topic open");
        self.cache().insert(key, arn.clone());
        Ok(arn)
    }

    async fn delivery_queue_arn(&self) -> Result<String> {
        let known = self
            .delivery_queue_arn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(arn) = known {
            return Ok(arn);
        }
        let arn = crate::bootstrap::queue_arn(&self.clients, &self.delivery_queue_url).await?;
        *self
            .delivery_queue_arn
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(arn.clone());
        Ok(arn)
    }

    /// Creates the topic (or finds it: CreateTopic answers an existing topic's ARN).
    async fn create_topic(&self, tenant: &TenantId, feed: &FeedId) -> Result<String> {
        self.clients
            .sns
            .create_topic()
            .name(self.topic_name(tenant, feed))
            .tags(tag("wharf:tenant", tenant.as_str())?)
            .tags(tag("wharf:feed", feed.as_str())?)
            .send()
            .await
            .map_err(|e| aws_error("creating a feed's topic", e))?
            .topic_arn
            .ok_or_else(|| CoreError::internal("CreateTopic answered no ARN"))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, FeedId), String>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `records` of a feed to its topic, ten per call; every entry must be
    /// accepted (a failed entry fails the call, and the publisher tries again).
    async fn publish_records(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        records: &[TopicMessage],
    ) -> Result<()> {
        let topic = self.topic_arn(tenant, feed).await?;
        for chunk in batches(records) {
            let entries = chunk
                .iter()
                .map(|r| entry(tenant, feed, r))
                .collect::<Result<Vec<_>>>()?;
            let sent = self
                .clients
                .sns
                .publish_batch()
                .topic_arn(&topic)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await;
            let sent = match sent {
                Ok(sent) => sent,
                Err(e) => {
                    // A topic deleted under a cached ARN is made again on the next try.
                    if e.as_service_error()
                        .is_some_and(|s| s.is_not_found_exception())
                    {
                        self.cache().remove(&(tenant.clone(), feed.clone()));
                    }
                    return Err(aws_error("publishing records", e));
                }
            };
            if let Some(failed) = sent.failed.as_deref().and_then(<[_]>::first) {
                return Err(CoreError::unavailable(format!(
                    "SNS refused {} of {} records: {} {}",
                    sent.failed.as_deref().map_or(0, <[_]>::len),
                    chunk.len(),
                    failed.code,
                    failed.message.as_deref().unwrap_or("")
                )));
            }
        }
        Ok(())
    }

    /// Refuses targets a subscriber must not point a topic at: Wharf's own queues (its
    /// ingest, delivery and source queues share the prefix), and a platform endpoint that was
    /// not registered for this subscriber (its `CustomUserData` must be the subscriber's id,
    /// as the app that registers the device sets it).
    async fn check_target(&self, sub: &Subscription) -> Result<()> {
        match &sub.channel {
            Channel::Sqs { queue_arn } => {
                let name = queue_arn.rsplit(':').next().unwrap_or_default();
                if name.starts_with(&format!("{}-", self.clients.settings.queue_prefix)) {
                    return Err(CoreError::invalid(
                        "channel.queue_arn",
                        "names one of Wharf's own queues; use a queue of yours",
                    ));
                }
                Ok(())
            }
            Channel::MobilePush { endpoint_arn } => {
                let found = self
                    .clients
                    .sns
                    .get_endpoint_attributes()
                    .endpoint_arn(endpoint_arn)
                    .send()
                    .await;
                let attributes = match found {
                    Ok(found) => found.attributes.unwrap_or_default(),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_not_found_exception()) =>
                    {
                        return Err(CoreError::invalid(
                            "channel.endpoint_arn",
                            "no such platform endpoint",
                        ));
                    }
                    Err(e) => return Err(aws_error("reading a platform endpoint", e)),
                };
                let owner = attributes.get("CustomUserData").map(String::as_str);
                if owner != Some(sub.subscriber_id.as_str()) {
                    return Err(CoreError::invalid(
                        "channel.endpoint_arn",
                        "the endpoint is not registered to you (its CustomUserData must be your user id)",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn set_attribute(&self, subscription_arn: &str, name: &str, value: &str) -> Result<()> {
        self.clients
            .sns
            .set_subscription_attributes()
            .subscription_arn(subscription_arn)
            .attribute_name(name)
            .attribute_value(value)
            .send()
            .await
            .map_err(|e| aws_error(&format!("setting a subscription's {name}"), e))?;
        Ok(())
    }

    async fn pending(&self, subscription_arn: &str) -> Result<bool> {
        let attributes = self
            .clients
            .sns
            .get_subscription_attributes()
            .subscription_arn(subscription_arn)
            .send()
            .await
            .map_err(|e| aws_error("reading a subscription's state", e))?
            .attributes
            .unwrap_or_default();
        Ok(attributes
            .get("PendingConfirmation")
            .is_some_and(|v| v == "true"))
    }
}

/// `records` in runs SNS takes in one call: at most ten, and at most 256 KiB of messages
/// (attributes included, estimated generously). A record too large for a call on its own is
/// sent alone, and SNS refuses it.
fn batches(records: &[TopicMessage]) -> Vec<&[TopicMessage]> {
    const MAX_BYTES: usize = 256 * 1024;
    let size = |r: &TopicMessage| {
        r.body.len() + 512 + r.matched.iter().map(|m| m.len() + 3).sum::<usize>()
    };
    let mut runs = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let mut end = start + 1;
        let mut bytes = size(&records[start]);
        while end < records.len()
            && end - start < PUBLISH_BATCH
            && bytes + size(&records[end]) <= MAX_BYTES
        {
            bytes += size(&records[end]);
            end += 1;
        }
        runs.push(&records[start..end]);
        start = end;
    }
    runs
}

fn tag(key: &str, value: &str) -> Result<aws_sdk_sns::types::Tag> {
    aws_sdk_sns::types::Tag::builder()
        .key(key)
        .value(value)
        .build()
        .map_err(CoreError::internal)
}

fn attribute(kind: &str, value: impl Into<String>) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type(kind)
        .string_value(value)
        .build()
        .map_err(CoreError::internal)
}

fn entry(tenant: &TenantId, feed: &FeedId, r: &TopicMessage) -> Result<PublishBatchRequestEntry> {
    let mut entry = PublishBatchRequestEntry::builder()
        .id(r.position.to_string())
        .message(&r.body)
        .message_attributes("wharf.tenant", attribute("String", tenant.as_str())?)
        .message_attributes("wharf.feed", attribute("String", feed.as_str())?)
        .message_attributes(
            "wharf.position",
            attribute("Number", r.position.to_string())?,
        );
    if !r.matched.is_empty() {
        let ids = serde_json::to_string(&r.matched).map_err(CoreError::internal)?;
        entry = entry.message_attributes(MATCH_ATTRIBUTE, attribute("String.Array", ids)?);
    }
    if r.wake {
        entry = entry.message_attributes(WAKE_ATTRIBUTE, attribute("String", "webhooks")?);
    }
    entry.build().map_err(CoreError::internal)
}

/// The SNS protocol and endpoint of a native channel.
fn endpoint(channel: &Channel) -> Result<(&'static str, &str)> {
    match channel {
        Channel::Sqs { queue_arn } => Ok(("sqs", queue_arn)),
        Channel::Email { address } => Ok(("email", address.as_str())),
        Channel::MobilePush { endpoint_arn } => Ok(("application", endpoint_arn)),
        other => Err(CoreError::internal(format!(
            "`{}` is not delivered by the topic",
            other.kind()
        ))),
    }
}

#[async_trait]
impl Fanout for SnsFanout {
    async fn open_topic(&self, feed: &Feed) -> Result<()> {
        self.topic_arn(&feed.tenant_id, &feed.id).await.map(|_| ())
    }

    async fn close_topic(&self, feed: &Feed) -> Result<()> {
        let topic = self.create_topic(&feed.tenant_id, &feed.id).await?;
        self.clients
            .sns
            .delete_topic()
            .topic_arn(&topic)
            .send()
            .await
            .map_err(|e| aws_error("deleting a feed's topic", e))?;
        self.cache()
            .remove(&(feed.tenant_id.clone(), feed.id.clone()));
        Ok(())
    }

    async fn subscribe(&self, sub: &Subscription) -> Result<NativeLink> {
        self.check_target(sub).await?;
        let topic = self.topic_arn(&sub.tenant_id, &sub.feed_id).await?;
        let (protocol, target) = endpoint(&sub.channel)?;
        let arn = self
            .clients
            .sns
            .subscribe()
            .topic_arn(&topic)
            .protocol(protocol)
            .endpoint(target)
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(|e| aws_error("subscribing to a feed's topic", e))?
            .subscription_arn
            .ok_or_else(|| CoreError::internal("Subscribe answered no ARN"))?;
        // Attributes are set one by one: the same endpoint subscribed again is the same SNS
        // subscription, and a changed filter replaces its policy.
        if protocol == "sqs" {
            self.set_attribute(&arn, "RawMessageDelivery", "true")
                .await?;
        }
        let (scope, policy, by_wharf) = match sub.filter.as_ref().map(filter_policy) {
            None => (
                "MessageAttributes",
                json!({ "wharf.feed": [sub.feed_id.as_str()] }),
                false,
            ),
            Some(Some(policy)) => ("MessageBody", policy, false),
            Some(None) => (
                "MessageAttributes",
                json!({ MATCH_ATTRIBUTE: [sub.id.as_str()] }),
                true,
            ),
        };
        self.set_attribute(&arn, "FilterPolicyScope", scope).await?;
        self.set_attribute(&arn, "FilterPolicy", &policy.to_string())
            .await?;
        let pending = protocol == "email" && self.pending(&arn).await?;
        Ok(NativeLink {
            id: arn,
            pending_confirmation: pending,
            filtered_by_wharf: by_wharf,
        })
    }

    async fn unsubscribe(&self, link: &NativeLink) -> Result<()> {
        let gone = self
            .clients
            .sns
            .unsubscribe()
            .subscription_arn(&link.id)
            .send()
            .await;
        match gone {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(aws_error("removing a topic subscription", e)),
        }
    }

    async fn refresh(&self, link: &NativeLink) -> Result<NativeLink> {
        Ok(NativeLink {
            pending_confirmation: self.pending(&link.id).await?,
            ..link.clone()
        })
    }

    async fn publish(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        messages: &[TopicMessage],
    ) -> Result<()> {
        self.publish_records(tenant, feed, messages).await
    }

    async fn topic_position(&self, tenant: &TenantId, feed: &FeedId) -> Result<Option<u64>> {
        self.store.topic_position(tenant, feed).await
    }

    async fn move_topic_position(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        from: Option<u64>,
        to: u64,
    ) -> Result<bool> {
        self.store.move_topic_position(tenant, feed, from, to).await
    }
}

/// Translates a subscription filter into an SNS `MessageBody` filter policy over the record's
/// `data`, where SNS can express it with the same meaning: the filter is a conjunction of
/// comparisons of a field with literals (read off cel's syntax tree by
/// [`wharf_core::expr::conjunction`]), each field once:
/// - `record.a.b == "x"` → `{"data": {"a": {"b": ["x"]}}}`; `!=` → `anything-but`;
/// - `==`, `!=`, `<`, `<=`, `>`, `>=` with a number → `numeric` (SNS compares numbers within
///   ±1e9, so larger literals are left to Wharf);
/// - `record.a in ["x", "y"]` → `["x", "y"]` (strings) or one `numeric` per number;
/// - `record.a.startsWith("x")` → `prefix`.
///
/// Anything else answers `None`, and Wharf evaluates the filter itself; so does a policy
/// over SNS's limit of five keys.
pub fn filter_policy(filter: &Expr) -> Option<Value> {
    let mut policy = Map::new();
    for condition in conjunction(filter)? {
        insert(
            &mut policy,
            &condition.path,
            sns_condition(&condition.test)?,
        )?;
    }
    (count_keys(&policy) <= 5).then(|| json!({ "data": Value::Object(policy) }))
}

/// One field's condition in SNS's filter-policy grammar.
fn sns_condition(test: &Test) -> Option<Value> {
    let number = |n: f64| (n.abs() <= 1e9).then_some(n);
    let member = |literal: &Literal| match literal {
        Literal::Text(text) => Some(json!(text)),
        Literal::Number(n) => Some(json!({ "numeric": ["=", number(*n)?] })),
    };
    Some(match test {
        Test::Eq(Literal::Text(text)) => json!([text]),
        Test::Ne(Literal::Text(text)) => json!([{ "anything-but": [text] }]),
        Test::Eq(Literal::Number(n)) => json!([{ "numeric": ["=", number(*n)?] }]),
        Test::Ne(Literal::Number(n)) => json!([{ "anything-but": [number(*n)?] }]),
        Test::Order(op, n) => json!([{ "numeric": [op, number(*n)?] }]),
        Test::In(literals) => Value::Array(literals.iter().map(member).collect::<Option<_>>()?),
        Test::Prefix(prefix) => json!([{ "prefix": prefix }]),
    })
}

fn count_keys(map: &Map<String, Value>) -> usize {
    map.values()
        .map(|v| match v {
            Value::Object(inner) => count_keys(inner),
            _ => 1,
        })
        .sum()
}

/// Puts `condition` at `path`; `None` when the path is already used (a field twice, or a
/// field and one of its parents).
fn insert(map: &mut Map<String, Value>, path: &[String], condition: Value) -> Option<()> {
    let (last, parents) = path.split_last()?;
    let mut at = map;
    for part in parents {
        let next = at
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        at = next.as_object_mut()?;
    }
    if at.contains_key(last) {
        return None;
    }
    at.insert(last.clone(), condition);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(filter: &str) -> Option<Value> {
        filter_policy(&Expr::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}")))
    }

    #[test]
    fn simple_conjunctions_become_body_policies() {
        assert_eq!(
            policy(r#"record.sym == "AAPL" && record.px > 100.5"#),
            Some(json!({"data": {"sym": ["AAPL"], "px": [{"numeric": [">", 100.5]}]}}))
        );
        assert_eq!(
            policy("record.venue.code in ['X', 'Y'] && record.n != 3"),
            Some(json!({"data": {"venue": {"code": ["X", "Y"]}, "n": [{"anything-but": [3.0]}]}}))
        );
        assert_eq!(
            policy(r#"record.sym.startsWith("AA")"#),
            Some(json!({"data": {"sym": [{"prefix": "AA"}]}}))
        );
    }

    #[test]
    fn publish_calls_hold_ten_records_and_256_kib_at_most() {
        let record = |n: usize| TopicMessage {
            position: n as u64,
            body: "x".repeat(if n == 3 { 255 * 1024 } else { 10 }),
            matched: vec![],
            wake: false,
        };
        let records: Vec<TopicMessage> = (0..25).map(record).collect();
        let sizes: Vec<usize> = batches(&records).iter().map(|b| b.len()).collect();
        // The 255 KiB record fills a call on its own.
        assert_eq!(sizes, vec![3, 1, 10, 10, 1]);
        assert!(batches(&records).iter().all(|b| b.len() <= PUBLISH_BATCH));
    }

    #[test]
    fn what_sns_cannot_express_is_left_to_wharf() {
        for filter in [
            r#"record.sym == "A" || record.sym == "B""#,
            "record.px > 1.0 && record.px < 5.0",
            "record.flag == true",
            "size(record.sym) > 2",
            "!(record.px > 1.0)",
            "record.px * 2.0 > 10.0",
            "record.a == record.b",
            "record.px > 10000000000.0",
            r#"record.sym == "a\"b""#,
            "record.px > 1u",
            "record.a == 1 && record.b == 2 && record.c == 3 && record.d == 4 && record.e == 5 && record.f == 6",
        ] {
            assert_eq!(policy(filter), None, "{filter}");
        }
    }
}
