//! Deliveries: what waits for a retry, what the delivery log keeps, usage counts, and what an
//! endpoint answered.

use crate::{SubscriptionId, TenantId, Timestamp, UserId};

/// A delivery that failed and waits for its next attempt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PendingDelivery {
    /// Derived from the records and the subscription; stable across retries.
    pub id: crate::DeliveryId,
    /// The selling tenant.
    pub tenant_id: TenantId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// The records, in order.
    pub record_ids: Vec<crate::RecordId>,
    /// Their positions in the feed, in the same order: what a retry reads them by.
    #[serde(default)]
    pub positions: Vec<u64>,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due.
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: Timestamp,
    /// When the first attempt failed.
    #[serde(with = "time::serde::rfc3339")]
    pub first_failed_at: Timestamp,
    /// A replay: delivered again without being counted again.
    pub replay: bool,
    /// Backfill: counted as backfill when acknowledged (a delivery holds only backfill or
    /// only the month's records).
    #[serde(default)]
    pub backfill: bool,
}

impl PendingDelivery {
    /// How `acknowledged` of its records count when it is acknowledged: not at all for a
    /// replay, as backfill for backfill, as the month's deliveries otherwise.
    pub fn counted(&self, acknowledged: u64) -> super::Counted {
        match (self.replay, self.backfill) {
            (true, _) => super::Counted::default(),
            (false, false) => super::Counted::usage(acknowledged),
            (false, true) => super::Counted {
                usage: 0,
                backfill: acknowledged,
            },
        }
    }
}

/// What came of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AttemptStatus {
    /// The endpoint acknowledged it.
    Delivered,
    /// It failed and will be tried again.
    Failed,
    /// It failed for the last time; no more attempts.
    GaveUp,
    /// The endpoint answered 410 Gone and the subscription was paused.
    Disabled,
}

impl AttemptStatus {
    /// Every status, by name.
    pub const ALL: [AttemptStatus; 4] = [
        AttemptStatus::Delivered,
        AttemptStatus::Failed,
        AttemptStatus::GaveUp,
        AttemptStatus::Disabled,
    ];

    /// The status's name, as the API and the stores write it.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Delivered => "delivered",
            AttemptStatus::Failed => "failed",
            AttemptStatus::GaveUp => "gave_up",
            AttemptStatus::Disabled => "disabled",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<AttemptStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// One attempt to deliver, for the delivery log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryAttempt {
    /// The delivery (the `webhook-id` header).
    pub delivery_id: crate::DeliveryId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Records in the delivery.
    pub records: u32,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What came of it.
    pub status: AttemptStatus,
    /// The HTTP status the endpoint answered, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// When the next attempt is due, after a failure.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub next_attempt_at: Option<Timestamp>,
    /// When the attempt was made.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
}

/// Acknowledged deliveries of one subscription in one hour.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageRow {
    /// The selling tenant.
    pub tenant_id: TenantId,
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// The subscriber.
    pub subscriber_id: UserId,
    /// Start of the hour (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub hour: Timestamp,
    /// Acknowledged deliveries (records) in that hour.
    pub count: u64,
    /// Acknowledged backfill deliveries in that hour.
    #[serde(default)]
    pub backfill: u64,
}

/// Which usage rows to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Only this tenant's subscriptions.
    pub tenant: Option<TenantId>,
    /// Only this subscriber's subscriptions.
    pub subscriber: Option<UserId>,
    /// Only this subscription.
    pub subscription: Option<SubscriptionId>,
}

/// What an endpoint answered to a webhook POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The endpoint answered with this status (and `Retry-After`, in seconds, if given).
    Answered {
        /// HTTP status.
        status: u16,
        /// `Retry-After` in seconds.
        retry_after: Option<u64>,
    },
    /// No answer: connection refused, timeout, refused address, …
    Failed(String),
}
