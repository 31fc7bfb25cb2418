//! Remote models: a `model` rule asking a model server over HTTP (a real one, on loopback,
//! computing the linear fixture's y = 0.5·a − 1.25·b + 2·c + 0.1), in the Open Inference
//! Protocol and in the `instances` / `predictions` form; its secret sealed and never shown;
//! failures retried, then the records sent to the feed's errors; a failing server not asked
//! any more once its breaker opens.

use crate::helpers::*;
use crate::receiver::eventually;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const SECRET: &str = "model-server-secret-7f3a";

/// How the model server answers.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Mode {
    Right = 0,
    Fail = 1,
    Malformed = 2,
    ShortOneRow = 3,
    Hang = 4,
}

#[derive(Default)]
struct Server {
    mode: AtomicUsize,
    hits: AtomicUsize,
    rows: AtomicUsize,
}

fn linear(row: &[f64]) -> f64 {
    0.5 * row[0] - 1.25 * row[1] + 2.0 * row[2] + 0.1
}

async fn infer(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    server.hits.fetch_add(1, Ordering::SeqCst);
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(SECRET) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mode = server.mode.load(Ordering::SeqCst);
    if mode == Mode::Hang as usize {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    if mode == Mode::Fail as usize {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if mode == Mode::Malformed as usize {
        return "{not json".into_response();
    }
    let body: Value = serde_json::from_slice(&body).expect("json");
    let short = usize::from(mode == Mode::ShortOneRow as usize);
    let answer = if let Some(inputs) = body["inputs"].as_array() {
        let data: Vec<f64> = inputs[0]["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|v| v.as_f64().expect("a number"))
            .collect();
        let rows: Vec<f64> = data.chunks(3).map(linear).collect();
        let n = rows.len() - short;
        server.rows.fetch_add(rows.len(), Ordering::SeqCst);
        json!({"model_name": "lin", "outputs": [{"name": "y", "shape": [n, 1], "datatype": "FP32", "data": rows[..n]}]})
    } else {
        let rows: Vec<f64> = body["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|r| {
                let r: Vec<f64> = r
                    .as_array()
                    .expect("a row")
                    .iter()
                    .filter_map(Value::as_f64)
                    .collect();
                linear(&r)
            })
            .collect();
        let n = rows.len() - short;
        server.rows.fetch_add(rows.len(), Ordering::SeqCst);
        json!({"predictions": rows[..n].iter().map(|y| json!({"y": [y]})).collect::<Vec<_>>()})
    };
    axum::Json(answer).into_response()
}

async fn start_server() -> (String, Arc<Server>) {
    let server = Arc::new(Server::default());
    let app = axum::Router::new()
        .route("/v2/models/lin/infer", axum::routing::post(infer))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!(
        "http://{}/v2/models/lin/infer",
        listener.local_addr().expect("an address")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, server)
}

fn remote_rule(url: &str, protocol: &str, extra: Value) -> Value {
    let mut endpoint = json!({"url": url, "protocol": protocol, "header": "x-api-key", "secret": SECRET, "max_batch": 2});
    for (k, v) in extra.as_object().expect("an object") {
        endpoint[k] = v.clone();
    }
    json!([{"type": "model", "endpoint": endpoint,
            "inputs": {"x": "record.v"}, "outputs": {"score": "outputs.y[0]"}}])
}

/// A feed of a new vendor on `rules`, a subscriber pulling it: (vendor, source, feed, subscriber, subscription).
async fn feed_on(app: &TestApp, rules: Value) -> (String, String, String, String, String) {
    let (_, vendor) = app.vendor("Acme").await;
    let source = app.source(&vendor).await;
    let mut body = feed_body(&source, "Scored remotely");
    body["pipeline"] = json!({ "rules": rules });
    let feed = app.post("/v1/feeds", Some(&vendor), body).await;
    assert_eq!(feed.status, 201, "{:?}", feed.body);
    let text = feed.body.to_string();
    assert!(!text.contains(SECRET), "the secret is never shown: {text}");
    assert!(feed.body["pipeline"]["rules"][0]["endpoint"]["secret_sealed"].is_string());
    let feed = feed.body["id"].as_str().expect("an id").to_owned();
    let (_, bob) = app.subscriber("Bob").await;
    let sub = app.subscribe(&bob, &feed).await;
    (vendor, source, feed, bob, sub)
}

/// Pushes `rows` as records `{"i": index, "v": row}` with ids `{tag}{index}`.
pub(crate) async fn push_rows<R: serde::Serialize>(
    app: &TestApp,
    vendor: &str,
    source: &str,
    rows: &[R],
    tag: &str,
) {
    let records: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": format!("{tag}{i}"), "data": {"i": i, "v": v}}))
        .collect();
    let pushed = app
        .post(
            &format!("/v1/sources/{source}/records"),
            Some(vendor),
            json!({"records": records}),
        )
        .await;
    assert_eq!(pushed.status, 202, "{:?}", pushed.body);
}

const ROWS: [[f64; 3]; 5] = [
    [1.0, 2.0, 3.0],
    [0.0, 0.0, 0.0],
    [-1.5, 4.0, 0.25],
    [10.0, 1.0, -2.0],
    [3.0, 3.0, 3.0],
];

#[tokio::test]
async fn remote_models_score_records_in_both_protocols_with_a_sealed_secret() {
    let app = spawn_with(|c| c.allow_private_webhooks = true).await;
    for protocol in ["open-inference", "json"] {
        let (url, server) = start_server().await;
        let (vendor, source, feed, bob, sub) =
            feed_on(&app, remote_rule(&url, protocol, json!({}))).await;
        push_rows(&app, &vendor, &source, &ROWS, "r").await;
        let path = format!("/v1/subscriptions/{sub}/records?after=0");
        eventually(&format!("{protocol}: the records are scored"), || async {
            app.get(&path, Some(&bob)).await.body["items"]
                .as_array()
                .is_some_and(|items| items.len() == ROWS.len())
        })
        .await;
        let items = app.get(&path, Some(&bob)).await.body["items"].clone();
        for item in items.as_array().expect("items") {
            let data = &item["record"]["data"];
            let i = data["i"].as_u64().expect("i") as usize;
            let score = data["score"].as_f64().expect("a score");
            // FP32 on the way: as close as a float32 holds it.
            assert!(
                (score - linear(&ROWS[i])).abs() < 1e-5,
                "{protocol} row {i}: {score}"
            );
        }
        assert_eq!(server.rows.load(Ordering::SeqCst), ROWS.len());
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            3,
            "{protocol}: five rows, two per request"
        );
        // The pipeline sent back as it was shown keeps its secret.
        let shown = app.get(&format!("/v1/feeds/{feed}"), Some(&vendor)).await;
        let again = json!({"rules": shown.body["pipeline"]["rules"]});
        let saved = app
            .put(&format!("/v1/feeds/{feed}/pipeline"), Some(&vendor), again)
            .await;
        assert_eq!(saved.status, 200, "{:?}", saved.body);
        push_rows(&app, &vendor, &source, &ROWS[..1], "again").await;
        eventually(
            &format!("{protocol}: scored with the kept secret"),
            || async {
                app.get(&path, Some(&bob)).await.body["items"]
                    .as_array()
                    .is_some_and(|items| items.len() == ROWS.len() + 1)
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_failing_remote_model_sends_records_to_the_feeds_errors_and_its_breaker_opens() {
    let app = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (url, server) = start_server().await;
    let rules = remote_rule(
        &url,
        "open-inference",
        json!({"timeout_ms": 300, "max_batch": 10}),
    );
    let (vendor, source, feed, _, _) = feed_on(&app, rules).await;
    let errors_path = format!("/v1/feeds/{feed}/errors");
    let messages = || async {
        app.get(&errors_path, Some(&vendor)).await.body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // Answers that arrive but are wrong; then requests that fail (each tried three times),
    // five in a row, which opens the breaker.
    let cases = [
        (Mode::Malformed, "not JSON", 2),
        (Mode::ShortOneRow, "not 2 rows", 2),
        (Mode::Hang, "no answer within 300 ms", 2),
        (Mode::Fail, "answered 500", 2),
        (Mode::Fail, "answered 500", 4),
        (Mode::Fail, "answered 500", 6),
        (Mode::Fail, "answered 500", 8),
    ];
    for (n, (mode, wanted, count)) in cases.into_iter().enumerate() {
        server.mode.store(mode as usize, Ordering::SeqCst);
        push_rows(&app, &vendor, &source, &ROWS[..2], &format!("m{n}-")).await;
        eventually(&format!("the records fail with {wanted}"), || async {
            messages()
                .await
                .iter()
                .filter(|m| m.contains(wanted))
                .count()
                == count
        })
        .await;
    }
    let hits = server.hits.load(Ordering::SeqCst);
    assert_eq!(
        hits,
        1 + 1 + 3 + 4 * 3,
        "a failed request is tried three times"
    );
    server.mode.store(Mode::Right as usize, Ordering::SeqCst);
    push_rows(&app, &vendor, &source, &ROWS[..2], "open-").await;
    eventually("the breaker fails them at once", || async {
        messages()
            .await
            .iter()
            .filter(|m| m.contains("not asked for"))
            .count()
            == 2
    })
    .await;
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        hits,
        "an open breaker asks nothing"
    );
}

#[tokio::test]
async fn a_remote_model_rule_is_checked_when_saved() {
    let app = spawn_app().await;
    let (_, vendor) = app.vendor("Acme").await;
    let source = app.source(&vendor).await;
    let refused = [
        (
            remote_rule("http://127.0.0.1:9/infer", "json", json!({})),
            "pipeline.rules[0].endpoint.url",
        ),
        (
            remote_rule("http://169.254.169.254/infer", "json", json!({})),
            "pipeline.rules[0].endpoint.url",
        ),
        (
            remote_rule(
                "https://models.example.com/infer",
                "json",
                json!({"secret": null}),
            ),
            "pipeline.rules[0].endpoint.secret",
        ),
        (
            remote_rule(
                "https://models.example.com/infer",
                "json",
                json!({"timeout_ms": 0}),
            ),
            "pipeline.rules[0].endpoint.timeout_ms",
        ),
        (
            remote_rule(
                "https://models.example.com/infer",
                "json",
                json!({"max_batch": 5000}),
            ),
            "pipeline.rules[0].endpoint.max_batch",
        ),
        (
            remote_rule("ftp://models.example.com/infer", "json", json!({})),
            "pipeline.rules[0].endpoint.url",
        ),
    ];
    for (rules, path) in refused {
        let mut body = feed_body(&source, "Remote");
        body["pipeline"] = json!({ "rules": rules });
        let res = app.post("/v1/feeds", Some(&vendor), body).await;
        assert_eq!(res.status, 422, "{rules}: {:?}", res.body);
        let paths = res.paths();
        assert!(paths.iter().any(|p| p == path), "{rules}: {paths:?}");
    }
    let both = json!([{"type": "model", "model": "lin", "endpoint": {"url": "https://models.example.com/infer", "protocol": "json"},
                       "inputs": {"x": "record.v"}, "outputs": {"score": "outputs.y[0]"}}]);
    let mut body = feed_body(&source, "Remote");
    body["pipeline"] = json!({ "rules": both });
    let res = app.post("/v1/feeds", Some(&vendor), body).await;
    assert_eq!(res.status, 422, "{:?}", res.body);
    // A sealed secret this server did not seal.
    let forged = remote_rule(
        "http://127.0.0.1:9/infer",
        "json",
        json!({"secret": null, "secret_sealed": "AAAA"}),
    );
    let mut body = feed_body(&source, "Remote");
    body["pipeline"] = json!({ "rules": forged });
    let res = app.post("/v1/feeds", Some(&vendor), body).await;
    assert_eq!(res.status, 422, "{:?}", res.body);
}
