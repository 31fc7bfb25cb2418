//! Ingest, pipeline errors, usage, the delivery log, replays and the pull channel.

use super::Services;
use crate::domain::*;
use crate::domain::{DeliveryAttempt, PendingDelivery, UsageFilter};
use crate::{
    CoreError, DeliveryId, FeedId, Page, PageRequest, SourceId, SubscriptionId, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A message on a source's own queue: its id (the same at every delivery) and when it was
/// sent, when the queue says.
#[derive(Debug, Clone, Copy)]
pub struct QueuedMessage<'a> {
    pub id: &'a str,
    pub sent_at: Option<Timestamp>,
}

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

/// Time grain of usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Granularity {
    /// One point per hour.
    #[default]
    Hour,
    /// One point per UTC day.
    Day,
}

/// Acknowledged deliveries of one subscription in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsagePoint {
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Start of the hour or day.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub period_start: Timestamp,
    /// Acknowledged deliveries (records).
    pub deliveries: u64,
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

const MAX_REPLAY: usize = 100_000;

impl Services {
    /// Stores records pushed to a source: rejected ones by index, duplicates counted, the
    /// rest durable when this returns.
    pub async fn ingest(
        &self,
        who: &Principal,
        source_id: &SourceId,
        records: Vec<IngestRecord>,
    ) -> Result<IngestResult, CoreError> {
        let tenant = match who {
            Principal::ApiKey { tenant, scopes, .. } if scopes.contains(&ApiKeyScope::Ingest) => {
                tenant
            }
            Principal::ApiKey { .. } => {
                return Err(CoreError::Forbidden(
                    "the API key lacks the ingest scope".into(),
                ));
            }
            user => user.tenant_with(Role::VendorAdmin)?,
        };
        let source = self.store.get_source(tenant, source_id).await?;
        self.ingest_into(&source, records).await
    }

    /// Stores records into `source` (already authorized: a push by its tenant, or its poller);
    /// in the aws shape they are queued and stored by the ingest handler.
    pub async fn ingest_into(
        &self,
        source: &Source,
        records: Vec<IngestRecord>,
    ) -> Result<IngestResult, CoreError> {
        self.ingest_checked(source, records, self.ingest_queue.as_deref(), None)
            .await
    }

    /// Stores records that arrived on `source`'s own queue (an `sqs` source), at once: they
    /// already passed through a queue. Their arrival time is the message's, and a record
    /// without the vendor's id gets an id derived from the message and its place in it, so a
    /// message delivered again makes the very records of its first delivery.
    pub async fn ingest_from_source_queue(
        &self,
        source: &Source,
        records: Vec<IngestRecord>,
        message: &QueuedMessage<'_>,
    ) -> Result<IngestResult, CoreError> {
        self.ingest_checked(source, records, None, Some(message))
            .await
    }

    /// Checks records and stores them, or queues them on `queue`.
    async fn ingest_checked(
        &self,
        source: &Source,
        records: Vec<IngestRecord>,
        queue: Option<&dyn crate::ports::IngestQueue>,
        message: Option<&QueuedMessage<'_>>,
    ) -> Result<IngestResult, CoreError> {
        let (tenant, source_id) = (&source.tenant_id, &source.id);
        if records.len() > MAX_RECORDS_PER_REQUEST {
            return Err(CoreError::invalid(
                "records",
                format!("at most {MAX_RECORDS_PER_REQUEST} records per request"),
            ));
        }
        let validator = match &source.schema {
            Some(schema) => Some(
                jsonschema::validator_for(schema)
                    .map_err(|e| CoreError::internal(format!("stored schema: {e}")))?,
            ),
            None => None,
        };
        let now = message
            .and_then(|m| m.sent_at)
            .unwrap_or_else(|| self.clock.now());
        let expires_at = now + time::Duration::days(i64::from(source.retention_days));
        let mut rejected = Vec::new();
        let mut seen = HashSet::new();
        let mut in_request_duplicates = 0;
        let mut raw = Vec::with_capacity(records.len());
        for (index, r) in records.into_iter().enumerate() {
            if let Some(id) = &r.id
                && (id.is_empty() || id.len() > MAX_EXTERNAL_ID_LEN)
            {
                rejected.push(Rejected {
                    index,
                    error: format!("id must be 1 to {MAX_EXTERNAL_ID_LEN} characters"),
                });
                continue;
            }
            if let Some(v) = &validator
                && let Some(e) = v.iter_errors(&r.data).next()
            {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() {
                    String::new()
                } else {
                    format!(" at {at}")
                };
                rejected.push(Rejected {
                    index,
                    error: format!("does not match the source's schema{at}: {e}"),
                });
                continue;
            }
            let id = match (&r.id, message) {
                (Some(external), _) => RawRecord::id_for(source_id, external),
                (None, Some(m)) => crate::RecordId::from_uuid(crate::id::derive(&[
                    "queued",
                    source_id.as_str(),
                    m.id,
                    &index.to_string(),
                ])),
                (None, None) => crate::RecordId::new(),
            };
            if !seen.insert(id.clone()) {
                in_request_duplicates += 1;
                continue;
            }
            raw.push(RawRecord {
                id,
                tenant_id: tenant.clone(),
                source_id: source_id.clone(),
                external_id: r.id,
                ts: r.ts.unwrap_or(now),
                received_at: now,
                expires_at,
                data: r.data,
            });
        }
        let accepted = match queue {
            _ if raw.is_empty() => 0,
            // Queued records are deduplicated when the ingest handler stores them, so only
            // the repeats within this request can be reported as duplicates now.
            Some(queue) => {
                queue.enqueue(&raw).await?;
                raw.len()
            }
            None => self.store.append_raw(&raw).await?,
        };
        if accepted > 0 {
            self.notifier.raw_appended();
        }
        Ok(IngestResult {
            accepted,
            duplicates: raw.len() - accepted + in_request_duplicates,
            rejected,
        })
    }

    /// A feed's pipeline errors, newest first.
    pub async fn feed_errors(
        &self,
        who: &Principal,
        feed: &FeedId,
        page: &PageRequest,
    ) -> Result<Page<FeedError>, CoreError> {
        let tenant = who.tenant_with(Role::VendorAdmin)?;
        self.store.get_feed(tenant, feed).await?;
        self.store.list_feed_errors(tenant, feed, page).await
    }

    /// Acknowledged deliveries per subscription and hour or day, as the caller may see them.
    pub async fn usage(
        &self,
        who: &Principal,
        subscription: Option<&SubscriptionId>,
        from: Timestamp,
        to: Timestamp,
        granularity: Granularity,
    ) -> Result<Vec<UsagePoint>, CoreError> {
        if to <= from {
            return Err(CoreError::invalid("to", "must be after from"));
        }
        if to - from > time::Duration::days(400) {
            return Err(CoreError::invalid(
                "to",
                "a usage query spans at most 400 days",
            ));
        }
        let mut filter = UsageFilter {
            subscription: subscription.cloned(),
            ..UsageFilter::default()
        };
        match who {
            p if p.has_role(Role::PlatformAdmin) || p.has_role(Role::PlatformFinance) => {}
            Principal::User {
                tenant: Some(t),
                roles,
                ..
            } if roles.contains(&Role::VendorAdmin) || roles.contains(&Role::VendorFinance) => {
                filter.tenant = Some(t.clone());
            }
            p => filter.subscriber = Some(p.user_with(Role::Subscriber)?.clone()),
        }
        if let Some(id) = subscription {
            let visible = match (&filter.tenant, &filter.subscriber) {
                (Some(t), _) => self.store.get_subscription(t, id).await.is_ok(),
                (_, Some(me)) => self
                    .store
                    .locate_subscription(id)
                    .await
                    .is_ok_and(|s| &s.subscriber_id == me),
                _ => self.store.locate_subscription(id).await.is_ok(),
            };
            if !visible {
                return Err(CoreError::NotFound("subscription"));
            }
        }
        let rows = self.store.usage(&filter, truncate_hour(from), to).await?;
        let mut points: Vec<UsagePoint> = Vec::new();
        for row in rows {
            let period_start = match granularity {
                Granularity::Hour => row.hour,
                Granularity::Day => row.hour.replace_time(time::Time::MIDNIGHT),
            };
            match points.last_mut() {
                Some(p)
                    if p.subscription_id == row.subscription_id
                        && p.period_start == period_start =>
                {
                    p.deliveries += row.count
                }
                _ => points.push(UsagePoint {
                    subscription_id: row.subscription_id,
                    period_start,
                    deliveries: row.count,
                }),
            }
        }
        Ok(points)
    }

    /// A subscription's delivery log: its subscriber, or an admin of the selling vendor.
    pub async fn delivery_log(
        &self,
        who: &Principal,
        id: &SubscriptionId,
        status: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<DeliveryAttempt>, CoreError> {
        let status = match status {
            None => None,
            Some(name) => Some(AttemptStatus::parse(name).ok_or_else(|| {
                CoreError::invalid("status", "must be delivered, failed, gave_up or disabled")
            })?),
        };
        let sub = self.get_subscription(who, id).await?;
        self.store
            .list_attempts(&sub.tenant_id, &sub.id, status, page)
            .await
    }

    /// Queues the records of an event-time range for delivery again, without billing them again.
    pub async fn replay(
        &self,
        who: &Principal,
        id: &SubscriptionId,
        range: ReplayRange,
    ) -> Result<ReplayAccepted, CoreError> {
        if range.to <= range.from {
            return Err(CoreError::invalid("to", "must be after from"));
        }
        let sub = self.own_subscription(who, id).await?;
        if sub.status == SubscriptionStatus::Cancelled {
            return Err(CoreError::Conflict("the subscription is cancelled".into()));
        }
        if matches!(sub.channel, Channel::Pull {}) {
            return Err(CoreError::Conflict(
                "a pull subscription replays by fetching with an earlier cursor".into(),
            ));
        }
        if self.is_native(&sub.channel) {
            return Err(CoreError::Conflict(format!(
                "`{}` records are sent by the feed's topic, which does not replay",
                sub.channel.kind()
            )));
        }
        let now = self.clock.now();
        let nonce = crate::RecordId::new();
        let filter = crate::pipeline::SubscriptionFilter::of(&sub);
        let mut after = 0;
        let mut queued = 0;
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
            let Some((last, _)) = chunk.last() else { break };
            after = *last;
            let deliveries: Vec<PendingDelivery> = chunk
                .iter()
                .filter(|(_, r)| {
                    crate::pipeline::SubscriptionFilter::admits(filter.as_ref(), &r.data)
                })
                .map(|(position, r)| PendingDelivery {
                    id: DeliveryId::from_uuid(crate::id::derive(&[
                        "replay",
                        nonce.as_str(),
                        sub.id.as_str(),
                        r.id.as_str(),
                    ])),
                    tenant_id: sub.tenant_id.clone(),
                    subscription_id: sub.id.clone(),
                    record_ids: vec![r.id.clone()],
                    positions: vec![*position],
                    attempts: 0,
                    next_attempt_at: now,
                    first_failed_at: now,
                    replay: true,
                })
                .collect();
            queued += deliveries.len();
            if queued > MAX_REPLAY {
                return Err(CoreError::invalid(
                    "to",
                    format!("a replay covers at most {MAX_REPLAY} records; narrow the range"),
                ));
            }
            self.store.park(&deliveries).await?;
        }
        self.notifier.outputs_appended();
        Ok(ReplayAccepted { records: queued })
    }

    /// The pull channel: records after `after` (or after what was last fetched), counted as
    /// delivered the first time they are fetched.
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
        let after = match after {
            Some(c) => c
                .parse::<u64>()
                .map_err(|_| CoreError::invalid("after", "is not a cursor from this API"))?,
            None => {
                self.store
                    .delivery_position(&sub.tenant_id, &sub.id)
                    .await?
            }
        };
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

    /// A subscription's records after `after` that it may see (filter, start), with the
    /// position reached; nothing is counted.
    async fn read_after(
        &self,
        sub: &Subscription,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, OutputRecord)>, u64), CoreError> {
        let filter = crate::pipeline::SubscriptionFilter::of(sub);
        let rows = self
            .store
            .output_after(&sub.tenant_id, &sub.feed_id, after, limit)
            .await?;
        let reached = rows.last().map(|(p, _)| *p).unwrap_or(after);
        let items = rows
            .into_iter()
            // Stores keep microseconds; compare at that precision.
            .filter(|(_, r)| {
                r.created_at.unix_timestamp_nanos() / 1000
                    >= sub.created_at.unix_timestamp_nanos() / 1000
            })
            .filter(|(_, r)| crate::pipeline::SubscriptionFilter::admits(filter.as_ref(), &r.data))
            .collect();
        Ok((items, reached))
    }

    /// Opens the live channel of the caller's websocket subscription; returns it with the
    /// position to start after (`after`, or what was last pushed).
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
        let after = match after {
            Some(c) => c
                .parse::<u64>()
                .map_err(|_| CoreError::invalid("after", "is not a cursor from this API"))?,
            None => {
                self.store
                    .delivery_position(&sub.tenant_id, &sub.id)
                    .await?
            }
        };
        Ok((sub, after))
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
            let fresh = items.iter().filter(|(p, _)| *p > hwm).count() as u64;
            match self
                .store
                .advance(
                    &sub.tenant_id,
                    &sub.id,
                    hwm,
                    reached,
                    fresh,
                    self.clock.now(),
                    &[],
                )
                .await
            {
                Err(CoreError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(CoreError::unavailable(
            "the pull position kept changing; retry",
        ))
    }
}

fn truncate_hour(t: Timestamp) -> Timestamp {
    t.replace_minute(0)
        .and_then(|t| t.replace_second(0))
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(t)
}
