//! Subscriptions and times the delivery tests share.

use wharf_core::domain::{
    Batch, Channel, StatusChange, Subscription, SubscriptionStatus, WebhookUrl,
};
use wharf_core::expr::Expr;
use wharf_core::{FeedId, SubscriptionId, Timestamp, UserId, VendorId};

/// Epoch milliseconds after a fixed instant.
pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_timestamp_nanos(1_767_225_600_000_000_000 + i128::from(ms) * 1_000_000)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// An active webhook subscription with an optional filter and batching
/// (`max_records`, `max_wait_ms`).
pub fn sub(filter: Option<&str>, batch: Option<(u32, u32)>) -> Subscription {
    Subscription {
        id: SubscriptionId::new(),
        tenant_id: VendorId::new(),
        subscriber_id: UserId::new(),
        feed_id: FeedId::new(),
        plan_id: "pro".into(),
        plan_version: 1,
        plan_moves: vec![],
        channel: Channel::Webhook {
            url: WebhookUrl::parse("https://hooks.example.com/x").unwrap_or_else(|e| panic!("{e}")),
        },
        filter: filter.map(|f| Expr::parse(f).unwrap_or_else(|e| panic!("{e}"))),
        batch: batch.map(|(max_records, max_wait_ms)| Batch {
            max_records,
            max_wait_ms,
        }),
        status: SubscriptionStatus::Active,
        history: vec![StatusChange {
            status: SubscriptionStatus::Active,
            at: at(0),
        }],
        disabled_reason: None,
        paused_for_invoice: None,
        failing_since: None,
        recent_replays: vec![],
        backfill: None,
        email_confirmed_at: None,
        native: None,
        revision: 1,
        created_at: at(0),
        updated_at: at(0),
    }
}

/// Whether `sub`'s filter admits each of `rows`, evaluated here.
pub fn marks(sub: &Subscription, rows: &[(u64, wharf_core::domain::OutputRecord)]) -> Vec<bool> {
    let filter = wharf_core::pipeline::SubscriptionFilter::of(sub, 10_000);
    rows.iter()
        .map(|(_, r)| wharf_core::pipeline::SubscriptionFilter::admits(filter.as_ref(), &r.data))
        .collect()
}
