//! Building blocks of the DynamoDB adapters, per the key design in this crate's README:
//! write sharding of hot record partitions, opaque page cursors over `LastEvaluatedKey`, and
//! `BatchWriteItem` that retries unprocessed items and throttling with backoff.

use crate::{Clients, aws_error};
use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;
use wharf_core::CoreError;
use wharf_core::ports::Result;

/// Write shards of one source's raw records or one feed's outputs.
pub const RECORD_SHARDS: u32 = 8;
/// Items per `BatchWriteItem` call (DynamoDB's limit).
pub const BATCH_WRITE_ITEMS: usize = 25;
/// Attempts per batch before unprocessed items or throttling become an error.
const BATCH_ATTEMPTS: u32 = 8;
/// First backoff; it doubles per attempt, with jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// The shard of a record id: stable across processes and releases (a hash of the id, not
/// Rust's randomly seeded one), so a record is always written to and read from one place.
pub fn shard_of(id: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(id.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    n % shards.max(1)
}

/// An opaque page cursor for a `LastEvaluatedKey` (string and number attributes: every key
/// attribute of the table and its indexes is one or the other).
pub fn encode_cursor(key: &HashMap<String, AttributeValue>) -> Result<String> {
    let mut object = Map::new();
    let mut names: Vec<&String> = key.keys().collect();
    names.sort();
    for name in names {
        let value = match &key[name] {
            AttributeValue::S(s) => serde_json::json!({ "S": s }),
            AttributeValue::N(n) => serde_json::json!({ "N": n }),
            _ => {
                return Err(CoreError::internal(format!(
                    "key attribute {name} is not S or N"
                )));
            }
        };
        object.insert(name.clone(), value);
    }
    Ok(URL_SAFE_NO_PAD.encode(Value::Object(object).to_string()))
}

/// The `ExclusiveStartKey` a cursor stands for; a cursor not made by `encode_cursor` (or one
/// naming other attributes than `expected`) is a validation error on `cursor`.
pub fn decode_cursor(cursor: &str, expected: &[&str]) -> Result<HashMap<String, AttributeValue>> {
    let invalid = || CoreError::invalid("cursor", "is not a cursor from this API");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(invalid());
    };
    let mut names: Vec<&str> = object.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    if names != want {
        return Err(invalid());
    }
    let mut key = HashMap::new();
    for (name, value) in object {
        let value = match value {
            Value::Object(v) if v.len() == 1 => match v.into_iter().next() {
                Some((kind, Value::String(s))) if kind == "S" => AttributeValue::S(s),
                Some((kind, Value::String(n)))
                    if kind == "N" && !n.is_empty() && n.parse::<f64>().is_ok() =>
                {
                    AttributeValue::N(n)
                }
                _ => return Err(invalid()),
            },
            _ => return Err(invalid()),
        };
        key.insert(name, value);
    }
    Ok(key)
}

/// Writes `requests` to `table` in batches of 25, retrying unprocessed items and throttled
/// calls with exponential backoff and jitter. Returns the number of calls made.
pub async fn batch_write(
    clients: &Clients,
    table: &str,
    requests: Vec<WriteRequest>,
) -> Result<usize> {
    let mut calls = 0;
    let mut chunks = requests.chunks(BATCH_WRITE_ITEMS);
    let mut pending: Vec<WriteRequest> = Vec::new();
    loop {
        if pending.is_empty() {
            match chunks.next() {
                Some(chunk) => pending = chunk.to_vec(),
                None => return Ok(calls),
            }
        }
        let mut attempt = 0;
        while !pending.is_empty() {
            if attempt > 0 {
                backoff(attempt).await;
            }
            attempt += 1;
            if attempt > BATCH_ATTEMPTS {
                return Err(CoreError::unavailable(format!(
                    "{} items still unprocessed after {BATCH_ATTEMPTS} attempts",
                    pending.len()
                )));
            }
            calls += 1;
            let sent = clients
                .dynamodb
                .batch_write_item()
                .request_items(table, pending.clone())
                .send()
                .await;
            match sent {
                Ok(answer) => {
                    pending = answer
                        .unprocessed_items
                        .and_then(|mut u| u.remove(table))
                        .unwrap_or_default();
                }
                Err(e) if is_throttling(&e) => {}
                Err(e) => {
                    return Err(aws_error("writing a batch", e));
                }
            }
        }
    }
}

fn is_throttling(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError,
    >,
) -> bool {
    e.as_service_error().is_some_and(|s| {
        s.is_provisioned_throughput_exceeded_exception()
            || s.is_request_limit_exceeded()
            || s.is_throttling_exception()
    })
}

/// Sleeps `FIRST_BACKOFF × 2^(attempt-1)`, capped at 2 s, with "full jitter".
async fn backoff(attempt: u32) {
    let ceiling = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(10))
        .min(Duration::from_secs(2));
    let mut random = [0u8; 4];
    let fraction = match getrandom::fill(&mut random) {
        Ok(()) => f64::from(u32::from_le_bytes(random)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    };
    let wait = ceiling.mul_f64(fraction);
    aws_smithy_async::rt::sleep::AsyncSleep::sleep(
        &aws_smithy_async::rt::sleep::TokioSleep::new(),
        wait,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_in_range_and_spread() {
        assert_eq!(
            shard_of("rec_1", RECORD_SHARDS),
            shard_of("rec_1", RECORD_SHARDS)
        );
        let mut counts = [0u32; RECORD_SHARDS as usize];
        for n in 0..8000 {
            let s = shard_of(&format!("rec_{n}"), RECORD_SHARDS);
            counts[s as usize] += 1;
        }
        // 1000 expected per shard; a fair hash stays well within ±20%.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let key = HashMap::from([
            (
                "pk".to_owned(),
                AttributeValue::S("T#ven_1#OUT#feed_1#3".into()),
            ),
            (
                "sk".to_owned(),
                AttributeValue::N("1767225600000001".into()),
            ),
        ]);
        let cursor = encode_cursor(&key).expect("encode");
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decode_cursor(&cursor, &["pk", "sk"]).expect("decode"), key);

        let refused = |c: &str, expected: &[&str]| {
            matches!(decode_cursor(c, expected), Err(CoreError::Validation(_)))
        };
        assert!(
            refused(&cursor, &["pk", "sk", "gsi1pk"]),
            "other attributes"
        );
        assert!(refused(&cursor, &["pk"]), "fewer attributes");
        assert!(refused("not base64!", &["pk", "sk"]));
        assert!(refused(&URL_SAFE_NO_PAD.encode("[1,2]"), &["pk", "sk"]));
        assert!(refused(
            &URL_SAFE_NO_PAD.encode(r#"{"pk":{"S":"a"},"sk":{"N":"x"}}"#),
            &["pk", "sk"]
        ));
        assert!(refused(
            &URL_SAFE_NO_PAD.encode(r#"{"pk":{"B":"a"},"sk":{"N":"1"}}"#),
            &["pk", "sk"]
        ));
        assert!(refused(
            &URL_SAFE_NO_PAD.encode(r#"{"pk":{"S":"a","N":"1"},"sk":{"N":"1"}}"#),
            &["pk", "sk"]
        ));
        let binary = HashMap::from([(
            "pk".to_owned(),
            AttributeValue::B(aws_smithy_types::Blob::new(vec![1])),
        )]);
        assert!(matches!(
            encode_cursor(&binary),
            Err(CoreError::Internal(_))
        ));
    }
}
