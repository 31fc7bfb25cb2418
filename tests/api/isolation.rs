//! Another tenant's object is a 404 and stays as it was; another subscriber's too.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn vendor_b_cannot_read_change_or_delete_anything_of_vendor_a() {
    let app = spawn_app().await;
    let (_, a) = app.vendor("A").await;
    let (_, b) = app.vendor("B").await;
    let feed = app.feed(&a, "f").await;
    let source = app.source(&a).await;
    let key = app
        .post("/v1/api-keys", Some(&a), json!({"name": "k"}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.put(
        "/v1/reference/companies/AAPL",
        Some(&a),
        json!({"name": "Apple"}),
    )
    .await;
    let (_, sub) = app.subscriber("bob").await;
    let subscription = app.subscribe(&sub, &feed).await;

    let before = [
        app.get(&format!("/v1/feeds/{feed}"), Some(&a)).await.body,
        app.get(&format!("/v1/sources/{source}"), Some(&a))
            .await
            .body,
        app.get(&format!("/v1/api-keys/{key}"), Some(&a)).await.body,
        app.get("/v1/reference/companies/AAPL", Some(&a)).await.body,
        app.get(&format!("/v1/subscriptions/{subscription}"), Some(&a))
            .await
            .body,
    ];
    let attempts = [
        app.get(&format!("/v1/feeds/{feed}"), Some(&b)).await,
        app.patch(
            &format!("/v1/feeds/{feed}"),
            Some(&b),
            json!({"name": "pwned"}),
        )
        .await,
        app.put(
            &format!("/v1/feeds/{feed}/pipeline"),
            Some(&b),
            json!({"rules": []}),
        )
        .await,
        app.delete(&format!("/v1/feeds/{feed}"), Some(&b)).await,
        app.get(&format!("/v1/feeds/{feed}/subscriptions"), Some(&b))
            .await,
        app.get(&format!("/v1/sources/{source}"), Some(&b)).await,
        app.patch(
            &format!("/v1/sources/{source}"),
            Some(&b),
            json!({"name": "pwned"}),
        )
        .await,
        app.delete(&format!("/v1/sources/{source}"), Some(&b)).await,
        app.get(&format!("/v1/api-keys/{key}"), Some(&b)).await,
        app.delete(&format!("/v1/api-keys/{key}"), Some(&b)).await,
        app.get("/v1/reference/companies/AAPL", Some(&b)).await,
        app.get(&format!("/v1/subscriptions/{subscription}"), Some(&b))
            .await,
    ];
    for (i, res) in attempts.iter().enumerate() {
        assert_eq!(res.status, 404, "attempt {i}: {:?}", res.body);
    }
    let b_feed = app
        .post("/v1/feeds", Some(&b), feed_body(&source, "steal"))
        .await;
    assert_eq!(b_feed.status, 422, "A's source is not B's");
    assert_eq!(
        app.put(
            "/v1/reference/companies/AAPL",
            Some(&b),
            json!({"name": "B's"})
        )
        .await
        .status,
        201,
        "B has its own table"
    );
    let after = [
        app.get(&format!("/v1/feeds/{feed}"), Some(&a)).await.body,
        app.get(&format!("/v1/sources/{source}"), Some(&a))
            .await
            .body,
        app.get(&format!("/v1/api-keys/{key}"), Some(&a)).await.body,
        app.get("/v1/reference/companies/AAPL", Some(&a)).await.body,
        app.get(&format!("/v1/subscriptions/{subscription}"), Some(&a))
            .await
            .body,
    ];
    assert_eq!(before, after);
    for list in ["/v1/feeds", "/v1/sources", "/v1/api-keys"] {
        let items = app.get(list, Some(&b)).await.body["items"].clone();
        assert_eq!(items, json!([]), "{list} of B");
    }
}

#[tokio::test]
async fn subscriber_y_cannot_see_or_touch_subscriber_xs_subscriptions() {
    let app = spawn_app().await;
    let (_, vendor) = app.vendor("A").await;
    let feed = app.feed(&vendor, "f").await;
    let (_, x) = app.subscriber("x").await;
    let (_, y) = app.subscriber("y").await;
    let id = app.subscribe(&x, &feed).await;
    let path = format!("/v1/subscriptions/{id}");
    let before = app.get(&path, Some(&x)).await.body;
    assert_eq!(app.get(&path, Some(&y)).await.status, 404);
    assert_eq!(
        app.patch(&path, Some(&y), json!({"status": "paused"}))
            .await
            .status,
        404
    );
    assert_eq!(app.delete(&path, Some(&y)).await.status, 404);
    assert_eq!(
        app.post(&format!("{path}/rotate-secret"), Some(&y), json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        app.get("/v1/subscriptions", Some(&y)).await.body["items"],
        json!([])
    );
    assert_eq!(app.get(&path, Some(&x)).await.body, before);
    let (_, other_vendor) = app.vendor("B").await;
    assert_eq!(app.get(&path, Some(&other_vendor)).await.status, 404);
}

#[tokio::test]
async fn wrong_roles_in_the_callers_own_scope_are_403s_and_no_credentials_are_401s() {
    let app = spawn_app().await;
    let (vendor_id, vendor) = app.vendor("A").await;
    let (_, sub) = app.subscriber("x").await;
    assert_eq!(
        app.post(
            "/v1/sources",
            Some(&sub),
            json!({"name": "s", "kind": "push"})
        )
        .await
        .status,
        403
    );
    assert_eq!(app.get("/v1/feeds", Some(&sub)).await.status, 403);
    assert_eq!(
        app.get("/v1/subscriptions", Some(&vendor)).await.status,
        403
    );
    assert_eq!(app.get("/v1/vendors", Some(&vendor)).await.status, 403);
    assert_eq!(
        app.get(&format!("/v1/vendors/{vendor_id}"), Some(&sub))
            .await
            .status,
        404
    );
    let none = app.get("/v1/feeds", None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    let basic = app
        .client
        .get(app.url("/v1/me"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}
