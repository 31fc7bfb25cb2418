//! Models: ONNX files a vendor registers by name (each upload a version, checked by the
//! engine first, seen by no other tenant), and `model` rules that score records with them,
//! compared with what onnxruntime answered for the same rows (`testkit/models/make.py`).

use crate::helpers::*;
use crate::receiver::eventually;
use crate::remote_models::push_rows;
use serde_json::{Value, json};
use wharf_core::ports::Clock;

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
    let path = std::path::Path::new(&dir).join("testkit/models").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn reference(model: &str) -> Value {
    let all: Value = serde_json::from_slice(&fixture("reference.json")).expect("json");
    all[model].clone()
}

/// PUTs `bytes` as the next version of the model `name`.
pub(crate) async fn upload(app: &TestApp, token: &str, name: &str, bytes: Vec<u8>) -> Res {
    let res = app
        .client
        .put(app.url(&format!("/v1/models/{name}")))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("an answer");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    Res {
        status,
        headers,
        body,
    }
}

fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0)
}

#[tokio::test]
async fn a_model_is_checked_before_it_is_stored_and_no_other_tenant_sees_it() {
    let app = spawn_app().await;
    let (_, acme) = app.vendor("Acme").await;
    let first = upload(&app, &acme, "lin", fixture("linear.onnx")).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["format"], "onnx");
    assert!(
        first.body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("mdl_"))
    );
    assert_eq!(first.body["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(
        first.body["inputs"],
        json!([{"name": "x", "dtype": "float32", "shape": ["N", 3]}])
    );
    assert_eq!(first.body["outputs"][0]["name"], "y");
    let second = upload(&app, &acme, "lin", fixture("mlp.onnx")).await;
    assert_eq!(second.body["version"], 2, "{:?}", second.body);

    let garbage = upload(&app, &acme, "lin", b"not a model".to_vec()).await;
    assert_eq!(garbage.status, 422, "{:?}", garbage.body);
    assert!(
        garbage.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ONNX")),
        "{:?}",
        garbage.body
    );
    let bad_name = upload(&app, &acme, "Bad%20Name", fixture("linear.onnx")).await;
    assert_eq!(bad_name.status, 422, "{:?}", bad_name.body);
    let json_body = app.put("/v1/models/lin", Some(&acme), json!({})).await;
    assert_eq!(json_body.status, 415, "{:?}", json_body.body);
    let versions = app.get("/v1/models/lin", Some(&acme)).await;
    assert_eq!(
        versions.body.as_array().map(Vec::len),
        Some(2),
        "{:?}",
        versions.body
    );
    let list = app.get("/v1/models", Some(&acme)).await;
    assert_eq!(list.body[0]["name"], "lin");
    assert_eq!(list.body[0]["versions"], 2);
    assert_eq!(list.body[0]["latest"]["version"], 2);

    let (_, other) = app.vendor("Other").await;
    assert_eq!(app.get("/v1/models", Some(&other)).await.body, json!([]));
    assert_eq!(app.get("/v1/models/lin", Some(&other)).await.status, 404);
    let taken = app.delete("/v1/models/lin/versions/1", Some(&other)).await;
    assert_eq!(taken.status, 404);
    let (_, bob) = app.subscriber("Bob").await;
    assert_eq!(app.get("/v1/models", Some(&bob)).await.status, 403);
    assert_eq!(
        upload(&app, &bob, "lin", fixture("linear.onnx"))
            .await
            .status,
        403
    );
    assert_eq!(
        app.get("/v1/models/lin", Some(&acme))
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(2),
        "nothing was stored by the refused uploads"
    );
}

/// A feed of Acme on a new source whose pipeline is `rules`: (vendor token, source, feed).
async fn feed_with(app: &TestApp, token: &str, rules: Value) -> Res {
    let source = app.source(token).await;
    let mut body = feed_body(&source, "Scored");
    body["pipeline"] = json!({ "rules": rules });
    let res = app.post("/v1/feeds", Some(token), body).await;
    if res.status == 201 {
        let feed = res.body["id"].as_str().expect("an id").to_owned();
        let mut res = res;
        res.body["source_for_test"] = json!(source);
        res.body["id"] = json!(feed);
        return res;
    }
    res
}

/// Pushes `rows` (each a list of numbers) as records `{"v": row}` and pulls what the feed
/// output for them, in order; the subscription is made before the push.
async fn scored(app: &TestApp, vendor: &str, feed: &Value, rows: &[Value]) -> Vec<Value> {
    let (_, bob) = app.subscriber("Bob").await;
    let sub = app
        .subscribe(&bob, feed["id"].as_str().expect("an id"))
        .await;
    let source = feed["source_for_test"].as_str().expect("a source");
    push_rows(app, vendor, source, rows, "r").await;
    let path = format!("/v1/subscriptions/{sub}/records?after=0&limit=1000");
    let items = || async {
        app.get(&path, Some(&bob)).await.body["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    eventually("the scored records are out", || async {
        items().await.len() == rows.len()
    })
    .await;
    items()
        .await
        .into_iter()
        .map(|i| i["record"]["data"].clone())
        .collect()
}

#[tokio::test]
async fn model_rules_score_records_as_onnxruntime_did() {
    let app = spawn_app().await;
    let (_, acme) = app.vendor("Acme").await;
    for (name, file) in [
        ("lin", "linear.onnx"),
        ("mlp", "mlp.onnx"),
        ("trees", "trees.onnx"),
    ] {
        let up = upload(&app, &acme, name, fixture(file)).await;
        assert_eq!(up.status, 201, "{name}: {:?}", up.body);
    }
    // Each model behind the rules a vendor would write around it.
    let cases = [
        (
            "linear",
            "lin",
            json!({"score": "outputs.y[0]"}),
            vec![("score", "y", 0)],
        ),
        (
            "mlp",
            "mlp",
            json!({"p0": "outputs.probs[0]", "p2": "outputs['probs'][2]"}),
            vec![("p0", "probs", 0), ("p2", "probs", 2)],
        ),
        (
            "trees",
            "trees",
            json!({"label": "outputs.label[0]", "p1": "outputs.probabilities[1]"}),
            vec![("label", "label", 0), ("p1", "probabilities", 1)],
        ),
    ];
    for (fixture_name, model, outputs, read) in cases {
        let rules = json!([
            {"type": "filter", "expr": "size(record.v) > 0"},
            {"type": "model", "model": model, "inputs": {"x": "record.v"}, "outputs": outputs},
            {"type": "map", "fields": {"i": "record.i", "out": "record"}}
        ]);
        let feed = feed_with(&app, &acme, rules).await;
        assert_eq!(feed.status, 201, "{:?}", feed.body);
        let case = reference(fixture_name);
        let rows = case["inputs"].as_array().expect("rows").clone();
        let got = scored(&app, &acme, &feed.body, &rows).await;
        for data in &got {
            let i = data["i"].as_u64().expect("an index") as usize;
            for (field, output, column) in &read {
                let theirs = &case["outputs"][output][i];
                let theirs = theirs
                    .as_array()
                    .map_or_else(|| theirs.as_f64(), |r| r[*column].as_f64())
                    .expect("a number");
                let ours = data["out"][field].as_f64().expect("a number");
                assert!(
                    close(ours, theirs),
                    "{model} row {i} {field}: {ours} against {theirs}"
                );
            }
        }
    }
}

#[tokio::test]
async fn records_a_model_cannot_score_go_to_the_feeds_errors_and_the_rest_go_on() {
    let app = spawn_app().await;
    let (_, acme) = app.vendor("Acme").await;
    assert_eq!(
        upload(&app, &acme, "lin", fixture("linear.onnx"))
            .await
            .status,
        201
    );
    let rules = json!([
        {"type": "model", "model": "lin", "inputs": {"x": "record.v"}, "outputs": {"score": "outputs.y[0]"}}
    ]);
    let feed = feed_with(&app, &acme, rules).await;
    assert_eq!(feed.status, 201, "{:?}", feed.body);
    let rows = [
        json!([1.0, 2.0, 3.0]),
        json!([1.0, 2.0]),
        json!([1.0, "two", 3.0]),
        // Finite for JSON, beyond float32: the model's answer is infinite.
        json!([1.0e39, 0.0, 0.0]),
        json!([0.0, 0.0, 0.0]),
    ];
    let (_, bob) = app.subscriber("Bob").await;
    let sub = app
        .subscribe(&bob, feed.body["id"].as_str().expect("an id"))
        .await;
    let source = feed.body["source_for_test"].as_str().expect("a source");
    push_rows(&app, &acme, source, &rows, "r").await;
    app.idle().await;
    let pulled = app
        .get(
            &format!("/v1/subscriptions/{sub}/records?after=0"),
            Some(&bob),
        )
        .await;
    let scores: Vec<(u64, f64)> = pulled.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let data = &i["record"]["data"];
            (
                data["i"].as_u64().expect("i"),
                data["score"].as_f64().expect("score"),
            )
        })
        .collect();
    // 0.5·1 − 1.25·2 + 2·3 + 0.1 and the bias alone.
    assert_eq!(scores.len(), 2, "{scores:?}");
    assert!(close(scores[0].1, 4.1) && scores[0].0 == 0, "{scores:?}");
    assert!(close(scores[1].1, 0.1) && scores[1].0 == 4, "{scores:?}");
    let feed_id = feed.body["id"].as_str().expect("an id");
    let errors = app
        .get(&format!("/v1/feeds/{feed_id}/errors"), Some(&acme))
        .await;
    let messages: Vec<String> = errors.body["items"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    for wanted in [
        "takes 3 numbers per record",
        "needs numbers",
        "not a finite number",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(wanted)),
            "{wanted}: {messages:?}"
        );
    }
}

#[tokio::test]
async fn a_model_rule_is_checked_when_saved_and_a_version_in_use_is_kept() {
    let app = spawn_app().await;
    let (_, acme) = app.vendor("Acme").await;
    let (_, other) = app.vendor("Other").await;
    assert_eq!(
        upload(&app, &acme, "lin", fixture("linear.onnx"))
            .await
            .status,
        201
    );
    assert_eq!(
        upload(&app, &other, "theirs", fixture("linear.onnx"))
            .await
            .status,
        201
    );
    let open = upload(&app, &acme, "open", fixture("open_width.onnx")).await;
    assert_eq!(open.status, 201, "{:?}", open.body);
    assert_eq!(open.body["inputs"][0]["shape"], json!(["N", "K"]));
    // (model, input name, its expression, the output field's expression, where it is wrong)
    let refused = [
        (
            "nope",
            "x",
            "record.v",
            "outputs.y[0]",
            "pipeline.rules[0].model",
        ),
        (
            "theirs",
            "x",
            "record.v",
            "outputs.y[0]",
            "pipeline.rules[0].model",
        ),
        (
            "lin",
            "z",
            "record.v",
            "outputs.y[0]",
            "pipeline.rules[0].inputs",
        ),
        (
            "lin",
            "x",
            "record.v",
            "outputs.nope[0]",
            "pipeline.rules[0].outputs.s",
        ),
        (
            "lin",
            "x",
            "record.(",
            "outputs.y[0]",
            "pipeline.rules[0].inputs.x",
        ),
        // Rows of no fixed width cannot be stacked for it.
        (
            "open",
            "x",
            "record.v",
            "outputs.y[0]",
            "pipeline.rules[0].inputs.x",
        ),
    ]
    .map(|(model, input, expr, output, path)| {
        let rule = json!([{"type": "model", "model": model,
                           "inputs": {input: expr}, "outputs": {"s": output}}]);
        (rule, path)
    });
    for (rules, path) in refused {
        let res = feed_with(&app, &acme, rules.clone()).await;
        assert_eq!(res.status, 422, "{rules}: {:?}", res.body);
        let paths = res.paths();
        assert!(paths.iter().any(|p| p == path), "{rules}: {paths:?}");
    }
    assert_eq!(
        upload(&app, &acme, "lin", fixture("linear.onnx"))
            .await
            .status,
        201
    );
    let saved = feed_with(
        &app,
        &acme,
        json!([{"type": "model", "model": "lin",
                 "inputs": {"x": "record.v"}, "outputs": {"s": "outputs.y[0]"}}]),
    )
    .await;
    assert_eq!(saved.status, 201, "{:?}", saved.body);
    assert_eq!(
        saved.body["pipeline"]["rules"][0]["version"], 2,
        "the latest version is pinned when none is named"
    );
    let in_use = app.delete("/v1/models/lin/versions/2", Some(&acme)).await;
    assert_eq!(in_use.status, 409, "{:?}", in_use.body);
    let unused = app.delete("/v1/models/lin/versions/1", Some(&acme)).await;
    assert_eq!(unused.status, 204, "{:?}", unused.body);
    let feed = saved.body["id"].as_str().expect("an id");
    let plain = json!({"rules": [{"type": "filter", "expr": "true"}]});
    let changed = app
        .put(&format!("/v1/feeds/{feed}/pipeline"), Some(&acme), plain)
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    let freed = app.delete("/v1/models/lin/versions/2", Some(&acme)).await;
    assert_eq!(freed.status, 204, "{:?}", freed.body);
    assert_eq!(app.get("/v1/models/lin", Some(&acme)).await.status, 404);
}

#[tokio::test]
async fn a_model_after_a_window_scores_each_windows_aggregates_on_the_schedule() {
    let clock = crate::receiver::TestClock::new();
    let app = spawn_on(|_| {}, clock.clone()).await;
    let (_, acme) = app.vendor("Acme").await;
    assert_eq!(
        upload(&app, &acme, "lin", fixture("linear.onnx"))
            .await
            .status,
        201
    );
    let rules = json!([
        {"type": "window", "every": "1m", "window": "1m", "group_by": "record.sym",
         "aggregates": {"a": "avg(record.a)", "b": "max(record.b)", "c": "count()"}},
        {"type": "model", "model": "lin", "inputs": {"x": "[record.a, record.b, record.c]"},
         "outputs": {"score": "outputs.y[0]"}},
        {"type": "map", "fields": {"sym": "record.group", "score": "record.score"}}
    ]);
    let feed = feed_with(&app, &acme, rules).await;
    assert_eq!(feed.status, 201, "{:?}", feed.body);
    let (_, bob) = app.subscriber("Bob").await;
    let sub = app
        .subscribe(&bob, feed.body["id"].as_str().expect("an id"))
        .await;
    app.idle().await;
    let now = clock.now().unix_timestamp();
    let start = (now + 300) / 60 * 60;
    let at = |s: i64| {
        time::OffsetDateTime::from_unix_timestamp(start + s)
            .expect("a time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("rfc 3339")
    };
    let trades = [
        ("AAPL", 1.0, 2.0, 5),
        ("AAPL", 3.0, 4.0, 20),
        ("MSFT", 2.0, 1.0, 30),
    ];
    let records: Vec<Value> = trades
        .iter()
        .enumerate()
        .map(|(i, (sym, a, b, s))| {
            json!({"id": format!("w{i}"), "ts": at(*s), "data": {"sym": sym, "a": a, "b": b}})
        })
        .collect();
    let source = feed.body["source_for_test"].as_str().expect("a source");
    let pushed = app
        .post(
            &format!("/v1/sources/{source}/records"),
            Some(&acme),
            json!({"records": records}),
        )
        .await;
    assert_eq!(pushed.status, 202, "{:?}", pushed.body);
    app.idle().await;
    clock.advance(std::time::Duration::from_secs((start - now) as u64 + 63));
    let path = format!("/v1/subscriptions/{sub}/records?after=0");
    eventually("the window closes and is scored", || async {
        app.get(&path, Some(&bob)).await.body["items"]
            .as_array()
            .is_some_and(|items| items.len() == 2)
    })
    .await;
    let items = app.get(&path, Some(&bob)).await.body["items"].clone();
    let mut scores: Vec<(String, f64)> = items
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let data = &i["record"]["data"];
            (
                data["sym"].as_str().expect("a symbol").to_owned(),
                data["score"].as_f64().expect("a score"),
            )
        })
        .collect();
    scores.sort_by(|x, y| x.0.cmp(&y.0));
    // y = 0.5·a − 1.25·b + 2·c + 0.1 over each window's aggregates.
    let expected = [
        ("AAPL", 0.5 * 2.0 - 1.25 * 4.0 + 2.0 * 2.0 + 0.1),
        ("MSFT", 0.5 * 2.0 - 1.25 + 2.0 + 0.1),
    ];
    for ((sym, ours), (want_sym, theirs)) in scores.iter().zip(expected) {
        assert_eq!(sym, want_sym);
        assert!(close(*ours, theirs), "{sym}: {ours} against {theirs}");
    }
}

#[tokio::test]
async fn a_large_model_is_uploaded_to_its_url_then_registered_once() {
    let app = spawn_app().await;
    let (_, acme) = app.vendor("Acme").await;
    // Bodies past the API's 1 MiB: a PUT of a model takes 5 MiB, an upload URL 250 MiB.
    let two_mib = upload(&app, &acme, "big", vec![7u8; 2 * 1024 * 1024]).await;
    assert_eq!(
        two_mib.status, 422,
        "read, then refused as no model: {:?}",
        two_mib.body
    );
    let six_mib = upload(&app, &acme, "big", vec![7u8; 6 * 1024 * 1024]).await;
    assert_eq!(six_mib.status, 413, "{:?}", six_mib.body);

    let started = app
        .post("/v1/models/mlp/uploads", Some(&acme), json!({}))
        .await;
    assert_eq!(started.status, 201, "{:?}", started.body);
    let url = started.body["upload_url"]
        .as_str()
        .expect("a URL")
        .to_owned();
    let upload_id = started.body["upload_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let put = |bytes: Vec<u8>| {
        let (client, url) = (app.client.clone(), url.clone());
        async move {
            client
                .put(&url)
                .header("content-type", "application/octet-stream")
                .body(bytes)
                .send()
                .await
                .expect("an answer")
                .status()
        }
    };
    assert!(put(fixture("mlp.onnx")).await.is_success());
    let register = |vendor: String, id: String| {
        let app = &app;
        async move {
            app.post(
                "/v1/models/mlp/versions",
                Some(&vendor),
                json!({"upload_id": id}),
            )
            .await
        }
    };
    let (_, other) = app.vendor("Other").await;
    let theirs = register(other.clone(), upload_id.clone()).await;
    assert_eq!(
        theirs.status, 422,
        "another vendor's upload: {:?}",
        theirs.body
    );
    let registered = register(acme.clone(), upload_id.clone()).await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    assert_eq!(registered.body["version"], 1);
    assert_eq!(registered.body["outputs"][0]["name"], "probs");
    let again = register(acme.clone(), upload_id.clone()).await;
    assert_eq!(
        again.status, 422,
        "an upload registers once: {:?}",
        again.body
    );
    assert_eq!(again.body["errors"][0]["path"], "upload_id");

    // What the engine refuses is refused after an upload too, and nothing is stored.
    let started = app
        .post("/v1/models/mlp/uploads", Some(&acme), json!({}))
        .await;
    let url = started.body["upload_url"]
        .as_str()
        .expect("a URL")
        .to_owned();
    let status = app
        .client
        .put(&url)
        .header("content-type", "application/octet-stream")
        .body(b"not a model".to_vec())
        .send()
        .await
        .expect("an answer")
        .status();
    assert!(status.is_success(), "{status}");
    let id = started.body["upload_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert_eq!(register(acme.clone(), id).await.status, 422);
    let versions = app.get("/v1/models/mlp", Some(&acme)).await;
    assert_eq!(versions.body.as_array().map(Vec::len), Some(1));
    let forged = register(acme.clone(), "upl_../../etc".into()).await;
    assert_eq!(forged.status, 422, "{:?}", forged.body);
}
