//! What one tenant may use of what all tenants share: evaluation budgets per kind of
//! expression and quotas per tenant, subscriber and subscription. The defaults leave room for
//! any real vendor and stop a flood; every value is configurable (`[limits]`).

use serde::{Deserialize, Serialize};

/// Evaluation steps (see [`crate::expr`]) one expression may take on one record (or one
/// window group), by the kind of rule it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budgets {
    /// A `filter` rule's expression.
    pub filter: u64,
    /// Each field of a `map` rule.
    pub map: u64,
    /// An `enrich` rule's key.
    pub enrich: u64,
    /// A `window` rule's `group_by`, aggregates and `having`.
    pub window: u64,
    /// A subscription's filter (run for every record the subscription is offered).
    pub subscription_filter: u64,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            filter: 100_000,
            map: 100_000,
            enrich: 10_000,
            window: 100_000,
            subscription_filter: 10_000,
        }
    }
}

/// Most objects of a kind a tenant, subscriber or subscription may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    /// Sources per vendor.
    pub sources_per_tenant: u32,
    /// Feeds per vendor (any status but archived).
    pub feeds_per_tenant: u32,
    /// Published feeds reading one source: each multiplies the source's records.
    pub published_feeds_per_source: u32,
    /// Subscriptions (not cancelled) per subscriber.
    pub subscriptions_per_subscriber: u32,
    /// Open WebSocket connections per subscription.
    pub sockets_per_subscription: u32,
    /// Replays per subscription in any hour.
    pub replays_per_hour: u32,
    /// Records one replay may cover.
    pub records_per_replay: u32,
    /// Records a new subscription's backfill may ask for.
    pub records_per_backfill: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            sources_per_tenant: 1_000,
            feeds_per_tenant: 1_000,
            published_feeds_per_source: 100,
            subscriptions_per_subscriber: 200,
            sockets_per_subscription: 10,
            replays_per_hour: 20,
            records_per_replay: 10_000,
            records_per_backfill: 10_000,
        }
    }
}

/// Budgets, quotas and throttles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Evaluation budgets.
    pub budgets: Budgets,
    /// Quotas.
    pub quotas: Quotas,
    /// Throttles of logins, sign-ups and refreshes.
    pub throttle: crate::throttle::Throttles,
}
