//! Parts: records packed several to an item, as deflated JSON arrays at most
//! [`PART_BYTES`](super::PART_BYTES) each, and the items that carry them.

use super::records::*;
use super::*;
use wharf_core::domain::OutputRecord;
use wharf_core::{FeedId, RecordId, TenantId};

/// The first of each id, in order.
pub(super) fn first_of_each<T>(records: &[T], id: impl Fn(&T) -> &RecordId) -> Vec<&T> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter(|r| seen.insert(id(r).clone()))
        .collect()
}

/// `items` in groups by `key`, in the order each key first appears.
pub(super) fn grouped<T, K: PartialEq>(items: Vec<&T>, key: impl Fn(&T) -> K) -> Vec<(K, Vec<&T>)> {
    let mut groups: Vec<(K, Vec<&T>)> = Vec::new();
    for item in items {
        let k = key(item);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, list)) => list.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups
}

/// `records` cut into runs of the same expiry, each with its records' JSON array deflated
/// to at most [`PART_BYTES`] (a single record that does not fit is a part of its own).
pub(super) fn parts<'a, T: serde::Serialize>(
    records: &[&'a T],
    expires: impl Fn(&T) -> Timestamp,
) -> Result<Vec<(Vec<&'a T>, Vec<u8>)>> {
    let mut runs: Vec<(Vec<&T>, Vec<String>, usize)> = Vec::new();
    for r in records {
        let json = serde_json::to_string(r).map_err(CoreError::internal)?;
        let fits = runs.last().is_some_and(|(run, _, bytes)| {
            expires(run[0]) == expires(r) && bytes + json.len() < PART_JSON_BYTES
        });
        if !fits {
            runs.push((Vec::new(), Vec::new(), 2));
        }
        if let Some((run, docs, bytes)) = runs.last_mut() {
            *bytes += json.len() + 1;
            run.push(*r);
            docs.push(json);
        }
    }
    let mut out = Vec::new();
    for (run, docs, _) in runs {
        fitted(run, &docs, &mut out)?;
    }
    Ok(out)
}

/// Deflates `docs` as one JSON array into `out`, halving the run until each part fits.
pub(super) fn fitted<'a, T>(
    run: Vec<&'a T>,
    docs: &[String],
    out: &mut Vec<(Vec<&'a T>, Vec<u8>)>,
) -> Result<()> {
    let packed = deflate(format!("[{}]", docs.join(",")).as_bytes())?;
    if packed.len() <= PART_BYTES || run.len() == 1 {
        out.push((run, packed));
        return Ok(());
    }
    let half = run.len() / 2;
    let mut run = run;
    let rest = run.split_off(half);
    fitted(run, &docs[..half], out)?;
    fitted(rest, &docs[half..], out)
}

/// A part's `docz`: the deflated JSON array of `records`.
pub fn packed_part<T: serde::Serialize>(records: &[T]) -> Result<Vec<u8>> {
    let refs: Vec<&T> = records.iter().collect();
    let json = serde_json::to_string(&refs).map_err(CoreError::internal)?;
    deflate(json.as_bytes())
}

pub(super) fn deflate(json: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(json).map_err(CoreError::internal)?;
    encoder.finish().map_err(CoreError::internal)
}

/// The records of a part's deflated JSON array (`docz`): also what the stream handler reads.
pub fn part_records_of<T: DeserializeOwned>(packed: &[u8]) -> Result<Vec<T>> {
    serde_json::from_reader(flate2::read::DeflateDecoder::new(packed)).map_err(CoreError::internal)
}

/// The records of a part item.
pub(super) fn part_records<T: DeserializeOwned>(item: &Item) -> Result<Vec<T>> {
    let packed = item
        .get("docz")
        .and_then(|v| v.as_b().ok())
        .ok_or_else(|| CoreError::internal("a part without its records"))?;
    part_records_of(packed.as_ref())
}

/// An output part holding `first..` in the feed's partition `shard`.
pub(super) fn output_part(
    tenant: &TenantId,
    feed: &FeedId,
    shard: u32,
    first: u64,
    run: &[&OutputRecord],
    packed: Vec<u8>,
    written_us: &AttributeValue,
) -> Item {
    let last = first + run.len() as u64 - 1;
    let mut part = key(output_pk(tenant, feed, shard), position_key(last));
    part.insert("kind".into(), s("output_pack"));
    part.insert("docz".into(), AttributeValue::B(packed.into()));
    part.insert("first_pos".into(), n(first));
    part.insert("pos".into(), n(last));
    part.insert("n_records".into(), n(run.len()));
    part.insert("tenant_id".into(), s(tenant.as_str()));
    part.insert("feed_id".into(), s(feed.as_str()));
    part.insert("written_us".into(), written_us.clone());
    expiring(part, run[0].expires_at)
}

/// A nonce that keeps sort keys of one instant apart.
pub(super) fn nonce() -> String {
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).unwrap_or_default();
    random.iter().map(|b| format!("{b:02x}")).collect()
}

/// A place in a feed's partitions: (tenant, feed, shard, first, last).
pub(super) type Place = (TenantId, FeedId, u32, u64, u64);
