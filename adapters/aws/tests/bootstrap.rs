//! `wharf aws bootstrap` against a real moto server.
#![allow(clippy::too_many_lines)]

mod common;

use aws_sdk_dynamodb::types::{KeyType, StreamViewType};
use aws_sdk_sqs::types::QueueAttributeName;
use wharf_aws::bootstrap::{INDEXES, MAX_RECEIVES, TTL_ATTRIBUTE, bootstrap};

#[tokio::test]
async fn bootstrap_creates_the_table_and_queues_and_a_second_run_changes_nothing() {
    let clients = common::clients().await;

    let first = bootstrap(&clients).await.expect("first bootstrap");
    assert!(first.table_created);
    assert!(
        first
            .stream_arn
            .contains(&format!(":table/{}/stream/", clients.settings.table)),
        "{}",
        first.stream_arn
    );

    let table = clients
        .dynamodb
        .describe_table()
        .table_name(&clients.settings.table)
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let keys: Vec<_> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    assert_eq!(
        keys,
        [
            ("pk".to_owned(), KeyType::Hash),
            ("sk".to_owned(), KeyType::Range)
        ]
    );
    let mut indexes: Vec<_> = table
        .global_secondary_indexes()
        .iter()
        .map(|i| {
            let keys: Vec<_> = i
                .key_schema()
                .iter()
                .map(|k| k.attribute_name().to_owned())
                .collect();
            (i.index_name().unwrap_or_default().to_owned(), keys)
        })
        .collect();
    indexes.sort();
    let expected: Vec<_> = INDEXES
        .iter()
        .map(|i| (i.to_string(), vec![format!("{i}pk"), format!("{i}sk")]))
        .collect();
    assert_eq!(indexes, expected);
    let stream = table.stream_specification().expect("stream");
    assert!(stream.stream_enabled());
    assert_eq!(stream.stream_view_type(), Some(&StreamViewType::NewImage));
    let ttl = clients
        .dynamodb
        .describe_time_to_live()
        .table_name(&clients.settings.table)
        .send()
        .await
        .expect("ttl")
        .time_to_live_description
        .expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some(TTL_ATTRIBUTE));

    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&first.ingest_queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .expect("attributes");
    let redrive: serde_json::Value =
        serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).expect("json");
    assert!(
        redrive["deadLetterTargetArn"].as_str().is_some_and(
            |arn| arn.ends_with(&format!(":{}-ingest-dlq", clients.settings.queue_prefix))
        ),
        "{redrive}"
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        MAX_RECEIVES.to_string()
    );

    let second = bootstrap(&clients).await.expect("second bootstrap");
    assert!(!second.table_created);
    assert_eq!(
        (
            &second.stream_arn,
            &second.ingest_queue_url,
            &second.ingest_dlq_url,
            &second.delivery_queue_url,
            &second.delivery_dlq_url
        ),
        (
            &first.stream_arn,
            &first.ingest_queue_url,
            &first.ingest_dlq_url,
            &first.delivery_queue_url,
            &first.delivery_dlq_url
        )
    );
}

#[tokio::test]
async fn every_call_is_counted_by_service_and_operation() {
    let clients = common::clients().await;
    bootstrap(&clients).await.expect("bootstrap");
    let calls = clients.calls.snapshot();
    let count = |op: &str| clients.calls.operation(op);
    assert_eq!(count("CreateTable"), 1, "{calls:?}");
    assert_eq!(count("UpdateTimeToLive"), 1, "{calls:?}");
    // The ingest and delivery queues, each with its dead-letter queue (whose ARN it reads).
    assert_eq!(count("CreateQueue"), 4, "{calls:?}");
    assert_eq!(count("GetQueueAttributes"), 2, "{calls:?}");
    let services: std::collections::BTreeSet<_> =
        calls.iter().map(|(s, _, _)| s.to_lowercase()).collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["dynamodb", "sqs"],
        "{calls:?}"
    );
    assert_eq!(
        clients.calls.count(&calls[0].0, &calls[0].1),
        calls[0].2,
        "count() answers what snapshot() lists"
    );
}
