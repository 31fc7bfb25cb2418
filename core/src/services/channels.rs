//! The channels subscribers read or get records on, and what counts them: replay, the pull
//! channel, the live channel, and [`Services::acknowledge`], the one write every delivery
//! path meters through (webhooks and email, topics, sockets, pulls).

use super::Services;
use crate::domain::*;
use crate::pipeline::SubscriptionFilter;
use crate::{CoreError, DeliveryId, SubscriptionId, Timestamp};
use serde::{Deserialize, Serialize};

/// Most records the pull channel returns at once.
pub const MAX_PULL: usize = 1000;

/// One record of the pull channel, with the cursor to continue after it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PulledRecord {
    /// Pass as `after` to continue after this record.
    pub cursor: String,
    /// The record.
    pub record: OutputRecord,
}

/// A page of the pull channel.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PulledPage {
    /// Records in feed order.
    pub items: Vec<PulledRecord>,
    /// Pass as `after` for the next page (the position reached, even when items is empty).
    pub next_cursor: String,
}

/// The answer of a replay request.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplayAccepted {
    /// Records queued for delivery again (not billed again).
    pub records: usize,
}

/// The body of `POST /v1/subscriptions/{id}/replay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplayRange {
    /// Start (inclusive) of the event-time range.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub from: Timestamp,
    /// End (exclusive).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub to: Timestamp,
}

impl Services {
    /// Moves `sub`'s position from `from` to `to`, adds `acknowledged` records to its usage
    /// (and backfill) counters for the hour of now, and stores `parked` deliveries, in one atomic write: the one way
    /// a delivery is counted, on every channel. `false` when another worker moved the
    /// position first; then nothing changed, and what that worker sent is what counts.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %sub.tenant_id, subscription.id = %sub.id))]
    pub async fn acknowledge(
        &self,
        sub: &Subscription,
        from: u64,
        to: u64,
        acknowledged: Counted,
        parked: &[PendingDelivery],
    ) -> Result<bool, CoreError> {
        let now = self.clock.now();
        match self
            .store
            .advance(&sub.tenant_id, &sub.id, from, to, acknowledged, now, parked)
            .await
        {
            Ok(()) => Ok(true),
            Err(CoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Queues the records of an event-time range for delivery again, without billing them
    /// again: only records the subscription is entitled to (output while it was active, or
    /// its backfill) and was already sent (at or before its position); a range starting
    /// before the subscription (or its backfill) did is refused, naming that instant. At most `replays_per_hour` replays
    /// per subscription in any hour (429) and `records_per_replay` records in one (409, and
    /// nothing is queued).
    #[tracing::instrument(level = "debug", skip_all, fields(subscription.id = %id))]
    pub async fn replay(
        &self,
        who: &Principal,
        id: &SubscriptionId,
        range: ReplayRange,
    ) -> Result<ReplayAccepted, CoreError> {
        if range.to <= range.from {
            return Err(CoreError::invalid("to", "must be after from"));
        }
        let mut sub = self.own_subscription(who, id).await?;
        self.can_replay(&sub)?;
        let earliest = sub
            .backfill
            .and_then(|grant| grant.since)
            .map_or(sub.created_at, |since| since.min(sub.created_at));
        if range.from < earliest {
            let start = crate::rfc3339(earliest);
            return Err(CoreError::invalid(
                "from",
                format!(
                    "must be at or after {start}, where the subscription's records (with its backfill) start"
                ),
            ));
        }
        let now = self.clock.now();
        let quotas = self.settings.limits.quotas;
        sub.recent_replays
            .retain(|t| *t + std::time::Duration::from_secs(3600) > now);
        if sub.recent_replays.len() >= quotas.replays_per_hour as usize {
            let oldest = sub.recent_replays.iter().min().copied().unwrap_or(now);
            let wait = (oldest + std::time::Duration::from_secs(3600) - now).unsigned_abs();
            return Err(CoreError::TooManyRequests {
                message: format!(
                    "over the quota `replays_per_hour` of {}",
                    quotas.replays_per_hour
                ),
                retry_after: wait,
            });
        }
        let deliveries = self.replayed(&sub, &range, now).await?;
        sub.recent_replays.push(now);
        sub.revision += 1;
        sub.updated_at = now;
        self.store.update_subscription(&sub, None).await?;
        for chunk in deliveries.chunks(500) {
            self.store.park(chunk).await?;
        }
        self.notifier.outputs_appended();
        Ok(ReplayAccepted {
            records: deliveries.len(),
        })
    }

    /// Refuses replays of channels that do not replay.
    fn can_replay(&self, sub: &Subscription) -> Result<(), CoreError> {
        if sub.status == SubscriptionStatus::Cancelled {
            return Err(CoreError::Conflict("the subscription is cancelled".into()));
        }
        match &sub.channel {
            Channel::Pull {} => Err(CoreError::Conflict(
                "a pull subscription replays by fetching with an earlier cursor".into(),
            )),
            Channel::Websocket {} => Err(CoreError::Conflict(
                "a websocket subscription replays by connecting with an earlier `after` cursor"
                    .into(),
            )),
            channel if self.is_native(channel) => Err(CoreError::Conflict(format!(
                "`{}` records are sent by the feed's topic, which does not replay",
                channel.kind()
            ))),
            _ => Ok(()),
        }
    }

    /// The deliveries of a replay of `range`: every record its filter admits, refused whole
    /// when there are more than `records_per_replay`.
    async fn replayed(
        &self,
        sub: &Subscription,
        range: &ReplayRange,
        now: Timestamp,
    ) -> Result<Vec<PendingDelivery>, CoreError> {
        let most = self.settings.limits.quotas.records_per_replay;
        let sent = self
            .store
            .delivery_position(&sub.tenant_id, &sub.id)
            .await?;
        let nonce = crate::RecordId::new();
        let mut after = 0;
        let mut deliveries = Vec::new();
        loop {
            let chunk = self
                .store
                .output_between(
                    &sub.tenant_id,
                    &sub.feed_id,
                    range.from,
                    range.to,
                    after,
                    500,
                )
                .await?;
            let Some((last, _)) = chunk.last() else {
                return Ok(deliveries);
            };
            after = *last;
            let entitled = chunk
                .into_iter()
                .filter(|(position, r)| *position <= sent && sub.entitled(*position, r.created_at))
                .collect();
            for (position, r) in self.admitted(sub, entitled).await? {
                if deliveries.len() >= most as usize {
                    return Err(CoreError::quota("records_per_replay", most));
                }
                deliveries.push(PendingDelivery {
                    id: DeliveryId::from_uuid(crate::id::derive(&[
                        "replay",
                        nonce.as_str(),
                        sub.id.as_str(),
                        r.id.as_str(),
                    ])),
                    tenant_id: sub.tenant_id.clone(),
                    subscription_id: sub.id.clone(),
                    record_ids: vec![r.id],
                    positions: vec![position],
                    attempts: 0,
                    next_attempt_at: now,
                    first_failed_at: now,
                    replay: true,
                    backfill: false,
                });
            }
        }
    }

    /// The pull channel: records after `after` (or after what was last fetched), counted as
    /// delivered the first time they are fetched.
    #[tracing::instrument(level = "debug", skip_all, fields(subscription.id = %id))]
    pub async fn pull(
        &self,
        who: &Principal,
        id: &SubscriptionId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PulledPage, CoreError> {
        let sub = self.own_subscription(who, id).await?;
        if !matches!(sub.channel, Channel::Pull {}) {
            return Err(CoreError::Conflict(
                "only pull subscriptions are read with this endpoint".into(),
            ));
        }
        let limit = limit.clamp(1, MAX_PULL);
        let after = self.cursor_or_position(&sub, after).await?;
        if sub.status != SubscriptionStatus::Active {
            return Ok(PulledPage {
                items: vec![],
                next_cursor: after.to_string(),
            });
        }
        let (items, reached) = self.read_after(&sub, after, limit).await?;
        self.count_pulled(&sub, &items, reached).await?;
        Ok(PulledPage {
            items: items
                .into_iter()
                .map(|(p, record)| PulledRecord {
                    cursor: p.to_string(),
                    record,
                })
                .collect(),
            next_cursor: reached.to_string(),
        })
    }

    /// A subscription's records after `after` that it may see (its filter, and only what was
    /// output while it was active or granted as backfill), with the position reached;
    /// nothing is counted.
    async fn read_after(
        &self,
        sub: &Subscription,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, OutputRecord)>, u64), CoreError> {
        let rows = self
            .store
            .output_after(&sub.tenant_id, &sub.feed_id, after, limit)
            .await?;
        let reached = rows.last().map(|(p, _)| *p).unwrap_or(after);
        let items = rows
            .into_iter()
            .filter(|(p, r)| sub.entitled(*p, r.created_at))
            .collect();
        Ok((self.admitted(sub, items).await?, reached))
    }

    /// The records of `rows` that `sub`'s filter admits, evaluated off the request threads
    /// in the subscriber's lane and within the subscription filters' budget.
    pub async fn admitted(
        &self,
        sub: &Subscription,
        rows: Vec<(u64, OutputRecord)>,
    ) -> Result<Vec<(u64, OutputRecord)>, CoreError> {
        let (rows, marks) = self.filter_marks(sub, rows).await?;
        Ok(rows
            .into_iter()
            .zip(marks)
            .filter_map(|(row, admitted)| admitted.then_some(row))
            .collect())
    }

    /// `rows` back, with whether `sub`'s filter admits each (see [`Services::admitted`]).
    pub async fn filter_marks(
        &self,
        sub: &Subscription,
        rows: Vec<(u64, OutputRecord)>,
    ) -> Result<(Vec<(u64, OutputRecord)>, Vec<bool>), CoreError> {
        let budget = self.settings.limits.budgets.subscription_filter;
        let Some(filter) = SubscriptionFilter::of(sub, budget) else {
            let marks = vec![true; rows.len()];
            return Ok((rows, marks));
        };
        let lane = crate::ports::subscriber_lane(&sub.subscriber_id);
        crate::ports::off_runtime(self.compute.as_ref(), &lane, move || {
            let marks = rows.iter().map(|(_, r)| filter.matches(&r.data)).collect();
            (rows, marks)
        })
        .await
    }

    /// Opens the live channel of the caller's websocket subscription; returns it with the
    /// position to start after (`after`, or what was last pushed).
    #[tracing::instrument(level = "debug", skip_all, fields(subscription.id = %id))]
    pub async fn live_open(
        &self,
        who: &Principal,
        id: &SubscriptionId,
        after: Option<&str>,
    ) -> Result<(Subscription, u64), CoreError> {
        let sub = self.own_subscription(who, id).await?;
        if !matches!(sub.channel, Channel::Websocket {}) {
            return Err(CoreError::Conflict(
                "only websocket subscriptions have a live channel".into(),
            ));
        }
        if sub.status == SubscriptionStatus::Cancelled {
            return Err(CoreError::Conflict("the subscription is cancelled".into()));
        }
        let after = self.cursor_or_position(&sub, after).await?;
        Ok((sub, after))
    }

    /// Checks a token a live socket presents again (`{"type": "token", "token": …}`): it
    /// must verify and belong to whoever may read `sub`. Answers when it expires.
    pub async fn live_token(
        &self,
        sub: &Subscription,
        token: &str,
    ) -> Result<Option<Timestamp>, CoreError> {
        let who = self.authenticate(token).await?;
        self.own_subscription(&who, &sub.id).await?;
        Ok(crate::credentials::verified_token_expiry(token))
    }

    /// The next records for a live socket (none while the subscription is not active).
    pub async fn live_read(
        &self,
        sub: &Subscription,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, OutputRecord)>, u64), CoreError> {
        let current = self.store.get_subscription(&sub.tenant_id, &sub.id).await?;
        match current.status {
            SubscriptionStatus::Active => {
                self.read_after(&current, after, limit.clamp(1, MAX_PULL))
                    .await
            }
            SubscriptionStatus::Paused => Ok((vec![], after)),
            SubscriptionStatus::Cancelled => {
                Err(CoreError::Conflict("the subscription is cancelled".into()))
            }
        }
    }

    /// The position a reader resumes after: its cursor, or where the subscription's
    /// deliveries stand.
    async fn cursor_or_position(
        &self,
        sub: &Subscription,
        cursor: Option<&str>,
    ) -> Result<u64, CoreError> {
        let Some(cursor) = cursor else {
            return self.store.delivery_position(&sub.tenant_id, &sub.id).await;
        };
        let position = cursor
            .parse::<u64>()
            .map_err(|_| CoreError::invalid("after", "is not a cursor from this API"))?;
        // A cursor past the feed's newest record was never given out; taken as read it would
        // mark records not yet written as fetched.
        let head = self.store.output_head(&sub.tenant_id, &sub.feed_id).await?;
        if position > head {
            return Err(CoreError::invalid(
                "after",
                format!("is beyond the feed's newest record (cursor {head})"),
            ));
        }
        Ok(position)
    }

    /// Counts records pushed to a live socket, once each, after they were sent.
    pub async fn live_acknowledge(
        &self,
        sub: &Subscription,
        sent: &[(u64, OutputRecord)],
        reached: u64,
    ) -> Result<(), CoreError> {
        self.count_pulled(sub, sent, reached).await
    }

    /// Counts fetched records beyond the furthest point fetched before, exactly once.
    async fn count_pulled(
        &self,
        sub: &Subscription,
        items: &[(u64, OutputRecord)],
        reached: u64,
    ) -> Result<(), CoreError> {
        for _ in 0..5 {
            let hwm = self
                .store
                .delivery_position(&sub.tenant_id, &sub.id)
                .await?;
            if reached <= hwm {
                return Ok(());
            }
            let fresh = sub.counted(items.iter().map(|(p, _)| *p).filter(|p| *p > hwm));
            if self.acknowledge(sub, hwm, reached, fresh, &[]).await? {
                return Ok(());
            }
        }
        Err(CoreError::unavailable(
            "the pull position kept changing; retry",
        ))
    }
}
