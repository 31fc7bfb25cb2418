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

/// The quality bar: 0 cross-tenant reads or writes in at least 10,000 attempts.
#[tokio::test]
async fn ten_thousand_cross_tenant_attempts_all_read_as_404_and_change_nothing() {
    let app = spawn_app().await;
    let (_, a) = app.vendor("A").await;
    let mut owned = Vec::new();
    for i in 0..4 {
        let feed = app.feed(&a, &format!("f{i}")).await;
        let source = app.get(&format!("/v1/feeds/{feed}"), Some(&a)).await.body["source_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let key = app
            .post("/v1/api-keys", Some(&a), json!({"name": "k"}))
            .await
            .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        owned.push((feed, source, key));
    }
    let (_, x) = app.subscriber("x").await;
    let subscription = app.subscribe(&x, &owned[0].0).await;
    let before = snapshot(&app, &a, &x, &owned, &subscription).await;
    let (_, b) = app.vendor("B").await;
    let (_, y) = app.subscriber("y").await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for worker in 0..20usize {
        let (app, b, y, owned, subscription) = (
            app.clone(),
            b.clone(),
            y.clone(),
            owned.clone(),
            subscription.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut leaks = Vec::new();
            for n in 0..500usize {
                let (feed, source, key) = &owned[(worker + n) % owned.len()];
                let res = match n % 10 {
                    0 => app.get(&format!("/v1/feeds/{feed}"), Some(&b)).await,
                    1 => {
                        app.patch(
                            &format!("/v1/feeds/{feed}"),
                            Some(&b),
                            json!({"name": "pwned"}),
                        )
                        .await
                    }
                    2 => app.delete(&format!("/v1/feeds/{feed}"), Some(&b)).await,
                    3 => app.get(&format!("/v1/sources/{source}"), Some(&b)).await,
                    4 => {
                        app.patch(
                            &format!("/v1/sources/{source}"),
                            Some(&b),
                            json!({"retention_days": 1}),
                        )
                        .await
                    }
                    5 => app.delete(&format!("/v1/api-keys/{key}"), Some(&b)).await,
                    6 => {
                        app.get(&format!("/v1/feeds/{feed}/subscriptions"), Some(&b))
                            .await
                    }
                    7 => {
                        app.get(&format!("/v1/subscriptions/{subscription}"), Some(&y))
                            .await
                    }
                    8 => {
                        app.patch(
                            &format!("/v1/subscriptions/{subscription}"),
                            Some(&y),
                            json!({"status": "paused"}),
                        )
                        .await
                    }
                    _ => {
                        app.delete(&format!("/v1/subscriptions/{subscription}"), Some(&y))
                            .await
                    }
                };
                if res.status != 404 {
                    leaks.push((n, res.status));
                }
            }
            leaks
        }));
    }
    let mut leaks = Vec::new();
    for t in tasks {
        leaks.extend(t.await.unwrap());
    }
    assert!(
        leaks.is_empty(),
        "{} of 10,000 cross-tenant attempts were not 404s, e.g. {:?}",
        leaks.len(),
        &leaks[..leaks.len().min(5)]
    );
    assert_eq!(snapshot(&app, &a, &x, &owned, &subscription).await, before);
}

async fn snapshot(
    app: &TestApp,
    a: &str,
    x: &str,
    owned: &[(String, String, String)],
    subscription: &str,
) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for (feed, source, key) in owned {
        all.push(app.get(&format!("/v1/feeds/{feed}"), Some(a)).await.body);
        all.push(
            app.get(&format!("/v1/sources/{source}"), Some(a))
                .await
                .body,
        );
        all.push(app.get(&format!("/v1/api-keys/{key}"), Some(a)).await.body);
    }
    all.push(
        app.get(&format!("/v1/subscriptions/{subscription}"), Some(x))
            .await
            .body,
    );
    all
}
