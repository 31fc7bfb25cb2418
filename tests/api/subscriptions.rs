use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn a_webhook_subscription_gets_its_signing_secret_once() {
    // The webhook host is a loopback port nothing listens on: no record is ever sent here.
    let app = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (vendor, token) = app.vendor("Acme").await;
    let feed = app.feed(&token, "f").await;
    let (user, sub) = app.subscriber("bob").await;
    let res = app
        .post(
            "/v1/subscriptions",
            Some(&sub),
            json!({"feed_id": feed, "plan_id": "pro",
            "channel": {"type": "webhook", "url": "http://127.0.0.1:9/hooks/wharf"},
            "filter": "record.usd > 1000.0", "batch": {"max_records": 100, "max_wait_ms": 500}}),
        )
        .await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    assert!(
        res.body["signing_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    assert_eq!(res.body["tenant_id"], vendor.as_str());
    assert_eq!(res.body["subscriber_id"], user.as_str());
    assert_eq!(res.body["status"], "active");
    let id = res.body["id"].as_str().unwrap();
    let read = app
        .get(&format!("/v1/subscriptions/{id}"), Some(&sub))
        .await;
    assert_eq!(read.status, 200);
    assert!(read.body.get("signing_secret").is_none());
    assert_eq!(read.body["filter"], "record.usd > 1000.0");
    let listed = app.get("/v1/subscriptions", Some(&sub)).await;
    assert_eq!(listed.body["items"][0]["id"], id);
    let vendor_view = app
        .get(&format!("/v1/subscriptions/{id}"), Some(&token))
        .await;
    assert_eq!(vendor_view.status, 200);
    // The vendor sees how records go, not where: a webhook URL is often a capability.
    assert_eq!(
        vendor_view.body["channel"],
        json!({"type": "webhook", "host": "127.0.0.1"})
    );
    assert_eq!(vendor_view.body["subscriber_id"], user.as_str());
    assert!(vendor_view.body.get("filter").is_none());
    assert!(!vendor_view.body.to_string().contains("/hooks/wharf"));
    let mailed = app
        .post(
            "/v1/subscriptions",
            Some(&sub),
            json!({"feed_id": feed, "plan_id": "pro",
                "channel": {"type": "email", "address": "bob.private@mail.example"}}),
        )
        .await;
    assert_eq!(mailed.status, 201, "{:?}", mailed.body);
    let mailed = mailed.body["id"].as_str().unwrap();
    let vendor_view = app
        .get(&format!("/v1/subscriptions/{mailed}"), Some(&token))
        .await;
    assert_eq!(vendor_view.body["channel"], json!({"type": "email"}));
    assert!(!vendor_view.body.to_string().contains("bob.private"));
    let own_view = app
        .get(&format!("/v1/subscriptions/{mailed}"), Some(&sub))
        .await;
    assert_eq!(
        own_view.body["channel"]["address"],
        "bob.private@mail.example"
    );
    let pull = app
        .post(
            "/v1/subscriptions",
            Some(&sub),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}}),
        )
        .await;
    assert_eq!(pull.status, 201);
    assert!(pull.body.get("signing_secret").is_none());
}

#[tokio::test]
async fn webhooks_to_private_loopback_link_local_or_metadata_hosts_are_refused() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let feed = app.feed(&token, "f").await;
    let (_, sub) = app.subscriber("bob").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.5/h",
        "http://192.168.1.2/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/h",
        "http://[fd00:ec2::254]/h",
        "http://[::127.0.0.1]/h",
        "http://[::ffff:0:7f00:1]/h",
        "http://[2001::1]/h",
        "ftp://hooks.example.com/h",
        "https://user:pw@hooks.example.com/h",
        "not a url",
    ] {
        let res = app.post("/v1/subscriptions", Some(&sub), json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "webhook", "url": url}})).await;
        assert_eq!(res.status, 422, "{url} must be refused");
        assert_eq!(res.paths(), vec!["channel.url"], "{url}");
    }
    assert_eq!(
        app.get("/v1/subscriptions", Some(&sub)).await.body["items"],
        json!([])
    );
    let open = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (_, token) = open.vendor("Acme").await;
    let feed = open.feed(&token, "f").await;
    let (_, sub) = open.subscriber("bob").await;
    let res = open.post("/v1/subscriptions", Some(&sub), json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "webhook", "url": "http://127.0.0.1:9/h"}})).await;
    assert_eq!(res.status, 201, "allowed with allow_private_webhooks");
    // The test servers' egress allow-list holds loopback only: a private address elsewhere
    // is refused even where private webhooks are allowed.
    for url in [
        "http://10.0.0.5/h",
        "http://[::ffff:0:a00:5]/h",
        "http://[::10.0.0.5]/h",
    ] {
        let res = open.post("/v1/subscriptions", Some(&sub), json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "webhook", "url": url}})).await;
        assert_eq!(res.status, 422, "{url}: {:?}", res.body);
        assert!(
            res.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("egress allow-list"),
            "{:?}",
            res.body
        );
    }
}

#[tokio::test]
async fn bad_subscriptions_are_422s_that_name_the_field() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let feed = app.feed(&token, "f").await;
    let source = app.source(&token).await;
    let mut draft = feed_body(&source, "d");
    draft["status"] = json!("draft");
    let draft = app.post("/v1/feeds", Some(&token), draft).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, sub) = app.subscriber("bob").await;
    let try_sub = |body: serde_json::Value| app.post("/v1/subscriptions", Some(&sub), body);
    // `sqs` is a subscription of the feed's SNS topic: the aws shape's alone.
    let (arn, path, message) = match BACKEND_UNDER_TEST {
        Backend::Local => (
            "arn:aws:sqs:us-east-1:123456789012:q",
            "channel.type",
            "only available in the aws shape",
        ),
        Backend::Aws => ("sqs:q", "channel.queue_arn", "must be an SQS queue ARN"),
    };
    let sqs = try_sub(
        json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "sqs", "queue_arn": arn}}),
    )
    .await;
    assert_eq!(sqs.status, 422);
    assert_eq!(sqs.paths(), vec![path]);
    assert!(
        sqs.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(message),
        "{}",
        sqs.body
    );
    let cases = [
        (
            json!({"feed_id": feed, "plan_id": "gold", "channel": {"type": "pull"}}),
            "plan_id",
        ),
        (
            json!({"feed_id": draft, "plan_id": "pro", "channel": {"type": "pull"}}),
            "feed_id",
        ),
        (
            json!({"feed_id": "feed_0193a5e4c2a87c3b9d41e2f6a8b0c1d2", "plan_id": "pro", "channel": {"type": "pull"}}),
            "feed_id",
        ),
        (
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}, "filter": "record.x >"}),
            "filter",
        ),
        (
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}, "batch": {"max_records": 0, "max_wait_ms": 1}}),
            "batch.max_records",
        ),
        (
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "email", "address": "nope"}}),
            "channel.address",
        ),
        (
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "carrier_pigeon"}}),
            "channel.type",
        ),
        (
            json!({"feed_id": "src_0193a5e4c2a87c3b9d41e2f6a8b0c1d2", "plan_id": "pro", "channel": {"type": "pull"}}),
            "feed_id",
        ),
    ];
    for (body, path) in cases {
        let res = try_sub(body.clone()).await;
        assert_eq!(res.status, 422, "{body}: {:?}", res.body);
        assert_eq!(res.paths(), vec![path], "{body}");
    }
    assert_eq!(
        app.post(
            "/v1/subscriptions",
            Some(&token),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}})
        )
        .await
        .status,
        403
    );
    assert_eq!(
        app.get("/v1/subscriptions", Some(&sub)).await.body["items"],
        json!([])
    );
}

#[tokio::test]
async fn subscriptions_pause_resume_change_and_cancel() {
    // The webhook it switches to is a loopback port nothing listens on; no record is pushed.
    let app = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (_, token) = app.vendor("Acme").await;
    let feed = app.feed(&token, "f").await;
    let (_, sub) = app.subscriber("bob").await;
    let id = app.subscribe(&sub, &feed).await;
    let path = format!("/v1/subscriptions/{id}");
    let paused = app
        .patch(&path, Some(&sub), json!({"status": "paused"}))
        .await;
    assert_eq!(paused.body["status"], "paused");
    let resumed = app
        .patch(&path, Some(&sub), json!({"status": "active"}))
        .await;
    let history: Vec<&str> = resumed.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, vec!["active", "paused", "active"]);
    let to_webhook = app.patch(&path, Some(&sub), json!({"channel": {"type": "webhook", "url": "http://127.0.0.1:9/h"}, "filter": "record.usd > 5.0"})).await;
    assert_eq!(to_webhook.status, 200);
    assert!(
        to_webhook.body["signing_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    let bad = app.patch(&path, Some(&sub), json!({"filter": "((("})).await;
    assert_eq!(bad.paths(), vec!["filter"]);
    assert_eq!(
        app.get(&path, Some(&sub)).await.body["filter"],
        "record.usd > 5.0"
    );
    let rotated = app
        .post(&format!("{path}/rotate-secret"), Some(&sub), json!({}))
        .await;
    assert_eq!(rotated.status, 200);
    assert_ne!(
        rotated.body["signing_secret"],
        to_webhook.body["signing_secret"]
    );
    assert!(rotated.body["previous_secret_expires_at"].is_string());
    let secrets = app
        .services
        .store
        .get_signing_secrets(
            &to_webhook.body["tenant_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            &id.parse().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(secrets.len(), 2);
    assert!(secrets[0].expires_at.is_none() && secrets[1].expires_at.is_some());
    let opened = app.services.secrets.open(&secrets[0].sealed).unwrap();
    assert_eq!(opened, rotated.body["signing_secret"].as_str().unwrap());
    let cancelled = app.delete(&path, Some(&sub)).await;
    assert_eq!(cancelled.status, 200);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(
        app.patch(&path, Some(&sub), json!({"status": "active"}))
            .await
            .status,
        409
    );
    assert_eq!(
        app.post(&format!("{path}/rotate-secret"), Some(&sub), json!({}))
            .await
            .status,
        409
    );
    assert_eq!(app.get(&path, Some(&sub)).await.body["status"], "cancelled");
}

#[tokio::test]
async fn only_webhook_subscriptions_rotate_secrets() {
    let app = spawn_app().await;
    let (_, token) = app.vendor("Acme").await;
    let feed = app.feed(&token, "f").await;
    let (_, sub) = app.subscriber("bob").await;
    let id = app.subscribe(&sub, &feed).await;
    assert_eq!(
        app.post(
            &format!("/v1/subscriptions/{id}/rotate-secret"),
            Some(&sub),
            json!({})
        )
        .await
        .status,
        409
    );
}

#[tokio::test]
async fn a_private_feed_takes_only_the_subscribers_its_vendor_allowed() {
    let app = spawn_app().await;
    let (_, vendor) = app.vendor("Acme").await;
    let source = app.source(&vendor).await;
    let (bob, bob_token) = app.subscriber("bob").await;
    let mut body = feed_body(&source, "desk only");
    body["visibility"] = json!("private");
    body["allowed_subscribers"] = json!([bob, "@fund.example"]);
    let created = app.post("/v1/feeds", Some(&vendor), body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let feed = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.body["allowed_subscribers"],
        json!([bob, "@fund.example"])
    );
    let signup = |email: String| {
        let app = &app;
        async move {
            let res = app
                .post(
                    "/v1/subscribers",
                    None,
                    json!({"name": "x", "email": email, "password": PASSWORD}),
                )
                .await;
            assert_eq!(res.status, 201, "{:?}", res.body);
            app.login(&email).await
        }
    };
    let unique = wharf_core::UserId::new();
    let desk = signup(format!("desk-{}@FUND.example", unique.as_str())).await;
    let outsider = signup(format!("eve-{}@fund.example.invalid", unique.as_str())).await;
    let subscribe = |token: String, feed: String| {
        let app = &app;
        async move {
            app.post(
                "/v1/subscriptions",
                Some(&token),
                json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}}),
            )
            .await
        }
    };
    assert_eq!(
        subscribe(bob_token.clone(), feed.clone()).await.status,
        201,
        "allowed by id"
    );
    assert_eq!(
        subscribe(desk, feed.clone()).await.status,
        201,
        "allowed by domain"
    );
    // Anyone else is answered exactly as for a feed that does not exist.
    let refused = subscribe(outsider.clone(), feed.clone()).await;
    let missing = subscribe(outsider.clone(), wharf_core::FeedId::new().to_string()).await;
    assert_eq!(refused.status, missing.status);
    assert_eq!(refused.body, missing.body);
    assert_eq!(refused.paths(), vec!["feed_id"]);
    assert_eq!(
        app.get(&format!("/v1/catalog/{feed}"), Some(&outsider))
            .await
            .status,
        404
    );
    // Bad entries are refused when saved; a new list applies to the next subscription.
    let bad = app
        .patch(
            &format!("/v1/feeds/{feed}"),
            Some(&vendor),
            json!({"allowed_subscribers": ["fund.example", "@", "usr_x"]}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(
        bad.paths(),
        vec![
            "allowed_subscribers[0]",
            "allowed_subscribers[1]",
            "allowed_subscribers[2]"
        ]
    );
    let opened = app
        .patch(
            &format!("/v1/feeds/{feed}"),
            Some(&vendor),
            json!({"allowed_subscribers": ["@fund.example.invalid"]}),
        )
        .await;
    assert_eq!(opened.status, 200, "{:?}", opened.body);
    assert_eq!(subscribe(outsider, feed).await.status, 201);
}
