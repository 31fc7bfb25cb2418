use crate::helpers::*;
use serde_json::json;
use wharf_core::domain::Role;

#[tokio::test]
async fn the_catalog_lists_only_published_public_feeds_of_active_vendors() {
    let app = spawn_with(|c| c.require_vendor_approval = true).await;
    let admin = app.platform(Role::PlatformAdmin).await;
    let (vendor, token) = app.vendor("Acme").await;
    app.post(
        &format!("/v1/vendors/{vendor}/approve"),
        Some(&admin),
        json!({}),
    )
    .await;
    let source = app
        .post(
            "/v1/sources",
            Some(&token),
            json!({"name": "s", "kind": "push", "schema": {"type": "object"}}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let public = app
        .post(
            "/v1/feeds",
            Some(&token),
            feed_body(&source, "Equity trades"),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut private = feed_body(&source, "Secret trades");
    private["visibility"] = json!("private");
    let private = app.post("/v1/feeds", Some(&token), private).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut draft = feed_body(&source, "Draft trades");
    draft["status"] = json!("draft");
    let draft = app.post("/v1/feeds", Some(&token), draft).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, pending) = app.vendor("Pending").await;
    let pending_source = app.source(&pending).await;
    let mut body = feed_body(&pending_source, "Pending trades");
    body["status"] = json!("draft");
    app.post("/v1/feeds", Some(&pending), body).await;

    let all = app.get("/v1/catalog", None).await;
    assert_eq!(all.status, 200);
    let ids: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["feed_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![public.as_str()]);
    let entry = &all.body["items"][0];
    assert_eq!(entry["vendor_name"], "Acme");
    assert_eq!(entry["schema"], json!({"type": "object"}));
    assert_eq!(entry["sample"], json!({"symbol": "AAPL", "usd": 201.5}));
    assert_eq!(entry["plans"][0]["id"], "pro");
    assert_eq!(
        app.get(&format!("/v1/catalog/{public}"), None).await.body["name"],
        "Equity trades"
    );
    for hidden in [&private, &draft] {
        assert_eq!(
            app.get(&format!("/v1/catalog/{hidden}"), None).await.status,
            404
        );
    }
    assert_eq!(
        app.get("/v1/catalog?q=equity", None).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.get("/v1/catalog?q=bonds", None).await.body["items"],
        json!([])
    );
    assert_eq!(
        app.get("/v1/catalog?q=%25", None).await.body["items"],
        json!([]),
        "LIKE wildcards are literal"
    );
    assert_eq!(app.get("/v1/catalog/feed_nope", None).await.status, 404);
}
