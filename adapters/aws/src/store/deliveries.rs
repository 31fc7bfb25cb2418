//! Delivery positions, pending deliveries, the delivery log and usage counters.
//!
//! A subscription's position item (written with the subscription) also carries its
//! subscriber, which usage rows need. Pending deliveries are the sender's work items, keyed
//! by delivery id alone (the port drops them by id) with their tenant as an attribute, and
//! come due through `gsi1`. Every usage change is in the same transaction as the position
//! move or pending-delivery removal that causes it.

use super::accounts::tenant_pk;
use super::subscriptions::{position_sk, usage_update};
use super::usage::{hour_key, hour_start, usage_pk};
use super::*;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, Update};
use wharf_core::domain::{
    AttemptStatus, Counted, DeliveryAttempt, PendingDelivery, UsageFilter, UsageRow,
};
use wharf_core::ports::DeliveryStore;
use wharf_core::ports::RecordStore;
use wharf_core::{DeliveryId, SubscriptionId, TenantId, UserId, VendorId};

/// Months a usage read walks month by month before it lists subscriptions instead.
const MONTHS_BY_INDEX: usize = 24;

fn pending_pk(id: &DeliveryId) -> String {
    format!("PEND#{id}")
}

fn pending_item(d: &PendingDelivery) -> Result<Item> {
    let mut item = item(pending_pk(&d.id), "PEND", "pending", d)?;
    item.insert("tenant_id".into(), s(d.tenant_id.as_str()));
    item.insert("gsi1pk".into(), s("PENDING"));
    item.insert(
        "gsi1sk".into(),
        s(format!("{}#{}", time_key(d.next_attempt_at), d.id)),
    );
    Ok(item)
}

fn log_pk(tenant: &TenantId, sub: &SubscriptionId) -> String {
    format!("T#{tenant}#LOG#{sub}")
}

/// The months `[from, to)` touches, oldest first, or `None` when there are more than `max`.
fn months_between(from: Timestamp, to: Timestamp, max: usize) -> Result<Option<Vec<String>>> {
    let mut months = Vec::new();
    let (mut year, mut month) = (from.year(), u8::from(from.month()));
    let last = to - time::Duration::MICROSECOND;
    let end = (last.year(), u8::from(last.month()));
    while (year, month) <= end {
        if months.len() == max {
            return Ok(None);
        }
        months.push(format!("{year:04}-{month:02}"));
        (year, month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
    }
    Ok(Some(months))
}

fn usage_row(item: &Item) -> Result<UsageRow> {
    let hour: i64 = str_attr(item, "sk")?.parse().map_err(CoreError::internal)?;
    Ok(UsageRow {
        tenant_id: VendorId::parse(str_attr(item, "tenant_id")?).map_err(CoreError::internal)?,
        subscription_id: SubscriptionId::parse(str_attr(item, "subscription_id")?)
            .map_err(CoreError::internal)?,
        subscriber_id: UserId::parse(str_attr(item, "subscriber_id")?)
            .map_err(CoreError::internal)?,
        hour: Timestamp::from_unix_timestamp(hour).map_err(CoreError::internal)?,
        count: num_attr(item, "count")?,
        // Counters written before backfill existed have no such attribute.
        backfill: num_attr(item, "backfill").unwrap_or(0),
    })
}

impl DynamoStore {
    /// A subscription's position item, or `NotFound("subscription")`.
    async fn position_item(&self, tenant: &TenantId, sub: &SubscriptionId) -> Result<Item> {
        self.get(&tenant_pk(tenant), &position_sk(sub))
            .await?
            .ok_or(CoreError::NotFound("subscription"))
    }

    /// Usage rows of one subscription with `from <= hour < to`.
    async fn usage_of_subscription(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>> {
        let lo = hour_key(hour_start(from).max(0));
        let hi = hour_key((to.unix_timestamp() - 1).max(0));
        let query = Query::table(usage_pk(tenant, sub)).sort(Sort::Between(lo, hi));
        let rows = self
            .query_all(&query, None)
            .await?
            .iter()
            .map(usage_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(rows
            .into_iter()
            .filter(|r| from <= r.hour && r.hour < to)
            .collect())
    }

    /// Every usage row with `from <= hour < to`, by subscription then hour.
    async fn all_usage(&self, from: Timestamp, to: Timestamp) -> Result<Vec<UsageRow>> {
        let mut rows = Vec::new();
        match months_between(from, to, MONTHS_BY_INDEX)? {
            Some(months) => {
                for month in months {
                    let query = Query::index("gsi1", format!("USAGE#{month}"));
                    for item in self.query_all(&query, None).await? {
                        rows.push(usage_row(&item)?);
                    }
                }
            }
            None => {
                let subs = self
                    .query_all(&Query::index("gsi1", "SUBSCRIPTIONS"), None)
                    .await?;
                for item in subs {
                    let sub: wharf_core::domain::Subscription = from_item(&item)?;
                    rows.extend(
                        self.usage_of_subscription(&sub.tenant_id, &sub.id, from, to)
                            .await?,
                    );
                }
            }
        }
        rows.retain(|r| from <= r.hour && r.hour < to);
        rows.sort_by(|a, b| (&a.subscription_id, a.hour).cmp(&(&b.subscription_id, b.hour)));
        Ok(rows)
    }
}

#[async_trait]
impl DeliveryStore for DynamoStore {
    async fn delivery_position(&self, tenant: &TenantId, sub: &SubscriptionId) -> Result<u64> {
        num_attr(&self.position_item(tenant, sub).await?, "pos")
    }

    async fn advance(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
        from: u64,
        to: u64,
        acknowledged: Counted,
        at: Timestamp,
        parked: &[PendingDelivery],
    ) -> Result<()> {
        let stale = || CoreError::Conflict("the delivery position moved; retry".into());
        let position = self.position_item(tenant, sub).await?;
        if num_attr(&position, "pos")? != from {
            return Err(stale());
        }
        let subscriber = str_attr(&position, "subscriber_id")?.to_owned();
        let mut items = vec![
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(self.table())
                        .set_key(Some(key(tenant_pk(tenant), position_sk(sub))))
                        .update_expression("SET pos = :to")
                        .condition_expression("pos = :from")
                        .expression_attribute_values(":to", n(to))
                        .expression_attribute_values(":from", n(from))
                        .build()
                        .map_err(CoreError::internal)?,
                )
                .build(),
        ];
        if !acknowledged.is_zero() {
            items.push(usage_update(
                self.table(),
                tenant,
                sub,
                &subscriber,
                at,
                acknowledged,
            )?);
        }
        // Parked deliveries ride in the transaction while it has room; the rest follow it.
        let room = TRANSACTION_ITEMS - items.len();
        let (inside, after) = parked.split_at(parked.len().min(room));
        for d in inside {
            items.push(put_op(pending_item(d)?, self.table(), false)?);
        }
        if self.transact(items).await?.is_some() {
            return Err(stale());
        }
        self.park(after).await
    }

    async fn skip_to_head(&self, tenant: &TenantId, sub: &SubscriptionId) -> Result<()> {
        let subscription =
            wharf_core::ports::SubscriptionStore::get_subscription(self, tenant, sub).await?;
        let head = self.output_head(tenant, &subscription.feed_id).await?;
        let sent = self
            .db()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant), position_sk(sub))))
            .update_expression("SET pos = :head")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":head", n(head))
            .send()
            .await;
        if written(sent, "moving a delivery position")? {
            Ok(())
        } else {
            Err(CoreError::NotFound("subscription"))
        }
    }

    async fn park(&self, deliveries: &[PendingDelivery]) -> Result<()> {
        for d in deliveries {
            match self.put_new(pending_item(d)?, "pending delivery").await {
                Ok(()) | Err(CoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn due_deliveries(&self, now: Timestamp, limit: usize) -> Result<Vec<PendingDelivery>> {
        // `~` sorts after every id, so deliveries due exactly at `now` are included.
        let query =
            Query::index("gsi1", "PENDING").sort(Sort::AtMost(format!("{}#~", time_key(now))));
        self.query_all(&query, Some(limit))
            .await?
            .iter()
            .take(limit)
            .map(from_item)
            .collect()
    }

    async fn ack_pending(
        &self,
        delivery: &PendingDelivery,
        acknowledged: u64,
        at: Timestamp,
    ) -> Result<bool> {
        let mut items = vec![
            TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(self.table())
                        .set_key(Some(key(pending_pk(&delivery.id), "PEND")))
                        .condition_expression("attribute_exists(pk)")
                        .build()
                        .map_err(CoreError::internal)?,
                )
                .build(),
        ];
        let counted = delivery.counted(acknowledged);
        if !counted.is_zero() {
            let position = self
                .position_item(&delivery.tenant_id, &delivery.subscription_id)
                .await?;
            items.push(usage_update(
                self.table(),
                &delivery.tenant_id,
                &delivery.subscription_id,
                str_attr(&position, "subscriber_id")?,
                at,
                counted,
            )?);
        }
        Ok(self.transact(items).await?.is_none())
    }

    async fn reschedule(&self, delivery: &PendingDelivery) -> Result<()> {
        let sent = self
            .db()
            .put_item()
            .table_name(self.table())
            .set_item(Some(pending_item(delivery)?))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        // A delivery no longer pending stays gone.
        written(sent, "rescheduling a delivery")?;
        Ok(())
    }

    async fn drop_pending(&self, delivery: &DeliveryId) -> Result<()> {
        self.delete(&pending_pk(delivery), "PEND").await
    }

    async fn log_attempts(&self, tenant: &TenantId, attempts: &[DeliveryAttempt]) -> Result<()> {
        let items = attempts
            .iter()
            .enumerate()
            .map(|(index, a)| {
                let mut item = item(
                    log_pk(tenant, &a.subscription_id),
                    format!("{}#{index:05}#{}", time_key(a.at), a.delivery_id),
                    "attempt",
                    a,
                )?;
                item.insert("status".into(), s(a.status.as_str()));
                item.insert("at_us".into(), n(micros(a.at)));
                Ok(item)
            })
            .collect::<Result<Vec<_>>>()?;
        self.put_all(items).await
    }

    async fn expire_attempts(&self, before: Timestamp) -> Result<usize> {
        self.scan_delete(
            "#kind = :kind AND at_us < :before",
            vec![(":kind", s("attempt")), (":before", n(micros(before)))],
            |_| true,
        )
        .await
    }

    async fn list_attempts(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
        status: Option<AttemptStatus>,
        page: &PageRequest,
    ) -> Result<Page<DeliveryAttempt>> {
        let query = Query::table(log_pk(tenant, sub)).newest_first();
        let page = self
            .query_page(&query, page, |items: Vec<Item>| {
                ready(Ok(items
                    .into_iter()
                    .filter(|i| {
                        status.is_none_or(|want| {
                            str_attr(i, "status").is_ok_and(|s| s == want.as_str())
                        })
                    })
                    .collect()))
            })
            .await?;
        docs(page)
    }

    async fn usage_totals(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(SubscriptionId, Counted)>> {
        let mut totals: Vec<(SubscriptionId, Counted)> = Vec::new();
        for row in self.all_usage(from, to).await? {
            let counted = Counted {
                usage: row.count,
                backfill: row.backfill,
            };
            match totals.last_mut() {
                Some((sub, total)) if *sub == row.subscription_id => *total += counted,
                _ => totals.push((row.subscription_id, counted)),
            }
        }
        Ok(totals)
    }

    async fn usage(
        &self,
        filter: &UsageFilter,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>> {
        if to <= from {
            return Ok(Vec::new());
        }
        use wharf_core::ports::SubscriptionStore;
        let subscriptions: Vec<(TenantId, SubscriptionId)> = if let Some(id) = &filter.subscription
        {
            match self.locate_subscription(id).await {
                Ok(sub) => vec![(sub.tenant_id, sub.id)],
                Err(CoreError::NotFound(_)) => Vec::new(),
                Err(e) => return Err(e),
            }
        } else if let Some(tenant) = &filter.tenant {
            let query = Query::table(tenant_pk(tenant)).sort(Sort::BeginsWith("SUB#".into()));
            self.query_all(&query, None)
                .await?
                .iter()
                .filter(|i| str_attr(i, "kind").is_ok_and(|k| k == "subscription"))
                .map(|i| {
                    let sub: wharf_core::domain::Subscription = from_item(i)?;
                    Ok((sub.tenant_id, sub.id))
                })
                .collect::<Result<_>>()?
        } else if let Some(subscriber) = &filter.subscriber {
            let query = Query::index("gsi2", format!("S#{subscriber}"))
                .sort(Sort::BeginsWith("SUB#".into()));
            self.query_all(&query, None)
                .await?
                .iter()
                .map(|i| {
                    let sub: wharf_core::domain::Subscription = from_item(i)?;
                    Ok((sub.tenant_id, sub.id))
                })
                .collect::<Result<_>>()?
        } else {
            return self.all_usage(from, to).await;
        };
        let mut rows = Vec::new();
        for (tenant, sub) in subscriptions {
            rows.extend(self.usage_of_subscription(&tenant, &sub, from, to).await?);
        }
        rows.retain(|r| {
            filter.tenant.as_ref().is_none_or(|t| *t == r.tenant_id)
                && filter
                    .subscriber
                    .as_ref()
                    .is_none_or(|s| *s == r.subscriber_id)
                && filter
                    .subscription
                    .as_ref()
                    .is_none_or(|s| *s == r.subscription_id)
        });
        rows.sort_by(|a, b| (&a.subscription_id, a.hour).cmp(&(&b.subscription_id, b.hour)));
        Ok(rows)
    }
}
