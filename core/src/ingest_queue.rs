//! The aws shape's ingest queue messages: the ingest endpoint packs accepted raw records into
//! SQS message bodies, as many per message as fit, and the ingest handler unpacks them.
//! A body is `{"v":1,"records":[…]}`; records keep their derived ids, so storing a message
//! twice (SQS delivers at least once) stores each record once.

use crate::CoreError;
use crate::domain::RawRecord;
use serde::{Deserialize, Serialize};

/// SQS's largest message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// The envelope around the records: `{"v":1,"records":[` and `]}`.
const ENVELOPE_BYTES: usize = r#"{"v":1,"records":[]}"#.len();

#[derive(Serialize, Deserialize)]
struct Body<T> {
    v: u32,
    records: T,
}

/// Packs `records` into message bodies of at most `max_bytes` each, in order. A record too
/// large for a message of its own is an error naming its index.
pub fn pack(records: &[RawRecord], max_bytes: usize) -> Result<Vec<String>, CoreError> {
    let mut bodies = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut size = ENVELOPE_BYTES;
    for (index, record) in records.iter().enumerate() {
        let json = serde_json::to_string(record).map_err(CoreError::internal)?;
        if ENVELOPE_BYTES + json.len() > max_bytes {
            return Err(CoreError::invalid(
                format!("records[{index}]"),
                format!("is larger than a queue message ({max_bytes} bytes)"),
            ));
        }
        let separator = usize::from(!current.is_empty());
        if size + separator + json.len() > max_bytes {
            bodies.push(envelope(&current));
            current.clear();
            size = ENVELOPE_BYTES;
        }
        size += usize::from(!current.is_empty()) + json.len();
        current.push(json);
    }
    if !current.is_empty() {
        bodies.push(envelope(&current));
    }
    Ok(bodies)
}

fn envelope(records: &[String]) -> String {
    format!(r#"{{"v":1,"records":[{}]}}"#, records.join(","))
}

/// The records of a message body; anything else is an error (a poison message).
pub fn unpack(body: &str) -> Result<Vec<RawRecord>, CoreError> {
    let body: Body<Vec<RawRecord>> = serde_json::from_str(body)
        .map_err(|e| CoreError::invalid("body", format!("not an ingest message: {e}")))?;
    if body.v != 1 {
        return Err(CoreError::invalid(
            "body",
            format!("ingest message version {} is not understood", body.v),
        ));
    }
    Ok(body.records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SourceId, VendorId};

    fn record(n: usize, note_bytes: usize) -> RawRecord {
        let now = time::macros::datetime!(2031-01-01 00:00 UTC);
        let source = SourceId::new();
        RawRecord {
            id: RawRecord::id_for(&source, &format!("r{n}")),
            tenant_id: VendorId::new(),
            source_id: source,
            external_id: Some(format!("r{n}")),
            ts: now,
            received_at: now,
            expires_at: now + time::Duration::days(7),
            data: serde_json::json!({ "n": n, "note": "x".repeat(note_bytes) }),
        }
    }

    #[test]
    fn records_pack_into_messages_that_fit_and_unpack_in_order() {
        let records: Vec<_> = (0..1000).map(|n| record(n, 1000)).collect();
        let bodies = pack(&records, MAX_MESSAGE_BYTES).expect("pack");
        assert!(bodies.iter().all(|b| b.len() <= MAX_MESSAGE_BYTES));
        assert!(bodies.len() > 1);
        // Greedy: no message could have taken the next message's first record.
        for pair in bodies.windows(2) {
            let next = unpack(&pair[1]).expect("unpack");
            let next_len = serde_json::to_string(&next[0]).expect("json").len();
            assert!(pair[0].len() + 1 + next_len > MAX_MESSAGE_BYTES);
        }
        let unpacked: Vec<_> = bodies
            .iter()
            .flat_map(|b| unpack(b).expect("unpack"))
            .collect();
        assert_eq!(unpacked, records);
        assert!(pack(&[], MAX_MESSAGE_BYTES).expect("pack").is_empty());
    }

    #[test]
    fn a_record_exactly_at_the_limit_fits_and_one_byte_more_does_not() {
        let r = record(1, 10);
        let alone = pack(std::slice::from_ref(&r), MAX_MESSAGE_BYTES).expect("pack");
        let limit = alone[0].len();
        assert_eq!(
            pack(std::slice::from_ref(&r), limit).expect("fits").len(),
            1
        );
        // The smaller first record still fits alone; the second, one byte too large, does not.
        match pack(&[record(2, 0), r], limit - 1) {
            Err(CoreError::Validation(errors)) => assert_eq!(errors[0].path, "records[1]"),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn anything_but_a_version_1_message_is_refused() {
        for body in [
            "",
            "{}",
            "[]",
            r#"{"v":2,"records":[]}"#,
            r#"{"v":1,"records":[{"id":"nope"}]}"#,
        ] {
            assert!(
                matches!(unpack(body), Err(CoreError::Validation(_))),
                "{body:?}"
            );
        }
        assert!(unpack(r#"{"v":1,"records":[]}"#).expect("empty").is_empty());
    }
}
