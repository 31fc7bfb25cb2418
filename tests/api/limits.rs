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
