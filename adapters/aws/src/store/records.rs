//! Raw records, output records, pipeline errors and window watermarks.
//!
//! A raw record is two items written together: a mark keyed by its id (which makes a
//! duplicate fail its condition) and the record in its source's partition, sorted by event
//! time. An output record likewise: a mark keyed by its id, holding its feed and position
//! (what `output_by_ids` reads), and the record in its feed's partition, sorted by position.
//! Positions come from a per-feed counter that only grows, so they are never handed out
//! twice, even after the newest record expires. Both record partitions are write-sharded.
//! Ids already stored are looked up (one `BatchGetItem` per 100) and left out before the
//! transactions, which then fail only when two writers race on one id.

use super::accounts::tenant_pk;
use super::*;
use crate::bootstrap::TTL_ATTRIBUTE;
use crate::table::{RECORD_SHARDS, shard_of};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use wharf_core::domain::{FeedError, OutputRecord, RawRecord};
use wharf_core::ports::RecordStore;
use wharf_core::{FeedId, RecordId, SourceId, TenantId};

fn raw_mark_pk(tenant: &TenantId, id: &RecordId) -> String {
    format!("T#{tenant}#RAWID#{}", shard_of(id.as_str(), RECORD_SHARDS))
}

fn raw_pk(tenant: &TenantId, source: &SourceId, shard: u32) -> String {
    format!("T#{tenant}#RAW#{source}#{shard}")
}

fn output_mark_pk(tenant: &TenantId, id: &RecordId) -> String {
    format!("T#{tenant}#OUTID#{}", shard_of(id.as_str(), RECORD_SHARDS))
}

fn output_pk(tenant: &TenantId, feed: &FeedId, shard: u32) -> String {
    format!("T#{tenant}#OUT#{feed}#{shard}")
}

fn position_key(position: u64) -> String {
    format!("{position:020}")
}

fn head_sk(feed: &FeedId) -> String {
    format!("FEED#{feed}#HEAD")
}

fn errors_pk(tenant: &TenantId, feed: &FeedId) -> String {
    format!("T#{tenant}#ERR#{feed}")
}

/// Retention attributes: `expires` for DynamoDB's TTL (seconds) and `exp_us` for exact
/// comparisons (TTL deletes within days, not at the second).
fn expiring(mut item: Item, expires_at: Timestamp) -> Item {
    item.insert(TTL_ATTRIBUTE.into(), n(expires_at.unix_timestamp()));
    item.insert("exp_us".into(), n(micros(expires_at)));
    item
}

/// The first of each id, in order: a transaction may not touch one item twice.
fn first_of_each<T>(records: &[T], id: impl Fn(&T) -> &RecordId) -> Vec<&T> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter(|r| seen.insert(id(r).clone()))
        .collect()
}

/// A random suffix that keeps sort keys of one instant apart.
fn nonce() -> String {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).unwrap_or_default();
    random.iter().map(|b| format!("{b:02x}")).collect()
}

impl DynamoStore {
    /// The first of each id among `records` whose mark (at `mark_pk`, sorted by id) is absent.
    async fn not_stored<'a, T>(
        &self,
        records: &'a [T],
        id: impl Fn(&T) -> &RecordId,
        mark_pk: impl Fn(&T) -> String,
    ) -> Result<Vec<&'a T>> {
        let unique = first_of_each(records, &id);
        if unique.is_empty() {
            return Ok(unique);
        }
        let keys = |r: &T| (mark_pk(r), id(r).to_string());
        let stored = self
            .batch_get(unique.iter().map(|r| keys(r)).collect())
            .await?;
        Ok(unique
            .into_iter()
            .filter(|r| !stored.contains_key(&keys(r)))
            .collect())
    }

    /// Reserves `count` positions of a feed; returns the first.
    async fn reserve_positions(&self, tenant: &TenantId, feed: &FeedId, count: u64) -> Result<u64> {
        let answer = self
            .db()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(tenant), head_sk(feed))))
            .update_expression("ADD #head :n SET #kind = :kind")
            .expression_attribute_names("#head", "head")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_values(":n", n(count))
            .expression_attribute_values(":kind", s("head"))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| aws_error("reserving output positions", e))?;
        let last = answer
            .attributes
            .as_ref()
            .map(|a| num_attr(a, "head"))
            .transpose()?
            .ok_or_else(|| CoreError::internal("the position counter answered no head"))?;
        Ok(last + 1 - count)
    }

    /// Puts a gap marker at each place that holds nothing (a conditional put each: a record
    /// that did land stays). A marker that cannot be written only costs readers the settle
    /// time, so failures are logged, not returned.
    async fn mark_gaps<'a>(&self, places: impl Iterator<Item = &'a (TenantId, FeedId, u32, u64)>) {
        for (tenant, feed, shard, position) in places {
            let gap = gap_item(output_pk(tenant, feed, *shard), *position);
            match self.put_new(gap, "output").await {
                Ok(()) | Err(CoreError::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(feed.id = %feed, position, error = %e, "cannot mark a gap")
                }
            }
        }
    }

    /// A feed's output records after position `after` whose `keep` holds, in position order,
    /// up to `limit` (fewer when a shard has more to read), stopping at the first position that may still be being written.
    ///
    /// Writers reserve positions before they store, and two writers of one feed may commit
    /// out of order (or one transaction become visible shard by shard), so a reader can see
    /// position 7 before 6. Handing out 7 would let a subscriber move past 6 for good; so the
    /// records come in an unbroken run from `after + 1`, where a position counts as passed
    /// when it holds a record or a gap marker, or when the record after it was written more
    /// than `SETTLE` ago (its writer died between reserving and storing).
    async fn outputs_in_order(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        after: u64,
        limit: usize,
        keep: impl Fn(&OutputRecord) -> bool,
    ) -> Result<Vec<(u64, OutputRecord)>> {
        struct Row {
            position: u64,
            record: Option<OutputRecord>,
            written_us: i64,
        }
        let mut rows: Vec<Row> = Vec::new();
        // Beyond the last row read from a shard that had more, positions are unknown. Each
        // shard is read for about twice its share of `limit` (ids spread records evenly), not
        // for all of it: a shorter page only means the caller reads on, while reading `limit`
        // from every shard would read eight times what is returned.
        let mut known_up_to = u64::MAX;
        let per_shard = (limit / RECORD_SHARDS as usize + 1)
            .saturating_mul(2)
            .min(limit)
            .max(1);
        for shard in 0..RECORD_SHARDS {
            let query =
                Query::table(output_pk(tenant, feed, shard)).sort(Sort::After(position_key(after)));
            let mut start = None;
            let mut kept = 0;
            loop {
                let (items, next) = self.query_once(&query, start, Some(per_shard)).await?;
                let mut last = None;
                for item in items {
                    let position = num_attr(&item, "pos")?;
                    last = Some(position);
                    let written_us = item
                        .get("written_us")
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let record = match str_attr(&item, "kind")? {
                        "gap" => None,
                        _ => Some(from_item::<OutputRecord>(&item)?).filter(|r| keep(r)),
                    };
                    if record.is_some() {
                        kept += 1;
                    }
                    rows.push(Row {
                        position,
                        record,
                        written_us,
                    });
                }
                match next {
                    Some(next) if kept < per_shard => start = Some(next),
                    Some(_) => {
                        known_up_to = known_up_to.min(last.unwrap_or(after));
                        break;
                    }
                    None => break,
                }
            }
        }
        rows.sort_by_key(|r| r.position);
        let settled = micros(time::OffsetDateTime::now_utc())
            - i64::try_from(SETTLE.as_micros()).unwrap_or(i64::MAX);
        let mut expected = after + 1;
        let mut out = Vec::new();
        for row in rows {
            if row.position > known_up_to || out.len() == limit {
                break;
            }
            if row.position != expected && row.written_us > settled {
                break; // a position before this one may still land
            }
            expected = row.position + 1;
            if let Some(record) = row.record {
                out.push((row.position, record));
            }
        }
        Ok(out)
    }
}

/// How long a missing position may hold readers back before it counts as lost.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(30);
/// A gap marker at a feed's `position`: a position that holds no record (lost to a race or a
/// failed write, or its record expired), kept a week so readers behind it pass it at once.
fn gap_item(pk: String, position: u64) -> Item {
    let now = time::OffsetDateTime::now_utc();
    let mut gap = key(pk, position_key(position));
    gap.insert("kind".into(), s("gap"));
    gap.insert("pos".into(), n(position));
    gap.insert("written_us".into(), n(micros(now)));
    gap.insert(TTL_ATTRIBUTE.into(), n(now.unix_timestamp() + GAP_TTL_SECS));
    gap
}

/// How long a gap marker is kept.
const GAP_TTL_SECS: i64 = 7 * 86_400;

#[async_trait]
impl RecordStore for DynamoStore {
    async fn append_raw(&self, records: &[RawRecord]) -> Result<usize> {
        // Known ids are left out before writing: a transaction a duplicate cancels still
        // costs every item's write, and resends are common.
        let fresh = self
            .not_stored(records, |r| &r.id, |r| raw_mark_pk(&r.tenant_id, &r.id))
            .await?;
        let groups = fresh
            .into_iter()
            .map(|r| {
                let mut mark = key(raw_mark_pk(&r.tenant_id, &r.id), r.id.as_str());
                mark.insert("kind".into(), s("raw_id"));
                let mark = expiring(mark, r.expires_at);
                let shard = shard_of(r.id.as_str(), RECORD_SHARDS);
                let mut record = item(
                    raw_pk(&r.tenant_id, &r.source_id, shard),
                    format!("{}#{}", time_key(r.ts), r.id),
                    "raw",
                    r,
                )?;
                record.insert("tenant_id".into(), s(r.tenant_id.as_str()));
                let record = expiring(record, r.expires_at);
                Ok(vec![
                    put_op(mark, self.table(), true)?,
                    put_op(record, self.table(), false)?,
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .write_new_groups(groups)
            .await?
            .into_iter()
            .filter(|w| *w)
            .count())
    }

    async fn raw_between(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RawRecord>> {
        if to <= from {
            return Ok(Vec::new());
        }
        // `{to}#` sorts before every key of the instant `to`, so BETWEEN leaves them out.
        let (lo, hi) = (format!("{}#", time_key(from)), format!("{}#", time_key(to)));
        let mut rows: Vec<(String, RawRecord)> = Vec::new();
        for shard in 0..RECORD_SHARDS {
            let query = Query::table(raw_pk(tenant, source, shard))
                .sort(Sort::Between(lo.clone(), hi.clone()));
            for item in self.query_all(&query, None).await? {
                rows.push((str_attr(&item, "sk")?.to_owned(), from_item(&item)?));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    async fn append_output(&self, records: &[OutputRecord]) -> Result<usize> {
        // Leave out what is stored already, so positions are reserved only for new records.
        let fresh = self
            .not_stored(records, |r| &r.id, |r| output_mark_pk(&r.tenant_id, &r.id))
            .await?;
        if fresh.is_empty() {
            return Ok(0);
        }
        let mut per_feed: Vec<((TenantId, FeedId), Vec<&OutputRecord>)> = Vec::new();
        for r in fresh {
            let feed = (r.tenant_id.clone(), r.feed_id.clone());
            match per_feed.iter_mut().find(|(f, _)| *f == feed) {
                Some((_, list)) => list.push(r),
                None => per_feed.push((feed, vec![r])),
            }
        }
        let mut groups = Vec::new();
        let mut places = Vec::new();
        let written_us = n(micros(time::OffsetDateTime::now_utc()));
        for ((tenant, feed), list) in per_feed {
            let first = self
                .reserve_positions(&tenant, &feed, list.len() as u64)
                .await?;
            for (offset, r) in list.into_iter().enumerate() {
                let position = first + offset as u64;
                let doc = s(serde_json::to_string(r).map_err(CoreError::internal)?);
                let mut mark = key(output_mark_pk(&tenant, &r.id), r.id.as_str());
                mark.insert("kind".into(), s("output_id"));
                mark.insert("doc".into(), doc.clone());
                mark.insert("pos".into(), n(position));
                let mark = expiring(mark, r.expires_at);
                let shard = shard_of(r.id.as_str(), RECORD_SHARDS);
                let mut record = key(output_pk(&tenant, &feed, shard), position_key(position));
                record.insert("kind".into(), s("output"));
                record.insert("doc".into(), doc);
                record.insert("pos".into(), n(position));
                record.insert("tenant_id".into(), s(tenant.as_str()));
                record.insert("written_us".into(), written_us.clone());
                let record = expiring(record, r.expires_at);
                groups.push(vec![
                    put_op(mark, self.table(), true)?,
                    put_op(record, self.table(), false)?,
                ]);
                places.push((tenant.clone(), feed.clone(), shard, position));
            }
        }
        // A position reserved for a record that was not stored (another writer stored it
        // first, or the write failed) is marked as a gap, so readers pass it at once instead
        // of waiting for it to settle.
        let written = match self.write_new_groups(groups).await {
            Ok(written) => written,
            Err(e) => {
                // Some transactions may have landed: the markers go only where nothing is.
                self.mark_gaps(places.iter()).await;
                return Err(e);
            }
        };
        self.mark_gaps(
            written
                .iter()
                .zip(&places)
                .filter(|(w, _)| !**w)
                .map(|(_, place)| place),
        )
        .await;
        Ok(written.into_iter().filter(|w| *w).count())
    }

    async fn output_after(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutputRecord)>> {
        self.outputs_in_order(tenant, feed, after, limit, |_| true)
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
        self.outputs_in_order(tenant, feed, after, limit, |r| from <= r.ts && r.ts < to)
            .await
    }

    async fn output_by_ids(
        &self,
        tenant: &TenantId,
        ids: &[RecordId],
    ) -> Result<Vec<OutputRecord>> {
        let keys: Vec<(String, String)> = ids
            .iter()
            .map(|id| (output_mark_pk(tenant, id), id.to_string()))
            .collect();
        let found = self.batch_get(keys.clone()).await?;
        keys.iter()
            .filter_map(|k| found.get(k))
            .map(from_item)
            .collect()
    }

    async fn output_head(&self, tenant: &TenantId, feed: &FeedId) -> Result<u64> {
        match self.get(&tenant_pk(tenant), &head_sk(feed)).await? {
            Some(item) => num_attr(&item, "head"),
            None => Ok(0),
        }
    }

    async fn record_feed_errors(&self, tenant: &TenantId, errors: &[FeedError]) -> Result<()> {
        let items = errors
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let mut item = item(
                    errors_pk(tenant, &e.feed_id),
                    format!("{}#{index:05}#{}", time_key(e.at), nonce()),
                    "feed_error",
                    e,
                )?;
                item.insert("at_us".into(), n(micros(e.at)));
                Ok(item)
            })
            .collect::<Result<Vec<_>>>()?;
        self.put_all(items).await
    }

    async fn list_feed_errors(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        page: &PageRequest,
    ) -> Result<Page<FeedError>> {
        let query = Query::table(errors_pk(tenant, feed)).newest_first();
        docs(self.query_page(&query, page, keep_all).await?)
    }

    async fn window_watermark(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
    ) -> Result<Option<Timestamp>> {
        match self
            .get(&tenant_pk(tenant), &format!("FEED#{feed}#WM"))
            .await?
        {
            Some(item) => Ok(Some(
                Timestamp::parse(
                    str_attr(&item, "end")?,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(CoreError::internal)?,
            )),
            None => Ok(None),
        }
    }

    async fn set_window_watermark(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        end: Timestamp,
    ) -> Result<()> {
        let mut item = key(tenant_pk(tenant), format!("FEED#{feed}#WM"));
        item.insert("kind".into(), s("watermark"));
        item.insert(
            "end".into(),
            s(end
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(CoreError::internal)?),
        );
        self.put(item).await
    }

    async fn expire_records(&self, now: Timestamp) -> Result<usize> {
        let filter = "#kind IN (:raw, :raw_id, :output, :output_id) AND exp_us < :now";
        let values = vec![
            (":raw", s("raw")),
            (":raw_id", s("raw_id")),
            (":output", s("output")),
            (":output_id", s("output_id")),
            (":now", n(micros(now))),
        ];
        let mut expired_outputs = Vec::new();
        let count = self
            .scan_delete(filter, values, |i| match str_attr(i, "kind") {
                Ok("raw") => true,
                Ok("output") => {
                    expired_outputs.push(i.clone());
                    true
                }
                _ => false,
            })
            .await?;
        // An expired record leaves a gap marker, so readers behind it pass at once.
        let gaps = expired_outputs
            .iter()
            .map(|item| {
                let position = str_attr(item, "sk")?.parse().map_err(CoreError::internal)?;
                Ok(gap_item(str_attr(item, "pk")?.to_owned(), position))
            })
            .collect::<Result<Vec<_>>>()?;
        self.put_all(gaps).await?;
        Ok(count)
    }

    async fn expire_feed_errors(&self, before: Timestamp) -> Result<usize> {
        self.scan_delete(
            "#kind = :kind AND at_us < :before",
            vec![(":kind", s("feed_error")), (":before", n(micros(before)))],
            |_| true,
        )
        .await
    }
}
