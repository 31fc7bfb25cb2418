//! Raw records, output records, pipeline errors and window watermarks.
//!
//! A raw record is two items written together: a mark keyed by its id (which makes a
//! duplicate fail its condition) and the record in its source's partition, sorted by event
//! time. An output record likewise: a mark keyed by its id, holding its feed and position
//! (what `output_by_ids` reads), and the record in its feed's partition, sorted by position.
//! Positions come from a per-feed counter that only grows, so they are never handed out
//! twice, even after the newest record expires. Both record partitions are write-sharded.

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

    /// A feed's output records in position order after `after` whose `keep` holds, up to
    /// `limit`: the first `limit` of each shard, merged.
    async fn outputs_in_order(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        after: u64,
        limit: usize,
        keep: impl Fn(&OutputRecord) -> bool,
    ) -> Result<Vec<(u64, OutputRecord)>> {
        let mut rows = Vec::new();
        for shard in 0..RECORD_SHARDS {
            let query =
                Query::table(output_pk(tenant, feed, shard)).sort(Sort::After(position_key(after)));
            let mut start = None;
            let mut kept = 0;
            loop {
                let (items, next) = self.query_once(&query, start, Some(limit.max(1))).await?;
                for item in items {
                    let record: OutputRecord = from_item(&item)?;
                    if keep(&record) {
                        rows.push((num_attr(&item, "pos")?, record));
                        kept += 1;
                    }
                }
                match next {
                    Some(next) if kept < limit => start = Some(next),
                    _ => break,
                }
            }
        }
        rows.sort_by_key(|(position, _)| *position);
        rows.truncate(limit);
        Ok(rows)
    }
}

#[async_trait]
impl RecordStore for DynamoStore {
    async fn append_raw(&self, records: &[RawRecord]) -> Result<usize> {
        let groups = first_of_each(records, |r| &r.id)
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
        self.write_new_groups(groups).await
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
        let unique = first_of_each(records, |r| &r.id);
        if unique.is_empty() {
            return Ok(0);
        }
        // Leave out what is stored already, so positions are reserved only for new records.
        let stored = self
            .batch_get(
                unique
                    .iter()
                    .map(|r| (output_mark_pk(&r.tenant_id, &r.id), r.id.to_string()))
                    .collect(),
            )
            .await?;
        let fresh: Vec<&OutputRecord> = unique
            .into_iter()
            .filter(|r| {
                !stored.contains_key(&(output_mark_pk(&r.tenant_id, &r.id), r.id.to_string()))
            })
            .collect();
        let mut per_feed: Vec<((TenantId, FeedId), Vec<&OutputRecord>)> = Vec::new();
        for r in fresh {
            let feed = (r.tenant_id.clone(), r.feed_id.clone());
            match per_feed.iter_mut().find(|(f, _)| *f == feed) {
                Some((_, list)) => list.push(r),
                None => per_feed.push((feed, vec![r])),
            }
        }
        let mut groups = Vec::new();
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
                let record = expiring(record, r.expires_at);
                groups.push(vec![
                    put_op(mark, self.table(), true)?,
                    put_op(record, self.table(), false)?,
                ]);
            }
        }
        self.write_new_groups(groups).await
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
        let requests = errors
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
                Ok(aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(
                        aws_sdk_dynamodb::types::PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .map_err(CoreError::internal)?,
                    )
                    .build())
            })
            .collect::<Result<Vec<_>>>()?;
        crate::table::batch_write(&self.clients, self.table(), requests).await?;
        Ok(())
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
        self.scan_delete(
            "#kind IN (:raw, :raw_id, :output, :output_id) AND exp_us < :now",
            vec![
                (":raw", s("raw")),
                (":raw_id", s("raw_id")),
                (":output", s("output")),
                (":output_id", s("output_id")),
                (":now", n(micros(now))),
            ],
            |i| str_attr(i, "kind").is_ok_and(|k| k == "raw" || k == "output"),
        )
        .await
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
