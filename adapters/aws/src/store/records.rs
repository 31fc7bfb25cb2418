//! Raw records, output records, pipeline errors and window watermarks.
//!
//! Records are stored packed, several to an item: DynamoDB bills each started KiB of each
//! item written, so one small record per item, with a dedup mark beside it in a transaction,
//! costs about eight write units where its bytes need a fraction of one.
//!
//! - **Raw records.** The records of one `append_raw` call and source are a *pack*, named by
//!   a digest of their ids and arrival times (a redelivered ingest message carries the same
//!   ones; a vendor's resend does not). They are written as *parts*, one per minute of event
//!   time and expiry, each at most [`PART_BYTES`], in the source's partition (write-sharded
//!   by pack) sorted by minute, so `raw_between` reads the minutes it spans. A record sent
//!   with the vendor's id first claims a mark keyed by its id, naming the pack (a
//!   conditional put): a mark another pack holds makes it a duplicate. A record without one
//!   has a fresh id and comes again only in the same pack, whose parts are conditional
//!   puts. Marks come before parts, so a call that fails between them is completed by its
//!   retry, which claims the same marks again.
//! - **Output records** are parts in their feed's partition (write-sharded), sorted by the
//!   last position they hold. Positions come from a per-feed counter that only grows, so
//!   they are never handed out twice, even after the newest record expires.
//!   `append_output_once` writes a unit's parts in one transaction with a mark for (feed,
//!   pipeline version, unit): one conditional write per batch. `append_output` writes each
//!   record in a transaction with a mark keyed by its id (windows: few records).
//! - A reserved range that holds no record (lost to a race or a failed write, or expired)
//!   gets a gap marker, so readers pass it at once.

use super::accounts::tenant_pk;
use super::*;
use crate::bootstrap::TTL_ATTRIBUTE;
use crate::table::{RECORD_SHARDS, shard_of};
use async_trait::async_trait;
use wharf_core::domain::{FeedError, OutputRecord, RawRecord};
use wharf_core::ports::RecordStore;
use wharf_core::{FeedId, RecordId, SourceId, TenantId};

/// The largest part, compressed (a single record that does not fit is a part of its own):
/// a stream batch of 100 parts, base64 in the event, stays under Lambda's 6 MB.
pub const PART_BYTES: usize = 40 * 1024;
/// The most JSON a part starts from before it is compressed (records compress about
/// eightfold; a part that compresses worse is halved until it fits `PART_BYTES`).
pub(super) const PART_JSON_BYTES: usize = 384 * 1024;
/// Conditional mark writes in flight at once.
pub(super) const MARKS_IN_FLIGHT: usize = 32;
/// Parts per unit transaction (one item is the unit's mark) and their bytes, under
/// DynamoDB's 100 items and 4 MB.
pub(super) const UNIT_PARTS: usize = 64;
pub(super) const UNIT_BYTES: usize = 3 * 1024 * 1024;

pub(super) fn raw_mark_pk(tenant: &TenantId, id: &RecordId) -> String {
    format!("T#{tenant}#RAWID#{}", shard_of(id.as_str(), RECORD_SHARDS))
}

pub(super) fn raw_pk(tenant: &TenantId, source: &SourceId, shard: u32) -> String {
    format!("T#{tenant}#RAW#{source}#{shard}")
}

pub(super) fn output_mark_pk(tenant: &TenantId, id: &RecordId) -> String {
    format!("T#{tenant}#OUTID#{}", shard_of(id.as_str(), RECORD_SHARDS))
}

pub(super) fn unit_mark_pk(tenant: &TenantId, unit: &str) -> String {
    format!("T#{tenant}#OUTUNIT#{}", shard_of(unit, RECORD_SHARDS))
}

pub(super) fn output_pk(tenant: &TenantId, feed: &FeedId, shard: u32) -> String {
    format!("T#{tenant}#OUT#{feed}#{shard}")
}

pub(super) fn position_key(position: u64) -> String {
    format!("{position:020}")
}

/// The sort key prefix of a minute of event time: sorts like the instant.
pub(super) fn minute_key(t: Timestamp) -> String {
    let minute = micros(t).div_euclid(60_000_000) * 60_000_000;
    format!("{:020}", i128::from(minute) + 1_000_000_000_000_000_000)
}

pub(super) fn head_sk(feed: &FeedId) -> String {
    format!("FEED#{feed}#HEAD")
}

pub(super) fn errors_pk(tenant: &TenantId, feed: &FeedId) -> String {
    format!("T#{tenant}#ERR#{feed}")
}

/// Retention attributes: `expires` for DynamoDB's TTL (seconds) and `exp_us` for exact
/// comparisons (TTL deletes within days, not at the second).
pub(super) fn expiring(mut item: Item, expires_at: Timestamp) -> Item {
    item.insert(TTL_ATTRIBUTE.into(), n(expires_at.unix_timestamp()));
    item.insert("exp_us".into(), n(micros(expires_at)));
    item
}

use super::packs::*;
use super::parts::*;

#[async_trait]
impl RecordStore for DynamoStore {
    async fn append_raw(&self, records: &[RawRecord]) -> Result<usize> {
        let unique = first_of_each(records, |r| &r.id);
        let mut new = 0;
        for ((tenant, source), list) in
            grouped(unique, |r| (r.tenant_id.clone(), r.source_id.clone()))
        {
            let mut names: Vec<String> = list
                .iter()
                .map(|r| format!("{}@{}", r.id, micros(r.received_at)))
                .collect();
            names.sort();
            let named: Vec<&str> = [tenant.as_str(), source.as_str()]
                .into_iter()
                .chain(names.iter().map(String::as_str))
                .collect();
            let pack = wharf_core::id::derive(&named).simple().to_string();
            let kept = self.claim_raw_marks(&pack, &list).await?;
            let ours = list
                .into_iter()
                .zip(kept)
                .filter_map(|(r, kept)| kept.then_some(r))
                .collect();
            new += self.put_raw_parts(&tenant, &source, &pack, ours).await?;
        }
        Ok(new)
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
        // Parts are sorted by minute; `~` sorts after every pack name of the last minute.
        let (lo, hi) = (
            format!("{}#", minute_key(from)),
            format!("{}#~", minute_key(to)),
        );
        let mut rows: Vec<RawRecord> = Vec::new();
        for shard in 0..RECORD_SHARDS {
            let query = Query::table(raw_pk(tenant, source, shard))
                .sort(Sort::Between(lo.clone(), hi.clone()));
            for item in self.query_all(&query, None).await? {
                rows.extend(
                    part_records::<RawRecord>(&item)?
                        .into_iter()
                        .filter(|r| from <= r.ts && r.ts < to),
                );
            }
        }
        rows.sort_by(|a, b| (a.ts, a.id.as_str()).cmp(&(b.ts, b.id.as_str())));
        Ok(rows)
    }

    async fn append_output(&self, records: &[OutputRecord]) -> Result<usize> {
        // Leave out what is stored already, so positions are reserved only for new records.
        let fresh = self
            .not_stored(records, |r| &r.id, |r| output_mark_pk(&r.tenant_id, &r.id))
            .await?;
        if fresh.is_empty() {
            return Ok(0);
        }
        let mut groups = Vec::new();
        let mut places = Vec::new();
        let written_us = n(micros(time::OffsetDateTime::now_utc()));
        for ((tenant, feed), list) in grouped(fresh, |r| (r.tenant_id.clone(), r.feed_id.clone())) {
            let first = self
                .reserve_positions(&tenant, &feed, list.len() as u64)
                .await?;
            for (offset, r) in list.into_iter().enumerate() {
                let position = first + offset as u64;
                let mut mark = key(output_mark_pk(&tenant, &r.id), r.id.as_str());
                mark.insert("kind".into(), s("output_id"));
                mark.insert("pos".into(), n(position));
                let mark = expiring(mark, r.expires_at);
                let shard = shard_of(r.id.as_str(), RECORD_SHARDS);
                let (run, packed) = parts(&[r], |r| r.expires_at)?
                    .pop()
                    .ok_or_else(|| CoreError::internal("a record made no part"))?;
                let part = output_part(&tenant, &feed, shard, position, &run, packed, &written_us);
                groups.push(vec![
                    put_op(mark, self.table(), true)?,
                    put_op(part, self.table(), false)?,
                ]);
                places.push((tenant.clone(), feed.clone(), shard, position, position));
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

    async fn append_output_once(&self, unit: &str, records: &[OutputRecord]) -> Result<usize> {
        let unique = first_of_each(records, |r| &r.id);
        let mut new = 0;
        let by_feed = grouped(unique, |r| {
            (r.tenant_id.clone(), r.feed_id.clone(), r.pipeline_version)
        });
        for ((tenant, feed, version), list) in by_feed {
            // A unit too large for one transaction (over 64 parts or 3 MiB deflated: some 20 MB
            // of outputs from one raw part) goes in several, each with its own mark. They are
            // cut by size, so a retry whose records came out differently may cut elsewhere and
            // store a record twice or not at all; one transaction has no such seam.
            let mut chunks: Vec<Vec<(Vec<&OutputRecord>, Vec<u8>)>> = vec![Vec::new()];
            let mut bytes = 0;
            for part in parts(&list, |r| r.expires_at)? {
                if let Some(chunk) = chunks.last()
                    && (chunk.len() == UNIT_PARTS || bytes + part.1.len() > UNIT_BYTES)
                {
                    chunks.push(Vec::new());
                    bytes = 0;
                }
                bytes += part.1.len();
                if let Some(chunk) = chunks.last_mut() {
                    chunk.push(part);
                }
            }
            for (k, chunk) in chunks.into_iter().enumerate() {
                let (mark_pk, mark_sk) = (
                    unit_mark_pk(&tenant, unit),
                    format!("{feed}#{version}#{unit}#{k}"),
                );
                if chunk.is_empty() || self.get(&mark_pk, &mark_sk).await?.is_some() {
                    continue; // stored before
                }
                let count: usize = chunk.iter().map(|(run, _)| run.len()).sum();
                let first = self.reserve_positions(&tenant, &feed, count as u64).await?;
                let last = first + count as u64 - 1;
                let shard = shard_of(&format!("{unit}#{k}"), RECORD_SHARDS);
                let mut mark = key(mark_pk, mark_sk);
                mark.insert("kind".into(), s("output_unit"));
                mark.insert("first_pos".into(), n(first));
                mark.insert("pos".into(), n(last));
                let expires = chunk
                    .iter()
                    .flat_map(|(run, _)| run.iter().map(|r| r.expires_at))
                    .max()
                    .unwrap_or_else(time::OffsetDateTime::now_utc);
                let mut ops = vec![put_op(expiring(mark, expires), self.table(), true)?];
                // When the parts are written, not when the call began: readers judge by it
                // whether a hole before them may still fill.
                let written_us = n(micros(time::OffsetDateTime::now_utc()));
                let mut at = first;
                for (run, doc) in &chunk {
                    let part =
                        output_part(&tenant, &feed, shard, at, run, doc.clone(), &written_us);
                    ops.push(put_op(part, self.table(), false)?);
                    at += run.len() as u64;
                }
                let place = (tenant.clone(), feed.clone(), shard, first, last);
                match self.transact(ops).await {
                    Ok(None) => new += count,
                    // Another writer stored the unit first: the range reserved here is a gap.
                    Ok(Some(_)) => self.mark_gaps(std::iter::once(&place)).await,
                    Err(e) => {
                        self.mark_gaps(std::iter::once(&place)).await;
                        return Err(e);
                    }
                }
            }
        }
        Ok(new)
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

    async fn output_at(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        positions: &[u64],
    ) -> Result<Vec<(u64, OutputRecord)>> {
        let (Some(lo), Some(hi)) = (positions.iter().min(), positions.iter().max()) else {
            return Ok(Vec::new());
        };
        let wanted: std::collections::HashSet<u64> = positions.iter().copied().collect();
        let mut found: HashMap<u64, OutputRecord> = HashMap::new();
        for shard in 0..RECORD_SHARDS {
            // Parts are sorted by their last position: the first one read may start before `lo`.
            let query = Query::table(output_pk(tenant, feed, shard))
                .sort(Sort::After(position_key(lo.saturating_sub(1))));
            let mut start = None;
            'shard: loop {
                let (items, next) = self.query_once(&query, start, Some(16)).await?;
                for item in items {
                    let first = num_attr(&item, "first_pos")?;
                    if first > *hi {
                        break 'shard;
                    }
                    if str_attr(&item, "kind")? != "output_pack" {
                        continue;
                    }
                    for (offset, record) in
                        part_records::<OutputRecord>(&item)?.into_iter().enumerate()
                    {
                        let position = first + offset as u64;
                        if wanted.contains(&position) {
                            found.insert(position, record);
                        }
                    }
                }
                match next {
                    Some(next) => start = Some(next),
                    None => break,
                }
            }
        }
        Ok(positions
            .iter()
            .filter_map(|p| found.get(p).map(|r| (*p, r.clone())))
            .collect())
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
        let filter = "#kind IN (:raw, :raw_id, :output, :output_id, :unit) AND exp_us < :now";
        let values = vec![
            (":raw", s("raw_pack")),
            (":raw_id", s("raw_id")),
            (":output", s("output_pack")),
            (":output_id", s("output_id")),
            (":unit", s("output_unit")),
            (":now", n(micros(now))),
        ];
        let mut expired_outputs = Vec::new();
        let mut records = 0;
        self.scan_delete(filter, values, |i| {
            let kind = str_attr(i, "kind").unwrap_or_default();
            if kind == "raw_pack" || kind == "output_pack" {
                records += num_attr(i, "n_records").unwrap_or(0) as usize;
            }
            if kind == "output_pack" {
                expired_outputs.push(i.clone());
            }
            false
        })
        .await?;
        // An expired part leaves a gap marker, so readers behind it pass at once.
        let gaps = expired_outputs
            .iter()
            .map(|item| {
                Ok(gap_item(
                    str_attr(item, "pk")?.to_owned(),
                    num_attr(item, "first_pos")?,
                    num_attr(item, "pos")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        self.put_all(gaps).await?;
        Ok(records)
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
