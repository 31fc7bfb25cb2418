//! Planning a delivery pass, with no I/O: which of the records after a subscription's
//! position it receives (its filter), how they are grouped (one per delivery, or batches),
//! whether a partial last batch waits for more, and how far the position moves.

use super::Job;
use std::time::Duration;
use wharf_core::domain::{OutputRecord, Subscription};
use wharf_core::{CoreError, DeliveryId, RecordId, Timestamp};

/// What one pass does.
#[derive(Debug, PartialEq)]
pub struct Plan<'a> {
    /// Where the position moves: past every record read, except a held partial batch and
    /// what follows it.
    pub to: u64,
    /// The deliveries, in feed order, each a group of `(position, record)`.
    pub groups: Vec<Vec<&'a (u64, OutputRecord)>>,
}

/// Plans a pass over `rows`, the records after position `from` (at most `chunk` of them,
/// in position order), of which those `admitted` marks pass the subscription's filter. A batch subscription's last partial batch is held while the reader
/// is caught up (fewer than `chunk` rows) and its oldest record has waited less than
/// `max_wait_ms` at `now`. `None` when the position would not move.
pub fn plan<'a>(
    sub: &Subscription,
    rows: &'a [(u64, OutputRecord)],
    admitted: &[bool],
    from: u64,
    chunk: usize,
    now: Timestamp,
) -> Option<Plan<'a>> {
    let &(last, _) = rows.last()?;
    let wanted: Vec<&(u64, OutputRecord)> = rows
        .iter()
        .zip(admitted)
        .filter_map(|(row, admitted)| admitted.then_some(row))
        .collect();
    let mut to = last;
    let groups = match sub.batch {
        None => wanted.into_iter().map(|r| vec![r]).collect(),
        Some(batch) => {
            // Backfill comes first (it lies before what the feed output since) and is never
            // batched with the month's records: the two are counted apart.
            let backfill = wanted
                .iter()
                .take_while(|(p, _)| sub.is_backfill(*p))
                .count();
            let (history, fresh) = wanted.split_at(backfill);
            let size = batch.max_records.max(1) as usize;
            let mut groups: Vec<Vec<_>> = history
                .chunks(size)
                .chain(fresh.chunks(size))
                .map(<[_]>::to_vec)
                .collect();
            let caught_up = rows.len() < chunk;
            if let Some(tail) = groups.last() {
                let oldest = tail[0].1.created_at;
                let partial = tail.len() < batch.max_records as usize;
                let waited = oldest + Duration::from_millis(u64::from(batch.max_wait_ms)) <= now;
                if caught_up && partial && !waited {
                    let first_held = tail[0].0;
                    to = rows
                        .iter()
                        .take_while(|(p, _)| *p < first_held)
                        .last()
                        .map_or(from, |(p, _)| *p);
                    groups.pop();
                }
            }
            groups
        }
    };
    (to != from).then_some(Plan { to, groups })
}

impl Plan<'_> {
    /// How many of the records read the pass moves past.
    pub fn moved_past(&self, rows: &[(u64, OutputRecord)]) -> usize {
        rows.iter().filter(|(p, _)| *p <= self.to).count()
    }

    /// The deliveries of the plan, with their ids and bodies.
    pub fn jobs(&self, sub: &Subscription) -> Result<Vec<Job>, CoreError> {
        self.groups
            .iter()
            .map(|group| {
                let records: Vec<&OutputRecord> = group.iter().map(|(_, r)| r).collect();
                let ids: Vec<RecordId> = records.iter().map(|r| r.id.clone()).collect();
                Ok(Job {
                    id: delivery_id(sub, &ids),
                    body: body(&records, sub.batch.is_some())?,
                    records: ids,
                    positions: group.iter().map(|(p, _)| *p).collect(),
                })
            })
            .collect()
    }
}

/// A record as every channel carries it.
#[derive(serde::Serialize)]
struct Payload<'a> {
    id: &'a RecordId,
    feed_id: &'a wharf_core::FeedId,
    pipeline_version: u32,
    #[serde(with = "time::serde::rfc3339")]
    ts: Timestamp,
    data: &'a serde_json::Value,
}

fn payload(r: &OutputRecord) -> Payload<'_> {
    Payload {
        id: &r.id,
        feed_id: &r.feed_id,
        pipeline_version: r.pipeline_version,
        ts: r.ts,
        data: &r.data,
    }
}

/// One record's JSON as a webhook carries it (also the body the aws shape's topics publish).
pub fn record_json(r: &OutputRecord) -> Result<String, CoreError> {
    serde_json::to_string(&payload(r)).map_err(CoreError::internal)
}

/// The body of one delivery: an object for a single record, an array for a batch.
pub(super) fn body(records: &[&OutputRecord], batched: bool) -> Result<Vec<u8>, CoreError> {
    if batched {
        serde_json::to_vec(&records.iter().map(|r| payload(r)).collect::<Vec<_>>())
    } else {
        serde_json::to_vec(&payload(records[0]))
    }
    .map_err(CoreError::internal)
}

/// The id of a delivery of `records` to `sub`: stable across retries.
pub fn delivery_id(sub: &Subscription, records: &[RecordId]) -> DeliveryId {
    match records {
        [one] => DeliveryId::from_uuid(wharf_core::id::derive(&[
            "del",
            one.as_str(),
            sub.id.as_str(),
        ])),
        many => {
            let first = many.first().map(RecordId::as_str).unwrap_or("");
            let last = many.last().map(RecordId::as_str).unwrap_or("");
            let n = many.len().to_string();
            DeliveryId::from_uuid(wharf_core::id::derive(&[
                "batch",
                sub.id.as_str(),
                first,
                last,
                &n,
            ]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{at, marks, sub};
    use super::*;
    use serde_json::json;
    use wharf_core::{FeedId, VendorId};

    /// Records at positions `from + 1 ..`, each made at `made_ms`, with `n` as its data.
    fn rows(from: u64, values: &[i64], made_ms: i64) -> Vec<(u64, OutputRecord)> {
        values
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    from + 1 + i as u64,
                    OutputRecord {
                        id: RecordId::new(),
                        feed_id: FeedId::new(),
                        tenant_id: VendorId::new(),
                        pipeline_version: 1,
                        ts: at(made_ms),
                        created_at: at(made_ms),
                        expires_at: at(made_ms + 86_400_000),
                        data: json!({ "n": n }),
                    },
                )
            })
            .collect()
    }

    /// Plans with the subscription's filter evaluated here.
    fn planned<'a>(
        sub: &Subscription,
        rows: &'a [(u64, OutputRecord)],
        from: u64,
        chunk: usize,
        now: Timestamp,
    ) -> Option<Plan<'a>> {
        plan(sub, rows, &marks(sub, rows), from, chunk, now)
    }

    fn positions(plan: &Plan) -> Vec<Vec<u64>> {
        plan.groups
            .iter()
            .map(|g| g.iter().map(|(p, _)| *p).collect())
            .collect()
    }

    #[test]
    fn nothing_read_is_nothing_to_do() {
        assert_eq!(planned(&sub(None, None), &[], 7, 100, at(0)), None);
    }

    #[test]
    fn each_record_is_its_own_delivery_without_batching() {
        let rows = rows(10, &[1, 2, 3], 0);
        let p = planned(&sub(None, None), &rows, 10, 100, at(0));
        assert_eq!(
            p.as_ref().map(|p| (p.to, positions(p))),
            Some((13, vec![vec![11], vec![12], vec![13]]))
        );
    }

    #[test]
    fn the_filter_skips_records_but_the_position_moves_past_them() {
        let rows = rows(0, &[5, 50, 500], 0);
        let p = planned(&sub(Some("record.n > 10"), None), &rows, 0, 100, at(0));
        assert_eq!(
            p.as_ref().map(|p| (p.to, positions(p))),
            Some((3, vec![vec![2], vec![3]]))
        );
        let none_wanted = planned(&sub(Some("record.n > 1000"), None), &rows, 0, 100, at(0));
        assert_eq!(none_wanted.map(|p| (p.to, p.groups.len())), Some((3, 0)));
    }

    #[test]
    fn batches_hold_a_partial_tail_until_it_has_waited_long_enough() {
        let rows = rows(0, &[1, 2, 3, 4, 5], 0);
        let batching = sub(None, Some((2, 500)));
        let early = planned(&batching, &rows, 0, 100, at(100));
        assert_eq!(
            early.as_ref().map(|p| (p.to, positions(p))),
            Some((4, vec![vec![1, 2], vec![3, 4]]))
        );
        let late = planned(&batching, &rows, 0, 100, at(500));
        assert_eq!(
            late.as_ref().map(|p| (p.to, positions(p))),
            Some((5, vec![vec![1, 2], vec![3, 4], vec![5]]))
        );
    }

    #[test]
    fn a_reader_behind_sends_its_partial_tail_at_once() {
        // `chunk` rows were read: more are waiting, so the tail is not the feed's end.
        let rows = rows(0, &[1, 2, 3], 0);
        let p = planned(&sub(None, Some((2, 60_000))), &rows, 0, 3, at(0));
        assert_eq!(p.as_ref().map(positions), Some(vec![vec![1, 2], vec![3]]));
    }

    #[test]
    fn a_held_first_batch_leaves_the_position_where_it_was() {
        let rows = rows(20, &[1], 0);
        assert_eq!(
            planned(&sub(None, Some((5, 60_000))), &rows, 20, 100, at(1)),
            None
        );
    }

    #[test]
    fn jobs_carry_stable_ids_and_an_array_for_batches() {
        let rows = rows(0, &[1, 2, 3], 0);
        let batching = sub(None, Some((2, 0)));
        let p = planned(&batching, &rows, 0, 100, at(0)).unwrap_or_else(|| panic!("a plan"));
        let jobs = p.jobs(&batching).unwrap_or_else(|e| panic!("{e}"));
        let again = p.jobs(&batching).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].id, again[0].id);
        assert_ne!(jobs[0].id, jobs[1].id);
        let body: serde_json::Value =
            serde_json::from_slice(&jobs[1].body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body[0]["data"], json!({"n": 3}));
        assert_eq!(jobs[1].positions, vec![3]);
    }
}
