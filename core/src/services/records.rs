//! Ingest, pipeline errors, usage, the delivery log, replays and the pull channel.

use super::Services;
use crate::domain::*;
use crate::domain::{DeliveryAttempt, UsageFilter};
use crate::{CoreError, FeedId, Page, PageRequest, SourceId, SubscriptionId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

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
    /// Acknowledged backfill deliveries (history bought with the subscription).
    pub backfill: u64,
}

impl Services {
    /// Stores records pushed to a source: rejected ones by index, duplicates counted, the
    /// rest durable when this returns.
    #[tracing::instrument(level = "debug", skip_all, fields(source.id = %source_id))]
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
    #[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %source.tenant_id, source.id = %source.id))]
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
    #[tracing::instrument(level = "debug", skip_all, fields(tenant.id = %source.tenant_id, source.id = %source.id))]
    pub async fn ingest_from_source_queue(
        &self,
        source: &Source,
        records: Vec<IngestRecord>,
        message: &QueueMessage,
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
        message: Option<&QueueMessage>,
    ) -> Result<IngestResult, CoreError> {
        if records.len() > MAX_RECORDS_PER_REQUEST {
            return Err(CoreError::invalid(
                "records",
                format!("at most {MAX_RECORDS_PER_REQUEST} records per request"),
            ));
        }
        let validator = match &source.schema {
            Some(schema) => Some(
                // Schemas are checked when saved; one saved before that was checked is the
                // vendor's to fix, not a server error.
                jsonschema::validator_for(schema).map_err(|e| {
                    CoreError::Conflict(format!(
                        "the source's schema is not a valid JSON Schema ({e}); correct it with PATCH"
                    ))
                })?,
            ),
            None => None,
        };
        let now = message
            .and_then(|m| m.sent_at)
            .unwrap_or_else(|| self.clock.now());
        let arriving = Arriving {
            source,
            validator: validator.as_ref(),
            message,
            now,
            expires_at: now + time::Duration::days(i64::from(source.retention_days)),
        };
        let mut rejected = Vec::new();
        let mut seen = HashSet::new();
        let mut in_request_duplicates = 0;
        let mut raw = Vec::with_capacity(records.len());
        for (index, r) in records.into_iter().enumerate() {
            match arriving.raw_record(index, r) {
                Err(error) => rejected.push(Rejected { index, error }),
                Ok(record) if !seen.insert(record.id.clone()) => in_request_duplicates += 1,
                Ok(record) => raw.push(record),
            }
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
                    p.deliveries += row.count;
                    p.backfill += row.backfill;
                }
                _ => points.push(UsagePoint {
                    subscription_id: row.subscription_id,
                    period_start,
                    deliveries: row.count,
                    backfill: row.backfill,
                }),
            }
        }
        Ok(points)
    }

    /// A subscription's delivery log: its subscriber, or an admin of the selling vendor.
    #[tracing::instrument(level = "debug", skip_all, fields(subscription.id = %id))]
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
}

/// What records arriving in one request (or queue message) have in common.
struct Arriving<'a> {
    source: &'a Source,
    validator: Option<&'a jsonschema::Validator>,
    message: Option<&'a QueueMessage>,
    now: Timestamp,
    expires_at: Timestamp,
}

impl Arriving<'_> {
    /// The raw record the request's record `index` makes, or why it is refused. A record
    /// sent with the vendor's id has an id derived from it; one without, from the queue
    /// message it came in (so a message delivered again makes the same records), or else a
    /// fresh one.
    fn raw_record(&self, index: usize, r: IngestRecord) -> Result<RawRecord, String> {
        if let Some(id) = &r.id
            && (id.is_empty() || id.len() > MAX_EXTERNAL_ID_LEN)
        {
            return Err(format!("id must be 1 to {MAX_EXTERNAL_ID_LEN} characters"));
        }
        if let Some(e) = self.validator.and_then(|v| v.iter_errors(&r.data).next()) {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" at {at}")
            };
            return Err(format!("does not match the source's schema{at}: {e}"));
        }
        let source_id = &self.source.id;
        let id = match (&r.id, self.message) {
            (Some(external), _) => RawRecord::id_for(source_id, external),
            (None, Some(m)) => crate::RecordId::from_uuid(crate::id::derive(&[
                "queued",
                source_id.as_str(),
                &m.id,
                &index.to_string(),
            ])),
            (None, None) => crate::RecordId::new(),
        };
        Ok(RawRecord {
            id,
            tenant_id: self.source.tenant_id.clone(),
            source_id: source_id.clone(),
            external_id: r.id,
            ts: r.ts.unwrap_or(self.now),
            received_at: self.now,
            expires_at: self.expires_at,
            data: r.data,
        })
    }
}

fn truncate_hour(t: Timestamp) -> Timestamp {
    t.replace_minute(0)
        .and_then(|t| t.replace_second(0))
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(t)
}
