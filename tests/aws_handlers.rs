//! The aws shape's handlers fed Lambda's own event payloads, against a real moto server:
//! a poison message and a redelivered message in one SQS batch, stream and delivery-queue
//! batches delivered twice (one output, one webhook delivery and one count per record through
//! the feed's SNS topic and the delivery queue), partial batch failures
//! when the table is gone, and a poison message moved to the dead-letter queue by the queue
//! itself after five receives while `wharf serve --backend aws` polls it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

#[path = "support/moto.rs"]
mod moto;
#[path = "api/receiver.rs"]
#[allow(dead_code)]
mod receiver;

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_lambda_events::event::streams::{DynamoDbEventResponse, SqsEventResponse};
use serde_json::{Value, json};
use std::sync::Arc;
use wharf::aws::{AwsShape, Resources, aws_shape};
use wharf::config::Config;
use wharf_aws::aws_sdk_sqs::types::MessageSystemAttributeName;
use wharf_aws::bootstrap::queue_arn;
use wharf_aws::emulate::{sqs_event, stream_event};
use wharf_aws::lambda::{queue_messages, sqs_response, stream_changes, stream_response};
use wharf_core::domain::RawRecord;
use wharf_core::ports::EventHandlers;
use wharf_core::ports::SystemClock;
use wharf_core::{SourceId, VendorId};
use wharf_workers::handlers::{Deliveries, Handlers};

const PASSWORD: &str = "Correct horse battery 9!";

use moto::aws_server_config as config;

/// The handlers as the Lambda entry runs them: Lambda's event in, Lambda's answer out.
struct Lambda(Handlers);

impl Lambda {
    async fn ingest(&self, event: SqsEvent) -> SqsEventResponse {
        sqs_response(self.0.ingest(queue_messages(event)).await)
    }

    async fn sender(&self, event: SqsEvent) -> SqsEventResponse {
        sqs_response(self.0.sender(queue_messages(event)).await)
    }

    async fn stream(&self, event: StreamEvent) -> DynamoDbEventResponse {
        stream_response(self.0.stream(stream_changes(event)).await)
    }
}

async fn shape(config: &Config) -> (AwsShape, Lambda) {
    let shape = aws_shape(config, Arc::new(SystemClock), Resources::Bootstrap)
        .await
        .unwrap();
    let handlers = Handlers::new(
        shape.services.clone(),
        config.delivery(),
        Deliveries::Awaited,
    );
    (shape, Lambda(handlers))
}

fn raw(tenant: &VendorId, source: &SourceId, external: &str) -> RawRecord {
    let now = time::OffsetDateTime::now_utc();
    RawRecord {
        id: RawRecord::id_for(source, external),
        tenant_id: tenant.clone(),
        source_id: source.clone(),
        external_id: Some(external.into()),
        ts: now,
        received_at: now,
        expires_at: now + time::Duration::days(1),
        data: json!({"price": 150.0}),
    }
}

fn sqs_message(id: &str, body: &str) -> Value {
    json!({
        "messageId": id, "receiptHandle": format!("h-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "md5OfBody": "x", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:wharf-ingest", "awsRegion": "us-east-1"
    })
}

fn failures(response: &impl serde::Serialize) -> Vec<String> {
    serde_json::to_value(response).unwrap()["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_batch_reports_only_its_poison_message_and_a_redelivery_stores_nothing_twice() {
    let (shape, handlers) = shape(&config()).await;
    let (tenant, source) = (VendorId::new(), SourceId::new());
    let records = vec![raw(&tenant, &source, "a"), raw(&tenant, &source, "b")];
    let body = wharf_core::ingest_queue::pack(&records, 256 * 1024)
        .unwrap()
        .remove(0);
    let event = json!({"Records": [
        sqs_message("m-1", &body),
        sqs_message("m-poison", "{\"not\": \"records\""),
        sqs_message("m-1-again", &body),
    ]});
    for _ in 0..2 {
        let response = handlers
            .ingest(serde_json::from_value(event.clone()).unwrap())
            .await;
        assert_eq!(failures(&response), vec!["m-poison"]);
    }
    let stored = shape
        .services
        .store
        .raw_between(
            &tenant,
            &source,
            records[0].ts - time::Duration::SECOND,
            records[0].ts + time::Duration::SECOND,
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "each record once: {stored:?}");
}

/// A message on an `sqs` source's queue delivered again (same message id and sent time)
/// stores its records once, those without the vendor's id included: their ids and arrival
/// time come from the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_queue_message_delivered_again_stores_its_unnamed_records_once() {
    let (shape, handlers) = shape(&config()).await;
    let url = api(&shape).await;
    let vendor = vendor(&url).await;
    let source = new_source(&url, &vendor, json!({"name": "queue", "kind": "sqs"})).await;
    let (tenant, source_id): (VendorId, SourceId) = (
        source["tenant_id"].as_str().unwrap().parse().unwrap(),
        source["id"].as_str().unwrap().parse().unwrap(),
    );
    let queue = source["queue_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let sent_ms = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - 90_000;
    let mut message = sqs_message(
        "src-1",
        r#"{"records": [{"data": {"price": 1}}, {"data": {"price": 2}}, {"id": "n", "data": {"price": 3}}]}"#,
    );
    message["eventSourceARN"] = json!(format!("arn:aws:sqs:us-east-1:000000000000:{queue}"));
    message["attributes"]["SentTimestamp"] = json!(sent_ms.to_string());
    for _ in 0..2 {
        let event = json!({"Records": [message.clone()]});
        let response = handlers
            .ingest(serde_json::from_value(event).unwrap())
            .await;
        assert!(failures(&response).is_empty());
    }
    let now = time::OffsetDateTime::now_utc();
    let stored = shape
        .services
        .store
        .raw_between(&tenant, &source_id, now - time::Duration::hours(1), now)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3, "each record once: {stored:?}");
    let sent = time::OffsetDateTime::from_unix_timestamp(sent_ms / 1000).unwrap();
    assert!(stored.iter().all(|r| r.received_at == sent && r.ts == sent));
}

/// The app's HTTP API, served from `shape`'s services (no event sources run: the test feeds
/// the handlers itself).
async fn api(shape: &AwsShape) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = wharf_api::router(shape.services.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn call(url: &str, path: &str, token: Option<&str>, body: Value) -> Value {
    let client = reqwest::Client::new();
    let mut request = client.post(format!("{url}{path}")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

async fn get(url: &str, path: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn login(url: &str, email: &str) -> String {
    call(
        url,
        "/v1/auth/token",
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Signs up the vendor Acme; answers its admin's token.
async fn vendor(url: &str) -> String {
    let body =
        json!({"name": "Acme", "admin_email": "v@vendor.example", "admin_password": PASSWORD});
    call(url, "/v1/vendors", None, body).await;
    login(url, "v@vendor.example").await
}

/// Creates a source of the vendor's; answers it as the API shows it.
async fn new_source(url: &str, vendor: &str, body: Value) -> Value {
    call(url, "/v1/sources", Some(vendor), body).await
}

/// A published feed on `source` keeping records priced over 100; answers its id.
async fn large_trades_feed(url: &str, vendor: &str, source: &str) -> String {
    let body = json!({
        "name": "Large trades", "source_id": source, "description": "big ones",
        "pipeline": {"rules": [{"type": "filter", "expr": "record.price > 100.0"}]},
        "plans": [{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "10.00",
                   "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.01"}]}],
        "visibility": "public", "status": "published"
    });
    call(url, "/v1/feeds", Some(vendor), body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Signs up the subscriber Bob and subscribes him to `feed` on `channel`; answers his token
/// and the subscription's id.
async fn bob_subscribes(url: &str, feed: &str, channel: Value) -> (String, String) {
    let body = json!({"name": "Bob", "email": "b@sub.example", "password": PASSWORD});
    call(url, "/v1/subscribers", None, body).await;
    let bob = login(url, "b@sub.example").await;
    let body = json!({"feed_id": feed, "plan_id": "pro", "channel": channel});
    let sub = call(url, "/v1/subscriptions", Some(&bob), body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (bob, sub)
}

/// One batch of up to ten messages of a queue, with their system and message attributes, as
/// Lambda's event source mapping receives them.
async fn receive(shape: &AwsShape, queue: &str) -> Vec<wharf_aws::aws_sdk_sqs::types::Message> {
    shape
        .clients
        .sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

/// Every record of the table's stream from `after` on (by sequence number), oldest first.
async fn stream_records(
    shape: &AwsShape,
    seen: &mut usize,
) -> Vec<wharf_aws::aws_sdk_dynamodbstreams::types::Record> {
    let clients = &shape.clients;
    let arn = clients
        .dynamodb
        .describe_table()
        .table_name(&clients.settings.table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
        .latest_stream_arn
        .unwrap();
    let shards = clients
        .streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap()
        .stream_description
        .unwrap()
        .shards
        .unwrap();
    let mut all = Vec::new();
    for shard in shards {
        let mut iterator = clients
            .streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id.unwrap())
            .shard_iterator_type(
                wharf_aws::aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon,
            )
            .send()
            .await
            .unwrap()
            .shard_iterator;
        while let Some(it) = iterator {
            let page = clients
                .streams
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .unwrap();
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                break;
            }
            all.extend(records);
            iterator = page.next_shard_iterator;
        }
    }
    let new = all.split_off((*seen).min(all.len()));
    *seen += new.len();
    new
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_delivered_twice_make_one_output_one_webhook_delivery_and_one_count_per_record() {
    let (shape, handlers) = shape(&config()).await;
    let url = api(&shape).await;
    let vendor = vendor(&url).await;
    let source = new_source(&url, &vendor, json!({"name": "ticks", "kind": "push"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let feed = large_trades_feed(&url, &vendor, &source).await;
    let receiver = receiver::Receiver::start(vec![]).await;
    let (_, sub) =
        bob_subscribes(&url, &feed, json!({"type": "webhook", "url": receiver.url})).await;

    let pushed = call(
        &url,
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        json!({"records": [
            {"id": "t1", "data": {"price": 150.0}},
            {"id": "t2", "data": {"price": 50.0}},
            {"id": "t3", "data": {"price": 250.0}},
        ]}),
    )
    .await;
    assert_eq!(pushed["accepted"], 3);

    // The ingest queue's messages, as Lambda would deliver them: twice.
    let clients = &shape.clients;
    let arn = queue_arn(clients, &shape.queues.ingest).await.unwrap();
    let received = receive(&shape, &shape.queues.ingest).await;
    assert_eq!(received.len(), 1, "three small records fit one message");
    for _ in 0..2 {
        let event = serde_json::from_value(sqs_event(&received, &arn, "us-east-1")).unwrap();
        assert!(failures(&handlers.ingest(event).await).is_empty());
    }

    // The stream: raw records first (processed twice), then the outputs (published twice).
    let mut seen = 0;
    for _ in 0..3 {
        let records = stream_records(&shape, &mut seen).await;
        if records.is_empty() {
            break;
        }
        let event = stream_event(&records, "arn:aws:dynamodb:stream", "us-east-1");
        for _ in 0..2 {
            let response = handlers
                .stream(serde_json::from_value(event.clone()).unwrap())
                .await;
            assert!(failures(&response).is_empty());
        }
    }
    // The outputs went to the feed's topic, which passed them to the delivery queue: the
    // sender's batch, delivered twice too.
    let delivery_arn = queue_arn(clients, &shape.queues.delivery).await.unwrap();
    let woken = receive(&shape, &shape.queues.delivery).await;
    assert_eq!(woken.len(), 1, "one wake-up for two records: {woken:?}");
    for _ in 0..2 {
        let event = sqs_event(&woken, &delivery_arn, "us-east-1");
        let response = handlers
            .sender(serde_json::from_value(event).unwrap())
            .await;
        assert!(failures(&response).is_empty());
    }
    // The two raw records may sit on different stream shards, processed in either order.
    let mut bodies: Vec<f64> = receiver
        .hits()
        .iter()
        .map(|h| h.json()["data"]["price"].as_f64().unwrap())
        .collect();
    bodies.sort_by(f64::total_cmp);
    assert_eq!(
        bodies,
        vec![150.0, 250.0],
        "each passing record delivered once"
    );

    let now = time::OffsetDateTime::now_utc();
    let usage = shape
        .services
        .store
        .usage(
            &wharf_core::domain::UsageFilter {
                subscription: Some(sub.parse().unwrap()),
                ..Default::default()
            },
            now - time::Duration::hours(2),
            now + time::Duration::hours(2),
        )
        .await
        .unwrap();
    assert_eq!(usage.iter().map(|u| u.count).sum::<u64>(), 2, "{usage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_table_is_gone_every_item_is_reported_failed_for_a_retry() {
    let (shape, handlers) = shape(&config()).await;
    let (tenant, source) = (VendorId::new(), SourceId::new());
    let record = raw(&tenant, &source, "x");
    let body = wharf_core::ingest_queue::pack(std::slice::from_ref(&record), 256 * 1024)
        .unwrap()
        .remove(0);
    shape
        .clients
        .dynamodb
        .delete_table()
        .table_name(&shape.clients.settings.table)
        .send()
        .await
        .unwrap();
    let event = json!({"Records": [sqs_message("m-1", &body), sqs_message("m-2", &body)]});
    let response = handlers
        .ingest(serde_json::from_value(event).unwrap())
        .await;
    assert_eq!(failures(&response), vec!["m-1", "m-2"]);

    let image = json!({
        "pk": {"S": "T#x"}, "sk": {"S": "y"}, "kind": {"S": "raw_pack"},
        "docz": {"B": base64::Engine::encode(&base64::engine::general_purpose::STANDARD,
            wharf_aws::store::packed_part(std::slice::from_ref(&record)).unwrap()
        )}
    });
    let stream = json!({"Records": [
        {"eventID": "1", "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
         "awsRegion": "us-east-1", "eventSourceARN": "arn:s",
         "dynamodb": {"ApproximateCreationDateTime": 0, "Keys": {}, "NewImage": image,
                      "SequenceNumber": "100", "SizeBytes": 10, "StreamViewType": "NEW_IMAGE"}},
        {"eventID": "2", "eventName": "MODIFY", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
         "awsRegion": "us-east-1", "eventSourceARN": "arn:s",
         "dynamodb": {"ApproximateCreationDateTime": 0, "Keys": {}, "NewImage": {},
                      "SequenceNumber": "101", "SizeBytes": 10, "StreamViewType": "NEW_IMAGE"}}
    ]});
    let response = handlers
        .stream(serde_json::from_value(stream).unwrap())
        .await;
    assert_eq!(
        failures(&response),
        vec!["100"],
        "retried from the first record it concerns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_ends_in_the_dead_letter_queue_after_five_receives() {
    let config = config();
    let server = wharf::Server::bind(&config).await.unwrap();
    let clients = wharf::aws::clients(&config).await;
    let queue = |name: String| {
        let clients = clients.clone();
        async move {
            clients
                .sqs
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap()
        }
    };
    let ingest = queue(format!("{}-ingest", config.aws.queue_prefix)).await;
    let dlq = queue(format!("{}-ingest-dlq", config.aws.queue_prefix)).await;
    // Redelivery after a second rather than the production 30 s, to keep the test short.
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(&ingest)
        .attributes(
            wharf_aws::aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "1",
        )
        .send()
        .await
        .unwrap();
    clients
        .sqs
        .send_message()
        .queue_url(&ingest)
        .message_body("this is not a batch of records")
        .send()
        .await
        .unwrap();
    tokio::spawn(server.run(std::future::pending()));
    let mut dead = Vec::new();
    for _ in 0..60 {
        dead = clients
            .sqs
            .receive_message()
            .queue_url(&dlq)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(
        dead.len(),
        1,
        "the poison message reached the dead-letter queue"
    );
    assert_eq!(
        dead[0].body.as_deref(),
        Some("this is not a batch of records")
    );
    let receives: u32 = dead[0]
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        receives >= 5,
        "received {receives} times before it was moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_source_gets_its_own_queue_whose_messages_are_stored_and_refusals_shown() {
    let config = config();
    let server = wharf::Server::bind(&config).await.unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let clients = wharf::aws::clients(&config).await;
    tokio::spawn(server.run(std::future::pending()));

    let vendor = vendor(&url).await;
    let source = new_source(
        &url,
        &vendor,
        json!({
            "name": "queue", "kind": "sqs",
            "schema": {"type": "object", "required": ["price"]}
        }),
    )
    .await;
    let source_id = source["id"].as_str().unwrap().to_owned();
    let queue = source["queue_url"].as_str().unwrap().to_owned();
    let feed = large_trades_feed(&url, &vendor, &source_id).await;
    let (bob, sub) = bob_subscribes(&url, &feed, json!({"type": "pull"})).await;

    // What the vendor's own systems send to the queue.
    for body in [
        r#"{"records": [{"id": "a", "data": {"price": 150}}, {"id": "b", "data": {"size": 1}}]}"#,
        r#"{"id": "c", "data": {"price": 300}}"#,
        r#"{"id": "a", "data": {"price": 150}}"#,
        "not json at all",
    ] {
        clients
            .sqs
            .send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let prices = || async {
        let path = format!("/v1/subscriptions/{sub}/records?after=0");
        let (_, page) = get(&url, &path, &bob).await;
        let mut prices: Vec<f64> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["record"]["data"]["price"].as_f64().unwrap())
            .collect();
        prices.sort_by(f64::total_cmp);
        prices
    };
    receiver::eventually("the queue's records are stored", || async {
        prices().await.len() >= 2
    })
    .await;
    let prices = prices().await;
    assert_eq!(
        prices,
        vec![150.0, 300.0],
        "a and c, once each; b is refused by the schema"
    );
    let (_, shown) = get(&url, &format!("/v1/sources/{source_id}"), &vendor).await;
    let last_error = shown["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(last_error.contains("record 1"), "{shown}");

    // The message that is not records stays on the queue for its retries (then the
    // dead-letter queue), not lost.
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(wharf_aws::aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let count = |name: wharf_aws::aws_sdk_sqs::types::QueueAttributeName| -> u32 {
        attributes.get(&name).unwrap().parse().unwrap()
    };
    assert_eq!(
        count(wharf_aws::aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            + count(wharf_aws::aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        1
    );

    // Deleting a source deletes its queue.
    let spare = new_source(&url, &vendor, json!({"name": "spare", "kind": "sqs"})).await;
    let spare_queue = spare["queue_url"].as_str().unwrap().to_owned();
    let name = spare_queue.rsplit('/').next().unwrap().to_owned();
    assert!(
        clients
            .sqs
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .is_ok()
    );
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{url}/v1/sources/{}",
            spare["id"].as_str().unwrap()
        ))
        .bearer_auth(&vendor)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert!(
        clients
            .sqs
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .is_err()
    );
}
