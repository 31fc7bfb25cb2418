//! Data in, processed, delivered, counted: ingest, rules, pull, signed webhooks with
//! retries, pausing, batching, replays and usage.

use crate::helpers::*;
use crate::receiver::*;
use serde_json::{Value, json};
use std::time::Duration;
use wharf_core::ports::Clock;

/// A vendor with a published feed (filter price > 100, map) over a push source.
async fn vendor_feed(app: &TestApp) -> (String, String, String) {
    let (_, token) = app.vendor("Acme").await;
    let feed = app.feed(&token, "Large trades").await;
    let source = app
        .get(&format!("/v1/feeds/{feed}"), Some(&token))
        .await
        .body["source_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (token, feed, source)
}

fn trades(ids: &[(&str, f64)]) -> Value {
    json!({"records": ids.iter().map(|(id, price)| json!({"id": id, "data": {"sym": "AAPL", "price": price, "px": price}})).collect::<Vec<_>>()})
}

async fn subscribe_webhook(
    app: &TestApp,
    token: &str,
    feed: &str,
    url: &str,
    extra: Value,
) -> (String, String) {
    let mut body =
        json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "webhook", "url": url}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let res = app.post("/v1/subscriptions", Some(token), body).await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    (
        res.body["id"].as_str().unwrap().to_owned(),
        res.body["signing_secret"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn usage_of(app: &TestApp, token: &str, sub: &str) -> u64 {
    let now = time::OffsetDateTime::now_utc();
    let from = (now - time::Duration::days(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let to = (now + time::Duration::days(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let res = app
        .get(
            &format!("/v1/usage?subscription_id={sub}&from={from}&to={to}"),
            Some(token),
        )
        .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    res.body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["deliveries"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn records_flow_through_the_rules_to_the_pull_channel_and_are_counted_once() {
    let app = spawn_app().await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.subscriber("bob").await;
    let sub = app.subscribe(&sub_token, &feed).await;
    let pushed = app
        .post(
            &format!("/v1/sources/{source}/records"),
            Some(&vendor),
            trades(&[("t1", 150.0), ("t2", 50.0), ("t3", 101.5)]),
        )
        .await;
    assert_eq!(pushed.status, 202);
    assert_eq!(
        pushed.body,
        json!({"accepted": 3, "duplicates": 0, "rejected": []})
    );
    let path = format!("/v1/subscriptions/{sub}/records?after=0");
    eventually("both matching records are pulled", || async {
        app.get(&path, Some(&sub_token)).await.body["items"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let page = app.get(&path, Some(&sub_token)).await.body;
    let data: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["record"]["data"].clone())
        .collect();
    assert_eq!(
        data,
        vec![
            json!({"symbol": "AAPL", "usd": 162}),
            json!({"symbol": "AAPL", "usd": 109.62})
        ]
    );
    assert_eq!(page["items"][0]["record"]["pipeline_version"], 1);
    assert_eq!(usage_of(&app, &sub_token, &sub).await, 2);
    let again = app.get(&path, Some(&sub_token)).await;
    assert_eq!(
        again.body["items"].as_array().unwrap().len(),
        2,
        "pulling again from the start reads the same records"
    );
    assert_eq!(
        usage_of(&app, &sub_token, &sub).await,
        2,
        "and does not count them twice"
    );
    let dup = app
        .post(
            &format!("/v1/sources/{source}/records"),
            Some(&vendor),
            trades(&[("t1", 150.0), ("t3", 101.5), ("t4", 200.0)]),
        )
        .await;
    // The local shape stores before answering, so it knows the repeats; the aws shape
    // answers once SQS has the records, and the ingest handler skips the repeats.
    let expected = match BACKEND_UNDER_TEST {
        Backend::Local => json!({"accepted": 1, "duplicates": 2, "rejected": []}),
        Backend::Aws => json!({"accepted": 3, "duplicates": 0, "rejected": []}),
    };
    assert_eq!(dup.body, expected);
    let next = page["next_cursor"].as_str().unwrap();
    eventually("the new record is pulled", || async {
        app.get(
            &format!("/v1/subscriptions/{sub}/records?after={next}"),
            Some(&sub_token),
        )
        .await
        .body["items"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    // Cursors never given out are refused, and mark nothing as fetched.
    let head: u64 = app
        .get(
            &format!("/v1/subscriptions/{sub}/records?after={next}"),
            Some(&sub_token),
        )
        .await
        .body["next_cursor"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for bad in [
        u64::MAX.to_string(),
        (head + 1).to_string(),
        "-1".into(),
        "x".into(),
    ] {
        let res = app
            .get(
                &format!("/v1/subscriptions/{sub}/records?after={bad}"),
                Some(&sub_token),
            )
            .await;
        assert_eq!(res.status, 422, "{bad}: {:?}", res.body);
        assert_eq!(res.paths(), vec!["after"], "{bad}");
    }
    assert_eq!(
        usage_of(&app, &vendor, &sub).await,
        3,
        "the vendor sees its tenant's usage"
    );
}

#[tokio::test]
async fn ingest_takes_ndjson_and_api_keys_and_rejects_bad_records_by_index() {
    let app = spawn_app().await;
    let (vendor, _, _) = vendor_feed(&app).await;
    let source = app
        .post("/v1/sources", Some(&vendor), json!({"name": "typed", "kind": "push", "schema": {"type": "object", "required": ["price"], "properties": {"price": {"type": "number"}}}}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = app
        .post("/v1/api-keys", Some(&vendor), json!({"name": "pusher"}))
        .await
        .body["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let ndjson = "{\"id\":\"a\",\"data\":{\"price\":1}}\n{\"id\":\"b\",\"data\":{\"price\":\"x\"}}\n\n{\"data\":{\"price\":3},\"ts\":\"2026-11-26T10:00:00Z\"}\n{\"oops\":1}\n";
    let res = app
        .client
        .post(app.url(&format!("/v1/sources/{source}/records")))
        .bearer_auth(&key)
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["accepted"], 2);
    let rejected: Vec<u64> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(rejected, vec![1, 3]);
    assert!(
        body["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("schema")
    );
    let many: Vec<Value> = (0..1001).map(|i| json!({"data": {"price": i}})).collect();
    let big = app
        .post(
            &format!("/v1/sources/{source}/records"),
            Some(&key),
            json!({"records": many}),
        )
        .await;
    assert_eq!(big.status, 413);
    let (_, other) = app.vendor("Other").await;
    assert_eq!(
        app.post(
            &format!("/v1/sources/{source}/records"),
            Some(&other),
            trades(&[("z", 1.0)])
        )
        .await
        .status,
        404
    );
    let (_, sub) = app.subscriber("bob").await;
    assert_eq!(
        app.post(
            &format!("/v1/sources/{source}/records"),
            Some(&sub),
            trades(&[("z", 1.0)])
        )
        .await
        .status,
        403
    );
}

#[tokio::test]
async fn webhooks_are_signed_per_standard_webhooks_including_after_a_rotation() {
    let app = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.subscriber("bob").await;
    let receiver = Receiver::start(vec![]).await;
    let (sub, secret) = subscribe_webhook(&app, &sub_token, &feed, &receiver.url, json!({})).await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("t1", 150.0)]),
    )
    .await;
    eventually("the webhook arrives", || async {
        receiver.hits().len() == 1
    })
    .await;
    let hit = &receiver.hits()[0];
    let wh = standardwebhooks::Webhook::new(&secret).unwrap();
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, hit.header(name).parse().unwrap());
    }
    assert!(
        wh.verify(&hit.body, &headers).is_ok(),
        "verified by an independent implementation"
    );
    assert_eq!(hit.json()["data"], json!({"symbol": "AAPL", "usd": 162}));
    assert!(hit.header("webhook-id").starts_with("del_"));
    let rotated = app
        .post(
            &format!("/v1/subscriptions/{sub}/rotate-secret"),
            Some(&sub_token),
            json!({}),
        )
        .await
        .body;
    let new_secret = rotated["signing_secret"].as_str().unwrap();
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("t2", 300.0)]),
    )
    .await;
    eventually("the second webhook arrives", || async {
        receiver.hits().len() == 2
    })
    .await;
    let second = &receiver.hits()[1];
    assert!(
        signed_with(second, new_secret),
        "signed with the new secret"
    );
    assert!(
        signed_with(second, &secret),
        "and, during the overlap, with the old one"
    );
    // The receiver records a hit before answering; the count and the log follow the answer.
    eventually("both deliveries are counted", || async {
        usage_of(&app, &sub_token, &sub).await == 2
    })
    .await;
    let log_path = format!("/v1/subscriptions/{sub}/deliveries");
    eventually("both attempts are logged", || async {
        app.get(&log_path, Some(&sub_token)).await.body["items"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let log = app.get(&log_path, Some(&sub_token)).await.body;
    assert_eq!(log["items"][0]["status"], "delivered");
    assert_eq!(log["items"][0]["status_code"], 200);
}

#[tokio::test]
async fn failed_webhooks_follow_the_retry_schedule_and_count_once() {
    let clock = TestClock::new();
    let app = spawn_on(|c| c.allow_private_webhooks = true, clock.clone()).await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.subscriber("bob").await;
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(502)]).await;
    let (sub, secret) = subscribe_webhook(&app, &sub_token, &feed, &receiver.url, json!({})).await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("t1", 150.0)]),
    )
    .await;
    eventually("the first attempt fails", || async {
        receiver.hits().len() == 1
    })
    .await;
    let log_path = format!("/v1/subscriptions/{sub}/deliveries?status=failed");
    eventually("the failure is logged", || async {
        app.get(&log_path, Some(&sub_token)).await.body["items"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    let failed = app.get(&log_path, Some(&sub_token)).await.body["items"][0].clone();
    assert_eq!(failed["status_code"], 500);
    assert_eq!(failed["attempt"], 1);
    app.idle().await;
    assert_eq!(
        receiver.hits().len(),
        1,
        "nothing is retried before it is due"
    );
    clock.advance(Duration::from_secs(5));
    eventually("the second attempt fails", || async {
        receiver.hits().len() == 2
    })
    .await;
    clock.advance(Duration::from_secs(299));
    app.idle().await;
    assert_eq!(
        receiver.hits().len(),
        2,
        "the third attempt waits 5 minutes"
    );
    clock.advance(Duration::from_secs(1));
    eventually("the third attempt succeeds", || async {
        receiver.hits().len() == 3
    })
    .await;
    let hits = receiver.hits();
    assert!(
        hits.iter()
            .all(|h| h.header("webhook-id") == hits[0].header("webhook-id")),
        "the delivery id is stable across retries"
    );
    assert!(hits.iter().all(|h| signed_with(h, &secret)));
    eventually("usage counts the delivery once", || async {
        usage_of(&app, &sub_token, &sub).await == 1
    })
    .await;
    // The attempt's log line and the usage counter are written apart: wait for the line.
    let attempts_path = format!("/v1/subscriptions/{sub}/deliveries");
    let statuses = || async {
        let all = app.get(&attempts_path, Some(&sub_token)).await.body;
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["attempt"].as_u64().unwrap(),
                    a["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<(u64, String)>>()
    };
    eventually("the third attempt is logged", || async {
        statuses().await.len() == 3
    })
    .await;
    assert_eq!(
        statuses().await,
        vec![
            (3, "delivered".to_owned()),
            (2, "failed".to_owned()),
            (1, "failed".to_owned())
        ]
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_410_pauses_the_subscription() {
    let clock = TestClock::new();
    let app = spawn_on(|c| c.allow_private_webhooks = true, clock.clone()).await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.verified_subscriber("bob").await;
    let throttled = Receiver::start(vec![Answer::RetryAfter(429, 120)]).await;
    let (slow, _) = subscribe_webhook(&app, &sub_token, &feed, &throttled.url, json!({})).await;
    let gone = Receiver::start(vec![Answer::Status(410)]).await;
    let (dead, _) = subscribe_webhook(&app, &sub_token, &feed, &gone.url, json!({})).await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("t1", 150.0)]),
    )
    .await;
    eventually("both endpoints are called", || async {
        throttled.hits().len() == 1 && gone.hits().len() == 1
    })
    .await;
    let dead_path = format!("/v1/subscriptions/{dead}");
    eventually("the 410 pauses the subscription", || async {
        app.get(&dead_path, Some(&sub_token)).await.body["status"] == "paused"
    })
    .await;
    assert!(
        app.get(&dead_path, Some(&sub_token)).await.body["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    let outbox = app.dir.path().join("outbox");
    eventually("the subscriber is told", || async {
        std::fs::read_dir(&outbox)
            .map(|d| {
                d.flatten().any(|f| {
                    std::fs::read_to_string(f.path())
                        .unwrap_or_default()
                        .contains("paused your subscription")
                })
            })
            .unwrap_or(false)
    })
    .await;
    clock.advance(Duration::from_secs(60));
    app.idle().await;
    assert_eq!(
        throttled.hits().len(),
        1,
        "Retry-After: 120 outweighs the 5 s step"
    );
    clock.advance(Duration::from_secs(61));
    eventually(
        "the throttled delivery is retried after Retry-After",
        || async { throttled.hits().len() == 2 },
    )
    .await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("t2", 150.0)]),
    )
    .await;
    eventually("the live endpoint gets the next record", || async {
        throttled.hits().len() == 3
    })
    .await;
    assert_eq!(
        gone.hits().len(),
        1,
        "a paused subscription receives nothing"
    );
    eventually("both deliveries are counted", || async {
        usage_of(&app, &sub_token, &slow).await == 2
    })
    .await;
    assert_eq!(usage_of(&app, &sub_token, &dead).await, 0);
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_stall_other_subscriptions() {
    let app = spawn_with(|c| {
        c.allow_private_webhooks = true;
        c.webhook_timeout_secs = 30;
    })
    .await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.subscriber("bob").await;
    let hanging = Receiver::start(vec![Answer::Hang]).await;
    subscribe_webhook(&app, &sub_token, &feed, &hanging.url, json!({})).await;
    let healthy = Receiver::start(vec![]).await;
    subscribe_webhook(&app, &sub_token, &feed, &healthy.url, json!({})).await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("t1", 150.0)]),
    )
    .await;
    eventually("the hanging endpoint is called", || async {
        hanging.started() == 1
    })
    .await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("t2", 150.0), ("t3", 160.0)]),
    )
    .await;
    eventually("the healthy endpoint gets everything", || async {
        healthy.hits().len() == 3
    })
    .await;
    assert_eq!(
        hanging.hits().len(),
        0,
        "while the other endpoint is still hanging"
    );
}

#[tokio::test]
async fn batched_subscriptions_get_arrays_and_paused_ones_miss_what_came_meanwhile() {
    let app = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.subscriber("bob").await;
    let receiver = Receiver::start(vec![]).await;
    let (sub, _) = subscribe_webhook(
        &app,
        &sub_token,
        &feed,
        &receiver.url,
        json!({"batch": {"max_records": 2, "max_wait_ms": 200}}),
    )
    .await;
    let probe = app.subscribe(&sub_token, &feed).await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("a", 150.0), ("b", 151.0), ("c", 152.0)]),
    )
    .await;
    eventually("two batches arrive", || async {
        receiver.hits().len() == 2
    })
    .await;
    let sizes: Vec<usize> = receiver
        .hits()
        .iter()
        .map(|h| h.json().as_array().unwrap().len())
        .collect();
    assert_eq!(
        sizes,
        vec![2, 1],
        "a full batch, then the rest once it waited max_wait_ms"
    );
    let path = format!("/v1/subscriptions/{sub}");
    app.patch(&path, Some(&sub_token), json!({"status": "paused"}))
        .await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("d", 150.0)]),
    )
    .await;
    // d's output exists (a pull subscription on the feed sees it) before the resume, so it
    // came while paused whatever the pipeline's latency.
    let probe = format!("/v1/subscriptions/{probe}/records?after=0&limit=100");
    eventually("d reaches the feed", || async {
        app.get(&probe, Some(&sub_token)).await.body["items"]
            .as_array()
            .is_some_and(|items| items.len() == 4)
    })
    .await;
    app.idle().await;
    assert_eq!(receiver.hits().len(), 2, "nothing while paused");
    app.patch(&path, Some(&sub_token), json!({"status": "active"}))
        .await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("e", 150.0)]),
    )
    .await;
    eventually("the record after resuming arrives", || async {
        receiver.hits().len() == 3
    })
    .await;
    let last = receiver.hits()[2].json();
    assert_eq!(last.as_array().unwrap().len(), 1);
    assert_eq!(last[0]["data"]["usd"], 162, "record e, not d");
    eventually("four deliveries are counted", || async {
        usage_of(&app, &sub_token, &sub).await == 4
    })
    .await;
    let to = "2100-01-01T00:00:00Z";
    let before = app
        .post(
            &format!("{path}/replay"),
            Some(&sub_token),
            json!({"from": "2000-01-01T00:00:00Z", "to": to}),
        )
        .await;
    assert_eq!(before.status, 422, "{:?}", before.body);
    assert_eq!(before.body["errors"][0]["path"], "from");
    let started = app.get(&path, Some(&sub_token)).await.body["created_at"].clone();
    assert!(
        before.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(started.as_str().unwrap()),
        "the refusal names the earliest instant allowed: {:?}",
        before.body
    );
    let replay = app
        .post(
            &format!("{path}/replay"),
            Some(&sub_token),
            json!({"from": started, "to": to}),
        )
        .await;
    assert_eq!(replay.status, 202, "{:?}", replay.body);
    assert_eq!(
        replay.body["records"], 4,
        "the record d output while paused is not the subscription's"
    );
    eventually("the replay arrives", || async {
        receiver.hits().len() == 7
    })
    .await;
    app.idle().await;
    assert_eq!(
        usage_of(&app, &sub_token, &sub).await,
        4,
        "replays are not billed again"
    );
}

#[tokio::test]
async fn a_record_a_rule_fails_on_lands_in_the_feeds_error_list() {
    let app = spawn_app().await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let res = app
        .put(
            &format!("/v1/feeds/{feed}/pipeline"),
            Some(&vendor),
            json!({"rules": [
                {"type": "map", "fields": {"double": "record.qty * 2.0"}}
            ]}),
        )
        .await;
    assert_eq!(res.status, 200);
    let (_, sub_token) = app.subscriber("bob").await;
    let sub = app.subscribe(&sub_token, &feed).await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        json!({"records": [
            {"id": "ok", "data": {"qty": 2}}, {"id": "bad", "data": {"sym": "X"}}
        ]}),
    )
    .await;
    let errors = format!("/v1/feeds/{feed}/errors");
    eventually("the failure is listed", || async {
        app.get(&errors, Some(&vendor)).await.body["items"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    let error = app.get(&errors, Some(&vendor)).await.body["items"][0].clone();
    assert_eq!(error["rule"], 0);
    assert_eq!(error["pipeline_version"], 2);
    assert!(
        error["message"].as_str().unwrap().contains("double"),
        "{error}"
    );
    let pulled = format!("/v1/subscriptions/{sub}/records?after=0");
    eventually("the good record still flows", || async {
        app.get(&pulled, Some(&sub_token)).await.body["items"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    assert_eq!(
        app.get(&pulled, Some(&sub_token)).await.body["items"][0]["record"]["data"],
        json!({"double": 4})
    );
    let (_, other) = app.vendor("Other").await;
    assert_eq!(app.get(&errors, Some(&other)).await.status, 404);
}

#[tokio::test]
async fn windows_close_on_schedule_with_values_computed_independently() {
    let clock = TestClock::new();
    let app = spawn_on(|_| {}, clock.clone()).await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let res = app.put(&format!("/v1/feeds/{feed}/pipeline"), Some(&vendor), json!({"rules": [
        {"type": "filter", "expr": "record.qty > 0.0"},
        {"type": "window", "every": "1m", "window": "1m", "group_by": "record.sym",
         "aggregates": {"n": "count()", "vwap": "sum(record.px * record.qty) / sum(record.qty)", "hi": "max(record.px)", "last": "last(record.px)"},
         "having": "n >= 2.0"},
        {"type": "map", "fields": {"sym": "record.group", "n": "record.n", "vwap": "record.vwap", "hi": "record.hi", "last": "record.last", "end": "record.window_end"}}
    ]})).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    let (_, sub_token) = app.subscriber("bob").await;
    let sub = app.subscribe(&sub_token, &feed).await;
    app.idle().await;
    let now = clock.now().unix_timestamp();
    let window_start = (now + 300) / 60 * 60;
    let at = |s: i64| {
        time::OffsetDateTime::from_unix_timestamp(window_start + s)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let trades = [
        ("AAPL", 10.0, 1.0, 5),
        ("AAPL", 20.0, 3.0, 20),
        ("AAPL", 30.0, 0.0, 30),
        ("MSFT", 50.0, 2.0, 10),
        ("AAPL", 99.0, 1.0, 61),
    ];
    let records: Vec<Value> = trades
        .iter()
        .enumerate()
        .map(|(i, (sym, px, qty, s))| json!({"id": format!("w{i}"), "ts": at(*s), "data": {"sym": sym, "px": px, "qty": qty}}))
        .collect();
    assert_eq!(
        app.post(
            &format!("/v1/sources/{source}/records"),
            Some(&vendor),
            json!({"records": records})
        )
        .await
        .body["accepted"],
        5
    );
    // Independently: AAPL in [start, start+60) with qty > 0 are (10, 1) and (20, 3).
    let vwap = (10.0 * 1.0 + 20.0 * 3.0) / (1.0 + 3.0);
    clock.advance(Duration::from_secs(
        window_start as u64 - now as u64 + 60 + 3,
    ));
    let path = format!("/v1/subscriptions/{sub}/records?after=0");
    eventually("the window closes", || async {
        !app.get(&path, Some(&sub_token)).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    app.idle().await;
    let items = app.get(&path, Some(&sub_token)).await.body["items"].clone();
    let data: Vec<Value> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["record"]["data"].clone())
        .collect();
    assert_eq!(
        data,
        vec![json!({"sym": "AAPL", "n": 2, "vwap": vwap, "hi": 20, "last": 20, "end": at(60)})],
        "MSFT has one trade and fails `having`"
    );
    assert_eq!(items[0]["record"]["ts"], at(60));
}

async fn next_record(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a live record")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn the_live_channel_pushes_records_counts_them_once_and_resumes_without_a_gap() {
    let app = spawn_app().await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.subscriber("bob").await;
    let created = app
        .post(
            "/v1/subscriptions",
            Some(&sub_token),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "websocket"}}),
        )
        .await;
    assert_eq!(created.status, 201);
    let sub = created.body["id"].as_str().unwrap().to_owned();
    let url = |q: &str| {
        format!(
            "ws://{}/v1/subscriptions/{sub}/live?access_token={sub_token}{q}",
            app.addr
        )
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(url("")).await.unwrap();
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("a", 150.0), ("b", 10.0), ("c", 200.0)]),
    )
    .await;
    let first = next_record(&mut ws).await;
    let second = next_record(&mut ws).await;
    assert_eq!(first["record"]["data"]["usd"], 162);
    assert_eq!(second["record"]["data"]["usd"], 216);
    drop(ws);
    eventually("the pushed records are counted", || async {
        usage_of(&app, &sub_token, &sub).await == 2
    })
    .await;
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("d", 300.0), ("e", 400.0)]),
    )
    .await;
    let cursor = second["cursor"].as_str().unwrap();
    let (mut resumed, _) = tokio_tungstenite::connect_async(url(&format!("&after={cursor}")))
        .await
        .unwrap();
    assert_eq!(
        next_record(&mut resumed).await["record"]["data"]["usd"],
        324,
        "resumes right after the cursor"
    );
    assert_eq!(
        next_record(&mut resumed).await["record"]["data"]["usd"],
        432
    );
    drop(resumed);
    eventually("the resumed records are counted", || async {
        usage_of(&app, &sub_token, &sub).await == 4
    })
    .await;
    let (mut again, _) = tokio_tungstenite::connect_async(url("&after=0"))
        .await
        .unwrap();
    for _ in 0..4 {
        next_record(&mut again).await;
    }
    drop(again);
    app.idle().await;
    assert_eq!(
        usage_of(&app, &sub_token, &sub).await,
        4,
        "records pushed again are not counted again"
    );
    let anonymous =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/subscriptions/{sub}/live", app.addr))
            .await;
    assert!(anonymous.is_err(), "no token, no socket");
    let pull = app.subscribe(&sub_token, &feed).await;
    let wrong = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/subscriptions/{pull}/live?access_token={sub_token}",
        app.addr
    ))
    .await;
    assert!(wrong.is_err(), "a pull subscription has no live channel");
}

#[tokio::test]
async fn email_subscriptions_are_sent_through_the_smtp_server_and_counted() {
    let sink = SmtpSink::start().await;
    // What the channel sends (the subscriber's own sign-up verification aside).
    let channel_mails = || {
        sink.messages()
            .into_iter()
            .filter(|m| !m.contains("Subject: Verify your email address"))
            .collect::<Vec<_>>()
    };
    let port = sink.port;
    let app = spawn_with(move |c| {
        c.smtp = Some(wharf::config::SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            tls: wharf::config::SmtpTls::None,
            username: None,
            password: None,
        });
    })
    .await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.subscriber("bob").await;
    let created = app.post("/v1/subscriptions", Some(&sub_token), json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "email", "address": "desk@fund.example"}})).await;
    assert_eq!(created.status, 201);
    let sub = created.body["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("a", 150.0), ("b", 10.0), ("c", 200.0)]),
    )
    .await;
    if BACKEND_UNDER_TEST == Backend::Aws {
        // The aws shape's email is the feed topic's: SNS sends it, not Wharf's SMTP client,
        // and each record SNS accepted for the subscription is counted.
        let link = created.body["native"]["id"].as_str().unwrap_or_default();
        assert!(link.starts_with("arn:aws:sns:"), "{}", created.body);
        eventually("both are counted", || async {
            usage_of(&app, &sub_token, &sub).await == 2
        })
        .await;
        assert!(channel_mails().is_empty(), "Wharf itself mails nothing");
        return;
    }
    // Nothing but the confirmation link goes to an address its owner has not confirmed.
    app.idle().await;
    let mails = channel_mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("To: desk@fund.example"));
    assert!(mails[0].contains("Subject: Confirm your address"));
    assert_eq!(usage_of(&app, &sub_token, &sub).await, 0);
    let own = app
        .get(&format!("/v1/subscriptions/{sub}"), Some(&sub_token))
        .await;
    assert!(own.body.get("email_confirmed_at").is_none());
    let path = confirmation_path(&mails[0]);
    let mut forged = path.clone();
    forged.pop();
    forged.push(if path.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(app.get(&forged, None).await.status, 404);
    let confirmed = app.get(&path, None).await;
    assert_eq!(confirmed.status, 200, "{:?}", confirmed.body);
    assert_eq!(confirmed.body["subscription_id"], sub.as_str());
    assert_eq!(confirmed.body["address"], "desk@fund.example");
    assert_eq!(
        app.get(&path, None).await.body["confirmed_at"],
        confirmed.body["confirmed_at"],
        "opening the link again changes nothing"
    );
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("d", 150.0), ("e", 10.0), ("f", 200.0)]),
    )
    .await;
    eventually("two mails arrive", || async { channel_mails().len() == 3 }).await;
    let mails = channel_mails()[1..].to_vec();
    assert!(
        mails
            .iter()
            .all(|m| m.contains("To: desk@fund.example") && m.contains("1 new record from feed"))
    );
    assert!(
        mails.iter().any(|m| m.contains("\"usd\": 162"))
            && mails.iter().any(|m| m.contains("\"usd\": 216"))
    );
    eventually("both are counted", || async {
        usage_of(&app, &sub_token, &sub).await == 2
    })
    .await;
    // A new address is unconfirmed again: a link goes to it, records do not.
    let moved = app
        .patch(
            &format!("/v1/subscriptions/{sub}"),
            Some(&sub_token),
            json!({"channel": {"type": "email", "address": "ops@fund.example"}}),
        )
        .await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    assert!(moved.body.get("email_confirmed_at").is_none());
    assert_eq!(
        app.get(&path, None).await.status,
        404,
        "the old link is void"
    );
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("g", 300.0)]),
    )
    .await;
    app.idle().await;
    let mails = channel_mails();
    assert_eq!(mails.len(), 4, "only the new link: {mails:?}");
    assert!(mails[3].contains("To: ops@fund.example") && mails[3].contains("Subject: Confirm"));
    assert_eq!(usage_of(&app, &sub_token, &sub).await, 2);
}

/// The path of the confirmation link in a mail (lettre wraps long lines as quoted-printable).
fn confirmation_path(mail: &str) -> String {
    let text = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let at = text
        .find("/v1/email-confirmations/")
        .unwrap_or_else(|| panic!("no link in {text}"));
    text[at..].split_whitespace().next().unwrap().to_owned()
}

#[tokio::test]
async fn without_an_smtp_server_mail_goes_to_the_outbox_folder() {
    let app = spawn_app().await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.subscriber("bob").await;
    let created = app.post("/v1/subscriptions", Some(&sub_token), json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "email", "address": "desk@fund.example"},
        "batch": {"max_records": 10, "max_wait_ms": 0}})).await;
    let outbox = app.dir.path().join("outbox");
    let mails = || {
        let mut paths: Vec<_> = std::fs::read_dir(&outbox)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .filter(|m| m.contains("To: desk@fund.example"))
            .collect::<Vec<_>>()
    };
    if BACKEND_UNDER_TEST == Backend::Aws {
        app.post(
            &format!("/v1/sources/{source}/records"),
            Some(&vendor),
            trades(&[("a", 150.0), ("c", 200.0)]),
        )
        .await;
        // SNS sends the aws shape's email: nothing goes to the outbox, every record counts.
        let sub = created.body["id"].as_str().unwrap().to_owned();
        eventually("both are counted", || async {
            usage_of(&app, &sub_token, &sub).await == 2
        })
        .await;
        assert_eq!(mails().len(), 0);
        return;
    }
    let confirmation = mails();
    assert_eq!(
        confirmation.len(),
        1,
        "the confirmation link: {confirmation:?}"
    );
    let link = confirmation_path(&confirmation[0]);
    assert_eq!(app.get(&link, None).await.status, 200);
    app.post(
        &format!("/v1/sources/{source}/records"),
        Some(&vendor),
        trades(&[("a", 150.0), ("c", 200.0)]),
    )
    .await;
    eventually("a mail lands in the outbox", || async {
        mails().len() == 2
    })
    .await;
    let text = mails().pop().unwrap();
    assert!(text.contains("2 new records from feed"), "{text}");
}

#[tokio::test]
async fn http_poll_sources_are_fetched_on_schedule_with_dedup_and_their_failures_shown() {
    use std::sync::{Arc, Mutex};
    let answers: Arc<Mutex<Vec<(u16, String)>>> = Arc::new(Mutex::new(vec![
        (200, r#"[{"id": "p1", "sym": "AAPL", "price": 150}, {"id": "p2", "sym": "AAPL", "price": 50}]"#.into()),
        (500, "down".into()),
        (200, "{\"id\": \"p2\", \"sym\": \"AAPL\", \"price\": 50}\n{\"id\": \"p3\", \"sym\": \"AAPL\", \"price\": 300}\n".into()),
    ]));
    let served = answers.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/prices", listener.local_addr().unwrap());
    let app_router = axum::Router::new().route(
        "/prices",
        axum::routing::get(move || {
            let served = served.clone();
            async move {
                let mut answers = served.lock().unwrap();
                let (status, body) = if answers.len() > 1 {
                    answers.remove(0)
                } else {
                    answers[0].clone()
                };
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app_router).await.unwrap() });

    let clock = TestClock::new();
    let app = spawn_on(|c| c.allow_private_webhooks = true, clock.clone()).await;
    let (vendor, _, _) = vendor_feed(&app).await;
    let source = app
        .post(
            "/v1/sources",
            Some(&vendor),
            json!({"name": "prices", "kind": "http_poll", "url": url, "every": "10s"}),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut feed = feed_body(&source, "Polled");
    feed["pipeline"] = json!({"rules": [{"type": "filter", "expr": "record.price > 100.0"}]});
    let feed = app.post("/v1/feeds", Some(&vendor), feed).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, sub_token) = app.subscriber("bob").await;
    let sub = app.subscribe(&sub_token, &feed).await;
    let path = format!("/v1/sources/{source}");
    eventually("the first poll succeeds", || async {
        app.get(&path, Some(&vendor)).await.body["last_success_at"].is_string()
    })
    .await;
    clock.advance(Duration::from_secs(10));
    eventually("the second poll fails visibly", || async {
        app.get(&path, Some(&vendor)).await.body["last_error"] == "the source answered 500"
    })
    .await;
    clock.advance(Duration::from_secs(10));
    eventually("the third poll clears the error", || async {
        app.get(&path, Some(&vendor)).await.body["last_error"].is_null()
    })
    .await;
    let pulled = format!("/v1/subscriptions/{sub}/records?after=0");
    eventually(
        "p1 and p3 flow, p2 is filtered and its repeat is a duplicate",
        || async {
            let items = app.get(&pulled, Some(&sub_token)).await.body["items"].clone();
            let prices: Vec<Value> = items
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["record"]["data"]["price"].clone())
                .collect();
            prices == vec![json!(150), json!(300)]
        },
    )
    .await;
}

#[tokio::test]
async fn the_same_ids_pushed_concurrently_make_one_record_one_output_one_delivery_and_one_count() {
    let app = spawn_with(|c| c.allow_private_webhooks = true).await;
    let (vendor, feed, source) = vendor_feed(&app).await;
    let (_, sub_token) = app.subscriber("bob").await;
    let receiver = Receiver::start(vec![]).await;
    let (hooked, _) = subscribe_webhook(&app, &sub_token, &feed, &receiver.url, json!({})).await;
    let pulled = app.subscribe(&sub_token, &feed).await;
    let ids: Vec<(String, f64)> = (0..50)
        .map(|i| (format!("same-{i}"), 150.0 + f64::from(i)))
        .collect();
    let batch: Vec<(&str, f64)> = ids.iter().map(|(id, p)| (id.as_str(), *p)).collect();
    let path = format!("/v1/sources/{source}/records");
    let (a, b, c) = tokio::join!(
        app.post(&path, Some(&vendor), trades(&batch)),
        app.post(&path, Some(&vendor), trades(&batch)),
        app.post(&path, Some(&vendor), trades(&batch))
    );
    let accepted: u64 = [&a, &b, &c]
        .iter()
        .map(|r| r.body["accepted"].as_u64().unwrap())
        .sum();
    let duplicates: u64 = [&a, &b, &c]
        .iter()
        .map(|r| r.body["duplicates"].as_u64().unwrap())
        .sum();
    let expected = match BACKEND_UNDER_TEST {
        Backend::Local => (50, 100),
        // Queued, all of them; the ingest handler stores each id once.
        Backend::Aws => (150, 0),
    };
    assert_eq!((accepted, duplicates), expected);
    eventually("every record is delivered", || async {
        receiver.hits().len() >= 50
    })
    .await;
    let pull = format!("/v1/subscriptions/{pulled}/records?after=0&limit=1000");
    eventually("every record can be pulled", || async {
        app.get(&pull, Some(&sub_token)).await.body["items"]
            .as_array()
            .unwrap()
            .len()
            == 50
    })
    .await;
    app.idle().await;
    let mut seen: Vec<String> = receiver
        .hits()
        .iter()
        .map(|h| h.json()["id"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(receiver.hits().len(), 50, "one delivery per record");
    assert_eq!(seen.len(), 50);
    eventually("the webhook deliveries are counted", || async {
        usage_of(&app, &sub_token, &hooked).await == 50
    })
    .await;
    app.idle().await;
    assert_eq!(
        usage_of(&app, &sub_token, &hooked).await,
        50,
        "and only once each"
    );
    assert_eq!(usage_of(&app, &sub_token, &pulled).await, 50);
}
