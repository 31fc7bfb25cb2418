//! What a hostile tenant tries against what all tenants share: expensive expressions,
//! floods of objects, and what a noisy tenant must not do to a quiet one.

use crate::helpers::*;
use serde_json::{Value, json};

/// `[0,…,9].all(x0, … [0,…,9].all(x7, record.n >= 0))`: 10⁸ steps on any record.
fn nested_all(depth: usize) -> String {
    let list = "[0,1,2,3,4,5,6,7,8,9]";
    (0..depth).fold("record.n >= 0".to_owned(), |inner, d| {
        format!("{list}.all(x{d}, {inner})")
    })
}

/// A published feed over a new push source with `rules`; answers (feed, source).
async fn feed_with(app: &TestApp, vendor: &str, rules: Value) -> (String, String) {
    let source = app.source(vendor).await;
    let mut body = feed_body(&source, "metered");
    body["pipeline"] = json!({ "rules": rules });
    let res = app.post("/v1/feeds", Some(vendor), body).await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    (res.body["id"].as_str().unwrap().to_owned(), source)
}

fn problem_at<'a>(res: &'a Res, path: &str) -> &'a str {
    assert_eq!(res.status, 422, "{:?}", res.body);
    res.body["errors"]
        .as_array()
        .and_then(|errors| errors.iter().find(|e| e["path"] == path))
        .and_then(|e| e["message"].as_str())
        .unwrap_or_else(|| panic!("no error at {path}: {:?}", res.body))
}

#[tokio::test]
async fn a_rule_whose_cost_is_known_to_exceed_the_budget_is_refused_when_saved() {
    let app = spawn_app().await;
    let (_, vendor) = app.vendor("Acme").await;
    let source = app.source(&vendor).await;
    let mut body = feed_body(&source, "bomb");
    body["pipeline"] = json!({"rules": [{"type": "filter", "expr": nested_all(8)}]});
    let created = app.post("/v1/feeds", Some(&vendor), body).await;
    let message = problem_at(&created, "pipeline.rules[0].expr");
    assert!(message.contains("over the evaluation budget"), "{message}");
    let listed = app.get("/v1/feeds", Some(&vendor)).await;
    assert_eq!(
        listed.body["items"].as_array().map(Vec::len),
        Some(0),
        "nothing was saved"
    );

    let (feed, _) = feed_with(&app, &vendor, json!([{"type": "filter", "expr": "true"}])).await;
    let bomb =
        json!({"rules": [{"type": "map", "fields": {"x": format!("{} ? 1 : 0", nested_all(8))}}]});
    let put = app
        .put(&format!("/v1/feeds/{feed}/pipeline"), Some(&vendor), bomb)
        .await;
    let message = problem_at(&put, "rules[0].fields.x");
    assert!(message.contains("over the evaluation budget"), "{message}");
    let kept = app.get(&format!("/v1/feeds/{feed}"), Some(&vendor)).await;
    assert_eq!(
        kept.body["pipeline"]["version"], 1,
        "the pipeline is unchanged"
    );

    let (_, subscriber) = app.subscriber("eve").await;
    let filtered = app
        .post(
            "/v1/subscriptions",
            Some(&subscriber),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}, "filter": nested_all(6)}),
        )
        .await;
    let message = problem_at(&filtered, "filter");
    assert!(message.contains("over the evaluation budget"), "{message}");
}

#[tokio::test]
async fn a_record_over_the_budget_goes_to_the_feeds_errors_and_the_rest_flow() {
    let app = spawn_app().await;
    let (_, vendor) = app.vendor("Acme").await;
    // The cost depends on the record: 10⁶ steps for a hundred items, 8 for two.
    let filter = "record.items.all(a, record.items.all(b, record.items.all(c, a + b + c >= 0)))";
    let (feed, source) =
        feed_with(&app, &vendor, json!([{"type": "filter", "expr": filter}])).await;
    let (_, other) = app.vendor("Other").await;
    let other_feed = app.feed(&other, "quiet").await;
    let other_source = app
        .get(&format!("/v1/feeds/{other_feed}"), Some(&other))
        .await
        .body["source_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, subscriber) = app.subscriber("bob").await;
    let sub = app.subscribe(&subscriber, &feed).await;
    let other_sub = app.subscribe(&subscriber, &other_feed).await;

    let big: Vec<u32> = (0..100).collect();
    let pushed = app
        .post(
            &format!("/v1/sources/{source}/records"),
            Some(&vendor),
            json!({"records": [
                {"id": "big", "data": {"items": big}},
                {"id": "small", "data": {"items": [1, 2]}}
            ]}),
        )
        .await;
    assert_eq!(pushed.status, 202, "{:?}", pushed.body);
    let quiet = app
        .post(
            &format!("/v1/sources/{other_source}/records"),
            Some(&other),
            json!({"records": [{"id": "q", "data": {"sym": "MSFT", "price": 420.0, "px": 420.0}}]}),
        )
        .await;
    assert_eq!(quiet.status, 202, "{:?}", quiet.body);
    app.idle().await;

    let pulled = app
        .get(
            &format!("/v1/subscriptions/{sub}/records"),
            Some(&subscriber),
        )
        .await;
    let items = pulled.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{:?}", pulled.body);
    assert_eq!(items[0]["record"]["data"]["items"], json!([1, 2]));
    let errors = app
        .get(&format!("/v1/feeds/{feed}/errors"), Some(&vendor))
        .await;
    let errors = errors.body["items"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["rule"], 0);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("over the evaluation budget"),
        "{errors:?}"
    );
    let other_pulled = app
        .get(
            &format!("/v1/subscriptions/{other_sub}/records"),
            Some(&subscriber),
        )
        .await;
    assert_eq!(other_pulled.body["items"].as_array().map(Vec::len), Some(1));
}

/// Reads what the server answers on `stream` until it closes it (or a broken run's deadline).
async fn answer(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut bytes),
    )
    .await;
    assert!(read.is_ok(), "the server kept a stalled connection open");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_time_out_and_connections_beyond_the_limit_get_a_503() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_with(|c| {
        c.connections.max_connections = 40;
        c.connections.header_read_timeout_secs = 1;
        c.connections.body_read_timeout_secs = 1;
        c.connections.idle_timeout_secs = 2;
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: wharf.test\r\n")
            .await
            .unwrap();
        stalled.push(s);
    }
    // Beyond the limit: refused at once with a problem, not queued or dropped.
    let mut extra = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let refused = answer(&mut extra).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("application/problem+json"), "{refused}");
    // The half-sent requests are cut when their headers do not come in time.
    for s in &mut stalled {
        answer(s).await;
    }
    let healthy = app.get("/healthz", None).await;
    assert_eq!(healthy.status, 200);

    // A body that stops halfway is cut too, with an answer.
    let (_, vendor) = app.vendor("Acme").await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /v1/sources HTTP/1.1\r\nhost: wharf.test\r\nauthorization: Bearer {vendor}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let cut = answer(&mut slow).await;
    assert!(cut.starts_with("HTTP/1.1 4"), "{cut}");
    let sources = app.get("/v1/sources", Some(&vendor)).await;
    assert_eq!(sources.body["items"].as_array().map(Vec::len), Some(0));

    // An idle keep-alive connection is closed after the idle timeout.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: wharf.test\r\n\r\n")
        .await
        .unwrap();
    let served = answer(&mut idle).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

/// The quota named in a 409 problem, and its value.
fn quota_of(res: &Res) -> (String, u64) {
    assert_eq!(res.status, 409, "{:?}", res.body);
    assert_eq!(res.body["type"], "/problems/quota", "{:?}", res.body);
    (
        res.body["quota"].as_str().unwrap().to_owned(),
        res.body["limit"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn sources_feeds_published_feeds_and_subscriptions_stop_at_their_quotas() {
    let app = spawn_with(|c| {
        c.limits.quotas.sources_per_tenant = 2;
        c.limits.quotas.feeds_per_tenant = 3;
        c.limits.quotas.published_feeds_per_source = 1;
        c.limits.quotas.subscriptions_per_subscriber = 1;
    })
    .await;
    let (_, vendor) = app.vendor("Acme").await;
    let first = app.source(&vendor).await;
    app.source(&vendor).await;
    let third = app
        .post(
            "/v1/sources",
            Some(&vendor),
            json!({"name": "one more", "kind": "push"}),
        )
        .await;
    assert_eq!(quota_of(&third), ("sources_per_tenant".into(), 2));

    let published = app
        .post("/v1/feeds", Some(&vendor), feed_body(&first, "one"))
        .await;
    assert_eq!(published.status, 201, "{:?}", published.body);
    let again = app
        .post("/v1/feeds", Some(&vendor), feed_body(&first, "two"))
        .await;
    assert_eq!(quota_of(&again), ("published_feeds_per_source".into(), 1));
    let mut draft = feed_body(&first, "draft");
    draft["status"] = json!("draft");
    let draft = app.post("/v1/feeds", Some(&vendor), draft).await;
    assert_eq!(draft.status, 201, "a draft is not published");
    let draft = draft.body["id"].as_str().unwrap().to_owned();
    let publish = app
        .patch(
            &format!("/v1/feeds/{draft}"),
            Some(&vendor),
            json!({"status": "published"}),
        )
        .await;
    assert_eq!(quota_of(&publish), ("published_feeds_per_source".into(), 1));
    let mut another = feed_body(&first, "another draft");
    another["status"] = json!("draft");
    app.post("/v1/feeds", Some(&vendor), another.clone()).await;
    let fourth = app.post("/v1/feeds", Some(&vendor), another).await;
    assert_eq!(quota_of(&fourth), ("feeds_per_tenant".into(), 3));
    let listed = app.get("/v1/feeds", Some(&vendor)).await;
    assert_eq!(
        listed.body["items"].as_array().map(Vec::len),
        Some(3),
        "nothing more saved"
    );

    let feed = published.body["id"].as_str().unwrap();
    let (_, subscriber) = app.subscriber("bob").await;
    app.subscribe(&subscriber, feed).await;
    let second = app
        .post(
            "/v1/subscriptions",
            Some(&subscriber),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}}),
        )
        .await;
    assert_eq!(
        quota_of(&second),
        ("subscriptions_per_subscriber".into(), 1)
    );
}

#[tokio::test]
async fn replays_are_limited_per_hour_and_in_size_and_refused_where_they_cannot_be_served() {
    let app = spawn_with(|c| {
        c.limits.quotas.replays_per_hour = 1;
        c.limits.quotas.records_per_replay = 2;
        c.allow_private_webhooks = true;
    })
    .await;
    let receiver = crate::receiver::Receiver::start(vec![]).await;
    let (_, vendor) = app.vendor("Acme").await;
    let feed = app.feed(&vendor, "trades").await;
    let source = app
        .get(&format!("/v1/feeds/{feed}"), Some(&vendor))
        .await
        .body["source_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, subscriber) = app.subscriber("bob").await;
    let hook = app
        .post(
            "/v1/subscriptions",
            Some(&subscriber),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "webhook", "url": receiver.url}}),
        )
        .await;
    assert_eq!(hook.status, 201, "{:?}", hook.body);
    // A replay reaches back to the subscription's start at most.
    let range = json!({"from": hook.body["created_at"], "to": "2100-01-01T00:00:00Z"});
    let hook = hook.body["id"].as_str().unwrap().to_owned();
    let records: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("r{i}"), "data": {"sym": "AAPL", "price": 150.0, "px": 150.0}}))
        .collect();
    let pushed = app
        .post(
            &format!("/v1/sources/{source}/records"),
            Some(&vendor),
            json!({"records": records}),
        )
        .await;
    assert_eq!(pushed.status, 202);
    app.idle().await;
    let delivered = receiver.hits().len();
    assert_eq!(delivered, 3);

    let too_big = app
        .post(
            &format!("/v1/subscriptions/{hook}/replay"),
            Some(&subscriber),
            range.clone(),
        )
        .await;
    assert_eq!(quota_of(&too_big), ("records_per_replay".into(), 2));
    app.idle().await;
    assert_eq!(
        receiver.hits().len(),
        delivered,
        "a refused replay queues nothing"
    );

    let unchanged = app
        .get(&format!("/v1/subscriptions/{hook}"), Some(&subscriber))
        .await;
    assert_eq!(
        unchanged.body["recent_replays"],
        json!([]),
        "a refused replay does not count"
    );

    let (_, vendor_b) = app.vendor("Other").await;
    let small_feed = app.feed(&vendor_b, "small").await;
    let small_source = app
        .get(&format!("/v1/feeds/{small_feed}"), Some(&vendor_b))
        .await
        .body["source_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let small = app
        .post(
            "/v1/subscriptions",
            Some(&subscriber),
            json!({"feed_id": small_feed, "plan_id": "pro", "channel": {"type": "webhook", "url": receiver.url}}),
        )
        .await;
    let range = json!({"from": small.body["created_at"], "to": "2100-01-01T00:00:00Z"});
    let small = small.body["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/v1/sources/{small_source}/records"),
        Some(&vendor_b),
        json!({"records": [{"id": "s", "data": {"sym": "MSFT", "price": 420.0, "px": 420.0}}]}),
    )
    .await;
    app.idle().await;
    let replayed = app
        .post(
            &format!("/v1/subscriptions/{small}/replay"),
            Some(&subscriber),
            range.clone(),
        )
        .await;
    assert_eq!(replayed.status, 202, "{:?}", replayed.body);
    assert_eq!(replayed.body["records"], 1);
    let again = app
        .post(
            &format!("/v1/subscriptions/{small}/replay"),
            Some(&subscriber),
            range.clone(),
        )
        .await;
    assert_eq!(again.status, 429, "{:?}", again.body);
    assert!(
        again.body["detail"]
            .as_str()
            .unwrap()
            .contains("replays_per_hour")
    );
    let wait: u64 = again.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&wait), "{wait}");

    let (_, carol) = app.subscriber("carol").await;
    let ws = app
        .post(
            "/v1/subscriptions",
            Some(&carol),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "websocket"}}),
        )
        .await;
    assert_eq!(ws.status, 201);
    let ws = ws.body["id"].as_str().unwrap();
    let refused = app
        .post(
            &format!("/v1/subscriptions/{ws}/replay"),
            Some(&carol),
            range,
        )
        .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert!(refused.body["detail"].as_str().unwrap().contains("after"));
}

#[tokio::test]
async fn a_subscription_has_at_most_its_quota_of_open_sockets() {
    let app = spawn_with(|c| c.limits.quotas.sockets_per_subscription = 1).await;
    let (_, vendor) = app.vendor("Acme").await;
    let feed = app.feed(&vendor, "trades").await;
    let (_, subscriber) = app.subscriber("bob").await;
    let created = app
        .post(
            "/v1/subscriptions",
            Some(&subscriber),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "websocket"}}),
        )
        .await;
    let sub = created.body["id"].as_str().unwrap().to_owned();
    let url = format!(
        "ws://{}/v1/subscriptions/{sub}/live?access_token={subscriber}",
        app.addr
    );
    let (first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let second = tokio_tungstenite::connect_async(&url).await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 409);
        }
        other => panic!("a second socket was let in: {other:?}"),
    }
    drop(first);
    // Once the first is gone there is room again.
    crate::receiver::eventually("the closed socket frees its place", || async {
        tokio_tungstenite::connect_async(&url).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn logins_sign_ups_and_refreshes_are_throttled_per_address_and_failures_per_account() {
    let app = spawn_with(|c| {
        c.limits.throttle.logins_per_address_per_minute = 4;
        c.limits.throttle.failed_logins_per_account = 2;
        c.limits.throttle.signups_per_address_per_hour = 2;
        c.limits.throttle.refreshes_per_address_per_minute = 1;
    })
    .await;
    let email = "ops@acme.example";
    let signup =
        |email: &str| json!({"name": "Acme", "admin_email": email, "admin_password": PASSWORD});
    assert_eq!(
        app.post("/v1/vendors", None, signup(email)).await.status,
        201
    );
    let second = app
        .post(
            "/v1/subscribers",
            None,
            json!({"name": "Bob", "email": "bob@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    let third = app
        .post(
            "/v1/subscribers",
            None,
            json!({"name": "Carol", "email": "carol@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(third.status, 429, "{:?}", third.body);
    assert!(third.headers.contains_key("retry-after"));
    assert!(
        third.body["detail"]
            .as_str()
            .unwrap()
            .contains("signups_per_address_per_hour")
    );

    let login = |password: &str| json!({"email": email, "password": password});
    let first = app.post("/v1/auth/token", None, login(PASSWORD)).await;
    assert_eq!(first.status, 200);
    let refresh = json!({"refresh_token": first.body["refresh_token"]});
    assert_eq!(
        app.post("/v1/auth/refresh", None, refresh.clone())
            .await
            .status,
        200
    );
    let again = app.post("/v1/auth/refresh", None, refresh).await;
    assert_eq!(again.status, 429, "{:?}", again.body);
    assert!(
        again.body["detail"]
            .as_str()
            .unwrap()
            .contains("refreshes_per_address_per_minute")
    );

    for _ in 0..2 {
        let wrong = app
            .post("/v1/auth/token", None, login("not it at all"))
            .await;
        assert_eq!(wrong.status, 401);
    }
    let right = app.post("/v1/auth/token", None, login(PASSWORD)).await;
    assert_eq!(
        right.status, 429,
        "the account waits, even with the right password"
    );
    assert!(
        right.body["detail"]
            .as_str()
            .unwrap()
            .contains("failed_logins_per_account")
    );
    let fifth = app.post("/v1/auth/token", None, login(PASSWORD)).await;
    assert_eq!(fifth.status, 429, "{:?}", fifth.body);
    assert!(
        fifth.body["detail"]
            .as_str()
            .unwrap()
            .contains("logins_per_address_per_minute")
    );
}
