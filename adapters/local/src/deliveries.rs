//! The `DeliveryStore` port on SQLite: delivery positions, pending retries, the delivery log
//! and hourly usage.
//!
//! Invariants:
//! - usage changes only in the write transaction that moves the mark making it count once:
//!   the position leaving the expected value (`advance`) or the pending row being deleted
//!   (`ack_pending`). A stale or repeated call changes nothing and counts nothing;
//! - every subscription has a position row, created in the subscription's own transaction at
//!   its feed's output head, or where its backfill starts (`start_position`);
//! - tenant-owned statements filter on `tenant_id`, so another tenant's subscription reads as
//!   `NotFound("subscription")`. The retry queue (`due_deliveries`, `drop_pending`) is global:
//!   it serves the delivery worker, not tenants.

use crate::columns::{
    bound, collect, column, id_column, micros, stored_position, time_column, unsigned,
};
use crate::db::sql_error;
use crate::records::output_head_in;
use crate::store::{SqliteStore, exists, from_doc, run, to_doc};
use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use wharf_core::domain::{
    AttemptStatus, Counted, DeliveryAttempt, PendingDelivery, UsageFilter, UsageRow,
};
use wharf_core::ports::{DeliveryStore, Result};
use wharf_core::{CoreError, DeliveryId, FeedId, PageRequest, SubscriptionId, TenantId, Timestamp};

/// The cursor tag of the delivery log.
const DELIVERY_ATTEMPTS: &str = "delivery_attempts";

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Starts a new subscription's delivery position at its feed's current output head, so it
/// receives what the feed produces from now on, or after `backfill_after` when it was granted
/// history. Runs in the subscription's transaction.
pub(crate) fn start_position(
    c: &Connection,
    tenant: &TenantId,
    feed: &FeedId,
    sub: &SubscriptionId,
    backfill_after: Option<u64>,
) -> Result<()> {
    let start = match backfill_after {
        Some(after) => stored_position(after)?,
        None => output_head_in(c, tenant.as_str(), feed.as_str())?,
    };
    run(
        c,
        "INSERT INTO delivery_positions (subscription_id, tenant_id, feed_id, position)
         VALUES (?, ?, ?, ?)",
        params![sub.as_str(), tenant.as_str(), feed.as_str(), start],
    )?;
    Ok(())
}

/// The start of the UTC hour holding `at`, in unix microseconds.
fn hour_of(at: Timestamp) -> Result<i64> {
    Ok(micros(at)?.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR)
}

/// Adds `count` to a subscription's usage in `hour`. The subscriber comes from the
/// subscription row, which must exist in `tenant`.
fn add_usage(c: &Connection, tenant: &str, sub: &str, hour: i64, counted: Counted) -> Result<()> {
    let count = i64::try_from(counted.usage).map_err(CoreError::internal)?;
    let backfill = i64::try_from(counted.backfill).map_err(CoreError::internal)?;
    // The WHERE clause also keeps SQLite from reading `ON CONFLICT` as a join constraint.
    let added = run(
        c,
        "INSERT INTO usage (subscription_id, hour, tenant_id, subscriber_id, count, backfill)
         SELECT id, ?, tenant_id, subscriber_id, ?, ? FROM subscriptions WHERE id = ? AND tenant_id = ?
         ON CONFLICT (subscription_id, hour) DO UPDATE
         SET count = count + excluded.count, backfill = backfill + excluded.backfill",
        params![hour, count, backfill, sub, tenant],
    )?;
    if added == 0 {
        return Err(CoreError::NotFound("subscription"));
    }
    Ok(())
}

fn position_exists(c: &Connection, tenant: &str, sub: &str) -> Result<bool> {
    exists(
        c,
        "SELECT EXISTS (SELECT 1 FROM delivery_positions WHERE subscription_id = ? AND tenant_id = ?)",
        [sub, tenant],
    )
}

/// A pending delivery as column values, computed before taking the writer.
struct PendingRow {
    id: String,
    tenant_id: String,
    subscription_id: String,
    next_attempt_at: i64,
    doc: String,
}

impl PendingRow {
    fn of(d: &PendingDelivery) -> Result<PendingRow> {
        Ok(PendingRow {
            id: d.id.to_string(),
            tenant_id: d.tenant_id.to_string(),
            subscription_id: d.subscription_id.to_string(),
            next_attempt_at: micros(d.next_attempt_at)?,
            doc: to_doc(d)?,
        })
    }

    fn all(deliveries: &[PendingDelivery]) -> Result<Vec<PendingRow>> {
        deliveries.iter().map(PendingRow::of).collect()
    }
}

/// Stores pending deliveries; an id already pending keeps its row (and its attempt count).
fn park_rows(c: &Connection, rows: &[PendingRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO pending_deliveries (id, tenant_id, subscription_id, next_attempt_at, doc)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (id) DO NOTHING",
        )
        .map_err(sql_error)?;
    for r in rows {
        stmt.execute(params![
            r.id,
            r.tenant_id,
            r.subscription_id,
            r.next_attempt_at,
            r.doc
        ])
        .map_err(sql_error)?;
    }
    Ok(())
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn delivery_position(&self, tenant: &TenantId, sub: &SubscriptionId) -> Result<u64> {
        let (tenant, sub) = (tenant.to_string(), sub.to_string());
        let position: Option<i64> = self
            .db
            .read(move |c| {
                c.prepare_cached(
                    "SELECT position FROM delivery_positions WHERE subscription_id = ? AND tenant_id = ?",
                )
                .map_err(sql_error)?
                .query_row([&sub, &tenant], |r| r.get(0))
                .optional()
                .map_err(sql_error)
            })
            .await?;
        unsigned(position.ok_or(CoreError::NotFound("subscription"))?)
    }

    /// A subscription that does not exist in `tenant` is `NotFound("subscription")` rather
    /// than `Conflict`: retrying with a fresh position could never succeed.
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
        let (tenant, sub) = (tenant.to_string(), sub.to_string());
        let (from, to) = (stored_position(from)?, stored_position(to)?);
        let hour = hour_of(at)?;
        let parked = PendingRow::all(parked)?;
        self.db
            .write(move |tx| {
                let moved = run(
                    tx,
                    "UPDATE delivery_positions SET position = ?
                     WHERE subscription_id = ? AND tenant_id = ? AND position = ?",
                    params![to, sub, tenant, from],
                )?;
                if moved == 0 {
                    return Err(if position_exists(tx, &tenant, &sub)? {
                        CoreError::Conflict(
                            "the delivery position moved concurrently; reread it".into(),
                        )
                    } else {
                        CoreError::NotFound("subscription")
                    });
                }
                if !acknowledged.is_zero() {
                    add_usage(tx, &tenant, &sub, hour, acknowledged)?;
                }
                park_rows(tx, &parked)
            })
            .await
    }

    /// Never moves a position backwards: when retention has deleted a feed's newest records
    /// its head can lie behind a position, and moving back would only re-read nothing.
    async fn skip_to_head(&self, tenant: &TenantId, sub: &SubscriptionId) -> Result<()> {
        let (tenant, sub) = (tenant.to_string(), sub.to_string());
        self.db
            .write(move |tx| {
                let feed: String = tx
                    .prepare_cached(
                        "SELECT feed_id FROM delivery_positions WHERE subscription_id = ? AND tenant_id = ?",
                    )
                    .map_err(sql_error)?
                    .query_row([&sub, &tenant], |r| r.get(0))
                    .optional()
                    .map_err(sql_error)?
                    .ok_or(CoreError::NotFound("subscription"))?;
                let head = output_head_in(tx, &tenant, &feed)?;
                run(
                    tx,
                    "UPDATE delivery_positions SET position = max(position, ?)
                     WHERE subscription_id = ? AND tenant_id = ?",
                    params![head, sub, tenant],
                )?;
                Ok(())
            })
            .await
    }

    async fn park(&self, deliveries: &[PendingDelivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let rows = PendingRow::all(deliveries)?;
        self.db.write(move |tx| park_rows(tx, &rows)).await
    }

    async fn due_deliveries(&self, now: Timestamp, limit: usize) -> Result<Vec<PendingDelivery>> {
        let (now, limit) = (micros(now)?, bound(limit));
        self.db
            .read(move |c| {
                collect(
                    c,
                    "SELECT doc FROM pending_deliveries WHERE next_attempt_at <= ?
                     ORDER BY next_attempt_at, id LIMIT ?",
                    params![now, limit],
                    |row| from_doc(&column::<String>(row, 0)?),
                )
            })
            .await
    }

    async fn ack_pending(
        &self,
        delivery: &PendingDelivery,
        acknowledged: u64,
        at: Timestamp,
    ) -> Result<bool> {
        let (id, tenant, sub) = (
            delivery.id.to_string(),
            delivery.tenant_id.to_string(),
            delivery.subscription_id.to_string(),
        );
        let counted = delivery.counted(acknowledged);
        let hour = hour_of(at)?;
        self.db
            .write(move |tx| {
                let deleted = run(
                    tx,
                    "DELETE FROM pending_deliveries WHERE id = ? AND tenant_id = ?",
                    [&id, &tenant],
                )?;
                if deleted == 0 {
                    return Ok(false);
                }
                if !counted.is_zero() {
                    add_usage(tx, &tenant, &sub, hour, counted)?;
                }
                Ok(true)
            })
            .await
    }

    /// A delivery no longer pending (acknowledged or dropped meanwhile) is
    /// `NotFound("delivery")` and is not stored again: storing it again would let a second
    /// acknowledgement count it twice.
    async fn reschedule(&self, delivery: &PendingDelivery) -> Result<()> {
        let row = PendingRow::of(delivery)?;
        self.db
            .write(move |tx| {
                let updated = run(
                    tx,
                    "UPDATE pending_deliveries SET next_attempt_at = ?, doc = ?
                     WHERE id = ? AND tenant_id = ?",
                    params![row.next_attempt_at, row.doc, row.id, row.tenant_id],
                )?;
                if updated == 0 {
                    return Err(CoreError::NotFound("delivery"));
                }
                Ok(())
            })
            .await
    }

    async fn drop_pending(&self, delivery: &DeliveryId) -> Result<()> {
        let id = delivery.to_string();
        self.db
            .write(move |tx| {
                run(tx, "DELETE FROM pending_deliveries WHERE id = ?", [&id])?;
                Ok(())
            })
            .await
    }

    async fn log_attempts(&self, tenant: &TenantId, attempts: &[DeliveryAttempt]) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let tenant = tenant.to_string();
        let rows = attempts
            .iter()
            .map(|a| Ok((a.subscription_id.to_string(), a.status.as_str(), to_doc(a)?)))
            .collect::<Result<Vec<_>>>()?;
        self.db
            .write(move |tx| {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO delivery_attempts (tenant_id, subscription_id, status, doc)
                         VALUES (?, ?, ?, ?)",
                    )
                    .map_err(sql_error)?;
                for (sub, status, doc) in &rows {
                    stmt.execute([tenant.as_str(), sub, status, doc])
                        .map_err(sql_error)?;
                }
                Ok(())
            })
            .await
    }

    async fn expire_attempts(&self, before: Timestamp) -> Result<usize> {
        self.expire_log(DELIVERY_ATTEMPTS, before).await
    }

    async fn list_attempts(
        &self,
        tenant: &TenantId,
        sub: &SubscriptionId,
        status: Option<AttemptStatus>,
        page: &PageRequest,
    ) -> Result<wharf_core::Page<DeliveryAttempt>> {
        match status {
            Some(status) => {
                self.list_newest(
                    "SELECT seq, doc FROM delivery_attempts
                     WHERE tenant_id = ? AND subscription_id = ? AND status = ? AND seq < ?
                     ORDER BY seq DESC LIMIT ?",
                    vec![
                        tenant.to_string(),
                        sub.to_string(),
                        status.as_str().to_owned(),
                    ],
                    DELIVERY_ATTEMPTS,
                    page,
                )
                .await
            }
            None => {
                self.list_newest(
                    "SELECT seq, doc FROM delivery_attempts
                     WHERE tenant_id = ? AND subscription_id = ? AND seq < ?
                     ORDER BY seq DESC LIMIT ?",
                    vec![tenant.to_string(), sub.to_string()],
                    DELIVERY_ATTEMPTS,
                    page,
                )
                .await
            }
        }
    }

    async fn usage(
        &self,
        filter: &UsageFilter,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageRow>> {
        // One statement per combination of filters (at most eight, all cached), so each can
        // use the index that leads with its filter rather than `(? IS NULL OR …)` scans.
        let mut sql = String::from(
            "SELECT tenant_id, subscription_id, subscriber_id, hour, count, backfill FROM usage
             WHERE hour >= ? AND hour < ?",
        );
        let mut args = vec![Value::Integer(micros(from)?), Value::Integer(micros(to)?)];
        let filters = [
            ("tenant_id", filter.tenant.as_ref().map(ToString::to_string)),
            (
                "subscriber_id",
                filter.subscriber.as_ref().map(ToString::to_string),
            ),
            (
                "subscription_id",
                filter.subscription.as_ref().map(ToString::to_string),
            ),
        ];
        for (name, value) in filters {
            if let Some(value) = value {
                sql.push_str(" AND ");
                sql.push_str(name);
                sql.push_str(" = ?");
                args.push(Value::Text(value));
            }
        }
        sql.push_str(" ORDER BY subscription_id, hour");
        self.db
            .read(move |c| {
                collect(c, &sql, params_from_iter(args.iter()), |row| {
                    Ok(UsageRow {
                        tenant_id: id_column(row, 0)?,
                        subscription_id: id_column(row, 1)?,
                        subscriber_id: id_column(row, 2)?,
                        hour: time_column(row, 3)?,
                        count: unsigned(column(row, 4)?)?,
                        backfill: unsigned(column(row, 5)?)?,
                    })
                })
            })
            .await
    }

    async fn usage_totals(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(SubscriptionId, Counted)>> {
        let (from, to) = (micros(from)?, micros(to)?);
        // One range seek per subscription on the primary key, so the cost is the range's
        // counters and not the whole history (a scan filtered on `hour` would read it all).
        self.db
            .read(move |c| {
                collect(
                    c,
                    "SELECT id, coalesce(n, 0), coalesce(b, 0) FROM (
                         SELECT s.id AS id,
                                (SELECT SUM(u.count) FROM usage u
                                 WHERE u.subscription_id = s.id AND u.hour >= ?1 AND u.hour < ?2) AS n,
                                (SELECT SUM(u.backfill) FROM usage u
                                 WHERE u.subscription_id = s.id AND u.hour >= ?1 AND u.hour < ?2) AS b
                         FROM subscriptions s)
                     WHERE n > 0 OR b > 0 ORDER BY id",
                    params![from, to],
                    |row| {
                        let counted = Counted {
                            usage: unsigned(column(row, 1)?)?,
                            backfill: unsigned(column(row, 2)?)?,
                        };
                        Ok((id_column(row, 0)?, counted))
                    },
                )
            })
            .await
    }
}
