//! Exactly-once metering on DynamoDB: an acknowledged delivery writes its delivered mark
//! (only if absent) and adds to its subscription's hourly usage counter in one
//! `TransactWriteItems`, so a delivery acknowledged twice, or by two workers at once, counts
//! once. Item keys follow the key design in this crate's README.

use crate::bootstrap::TTL_ATTRIBUTE;
use crate::{Clients, aws_error};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use wharf_core::ports::Result;
use wharf_core::{CoreError, DeliveryId, SubscriptionId, TenantId, Timestamp, UserId};

/// How long a delivered mark is kept: longer than any retry schedule, so a late duplicate
/// acknowledgement still finds it.
pub const MARK_TTL_DAYS: i64 = 35;

/// One acknowledged delivery to count.
#[derive(Debug, Clone)]
pub struct Acknowledged {
    pub tenant: TenantId,
    pub subscription: SubscriptionId,
    pub subscriber: UserId,
    pub delivery: DeliveryId,
    /// When it was acknowledged; counted in that UTC hour.
    pub at: Timestamp,
    /// Records it carried.
    pub records: u64,
}

/// The start of the UTC hour of `at`, in epoch seconds: the usage counter's sort key.
pub(crate) fn hour_start(at: Timestamp) -> i64 {
    at.unix_timestamp().div_euclid(3600) * 3600
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Counts `ack` unless its delivery was counted before; `true` when this call counted it.
/// Two workers racing on one delivery may see DynamoDB cancel one transaction as a
/// conflict: that is `Unavailable`, and the retry then finds the mark and answers `false`.
pub async fn count_once(clients: &Clients, ack: &Acknowledged) -> Result<bool> {
    let table = &clients.settings.table;
    let hour = hour_start(ack.at);
    let mark = Put::builder()
        .table_name(table)
        .item(
            "pk",
            s(format!("T#{}#ACK#{}", ack.tenant, ack.subscription)),
        )
        .item("sk", s(ack.delivery.to_string()))
        .item("records", n(ack.records))
        .item(TTL_ATTRIBUTE, n(hour + MARK_TTL_DAYS * 86_400))
        .condition_expression("attribute_not_exists(pk)")
        .build()
        .map_err(CoreError::internal)?;
    let counter = counter_update(
        table,
        &ack.tenant,
        &ack.subscription,
        ack.subscriber.as_str(),
        ack.at,
        ack.records,
    )?;
    let sent = clients
        .dynamodb
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().put(mark).build())
        .transact_items(TransactWriteItem::builder().update(counter).build())
        .send()
        .await;
    match sent {
        Ok(_) => Ok(true),
        Err(e) => {
            use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
            // The mark's condition is the transaction's first item.
            let already = matches!(
                e.as_service_error(),
                Some(TransactWriteItemsError::TransactionCanceledException(t))
                    if t.cancellation_reasons().first().and_then(|r| r.code())
                        == Some("ConditionalCheckFailed")
            );
            if already {
                Ok(false)
            } else {
                Err(aws_error("counting a delivery", e))
            }
        }
    }
}

/// The update that adds `count` to a subscription's usage counter for the UTC hour of `at`,
/// creating it with what usage rows show (and its place in the month's index) if needed.
pub(crate) fn counter_update(
    table: &str,
    tenant: &TenantId,
    subscription: &SubscriptionId,
    subscriber: &str,
    at: Timestamp,
    count: u64,
) -> Result<Update> {
    let hour = hour_start(at);
    let month = at
        .format(&time::macros::format_description!("[year]-[month]"))
        .map_err(CoreError::internal)?;
    Update::builder()
        .table_name(table)
        .key("pk", s(usage_pk(tenant, subscription)))
        .key("sk", s(hour_key(hour)))
        .update_expression(
            "ADD #count :n SET tenant_id = :tenant, subscriber_id = :subscriber, \
             subscription_id = :subscription, #kind = :kind, gsi1pk = :month, gsi1sk = :order",
        )
        .expression_attribute_names("#count", "count")
        .expression_attribute_names("#kind", "kind")
        .expression_attribute_values(":n", n(count))
        .expression_attribute_values(":tenant", s(tenant.to_string()))
        .expression_attribute_values(":subscriber", s(subscriber))
        .expression_attribute_values(":subscription", s(subscription.to_string()))
        .expression_attribute_values(":kind", s("usage"))
        .expression_attribute_values(":month", s(format!("USAGE#{month}")))
        .expression_attribute_values(":order", s(format!("{subscription}#{}", hour_key(hour))))
        .build()
        .map_err(CoreError::internal)
}

/// The partition of a subscription's usage counters.
pub(crate) fn usage_pk(tenant: &TenantId, subscription: &SubscriptionId) -> String {
    format!("T#{tenant}#USE#{subscription}")
}

/// A usage counter's sort key: the hour's start in epoch seconds, fixed width.
pub(crate) fn hour_key(hour: i64) -> String {
    format!("{hour:012}")
}

/// The usage counted for a subscription in the hour containing `at`.
pub async fn hourly_count(
    clients: &Clients,
    tenant: &TenantId,
    subscription: &SubscriptionId,
    at: Timestamp,
) -> Result<u64> {
    let hour = hour_start(at);
    let item = clients
        .dynamodb
        .get_item()
        .table_name(&clients.settings.table)
        .key("pk", s(usage_pk(tenant, subscription)))
        .key("sk", s(hour_key(hour)))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| aws_error("reading usage", e))?
        .item;
    let Some(item) = item else { return Ok(0) };
    item.get("count")
        .and_then(|c| c.as_n().ok())
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| CoreError::internal("a usage counter without a count"))
}
