//! `batch_write` and cursors against a real moto table.

mod common;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use wharf_aws::bootstrap::bootstrap;
use wharf_aws::table::{batch_write, decode_cursor, encode_cursor};

fn put(pk: &str, sk: &str) -> WriteRequest {
    WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .item("pk", AttributeValue::S(pk.into()))
                .item("sk", AttributeValue::S(sk.into()))
                .build()
                .expect("put request"),
        )
        .build()
}

#[tokio::test]
async fn batch_writes_land_every_item_and_pages_resume_from_their_cursor() {
    let clients = common::clients().await;
    bootstrap(&clients).await.expect("bootstrap");

    let requests: Vec<_> = (0..60)
        .map(|n| put("T#ven_1#X", &format!("{n:03}")))
        .collect();
    let calls = batch_write(&clients, &clients.settings.table, requests)
        .await
        .expect("write");
    assert_eq!(calls, 3, "60 items in batches of 25");
    assert_eq!(
        batch_write(&clients, &clients.settings.table, Vec::new())
            .await
            .expect("empty"),
        0
    );

    // Read back in pages of 25, each resumed from the previous page's cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let start = cursor
            .as_deref()
            .map(|c| decode_cursor(c, &["pk", "sk"]).expect("cursor"));
        let page = clients
            .dynamodb
            .query()
            .table_name(&clients.settings.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S("T#ven_1#X".into()))
            .limit(25)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("query");
        seen.extend(
            page.items()
                .iter()
                .filter_map(|i| i.get("sk")?.as_s().ok().cloned()),
        );
        match page.last_evaluated_key() {
            Some(key) => cursor = Some(encode_cursor(key).expect("encode")),
            None => break,
        }
    }
    let expected: Vec<String> = (0..60).map(|n| format!("{n:03}")).collect();
    assert_eq!(seen, expected);

    // A request DynamoDB refuses (no sort key) fails the write instead of being dropped.
    let bad = WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .item("pk", AttributeValue::S("T#ven_1#X".into()))
                .build()
                .expect("put request"),
        )
        .build();
    assert!(
        batch_write(&clients, &clients.settings.table, vec![bad])
            .await
            .is_err()
    );
}
