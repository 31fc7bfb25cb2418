//! Writing and reading parts: claiming marks, reserving positions, writing raw parts,
//! reading outputs in position order, and marking gaps a failed write left.

use super::accounts::tenant_pk;
use super::packs::*;
use super::records::*;
use super::*;
use crate::bootstrap::TTL_ATTRIBUTE;
use crate::table::{RECORD_SHARDS, shard_of};
use aws_sdk_dynamodb::types::ReturnValue;
use wharf_core::domain::{OutputRecord, RawRecord};
use wharf_core::{FeedId, RecordId, SourceId, TenantId};

impl DynamoStore {
    /// The first of each id among `records` whose mark (at `mark_pk`, sorted by id) is absent.
    pub(super) async fn not_stored<'a, T>(
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
    pub(super) async fn reserve_positions(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        count: u64,
    ) -> Result<u64> {
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

    /// Puts a gap marker over each range that holds nothing (a conditional put each: a part
    /// that did land stays). A marker that cannot be written only costs readers the settle
    /// time, so failures are logged, not returned.
    pub(super) async fn mark_gaps<'a>(&self, places: impl Iterator<Item = &'a Place>) {
        for (tenant, feed, shard, first, last) in places {
            let gap = gap_item(output_pk(tenant, feed, *shard), *first, *last);
            match self.put_new(gap, "output").await {
                Ok(()) | Err(CoreError::Conflict(_)) => {}
                Err(e) => {
                    tracing::warn!(feed.id = %feed, first, last, error = %e, "cannot mark a gap")
                }
            }
        }
    }

    /// Claims the marks of the records sent with the vendor's id for `pack`; answers, per
    /// record, whether it is the pack's (unnamed records always are).
    pub(super) async fn claim_raw_marks(
        &self,
        pack: &str,
        records: &[&RawRecord],
    ) -> Result<Vec<bool>> {
        let mut kept = vec![true; records.len()];
        let named: Vec<usize> = (0..records.len())
            .filter(|i| records[*i].external_id.is_some())
            .collect();
        for chunk in named.chunks(MARKS_IN_FLIGHT) {
            let mut writes = tokio::task::JoinSet::new();
            for &i in chunk {
                let r = records[i];
                let mut mark = key(raw_mark_pk(&r.tenant_id, &r.id), r.id.as_str());
                mark.insert("kind".into(), s("raw_id"));
                mark.insert("pack".into(), s(pack));
                let request = self
                    .db()
                    .put_item()
                    .table_name(self.table())
                    .set_item(Some(expiring(mark, r.expires_at)))
                    .condition_expression("attribute_not_exists(pk) OR #pack = :pack")
                    .expression_attribute_names("#pack", "pack")
                    .expression_attribute_values(":pack", s(pack));
                writes.spawn(async move { (i, request.send().await) });
            }
            while let Some(done) = writes.join_next().await {
                let (i, sent) = done.map_err(CoreError::internal)?;
                kept[i] = written(sent, "claiming a record id")?;
            }
        }
        Ok(kept)
    }

    /// Writes a pack's records as parts; answers how many were new (in parts not there yet).
    pub(super) async fn put_raw_parts(
        &self,
        tenant: &TenantId,
        source: &SourceId,
        pack: &str,
        records: Vec<&RawRecord>,
    ) -> Result<usize> {
        let shard = shard_of(pack, RECORD_SHARDS);
        let mut new = 0;
        let mut index = 0;
        for (minute, list) in grouped(records, |r| minute_key(r.ts)) {
            for (run, doc) in parts(&list, |r| r.expires_at)? {
                let mut part = key(
                    raw_pk(tenant, source, shard),
                    format!("{minute}#{pack}#{index:04}"),
                );
                index += 1;
                part.insert("kind".into(), s("raw_pack"));
                part.insert("docz".into(), AttributeValue::B(doc.into()));
                part.insert("n_records".into(), n(run.len()));
                part.insert("tenant_id".into(), s(tenant.as_str()));
                match self.put_new(expiring(part, run[0].expires_at), "raw").await {
                    Ok(()) => new += run.len(),
                    Err(CoreError::Conflict(_)) => {} // the pack came before
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(new)
    }

    /// A feed's output records after position `after` whose `keep` holds, in position order,
    /// up to `limit` (fewer when a shard has more to read), stopping at the first position that may still be being written.
    ///
    /// Writers reserve positions before they store, and two writers of one feed may commit
    /// out of order, so a reader can see position 7 before 6. Handing out 7 would let a
    /// subscriber move past 6 for good; so the records come in an unbroken run from
    /// `after + 1`, where a position counts as passed when a part or a gap marker covers it,
    /// or when the part after it was written more than `SETTLE` ago (its writer died
    /// between reserving and storing).
    pub(super) async fn outputs_in_order(
        &self,
        tenant: &TenantId,
        feed: &FeedId,
        after: u64,
        limit: usize,
        keep: impl Fn(&OutputRecord) -> bool,
    ) -> Result<Vec<(u64, OutputRecord)>> {
        struct Row {
            first: u64,
            last: u64,
            records: Vec<OutputRecord>,
            written_us: i64,
        }
        let mut rows: Vec<Row> = Vec::new();
        // Beyond the last part read from a shard that had more, positions are unknown. Each
        // shard is read for about twice its share of `limit` (units spread over shards),
        // not for all of it: a shorter page only means the caller reads on.
        let mut known_up_to = u64::MAX;
        let per_shard = (limit / RECORD_SHARDS as usize + 1)
            .saturating_mul(2)
            .min(limit)
            .max(1);
        for shard in 0..RECORD_SHARDS {
            let query =
                Query::table(output_pk(tenant, feed, shard)).sort(Sort::After(position_key(after)));
            let mut start = None;
            let mut read = 0;
            loop {
                let (items, next) = self.query_once(&query, start, Some(16)).await?;
                let mut last = None;
                for item in items {
                    let row = Row {
                        first: num_attr(&item, "first_pos")?,
                        last: num_attr(&item, "pos")?,
                        records: match str_attr(&item, "kind")? {
                            "gap" => Vec::new(),
                            _ => part_records(&item)?,
                        },
                        written_us: item
                            .get("written_us")
                            .and_then(|v| v.as_n().ok())
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                    };
                    read += row.records.len();
                    last = Some(row.last);
                    rows.push(row);
                }
                match next {
                    Some(next) if read < per_shard => start = Some(next),
                    Some(_) => {
                        known_up_to = known_up_to.min(last.unwrap_or(after));
                        break;
                    }
                    None => break,
                }
            }
        }
        rows.sort_by_key(|r| r.first);
        let settled = micros(time::OffsetDateTime::now_utc())
            - i64::try_from(SETTLE.as_micros()).unwrap_or(i64::MAX);
        let mut expected = after + 1;
        let mut out = Vec::new();
        'rows: for row in rows {
            if row.first > known_up_to || out.len() == limit {
                break;
            }
            if row.first > expected && row.written_us > settled {
                break; // a position before this one may still land
            }
            for (offset, record) in row.records.into_iter().enumerate() {
                let position = row.first + offset as u64;
                if position <= after {
                    continue;
                }
                if position > known_up_to || out.len() == limit {
                    break 'rows;
                }
                if keep(&record) {
                    out.push((position, record));
                }
            }
            expected = expected.max(row.last + 1);
        }
        Ok(out)
    }
}

/// How long a missing position may hold readers back before it counts as lost.
pub(super) const SETTLE: std::time::Duration = std::time::Duration::from_secs(30);
/// A gap marker over a feed's positions `first..=last` that hold no record (lost to a race or
/// a failed write, or expired), kept a week so readers behind it pass it at once.
pub(super) fn gap_item(pk: String, first: u64, last: u64) -> Item {
    let now = time::OffsetDateTime::now_utc();
    let mut gap = key(pk, position_key(last));
    gap.insert("kind".into(), s("gap"));
    gap.insert("first_pos".into(), n(first));
    gap.insert("pos".into(), n(last));
    gap.insert("written_us".into(), n(micros(now)));
    gap.insert(TTL_ATTRIBUTE.into(), n(now.unix_timestamp() + GAP_TTL_SECS));
    gap
}

/// How long a gap marker is kept.
pub(super) const GAP_TTL_SECS: i64 = 7 * 86_400;
