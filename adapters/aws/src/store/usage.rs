//! Usage counters: one item per subscription and UTC hour, grown by `ADD` in the same
//! transaction as the position move that acknowledges the records (see `deliveries`).

use aws_sdk_dynamodb::types::{AttributeValue, Update};
use wharf_core::domain::Counted;
use wharf_core::ports::Result;
use wharf_core::{CoreError, SubscriptionId, TenantId, Timestamp};

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

/// The update that adds `counted` to a subscription's usage counters for the UTC hour of `at`,
/// creating it with what usage rows show (and its place in the month's index) if needed.
pub(crate) fn counter_update(
    table: &str,
    tenant: &TenantId,
    subscription: &SubscriptionId,
    subscriber: &str,
    at: Timestamp,
    counted: Counted,
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
            "ADD #count :n, backfill :b SET tenant_id = :tenant, subscriber_id = :subscriber, \
             subscription_id = :subscription, #kind = :kind, gsi1pk = :month, gsi1sk = :order",
        )
        .expression_attribute_names("#count", "count")
        .expression_attribute_names("#kind", "kind")
        .expression_attribute_values(":n", n(counted.usage))
        .expression_attribute_values(":b", n(counted.backfill))
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
