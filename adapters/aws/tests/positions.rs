//! Output positions on DynamoDB: a reader never moves past a position that may still be
//! written, passes gap markers at once, and passes a hole for good once the record after it
//! has settled (its writer died between reserving the position and storing it).
#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use wharf_aws::DynamoStore;
use wharf_aws::bootstrap::bootstrap;
use wharf_core::domain::{OutputRecord, RawRecord};
use wharf_core::ports::RecordStore;
use wharf_core::{FeedId, RecordId, SourceId, VendorId};

fn output(tenant: &VendorId, feed: &FeedId, n: u32) -> OutputRecord {
    let now = time::OffsetDateTime::now_utc();
    OutputRecord {
        id: RecordId::new(),
        feed_id: feed.clone(),
        tenant_id: tenant.clone(),
        pipeline_version: 1,
        ts: now,
        created_at: now,
        expires_at: now + time::Duration::days(1),
        data: json!({ "n": n }),
    }
}

/// A bootstrapped table of its own on the shared moto server.
async fn fresh_store() -> (wharf_aws::Clients, DynamoStore) {
    let clients = common::clients().await;
    bootstrap(&clients).await.expect("bootstrap");
    let store = DynamoStore::new(clients.clone());
    (clients, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_wait_at_a_reserved_position_until_it_lands_or_settles() {
    let (clients, store) = fresh_store().await;
    let (tenant, feed) = (VendorId::new(), FeedId::new());
    let numbers = |rows: Vec<(u64, OutputRecord)>| -> Vec<(u64, u64)> {
        rows.into_iter()
            .map(|(p, r)| (p, r.data["n"].as_u64().unwrap()))
            .collect()
    };

    store
        .append_output(&[output(&tenant, &feed, 1)])
        .await
        .unwrap();
    // Another writer reserves position 2 and has not stored its record yet.
    clients
        .dynamodb
        .update_item()
        .table_name(&clients.settings.table)
        .key("pk", AttributeValue::S(format!("T#{tenant}")))
        .key("sk", AttributeValue::S(format!("FEED#{feed}#HEAD")))
        .update_expression("ADD #head :one")
        .expression_attribute_names("#head", "head")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    store
        .append_output(&[output(&tenant, &feed, 3)])
        .await
        .unwrap();
    assert_eq!(store.output_head(&tenant, &feed).await.unwrap(), 3);
    assert_eq!(
        numbers(store.output_after(&tenant, &feed, 0, 100).await.unwrap()),
        vec![(1, 1)],
        "3 is held back while 2 may still land"
    );
    assert!(
        store
            .output_after(&tenant, &feed, 1, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // The record after the hole was written long ago: its writer is gone, the hole is passed.
    let shards = 0..wharf_aws::table::RECORD_SHARDS;
    for shard in shards {
        let _ = clients
            .dynamodb
            .update_item()
            .table_name(&clients.settings.table)
            .key(
                "pk",
                AttributeValue::S(format!("T#{tenant}#OUT#{feed}#{shard}")),
            )
            .key("sk", AttributeValue::S(format!("{:020}", 3)))
            .update_expression("SET written_us = :old")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":old", AttributeValue::N("1".into()))
            .send()
            .await;
    }
    assert_eq!(
        numbers(store.output_after(&tenant, &feed, 0, 100).await.unwrap()),
        vec![(1, 1), (3, 3)]
    );

    // Expired records leave gap markers: what follows them is read at once.
    store
        .append_output(&[output(&tenant, &feed, 4)])
        .await
        .unwrap();
    let mut gone = output(&tenant, &feed, 5);
    gone.expires_at = time::OffsetDateTime::now_utc() - time::Duration::SECOND;
    store
        .append_output(std::slice::from_ref(&gone))
        .await
        .unwrap();
    store
        .append_output(&[output(&tenant, &feed, 6)])
        .await
        .unwrap();
    assert_eq!(
        store
            .expire_records(time::OffsetDateTime::now_utc())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        numbers(store.output_after(&tenant, &feed, 3, 100).await.unwrap()),
        vec![(4, 4), (6, 6)]
    );
}

/// Raw records are stored packed: a call's records without the vendor's id are one pack,
/// which a redelivered ingest message stores again as nothing; the vendor's ids are
/// deduplicated across packs; a pack larger than a part is cut into several, and records
/// of other minutes and expiries go in parts of their own, all read back by event time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_records_are_packed_and_a_redelivered_pack_stores_nothing() {
    let (clients, store) = fresh_store().await;
    let (tenant, source) = (VendorId::new(), SourceId::new());
    let now = time::OffsetDateTime::now_utc();
    let raw = |n: usize, external: Option<String>, minute: i64| RawRecord {
        id: match &external {
            Some(e) => RawRecord::id_for(&source, e),
            None => RecordId::new(),
        },
        tenant_id: tenant.clone(),
        source_id: source.clone(),
        external_id: external,
        ts: now - time::Duration::minutes(minute) + time::Duration::milliseconds(n as i64),
        received_at: now,
        expires_at: now + time::Duration::days(1),
        // Random hex, which deflates to about half: parts are cut by their compressed size.
        data: json!({ "n": n, "pad": random_hex(320) }),
    };
    // 300 records of ~900 bytes: about 130 KiB compressed, so three parts of this minute at least.
    let mut call: Vec<RawRecord> = (0..300).map(|n| raw(n, None, 0)).collect();
    call.push(raw(300, Some("named-1".into()), 0));
    call.push(raw(301, None, 5));
    let mut longer = raw(302, None, 0);
    longer.expires_at = now + time::Duration::days(30);
    call.push(longer);
    assert_eq!(store.append_raw(&call).await.unwrap(), call.len());
    assert_eq!(
        store.append_raw(&call).await.unwrap(),
        0,
        "the same pack again"
    );
    // The vendor's id again, in another call: a duplicate.
    let mut resent = raw(303, Some("named-1".into()), 0);
    resent.received_at = now + time::Duration::seconds(1);
    assert_eq!(
        store
            .append_raw(&[resent, raw(304, None, 0)])
            .await
            .unwrap(),
        1
    );

    let stored = store
        .raw_between(
            &tenant,
            &source,
            now - time::Duration::hours(1),
            now + time::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), call.len() + 1);
    assert!(
        stored.windows(2).all(|w| w[0].ts <= w[1].ts),
        "event-time order"
    );
    let parts = clients
        .dynamodb
        .scan()
        .table_name(&clients.settings.table)
        .filter_expression("#kind = :kind")
        .expression_attribute_names("#kind", "kind")
        .expression_attribute_values(":kind", AttributeValue::S("raw_pack".into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let sizes: Vec<usize> = parts
        .iter()
        .map(|p| p["docz"].as_b().unwrap().as_ref().len())
        .collect();
    assert!(
        sizes.iter().all(|s| *s <= wharf_aws::store::PART_BYTES),
        "{sizes:?}"
    );
    // This minute's 301 records in three or more parts; the one of five minutes ago, the
    // longer-kept one and the second call's record in parts of their own.
    assert!(parts.len() >= 6, "{} parts", parts.len());
    // Only the record sent with the vendor's id has a mark.
    let marks = clients
        .dynamodb
        .scan()
        .table_name(&clients.settings.table)
        .filter_expression("#kind = :kind")
        .expression_attribute_names("#kind", "kind")
        .expression_attribute_values(":kind", AttributeValue::S("raw_id".into()))
        .send()
        .await
        .unwrap()
        .count;
    assert_eq!(marks, 1);
}

fn random_hex(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random).unwrap();
    random.iter().map(|b| format!("{b:02x}")).collect()
}
