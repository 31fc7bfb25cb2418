//! Output positions on DynamoDB: a reader never moves past a position that may still be
//! written, passes gap markers at once, and passes a hole for good once the record after it
//! has settled (its writer died between reserving the position and storing it).
#![allow(clippy::unwrap_used)]

mod moto;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use wharf_aws::DynamoStore;
use wharf_aws::bootstrap::bootstrap;
use wharf_core::domain::OutputRecord;
use wharf_core::ports::RecordStore;
use wharf_core::{FeedId, RecordId, VendorId};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_wait_at_a_reserved_position_until_it_lands_or_settles() {
    let moto = moto::Moto::start();
    let clients = moto.clients().await;
    bootstrap(&clients).await.expect("bootstrap");
    let store = DynamoStore::new(clients.clone());
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
        .table_name("wharf")
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
            .table_name("wharf")
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
