//! Backfill: history a subscriber buys when subscribing, and what each acknowledgement counts.

use crate::Timestamp;
use crate::error::Problems;
use serde::{Deserialize, Serialize};

/// History asked for with a new subscription: the records the feed output since `from`, or
/// its newest `records` (either, not both), those the subscription's filter admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"records": 500})))]
pub struct Backfill {
    /// Every record output at or after this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub from: Option<Timestamp>,
    /// The newest this many records (1 to the `records_per_backfill` quota).
    pub records: Option<u32>,
}

impl Backfill {
    /// Checks that exactly one of `from` and `records` is given and within bounds.
    pub fn validate(&self, now: Timestamp, most: u32, p: &mut Problems) {
        match (self.from, self.records) {
            (Some(_), Some(_)) | (None, None) => {
                p.add("backfill", "give either `from` or `records`, not both")
            }
            (Some(from), None) if from > now => p.add("backfill.from", "must not be in the future"),
            (None, Some(n)) if n == 0 || n > most => {
                p.add("backfill.records", format!("must be between 1 and {most}"))
            }
            _ => {}
        }
    }
}

/// The history a subscription was granted when it was created: the feed's output positions
/// after `after` up to `through` (its newest output then). Those its filter admits are
/// delivered first on its channel and counted as backfill, not as the month's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BackfillGrant {
    /// The position the subscription started after.
    pub after: u64,
    /// The feed's newest position when it subscribed: records after it are not backfill.
    pub through: u64,
    /// Records granted (admitted by the filter when the subscription was created).
    pub records: u64,
    /// When the oldest granted record was output (the earliest instant a replay may ask
    /// for).
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub since: Option<Timestamp>,
}

impl BackfillGrant {
    /// Whether the record at `position` is backfill.
    pub fn covers(&self, position: u64) -> bool {
        self.after < position && position <= self.through
    }
}

/// Records acknowledged in one write, by how they are billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// Deliveries of the month, rated through the plan.
    pub usage: u64,
    /// Backfill deliveries, rated on their own line.
    pub backfill: u64,
}

impl Counted {
    /// Only deliveries of the month.
    pub fn usage(n: u64) -> Self {
        Counted {
            usage: n,
            backfill: 0,
        }
    }

    /// Whether nothing is counted.
    pub fn is_zero(&self) -> bool {
        self.usage == 0 && self.backfill == 0
    }
}

impl std::ops::AddAssign for Counted {
    fn add_assign(&mut self, other: Counted) {
        self.usage += other.usage;
        self.backfill += other.backfill;
    }
}
