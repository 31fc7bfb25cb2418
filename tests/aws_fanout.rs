//! The aws shape's output side against a real moto server: per-feed SNS topics that follow
//! their feed, native channels (an SQS queue with raw delivery, email, a mobile platform
//! endpoint) as subscriptions of the topic with filter policies, webhooks through the delivery queue and the sender, and
//! WebSocket delivery through API Gateway's management API (served here by a fake that
//! records posts and answers 410 for a stale connection).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

#[path = "support/moto.rs"]
mod moto;
#[path = "api/receiver.rs"]
#[allow(dead_code)]
mod receiver;

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wharf::aws::{AwsShape, Resources, aws_shape};
use wharf::config::Config;
use wharf_core::domain::UsageFilter;
use wharf_core::ports::SystemClock;
use wharf_workers::handlers::{Deliveries, Handlers};

const PASSWORD: &str = "Correct horse battery 9!";

use moto::aws_server_config as config;
use receiver::eventually;

/// `wharf serve --backend aws` on `config`; answers its URL and, for reading what it stored,
/// the same shape built beside it.
async fn serve(config: &Config) -> (String, AwsShape) {
    let server = wharf::Server::bind(config).await.unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    tokio::spawn(server.run(std::future::pending()));
    let shape = aws_shape(config, Arc::new(SystemClock), Resources::Bootstrap)
        .await
        .unwrap();
    (url, shape)
}

async fn send(
    method: reqwest::Method,
    url: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let (status, body) = answer(method, url, path, token, body).await;
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    body
}

/// The status and body of a request, whatever the status.
async fn answer(
    method: reqwest::Method,
    url: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{url}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Pushes `records` (`{"records": [...]}`) to the vendor's source.
async fn push_records(url: &str, vendor: &str, source: &str, records: Value) {
    let path = format!("/v1/sources/{source}/records");
    post(url, &path, Some(vendor), records).await;
}

async fn post(url: &str, path: &str, token: Option<&str>, body: Value) -> Value {
    send(reqwest::Method::POST, url, path, token, Some(body)).await
}

async fn patch(url: &str, path: &str, token: &str, body: Value) -> Value {
    send(reqwest::Method::PATCH, url, path, Some(token), Some(body)).await
}

async fn login(url: &str, email: &str) -> String {
    let body = json!({"email": email, "password": PASSWORD});
    post(url, "/v1/auth/token", None, body).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The vendor Acme with a push source; answers its token and the source's id.
async fn vendor(url: &str) -> (String, String) {
    let body =
        json!({"name": "Acme", "admin_email": "v@vendor.example", "admin_password": PASSWORD});
    post(url, "/v1/vendors", None, body).await;
    let token = login(url, "v@vendor.example").await;
    let body = json!({"name": "ticks", "kind": "push"});
    let source = post(url, "/v1/sources", Some(&token), body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (token, source)
}

/// A feed passing every record with a price; answers its id.
async fn feed(url: &str, vendor: &str, source: &str, status: &str) -> String {
    let body = json!({
        "name": "Quotes", "source_id": source, "description": "all of them",
        "pipeline": {"rules": [{"type": "filter", "expr": "record.px > 0.0"}]},
        "plans": [{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "10.00",
                   "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.01"}]}],
        "visibility": "public", "status": status
    });
    post(url, "/v1/feeds", Some(vendor), body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Signs up the subscriber Bob; answers his token.
async fn bob(url: &str) -> String {
    let body = json!({"name": "Bob", "email": "b@sub.example", "password": PASSWORD});
    post(url, "/v1/subscribers", None, body).await;
    login(url, "b@sub.example").await
}

async fn subscribe(
    url: &str,
    bob: &str,
    feed: &str,
    channel: Value,
    filter: Option<&str>,
) -> Value {
    let body = json!({"feed_id": feed, "plan_id": "pro", "channel": channel, "filter": filter});
    post(url, "/v1/subscriptions", Some(bob), body).await
}

/// A queue of the subscriber's; answers its URL and ARN.
async fn queue(shape: &AwsShape, name: &str) -> (String, String) {
    // A subscriber's own queue: Wharf refuses queues named with its prefix.
    let name = format!(
        "subscriber-{}-{name}",
        &shape.clients.settings.queue_prefix[6..]
    );
    let url = shape
        .clients
        .sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = wharf_aws::bootstrap::queue_arn(&shape.clients, &url)
        .await
        .unwrap();
    (url, arn)
}

/// Every message body that arrives on the queue within `wait`.
async fn drain(shape: &AwsShape, queue: &str, wait: Duration) -> Vec<Value> {
    let mut bodies = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        let messages = shape
            .clients
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        for m in messages {
            bodies.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
            shape
                .clients
                .sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    bodies
}

async fn usage(shape: &AwsShape, sub: &Value) -> u64 {
    let now = time::OffsetDateTime::now_utc();
    let filter = UsageFilter {
        subscription: Some(sub["id"].as_str().unwrap().parse().unwrap()),
        ..Default::default()
    };
    let rows = shape
        .services
        .store
        .usage(
            &filter,
            now - time::Duration::hours(2),
            now + time::Duration::hours(2),
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.count).sum()
}

/// The topic subscriptions of a feed's topic, as (protocol, endpoint, subscription ARN).
async fn topic_subscriptions(
    shape: &AwsShape,
    tenant: &str,
    feed: &str,
) -> Vec<(String, String, String)> {
    let topic = topic_arn(shape, tenant, feed)
        .await
        .expect("the feed's topic");
    shape
        .clients
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(topic)
        .send()
        .await
        .unwrap()
        .subscriptions
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            (
                s.protocol.unwrap_or_default(),
                s.endpoint.unwrap_or_default(),
                s.subscription_arn.unwrap_or_default(),
            )
        })
        .collect()
}

/// The ARN of the feed's topic, if it exists (listed, not created).
async fn topic_arn(shape: &AwsShape, tenant: &str, feed: &str) -> Option<String> {
    let name = format!("{}-{tenant}-{feed}", shape.clients.settings.queue_prefix);
    let topics = shape
        .clients
        .sns
        .list_topics()
        .send()
        .await
        .unwrap()
        .topics
        .unwrap_or_default();
    topics
        .into_iter()
        .filter_map(|t| t.topic_arn)
        .find(|arn| arn.ends_with(&format!(":{name}")))
}

/// The attributes SNS keeps for a topic subscription.
async fn subscription_attributes(
    shape: &AwsShape,
    link: &str,
) -> std::collections::HashMap<String, String> {
    shape
        .clients
        .sns
        .get_subscription_attributes()
        .subscription_arn(link)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
}

async fn tenant_of(url: &str, vendor: &str) -> String {
    send(reqwest::Method::GET, url, "/v1/me", Some(vendor), None).await["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A served aws shape with Acme's published feed and the subscriber Bob.
struct Scene {
    url: String,
    shape: AwsShape,
    vendor: String,
    source: String,
    feed: String,
    bob: String,
}

impl Scene {
    async fn new() -> Scene {
        let (url, shape) = serve(&config()).await;
        let (vendor, source) = vendor(&url).await;
        let feed = feed(&url, &vendor, &source, "published").await;
        let bob = bob(&url).await;
        Scene {
            url,
            shape,
            vendor,
            source,
            feed,
            bob,
        }
    }

    async fn subscribe(&self, channel: Value, filter: Option<&str>) -> Value {
        subscribe(&self.url, &self.bob, &self.feed, channel, filter).await
    }

    /// Bob's subscription request, answered whatever its status.
    async fn try_subscribe(&self, channel: Value) -> (u16, Value) {
        let body = json!({"feed_id": self.feed, "plan_id": "pro", "channel": channel});
        let path = "/v1/subscriptions";
        answer(
            reqwest::Method::POST,
            &self.url,
            path,
            Some(&self.bob),
            Some(body),
        )
        .await
    }

    /// Pushes AAPL at 150, MSFT at 50 and GOOGL at 200.
    async fn push_three(&self) {
        let records = json!({"records": [
            {"id": "q1", "data": {"sym": "AAPL", "px": 150.0}},
            {"id": "q2", "data": {"sym": "MSFT", "px": 50.0}},
            {"id": "q3", "data": {"sym": "GOOGL", "px": 200.0}},
        ]});
        push_records(&self.url, &self.vendor, &self.source, records).await;
    }

    async fn tenant(&self) -> String {
        tenant_of(&self.url, &self.vendor).await
    }

    /// An SNS platform endpoint registered by the app for the device `token` of `user`.
    async fn phone(&self, token: &str, user: &str) -> String {
        let sns = &self.shape.clients.sns;
        let app = sns
            .create_platform_application()
            .name(format!("{}-app", self.shape.clients.settings.queue_prefix))
            .platform("GCM")
            .attributes("PlatformCredential", "server-key")
            .send()
            .await
            .unwrap()
            .platform_application_arn
            .unwrap();
        let arn = sns
            .create_platform_endpoint()
            .platform_application_arn(app)
            .token(token)
            .send()
            .await
            .unwrap()
            .endpoint_arn
            .unwrap();
        // The app sets its user's id in CustomUserData (as an attribute too: moto keeps the
        // creation's CustomUserData apart).
        sns.set_endpoint_attributes()
            .endpoint_arn(&arn)
            .attributes("CustomUserData", user)
            .send()
            .await
            .unwrap();
        arn
    }

    async fn bob_id(&self) -> String {
        send(
            reqwest::Method::GET,
            &self.url,
            "/v1/me",
            Some(&self.bob),
            None,
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn syms(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| b["data"]["sym"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_subscribers_get_what_their_filter_lets_through_filtered_by_sns_or_by_wharf() {
    let scene = Scene::new().await;
    let (aapl_queue, aapl_arn) = queue(&scene.shape, "bob-aapl").await;
    let (five_queue, five_arn) = queue(&scene.shape, "bob-five").await;
    // SNS can apply this filter itself: a MessageBody policy.
    let aapl = scene
        .subscribe(
            json!({"type": "sqs", "queue_arn": aapl_arn}),
            Some(r#"record.sym == "AAPL""#),
        )
        .await;
    assert_eq!(aapl["native"]["filtered_by_wharf"], false, "{aapl}");
    // SNS cannot: Wharf evaluates it and tags the records that match.
    let five = scene
        .subscribe(
            json!({"type": "sqs", "queue_arn": five_arn}),
            Some("size(record.sym) == 5"),
        )
        .await;
    assert_eq!(five["native"]["filtered_by_wharf"], true, "{five}");
    scene.push_three().await;

    let got = drain(&scene.shape, &aapl_queue, Duration::from_secs(20)).await;
    assert_eq!(
        syms(&got),
        vec!["AAPL"],
        "raw record JSON, filtered by SNS: {got:?}"
    );
    assert_eq!(got[0]["feed_id"], scene.feed.as_str());
    let got = drain(&scene.shape, &five_queue, Duration::from_secs(3)).await;
    assert_eq!(
        syms(&got),
        vec!["GOOGL"],
        "filtered by Wharf's tag: {got:?}"
    );
    // Metered once each, as the topic accepted them.
    assert_eq!(usage(&scene.shape, &aapl).await, 1);
    assert_eq!(usage(&scene.shape, &five).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_subscribers_of_a_topic_get_every_record_once_signed_through_the_delivery_queue() {
    let scene = Scene::new().await;
    let receiver = receiver::Receiver::start(vec![]).await;
    let hook = scene
        .subscribe(json!({"type": "webhook", "url": receiver.url}), None)
        .await;
    let secret = hook["signing_secret"].as_str().unwrap().to_owned();
    scene.push_three().await;
    eventually("three webhook deliveries", || async {
        receiver.hits().len() >= 3
    })
    .await;
    let hits = receiver.hits();
    // Records of one push are processed by separate stream shards, so their output order
    // (and delivery order) is the order they were processed in.
    let mut hooked: Vec<String> = hits
        .iter()
        .map(|h| h.json()["data"]["sym"].as_str().unwrap().to_owned())
        .collect();
    hooked.sort();
    assert_eq!(
        hooked,
        vec!["AAPL", "GOOGL", "MSFT"],
        "webhook: every record once"
    );
    assert!(
        hits.iter().all(|h| receiver::signed_with(h, &secret)),
        "every delivery verifies"
    );
    eventually("the deliveries are counted", || async {
        usage(&scene.shape, &hook).await >= 3
    })
    .await;
    assert_eq!(usage(&scene.shape, &hook).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_and_mobile_push_are_topic_subscriptions_metered_by_their_filters() {
    let scene = Scene::new().await;
    let email = scene
        .subscribe(json!({"type": "email", "address": "bob@sub.example"}), None)
        .await;
    // The confirmation state is on the subscription (moto confirms email at once).
    assert_eq!(email["native"]["pending_confirmation"], false, "{email}");
    let phone = scene.phone("bobs-phone", &scene.bob_id().await).await;
    let push = scene
        .subscribe(
            json!({"type": "mobile_push", "endpoint_arn": phone}),
            Some("record.px >= 150.0"),
        )
        .await;
    assert_eq!(push["native"]["filtered_by_wharf"], false, "{push}");
    let subs = topic_subscriptions(&scene.shape, &scene.tenant().await, &scene.feed).await;
    let email_arn = email["native"]["id"].as_str().unwrap();
    assert!(
        subs.iter()
            .any(|(p, e, a)| p == "email" && e == "bob@sub.example" && a == email_arn),
        "{subs:?}"
    );
    let push_arn = push["native"]["id"].as_str().unwrap();
    assert!(
        subs.iter()
            .any(|(p, e, a)| p == "application" && e == &phone && a == push_arn),
        "{subs:?}"
    );
    scene.push_three().await;
    eventually("the topic's deliveries are counted", || async {
        usage(&scene.shape, &email).await >= 3 && usage(&scene.shape, &push).await >= 2
    })
    .await;
    assert_eq!(usage(&scene.shape, &email).await, 3);
    assert_eq!(
        usage(&scene.shape, &push).await,
        2,
        "AAPL at 150 and GOOGL at 200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_platform_endpoint_and_wharfs_own_queues_are_refused() {
    let scene = Scene::new().await;
    let eves = scene.phone("eves-phone", "user_someone_else").await;
    let (status, problem) = scene
        .try_subscribe(json!({"type": "mobile_push", "endpoint_arn": eves}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        problem["errors"][0]["path"], "channel.endpoint_arn",
        "{problem}"
    );
    let ingest = wharf_aws::bootstrap::queue_arn(&scene.shape.clients, &scene.shape.queues.ingest)
        .await
        .unwrap();
    let (status, problem) = scene
        .try_subscribe(json!({"type": "sqs", "queue_arn": ingest}))
        .await;
    assert_eq!(status, 422, "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_publishes_each_record_once_and_does_not_replay() {
    let scene = Scene::new().await;
    let (_, arn) = queue(&scene.shape, "bob-all").await;
    let all = scene
        .subscribe(json!({"type": "sqs", "queue_arn": arn}), None)
        .await;
    scene.push_three().await;
    eventually("the records are metered", || async {
        usage(&scene.shape, &all).await >= 3
    })
    .await;
    let topic = topic_arn(&scene.shape, &scene.tenant().await, &scene.feed)
        .await
        .unwrap();
    let data: Value = reqwest::get(format!("{}/moto-api/data.json", moto::shared().url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut published: Vec<String> = data["sns"]["Topic"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["arn"] == topic.as_str())
        .flat_map(|t| t["sent_notifications"].as_array().unwrap().clone())
        .map(|n| {
            serde_json::from_str::<Value>(n[1].as_str().unwrap()).unwrap()["data"]["sym"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    published.sort();
    assert_eq!(
        published,
        vec!["AAPL", "GOOGL", "MSFT"],
        "each record published once"
    );
    // The topic does not replay: asking is a 409 that says so, not deliveries that never go.
    let path = format!("/v1/subscriptions/{}/replay", all["id"].as_str().unwrap());
    let range = json!({"from": "2020-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"});
    let (status, _) = answer(
        reqwest::Method::POST,
        &scene.url,
        &path,
        Some(&scene.bob),
        Some(range),
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_follow_their_feed_and_subscriptions_follow_their_status() {
    let config = config();
    let (url, shape) = serve(&config).await;
    let (vendor, source) = vendor(&url).await;
    let tenant = tenant_of(&url, &vendor).await;
    let feed = feed(&url, &vendor, &source, "draft").await;
    assert_eq!(
        topic_arn(&shape, &tenant, &feed).await,
        None,
        "a draft has no topic"
    );
    patch(
        &url,
        &format!("/v1/feeds/{feed}"),
        &vendor,
        json!({"status": "published"}),
    )
    .await;
    let subs = topic_subscriptions(&shape, &tenant, &feed).await;
    let delivery_arn = wharf_aws::bootstrap::queue_arn(&shape.clients, &shape.queues.delivery)
        .await
        .unwrap();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(
        (subs[0].0.as_str(), subs[0].1.as_str()),
        ("sqs", delivery_arn.as_str())
    );

    let bob = bob(&url).await;
    let (_, arn) = queue(&shape, "bob").await;
    let sub = subscribe(
        &url,
        &bob,
        &feed,
        json!({"type": "sqs", "queue_arn": arn}),
        Some("record.px > 100.0"),
    )
    .await;
    let id = sub["id"].as_str().unwrap();
    let link = sub["native"]["id"].as_str().unwrap().to_owned();
    let attributes = subscription_attributes(&shape, &link).await;
    assert_eq!(attributes["RawMessageDelivery"], "true");
    assert_eq!(attributes["FilterPolicyScope"], "MessageBody");
    let policy: Value = serde_json::from_str(&attributes["FilterPolicy"]).unwrap();
    assert_eq!(policy, json!({"data": {"px": [{"numeric": [">", 100.0]}]}}));

    let on_topic = |subs: Vec<(String, String, String)>| subs.iter().any(|(_, e, _)| e == &arn);
    let path = format!("/v1/subscriptions/{id}");
    let paused = patch(&url, &path, &bob, json!({"status": "paused"})).await;
    assert!(paused.get("native").is_none(), "{paused}");
    assert!(
        !on_topic(topic_subscriptions(&shape, &tenant, &feed).await),
        "pausing unsubscribes"
    );
    let resumed = patch(&url, &path, &bob, json!({"status": "active"})).await;
    assert!(
        on_topic(topic_subscriptions(&shape, &tenant, &feed).await),
        "resuming subscribes"
    );
    assert_eq!(resumed["native"]["filtered_by_wharf"], false);
    // A filter SNS cannot express replaces the policy with Wharf's tag.
    let changed = patch(
        &url,
        &path,
        &bob,
        json!({"filter": "record.px > 1.0 || record.px < 0.0"}),
    )
    .await;
    let link = changed["native"]["id"].as_str().unwrap().to_owned();
    let attributes = subscription_attributes(&shape, &link).await;
    assert_eq!(attributes["FilterPolicyScope"], "MessageAttributes");
    assert_eq!(
        attributes["FilterPolicy"],
        json!({"wharf.match": [id]}).to_string()
    );

    send(reqwest::Method::DELETE, &url, &path, Some(&bob), None).await;
    assert!(
        !on_topic(topic_subscriptions(&shape, &tenant, &feed).await),
        "cancelling unsubscribes"
    );

    patch(
        &url,
        &format!("/v1/feeds/{feed}"),
        &vendor,
        json!({"status": "archived"}),
    )
    .await;
    assert_eq!(
        topic_arn(&shape, &tenant, &feed).await,
        None,
        "archiving deletes the topic"
    );
}

/// Frames posted, by connection.
type Posts = Arc<Mutex<Vec<(String, Value)>>>;

/// A fake of API Gateway's management API: records what is posted to each connection and
/// answers 410 Gone for `c-stale`.
async fn management_api() -> (String, Posts) {
    use axum::extract::{Path, State};
    let posts: Posts = Arc::default();
    let router =
        axum::Router::new()
            .route(
                "/prod/@connections/{id}",
                axum::routing::post(
                    |State(posts): State<Posts>,
                     Path(id): Path<String>,
                     body: axum::body::Bytes| async move {
                        if id == "c-stale" {
                            let gone = [("x-amzn-errortype", "GoneException")];
                            return (axum::http::StatusCode::GONE, gone, r#"{"message":"gone"}"#);
                        }
                        let frame = serde_json::from_slice(&body).unwrap();
                        posts.lock().unwrap().push((id, frame));
                        let ok = [("content-type", "application/json")];
                        (axum::http::StatusCode::OK, ok, "")
                    },
                ),
            )
            .with_state(posts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/prod", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, posts)
}

fn socket_event(route: &str, connection: &str, query: Value) -> Value {
    json!({
        "requestContext": {
            "routeKey": route, "eventType": if route == "$connect" { "CONNECT" } else { "DISCONNECT" },
            "connectionId": connection, "stage": "prod", "apiId": "abc", "requestId": "r",
            "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "connectedAt": 0, "requestTimeEpoch": 0, "identity": {"sourceIp": "127.0.0.1"}
        },
        "queryStringParameters": query,
        "headers": {},
        "isBase64Encoded": false
    })
}

/// Lambda's WebSocket request, decoded as the Lambda entry decodes it.
fn socket(event: Value) -> wharf_core::domain::SocketEvent {
    wharf_aws::lambda::socket_event(&serde_json::from_value(event).unwrap())
}

fn sockets(shape: &AwsShape) -> &dyn wharf_core::ports::Sockets {
    shape.services.sockets.as_deref().expect("gateway sockets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_records_go_to_connected_sockets_and_stale_sockets_are_dropped() {
    let (endpoint, posts) = management_api().await;
    let mut config = config();
    config.aws.websocket_endpoint = Some(endpoint);
    let (url, shape) = serve(&config).await;
    let handlers = Handlers::new(
        shape.services.clone(),
        config.delivery(),
        Deliveries::Awaited,
    );
    let (vendor, source) = vendor(&url).await;
    let feed = feed(&url, &vendor, &source, "published").await;
    let bob = bob(&url).await;
    let sub = subscribe(&url, &bob, &feed, json!({"type": "websocket"}), None).await;
    let id = sub["id"].as_str().unwrap();

    let connect = |connection: &str, token: &str| {
        socket_event(
            "$connect",
            connection,
            json!({"subscription_id": id, "access_token": token}),
        )
    };
    let refused = handlers
        .websocket(socket(connect("c-bad", "not-a-token")))
        .await;
    assert_eq!(refused, 401);
    for connection in ["c-live", "c-stale"] {
        let answer = handlers.websocket(socket(connect(connection, &bob))).await;
        assert_eq!(answer, 200, "{connection}");
    }
    let (tenant, sub_id) = (
        sub["tenant_id"].as_str().unwrap().parse().unwrap(),
        id.parse().unwrap(),
    );
    assert_eq!(
        sockets(&shape)
            .connections_of(&tenant, &sub_id)
            .await
            .unwrap()
            .len(),
        2
    );

    let records = json!({"records": [
        {"id": "w1", "data": {"sym": "AAPL", "px": 1.0}},
        {"id": "w2", "data": {"sym": "MSFT", "px": 2.0}},
    ]});
    push_records(&url, &vendor, &source, records).await;
    eventually("two frames are posted", || async {
        posts.lock().unwrap().len() >= 2
    })
    .await;
    let got: Vec<(String, String)> = posts
        .lock()
        .unwrap()
        .iter()
        .map(|(c, f)| {
            (
                c.clone(),
                f["record"]["data"]["sym"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Records are counted once every connection was tried (the stale one forgotten on the
    // way), after the frames are posted: wait for the count before checking the rest.
    eventually("the posted records are counted", || async {
        usage(&shape, &sub).await >= 2
    })
    .await;
    // The two records may be processed by different stream shards, in either order.
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        vec![
            ("c-live".to_owned(), "AAPL".to_owned()),
            ("c-live".to_owned(), "MSFT".to_owned())
        ]
    );
    let left: Vec<String> = sockets(&shape)
        .connections_of(&tenant, &sub_id)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, vec!["c-live"], "the stale socket is forgotten");
    assert_eq!(usage(&shape, &sub).await, 2, "each record counted once");

    let gone = handlers
        .websocket(socket(socket_event("$disconnect", "c-live", Value::Null)))
        .await;
    assert_eq!(gone, 200);
    assert!(
        sockets(&shape)
            .connections_of(&tenant, &sub_id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_behind_wharfs_back_is_made_again_with_its_delivery_subscription() {
    let config = config();
    let (url, shape) = serve(&config).await;
    let (vendor, source) = vendor(&url).await;
    let tenant = tenant_of(&url, &vendor).await;
    let feed = feed(&url, &vendor, &source, "published").await;
    let topic = topic_arn(&shape, &tenant, &feed).await.unwrap();
    shape
        .clients
        .sns
        .delete_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    let bob = bob(&url).await;
    let receiver = receiver::Receiver::start(vec![]).await;
    subscribe(
        &url,
        &bob,
        &feed,
        json!({"type": "webhook", "url": receiver.url}),
        None,
    )
    .await;
    let records = json!({"records": [{"id": "h1", "data": {"sym": "AAPL", "px": 1.0}}]});
    push_records(&url, &vendor, &source, records).await;
    eventually("the webhook is delivered", || async {
        !receiver.hits().is_empty()
    })
    .await;
    assert_eq!(receiver.hits().len(), 1, "delivered once");
    // The failed publish is retried from the stream, which makes the topic again.
    eventually("the topic is made again", || async {
        topic_arn(&shape, &tenant, &feed).await.is_some()
    })
    .await;
    let subs = topic_subscriptions(&shape, &tenant, &feed).await;
    let delivery = wharf_aws::bootstrap::queue_arn(&shape.clients, &shape.queues.delivery)
        .await
        .unwrap();
    assert!(
        subs.iter().any(|(p, e, _)| p == "sqs" && e == &delivery),
        "the topic is back with the delivery queue subscribed: {subs:?}"
    );
}
