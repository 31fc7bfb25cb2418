//! The record port on SQLite: raw and output records and pipeline errors (`RecordStore`);
//! the statements the change feed over raw records reads with (`change_log`).
//!
//! Invariants:
//! - a record's position is its rowid, assigned with AUTOINCREMENT under the single writer
//!   connection: positions grow in commit order and are never handed out again, even after
//!   retention deletes the newest row, so a cursor past a position never misses a record;
//! - a record id is stored once: appending an id already stored is skipped and counted as a
//!   duplicate, in the same write transaction as the new rows;
//! - times are stored as unix microseconds (sub-microsecond digits are dropped), so ranges
//!   compare as integers and use the indexes;
//! - tenant-owned reads filter on `tenant_id` besides the source or feed, so another tenant's
//!   id reads as empty. The change feed is global on purpose: it serves the pipeline worker;
//! - the append-only logs (feed errors here, delivery attempts in `deliveries`) list newest
//!   first by their sequence number, which is also the cursor. Entries are appended in time
//!   order, so retention cuts a log at the first entry not older than the cut, found by a
//!   binary search over the sequence: nothing on the write path pays for an index on time.

use crate::columns::{
    bound, collect, column, from_micros, id_column, json_column, micros, time_column, unsigned,
};
use crate::db::sql_error;
use crate::store::{SqliteStore, from_doc, run, to_doc};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};
use serde::de::DeserializeOwned;
use wharf_core::domain::{FeedError, OutputRecord, RawRecord};
use wharf_core::ports::{RecordStore, Result};
use wharf_core::{CoreError, FeedId, Page, PageRequest, SourceId, TenantId, Timestamp};

/// Rows deleted per retention transaction, so ingest can commit between chunks.
const EXPIRE_CHUNK: usize = 5_000;

/// Outputs or errors written per transaction: another tenant's write waits for one chunk at
/// most (500 rows a chunk left a quiet tenant's delivery p99 at 5× beside a tenant writing
/// 30,000 outputs a second; 100 at 2.3–2.7×; 32 at 1.6–1.7×).
const WRITE_CHUNK: usize = 32;

/// The cursor tag of the feed error list.
const FEED_ERRORS: &str = "feed_errors";

macro_rules! raw_columns {
    () => {
        "position, id, tenant_id, source_id, external_id, ts, received_at, expires_at, data"
    };
}

macro_rules! output_columns {
    () => {
        "position, id, tenant_id, feed_id, pipeline_version, ts, created_at, expires_at, data"
    };
}

pub(crate) fn decode_raw(row: &Row<'_>) -> Result<(u64, RawRecord)> {
    Ok((
        unsigned(column(row, 0)?)?,
        RawRecord {
            id: id_column(row, 1)?,
            tenant_id: id_column(row, 2)?,
            source_id: id_column(row, 3)?,
            external_id: column(row, 4)?,
            ts: time_column(row, 5)?,
            received_at: time_column(row, 6)?,
            expires_at: time_column(row, 7)?,
            data: json_column(row, 8)?,
        },
    ))
}

fn decode_output(row: &Row<'_>) -> Result<(u64, OutputRecord)> {
    Ok((
        unsigned(column(row, 0)?)?,
        OutputRecord {
            id: id_column(row, 1)?,
            tenant_id: id_column(row, 2)?,
            feed_id: id_column(row, 3)?,
            pipeline_version: u32::try_from(column::<i64>(row, 4)?).map_err(CoreError::internal)?,
            ts: time_column(row, 5)?,
            created_at: time_column(row, 6)?,
            expires_at: time_column(row, 7)?,
            data: json_column(row, 8)?,
        },
    ))
}

/// The position of a feed's newest output record, 0 when it has none.
pub(crate) fn output_head_in(c: &Connection, tenant: &str, feed: &str) -> Result<i64> {
    let head: Option<i64> = c
        .prepare_cached(
            "SELECT position FROM output_records WHERE feed_id = ? AND tenant_id = ?
             ORDER BY position DESC LIMIT 1",
        )
        .map_err(sql_error)?
        .query_row([feed, tenant], |r| r.get(0))
        .optional()
        .map_err(sql_error)?;
    Ok(head.unwrap_or(0))
}

/// The cursor after sequence number `seq` of the log tagged `kind`. The tag makes a cursor
/// of one log useless for another.
fn seq_cursor(kind: &str, seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{seq}"))
}

/// The sequence number a newest-first page starts below; without a cursor, the top.
fn decode_seq_cursor(kind: &str, cursor: Option<&str>) -> Result<i64> {
    let Some(cursor) = cursor else {
        return Ok(i64::MAX);
    };
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let seq = text.strip_prefix(kind)?.strip_prefix(':')?;
            seq.parse::<i64>().ok().filter(|seq| *seq > 0)
        })
        .ok_or_else(|| CoreError::invalid("cursor", "is not a cursor from this API"))
}

impl SqliteStore {
    /// Reads one page of an append-only log, newest first. `sql` selects `seq, doc` and must
    /// end with `seq < ? ORDER BY seq DESC LIMIT ?`; `args` fill its earlier placeholders.
    /// `kind` tags the cursor.
    pub(crate) async fn list_newest<T: DeserializeOwned + Send + 'static>(
        &self,
        sql: &'static str,
        args: Vec<String>,
        kind: &'static str,
        page: &PageRequest,
    ) -> Result<Page<T>> {
        let before = decode_seq_cursor(kind, page.cursor.as_deref())?;
        let limit = page.limit();
        let fetch = bound(limit + 1);
        self.db
            .read(move |c| {
                let mut bound_args: Vec<&dyn ToSql> =
                    args.iter().map(|a| a as &dyn ToSql).collect();
                bound_args.push(&before);
                bound_args.push(&fetch);
                let mut items = collect(c, sql, bound_args.as_slice(), |row| {
                    let seq: i64 = column(row, 0)?;
                    Ok((seq, from_doc::<T>(&column::<String>(row, 1)?)?))
                })?;
                let more = items.len() > limit;
                items.truncate(limit);
                let next_cursor = match items.last() {
                    Some((seq, _)) if more => Some(seq_cursor(kind, *seq)),
                    _ => None,
                };
                Ok(Page {
                    items: items.into_iter().map(|(_, item)| item).collect(),
                    next_cursor,
                })
            })
            .await
    }

    /// Deletes the entries of the append-only log `table` (`seq`, and a `doc` with an `at`)
    /// appended before the first one whose `at` is not before `before`; returns how many.
    pub(crate) async fn expire_log(&self, table: &'static str, before: Timestamp) -> Result<usize> {
        let cut = self.db.read(move |c| log_cut(c, table, before)).await?;
        let delete_chunk = format!(
            "DELETE FROM {table} WHERE seq IN
                 (SELECT seq FROM {table} WHERE seq < ?1 ORDER BY seq LIMIT ?2)"
        );
        let chunk = bound(EXPIRE_CHUNK);
        let mut total = 0;
        loop {
            let sql = delete_chunk.clone();
            let deleted = self
                .db
                .write(move |tx| run(tx, &sql, params![cut, chunk]))
                .await?;
            total += deleted;
            if deleted < EXPIRE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Runs `delete_chunk` (which deletes at most `?2` rows that expired before `?1`) in one
    /// transaction per chunk until a chunk comes out short; returns the rows deleted.
    async fn expire(&self, delete_chunk: &'static str, now: i64) -> Result<usize> {
        let chunk = bound(EXPIRE_CHUNK);
        let mut total = 0;
        loop {
            let deleted = self
                .db
                .write(move |tx| run(tx, delete_chunk, params![now, chunk]))
                .await?;
            total += deleted;
            if deleted < EXPIRE_CHUNK {
                return Ok(total);
            }
        }
    }
}

/// The `seq` of the first entry of log `table` whose `at` is not before `before` (one past
/// the last entry when there is none): a binary search over the sequence, reading one entry
/// per step, since entries are appended in time order.
fn log_cut(c: &Connection, table: &str, before: Timestamp) -> Result<i64> {
    #[derive(serde::Deserialize)]
    struct At {
        #[serde(with = "time::serde::rfc3339")]
        at: Timestamp,
    }
    let (first, last): (Option<i64>, Option<i64>) = c
        .query_row(
            &format!("SELECT min(seq), max(seq) FROM {table}"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql_error)?;
    let (Some(mut lo), Some(last)) = (first, last) else {
        return Ok(0);
    };
    let mut hi = last + 1;
    let mut probe = c
        .prepare(&format!(
            "SELECT seq, doc FROM {table} WHERE seq >= ? ORDER BY seq LIMIT 1"
        ))
        .map_err(sql_error)?;
    // Entries before `lo` are older than the cut; the cut is at most `hi`.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let found = probe
            .query_row([mid], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .optional()
            .map_err(sql_error)?;
        match found {
            Some((seq, doc)) if from_doc::<At>(&doc)?.at < before => lo = seq + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// A raw record as column values, computed before taking the writer.
struct RawRow {
    id: String,
    tenant_id: String,
    source_id: String,
    external_id: Option<String>,
    ts: i64,
    received_at: i64,
    expires_at: i64,
    data: String,
}

impl RawRow {
    fn of(r: &RawRecord) -> Result<RawRow> {
        Ok(RawRow {
            id: r.id.to_string(),
            tenant_id: r.tenant_id.to_string(),
            source_id: r.source_id.to_string(),
            external_id: r.external_id.clone(),
            ts: micros(r.ts)?,
            received_at: micros(r.received_at)?,
            expires_at: micros(r.expires_at)?,
            data: to_doc(&r.data)?,
        })
    }
}

/// An output record as column values, computed before taking the writer.
struct OutputRow {
    id: String,
    tenant_id: String,
    feed_id: String,
    pipeline_version: i64,
    ts: i64,
    created_at: i64,
    expires_at: i64,
    data: String,
}

impl OutputRow {
    fn of(r: &OutputRecord) -> Result<OutputRow> {
        Ok(OutputRow {
            id: r.id.to_string(),
            tenant_id: r.tenant_id.to_string(),
            feed_id: r.feed_id.to_string(),
            pipeline_version: i64::from(r.pipeline_version),
            ts: micros(r.ts)?,
            created_at: micros(r.created_at)?,
            expires_at: micros(r.expires_at)?,
            data: to_doc(&r.data)?,
        })
    }
}

/// The change log read in order.
pub(crate) const RAW_AFTER: &str = concat!(
    "SELECT ",
    raw_columns!(),
    " FROM raw_records WHERE position > ? ORDER BY position LIMIT ?"
);
/// One tenant's part of the change log, in order.
pub(crate) const RAW_OF_TENANT_AFTER: &str = concat!(
    "SELECT ",
    raw_columns!(),
    " FROM raw_records WHERE tenant_id = ? AND position > ? ORDER BY position LIMIT ?"
);
/// The tenants with records after a position. `NOT INDEXED`: the planner would otherwise
/// answer the `GROUP BY` from the per-tenant index, reading every record ever stored on
/// each call instead of the few after the position.
pub(crate) const TENANTS_AFTER: &str =
    "SELECT tenant_id, MAX(position) FROM raw_records NOT INDEXED
     WHERE position > ? GROUP BY tenant_id";

#[async_trait]
impl RecordStore for SqliteStore {
    async fn append_raw(&self, records: &[RawRecord]) -> Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        let rows = records.iter().map(RawRow::of).collect::<Result<Vec<_>>>()?;
        self.db
            .write(move |tx| {
                // `ON CONFLICT` rather than `OR IGNORE`: only a duplicate of the vendor's id
                // is skipped; any other constraint failure still fails the whole batch.
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO raw_records
                             (id, tenant_id, source_id, external_id, ts, received_at, expires_at, data)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (source_id, external_id) DO NOTHING",
                    )
                    .map_err(sql_error)?;
                let mut new = 0;
                for r in &rows {
                    new += stmt
                        .execute(params![
                            r.id,
                            r.tenant_id,
                            r.source_id,
                            r.external_id,
                            r.ts,
                            r.received_at,
                            r.expires_at,
                            r.data
                        ])
                        .map_err(sql_error)?;
                }
                Ok(new)
            })
            .await
    }

    async fn raw_between(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RawRecord>> {
        let (tenant, source) = (tenant.to_string(), source.to_string());
        let (from, to) = (micros(from)?, micros(to)?);
        self.db
            .read_large(move |c| {
                collect(
                    c,
                    concat!(
                        "SELECT ",
                        raw_columns!(),
                        " FROM raw_records
                         WHERE source_id = ? AND tenant_id = ? AND ts >= ? AND ts < ?
                         ORDER BY ts, position"
                    ),
                    params![source, tenant, from, to],
                    |row| decode_raw(row).map(|(_, r)| r),
                )
            })
            .await
    }

    async fn append_output(&self, records: &[OutputRecord]) -> Result<usize> {
        let rows = records
            .iter()
            .map(OutputRow::of)
            .collect::<Result<Vec<_>>>()?;
        // Outputs are keyed by their derived ids, so chunks committed before a failure are
        // skipped when the batch is processed again.
        self.db
            .write_chunks(rows, WRITE_CHUNK, |tx, chunk| {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO output_records
                             (id, tenant_id, feed_id, pipeline_version, ts, created_at, expires_at, data)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .map_err(sql_error)?;
                let mut new = 0;
                for r in chunk {
                    new += stmt
                        .execute(params![
                            r.id,
                            r.tenant_id,
                            r.feed_id,
                            r.pipeline_version,
                            r.ts,
                            r.created_at,
                            r.expires_at,
                            r.data
                        ])
                        .map_err(sql_error)?;
                }
                Ok(new)
            })
            .await
    }

    async fn output_after(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutputRecord)>> {
        let (tenant, feed) = (tenant.to_string(), feed.to_string());
        let (after, limit) = (bound(after), bound(limit));
        self.db
            .read_large(move |c| {
                collect(
                    c,
                    concat!(
                        "SELECT ",
                        output_columns!(),
                        " FROM output_records
                         WHERE feed_id = ? AND tenant_id = ? AND position > ?
                         ORDER BY position LIMIT ?"
                    ),
                    params![feed, tenant, after, limit],
                    decode_output,
                )
            })
            .await
    }

    async fn output_between(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        from: Timestamp,
        to: Timestamp,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutputRecord)>> {
        let (tenant, feed) = (tenant.to_string(), feed.to_string());
        let (from, to) = (micros(from)?, micros(to)?);
        let (after, limit) = (bound(after), bound(limit));
        self.db
            .read_large(move |c| {
                collect(
                    c,
                    concat!(
                        "SELECT ",
                        output_columns!(),
                        " FROM output_records
                         WHERE feed_id = ? AND tenant_id = ? AND ts >= ? AND ts < ? AND position > ?
                         ORDER BY position LIMIT ?"
                    ),
                    params![feed, tenant, from, to, after, limit],
                    decode_output,
                )
            })
            .await
    }

    async fn output_at(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        positions: &[u64],
    ) -> Result<Vec<(u64, OutputRecord)>> {
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let (tenant, feed) = (tenant.to_string(), feed.to_string());
        let positions: Vec<i64> = positions.iter().map(|p| bound(*p)).collect();
        self.db
            .read_large(move |c| {
                // One lookup by key per position keeps the caller's order without sorting.
                let mut stmt = c
                    .prepare_cached(concat!(
                        "SELECT ",
                        output_columns!(),
                        " FROM output_records WHERE position = ? AND feed_id = ? AND tenant_id = ?"
                    ))
                    .map_err(sql_error)?;
                let mut found = Vec::with_capacity(positions.len());
                for position in &positions {
                    let mut rows = stmt
                        .query(params![position, feed, tenant])
                        .map_err(sql_error)?;
                    if let Some(row) = rows.next().map_err(sql_error)? {
                        found.push(decode_output(row)?);
                    }
                }
                Ok(found)
            })
            .await
    }

    async fn output_head(&self, tenant: &TenantId, feed: &FeedId) -> Result<u64> {
        let (tenant, feed) = (tenant.to_string(), feed.to_string());
        let head = self
            .db
            .read(move |c| output_head_in(c, &tenant, &feed))
            .await?;
        unsigned(head)
    }

    async fn record_feed_errors(&self, tenant: &TenantId, errors: &[FeedError]) -> Result<()> {
        if errors.is_empty() {
            return Ok(());
        }
        let tenant = tenant.to_string();
        let rows = errors
            .iter()
            .map(|e| Ok((e.feed_id.to_string(), to_doc(e)?)))
            .collect::<Result<Vec<_>>>()?;
        // A batch processed again after a failure records its errors again, chunked or not.
        self.db
            .write_chunks(rows, WRITE_CHUNK, move |tx, chunk| {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO feed_errors (tenant_id, feed_id, doc) VALUES (?, ?, ?)",
                    )
                    .map_err(sql_error)?;
                for (feed, doc) in chunk {
                    stmt.execute([&tenant, feed, doc]).map_err(sql_error)?;
                }
                Ok(chunk.len())
            })
            .await
            .map(|_| ())
    }

    async fn list_feed_errors(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        page: &PageRequest,
    ) -> Result<Page<FeedError>> {
        self.list_newest(
            "SELECT seq, doc FROM feed_errors WHERE tenant_id = ? AND feed_id = ? AND seq < ?
             ORDER BY seq DESC LIMIT ?",
            vec![tenant.to_string(), feed.to_string()],
            FEED_ERRORS,
            page,
        )
        .await
    }

    async fn window_watermark(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
    ) -> Result<Option<Timestamp>> {
        let key = format!("window:{tenant}:{feed}");
        self.consumer_value(key).await?.map(from_micros).transpose()
    }

    async fn set_window_watermark(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        end: Timestamp,
    ) -> Result<()> {
        let key = format!("window:{tenant}:{feed}");
        self.set_consumer_value(key, micros(end)?).await
    }

    async fn expire_records(&self, now: Timestamp) -> Result<usize> {
        let now = micros(now)?;
        let raw = self
            .expire(
                "DELETE FROM raw_records WHERE position IN
                     (SELECT position FROM raw_records WHERE expires_at < ? LIMIT ?)",
                now,
            )
            .await?;
        let output = self
            .expire(
                "DELETE FROM output_records WHERE position IN
                     (SELECT position FROM output_records WHERE expires_at < ? LIMIT ?)",
                now,
            )
            .await?;
        Ok(raw + output)
    }

    async fn expire_feed_errors(&self, before: Timestamp) -> Result<usize> {
        self.expire_log(FEED_ERRORS, before).await
    }
}
