use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn sources_are_created_listed_changed_and_deleted() {
    let app = spawn_app().await;
    let (vendor, token) = app.vendor("Acme").await;
    let poll = app
        .post("/v1/sources", Some(&token), json!({"name": "prices", "kind": "http_poll", "url": "https://api.example.com/px", "every": "5m",
            "schema": {"type": "object", "required": ["px"]}, "retention_days": 7}))
        .await;
    assert_eq!(poll.status, 201, "{:?}", poll.body);
    assert_eq!(poll.body["tenant_id"], vendor.as_str());
    assert_eq!(poll.body["retention_days"], 7);
    let id = poll.body["id"].as_str().unwrap();
    let push = app.source(&token).await;
    assert_eq!(
        app.get(&format!("/v1/sources/{push}"), Some(&token))
            .await
            .body["retention_days"],
        30
    );
    let changed = app
        .patch(
            &format!("/v1/sources/{id}"),
            Some(&token),
            json!({"name": "prices v2", "every": "10m"}),
        )
        .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body["every"], "10m");
    assert_eq!(
        app.get(&format!("/v1/sources/{id}"), Some(&token))
            .await
            .body["name"],
        "prices v2"
    );
    let bad = app
        .patch(
            &format!("/v1/sources/{id}"),
            Some(&token),
            json!({"every": "never"}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.paths(), vec!["every"]);
    assert_eq!(
        app.get(&format!("/v1/sources/{id}"), Some(&token))
            .await
            .body["every"],
        "10m"
    );
    assert_eq!(
        app.delete(&format!("/v1/sources/{id}"), Some(&token))
            .await
            .status,
        204
    );
    assert_eq!(
        app.get(&format!("/v1/sources/{id}"), Some(&token))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn source_lists_are_cursor_paginated() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(app.source(&token).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sources?limit=2&cursor={c}"),
            None => "/v1/sources?limit=2".to_owned(),
        };
        let page = app.get(&path, Some(&token)).await.body;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, made);
    assert_eq!(
        app.get("/v1/sources?cursor=!!!", Some(&token)).await.status,
        422
    );
    assert_eq!(
        app.get("/v1/sources?limit=abc", Some(&token)).await.status,
        422
    );
}

#[tokio::test]
async fn source_rules_are_checked() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let poll = app
        .post(
            "/v1/sources",
            Some(&token),
            json!({"name": "p", "kind": "http_poll"}),
        )
        .await;
    assert_eq!(poll.status, 422);
    assert_eq!(poll.paths(), vec!["url", "every"]);
    let sqs = app
        .post(
            "/v1/sources",
            Some(&token),
            json!({"name": "q", "kind": "sqs"}),
        )
        .await;
    match BACKEND_UNDER_TEST {
        Backend::Local => {
            assert_eq!(sqs.status, 422);
            assert!(
                sqs.body["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("aws")
            );
        }
        // The aws shape makes the source its own queue (tests/aws_handlers.rs sends to it).
        Backend::Aws => {
            assert_eq!(sqs.status, 201, "{:?}", sqs.body);
            assert!(sqs.body["queue_url"].as_str().unwrap().starts_with("http"));
            let id = sqs.body["id"].as_str().unwrap();
            let deleted = app.delete(&format!("/v1/sources/{id}"), Some(&token)).await;
            assert_eq!(deleted.status, 204);
        }
    }
    let kind = app
        .post(
            "/v1/sources",
            Some(&token),
            json!({"name": "q", "kind": "ftp"}),
        )
        .await;
    assert_eq!(kind.paths(), vec!["kind"]);
    let schema = app
        .post(
            "/v1/sources",
            Some(&token),
            json!({"name": "q", "kind": "push", "schema": 5, "retention_days": 0}),
        )
        .await;
    assert_eq!(schema.paths(), vec!["schema", "retention_days"]);
    // A schema JSON Schema itself refuses is refused when saved, not at the first push.
    let invalid = json!({"type": "object", "properties": {"price": {"type": "numbr"}}});
    let created = app
        .post(
            "/v1/sources",
            Some(&token),
            json!({"name": "q", "kind": "push", "schema": invalid}),
        )
        .await;
    assert_eq!(created.status, 422, "{:?}", created.body);
    assert_eq!(created.paths(), vec!["schema"]);
    assert!(
        created.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid JSON Schema"),
        "{:?}",
        created.body
    );
    assert_eq!(
        app.get("/v1/sources", Some(&token)).await.body["items"],
        json!([])
    );
    let source = app.source(&token).await;
    let patched = app
        .patch(
            &format!("/v1/sources/{source}"),
            Some(&token),
            json!({"schema": {"minimum": "zero"}}),
        )
        .await;
    assert_eq!(patched.status, 422, "{:?}", patched.body);
    assert_eq!(patched.paths(), vec!["schema"]);
    assert!(
        app.get(&format!("/v1/sources/{source}"), Some(&token))
            .await
            .body
            .get("schema")
            .is_none_or(serde_json::Value::is_null),
        "the refused schema is not kept"
    );
}

#[tokio::test]
async fn a_source_used_by_a_feed_cannot_be_deleted() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let feed = app.feed(&token, "f").await;
    let source = app
        .get(&format!("/v1/feeds/{feed}"), Some(&token))
        .await
        .body["source_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.delete(&format!("/v1/sources/{source}"), Some(&token))
            .await
            .status,
        409
    );
    assert_eq!(
        app.get(&format!("/v1/sources/{source}"), Some(&token))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn reference_rows_are_stored_replaced_and_read() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let put = app
        .put(
            "/v1/reference/companies/AAPL",
            Some(&token),
            json!({"name": "Apple"}),
        )
        .await;
    assert_eq!(put.status, 201);
    let again = app
        .put(
            "/v1/reference/companies/AAPL",
            Some(&token),
            json!({"name": "Apple Inc."}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(
        app.get("/v1/reference/companies/AAPL", Some(&token))
            .await
            .body,
        json!({"name": "Apple Inc."})
    );
    assert_eq!(
        app.get("/v1/reference/companies/MSFT", Some(&token))
            .await
            .status,
        404
    );
    let not_object = app
        .put("/v1/reference/companies/X", Some(&token), json!([1, 2]))
        .await;
    assert_eq!(not_object.status, 422);
    assert_eq!(not_object.paths(), vec!["body"]);
    let bad = app
        .put("/v1/reference/Bad%20Table/x", Some(&token), json!({}))
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.paths(), vec!["table"]);
}

#[tokio::test]
async fn a_poll_url_naming_an_address_outbound_connections_may_not_reach_is_refused_when_saved() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    for url in [
        "http://127.0.0.1:9/px",
        "http://169.254.169.254/latest",
        "http://[::ffff:7f00:1]/px",
    ] {
        let res = app
            .post(
                "/v1/sources",
                Some(&token),
                json!({"name": "p", "kind": "http_poll", "url": url, "every": "1m"}),
            )
            .await;
        assert_eq!(res.status, 422, "{url}: {:?}", res.body);
        assert_eq!(res.paths(), vec!["url"]);
        let message = res.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("polls may not reach it"), "{message}");
    }
    assert_eq!(
        app.get("/v1/sources", Some(&token)).await.body["items"],
        json!([]),
        "nothing was stored"
    );
    // Where private addresses are allowed, the egress allow-list (loopback in the tests)
    // still bounds them, and a change of URL is checked as a new one is.
    let open = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (_, token) = open.vendor("Acme").await;
    let created = open
        .post(
            "/v1/sources",
            Some(&token),
            json!({"name": "p", "kind": "http_poll", "url": "http://127.0.0.1:9/px", "every": "1m"}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let path = format!("/v1/sources/{}", created.body["id"].as_str().unwrap());
    let moved = open
        .patch(&path, Some(&token), json!({"url": "http://10.0.0.5/px"}))
        .await;
    assert_eq!(moved.status, 422, "{:?}", moved.body);
    assert!(
        moved.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("egress allow-list")
    );
    assert_eq!(
        open.get(&path, Some(&token)).await.body["url"],
        "http://127.0.0.1:9/px"
    );
}
