//! Backfill: history bought with a subscription. It goes out first on the subscription's
//! channel, only what its filter admits, is counted apart from the month's deliveries, is
//! billed on a line of its own (at the plan's backfill price, or through its tiers), may be
//! replayed, and a request for more than a backfill may hold is refused whole.

use crate::billing::{dec, pulled};
use crate::entitlements::symbols;
use crate::helpers::*;
use crate::prices::close;
use crate::receiver::{Receiver, TestClock, eventually};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use time::macros::datetime;

fn plans() -> Value {
    json!([
        {"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "0.00",
         "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.01"}],
         "backfill_unit_price": "0.001"},
        {"id": "std", "name": "Std", "currency": "usd", "monthly_fee": "0.00",
         "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.02"}]}
    ])
}

fn records(from: usize, to: usize) -> Value {
    json!({"records": (from..to).map(|i| json!({"id": format!("r{i}"), "data": {"sym": format!("S{i}"), "price": 150.0, "px": 150.0}})).collect::<Vec<_>>()})
}

/// A vendor with a published feed on `plans()`, its source, and a probe subscriber that
/// shows when records have reached the feed: (vendor token, source, feed, probe).
async fn feed_with_probe(app: &TestApp) -> (String, String, String, (String, String)) {
    let (_, vendor) = app.vendor("Acme").await;
    let source = app.source(&vendor).await;
    let mut body = feed_body(&source, "Trades");
    body["plans"] = plans();
    let feed = app.post("/v1/feeds", Some(&vendor), body).await;
    assert_eq!(feed.status, 201, "{:?}", feed.body);
    let feed = feed.body["id"].as_str().expect("an id").to_owned();
    let (_, watcher) = app.subscriber("Watcher").await;
    let probe = app.subscribe(&watcher, &feed).await;
    (vendor, source, feed, (watcher, probe))
}

async fn push(app: &TestApp, vendor: &str, source: &str, body: Value) {
    let res = app
        .post(&format!("/v1/sources/{source}/records"), Some(vendor), body)
        .await;
    assert_eq!(res.status, 202, "{:?}", res.body);
}

/// (deliveries, backfill) the usage API shows for `sub`.
async fn usage(app: &TestApp, token: &str, sub: &str) -> (u64, u64) {
    let path = format!(
        "/v1/usage?subscription_id={sub}&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z"
    );
    let res = app.get(&path, Some(token)).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    res.body
        .as_array()
        .expect("points")
        .iter()
        .fold((0, 0), |(d, b), p| {
            let n = |k: &str| p[k].as_u64().expect("a count");
            (d + n("deliveries"), b + n("backfill"))
        })
}

fn line<'a>(invoices: &'a Value, sub: &str, kind: &str) -> &'a Value {
    invoices["items"]
        .as_array()
        .expect("a list of invoices")
        .iter()
        .flat_map(|inv| inv["lines"].as_array().expect("lines").iter())
        .find(|l| l["subscription_id"] == sub && l["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} line of {sub} in {invoices}"))
}

fn amount(s: &str) -> Decimal {
    Decimal::from_str(s).expect("a decimal")
}

#[tokio::test]
async fn backfill_goes_out_first_is_counted_apart_and_is_billed_on_its_own_line() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-02 10:00 UTC));
    let app = spawn_on(|c| c.allow_private_webhooks = true, clock.clone()).await;
    let (vendor, source, feed, (watcher, probe)) = feed_with_probe(&app).await;
    push(&app, &vendor, &source, records(0, 5)).await;
    pulled(&app, &watcher, &probe, 5).await;

    clock.set(datetime!(2026-11-02 10:05 UTC));
    let (_, bob) = app.subscriber("Bob").await;
    let body = json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"},
                      "backfill": {"records": 3}});
    let bobs = app.post("/v1/subscriptions", Some(&bob), body).await;
    assert_eq!(bobs.status, 201, "{:?}", bobs.body);
    assert_eq!(bobs.body["backfill"]["records"], 3, "{:?}", bobs.body);
    let bobs = bobs.body["id"].as_str().expect("an id").to_owned();

    let (_, eve) = app.subscriber("Eve").await;
    let receiver = Receiver::start(vec![]).await;
    // Eve's filter leaves out S1: a backfill holds what the subscription would have got.
    let body = json!({"feed_id": feed, "plan_id": "std",
                      "channel": {"type": "webhook", "url": receiver.url},
                      "filter": "record.symbol != 'S1'",
                      "backfill": {"from": "2026-11-02T09:59:00Z"}});
    let eves = app.post("/v1/subscriptions", Some(&eve), body).await;
    assert_eq!(eves.status, 201, "{:?}", eves.body);
    assert_eq!(eves.body["backfill"]["records"], 4, "{:?}", eves.body);
    let eves = eves.body["id"].as_str().expect("an id").to_owned();

    assert_eq!(
        symbols(&app, &bob, &bobs, None).await,
        ["S2", "S3", "S4"],
        "the newest three, first"
    );
    eventually("Eve's backfill arrives", || async {
        receiver.hits().len() == 4
    })
    .await;

    clock.set(datetime!(2026-11-02 10:10 UTC));
    push(&app, &vendor, &source, records(5, 7)).await;
    pulled(&app, &watcher, &probe, 7).await;
    assert_eq!(symbols(&app, &bob, &bobs, None).await, ["S5", "S6"]);
    eventually("Eve gets what came since", || async {
        receiver.hits().len() == 6
    })
    .await;
    // Deliveries are sent concurrently: they arrive in any order.
    let mut delivered: Vec<String> = receiver
        .hits()
        .iter()
        .map(|h| {
            h.json()["data"]["symbol"]
                .as_str()
                .expect("a symbol")
                .to_owned()
        })
        .collect();
    delivered.sort();
    assert_eq!(delivered, ["S0", "S2", "S3", "S4", "S5", "S6"]);
    app.idle().await;
    assert_eq!(usage(&app, &bob, &bobs).await, (2, 3));
    assert_eq!(usage(&app, &eve, &eves).await, (2, 4));

    // Replay reaches back to the backfill, not before it, and bills nothing again.
    let replay = |from: &str| {
        let (app, eve, path) = (&app, &eve, format!("/v1/subscriptions/{eves}/replay"));
        let body = json!({"from": from, "to": "2026-11-03T00:00:00Z"});
        async move { app.post(&path, Some(eve), body).await }
    };
    let early = replay("2026-11-01T00:00:00Z").await;
    assert_eq!(early.status, 422, "{:?}", early.body);
    assert_eq!(early.body["errors"][0]["path"], "from");
    let again = replay("2026-11-02T10:00:00Z").await;
    assert_eq!(again.status, 202, "{:?}", again.body);
    assert_eq!(again.body["records"], 6, "{:?}", again.body);
    eventually("the replay arrives", || async {
        receiver.hits().len() == 12
    })
    .await;
    app.idle().await;
    assert_eq!(usage(&app, &eve, &eves).await, (2, 4));

    clock.set(datetime!(2026-12-01 01:00 UTC));
    let (finance, run) = close(&app, "2026-11").await;
    assert_eq!(run.status, 201, "{:?}", run.body);
    let invoices = app.get("/v1/invoices?period=2026-11", Some(&finance)).await;
    let bob_backfill = line(&invoices.body, &bobs, "backfill");
    assert_eq!(
        dec(&bob_backfill["quantity"]),
        Decimal::from(3),
        "{bob_backfill}"
    );
    assert_eq!(dec(&bob_backfill["unit_price"]), amount("0.001"));
    assert_eq!(dec(&bob_backfill["amount"]), amount("0.00"), "0.003 rounds");
    let bob_usage = line(&invoices.body, &bobs, "usage");
    assert_eq!(dec(&bob_usage["amount"]), amount("0.02"));
    // Without a backfill price, backfill goes through the tiers after the month's records.
    let eve_backfill = line(&invoices.body, &eves, "backfill");
    assert_eq!(
        dec(&eve_backfill["amount"]),
        amount("0.08"),
        "{eve_backfill}"
    );
    assert_eq!(
        dec(&line(&invoices.body, &eves, "usage")["amount"]),
        amount("0.04")
    );
}

#[tokio::test]
async fn a_backfill_that_is_malformed_or_too_large_is_refused_and_nothing_is_made() {
    let app = spawn_with(|c| c.limits.quotas.records_per_backfill = 3).await;
    let (vendor, source, feed, (watcher, probe)) = feed_with_probe(&app).await;
    push(&app, &vendor, &source, records(0, 5)).await;
    pulled(&app, &watcher, &probe, 5).await;
    let (_, bob) = app.subscriber("Bob").await;
    let long_ago = "2020-01-01T00:00:00Z";
    let refused = [
        (json!({"records": 2, "from": long_ago}), "backfill"),
        (json!({}), "backfill"),
        (json!({"records": 0}), "backfill.records"),
        (json!({"records": 4}), "backfill.records"),
        (json!({"from": "2999-01-01T00:00:00Z"}), "backfill.from"),
        // Five records since then; a backfill holds at most three.
        (json!({"from": long_ago}), "backfill.from"),
        (json!({"records": 2, "extra": 1}), "backfill"),
    ];
    for (backfill, path) in refused {
        let body = json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"},
                          "backfill": backfill});
        let res = app.post("/v1/subscriptions", Some(&bob), body).await;
        assert_eq!(res.status, 422, "{backfill}: {:?}", res.body);
        let at = res.body["errors"][0]["path"].as_str().unwrap_or_default();
        assert!(at.starts_with(path), "{backfill}: {:?}", res.body);
    }
    // In the aws shape an email channel is the feed's topic's, which carries only new records.
    let body = json!({"feed_id": feed, "plan_id": "pro",
                      "channel": {"type": "email", "address": "bob@sub.example"},
                      "backfill": {"records": 1}});
    if BACKEND_UNDER_TEST == Backend::Aws {
        let res = app.post("/v1/subscriptions", Some(&bob), body).await;
        assert_eq!(res.status, 422, "{:?}", res.body);
        assert_eq!(res.body["errors"][0]["path"], "backfill", "{:?}", res.body);
    }
    let mine = app.get("/v1/subscriptions", Some(&bob)).await;
    assert_eq!(mine.body["items"], json!([]), "{:?}", mine.body);

    // The most a backfill holds, through the filter: S1 and S3 pass it, and no more exist.
    let body = json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"},
                      "filter": "record.symbol == 'S1' || record.symbol == 'S3'",
                      "backfill": {"records": 3}});
    let res = app.post("/v1/subscriptions", Some(&bob), body).await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    assert_eq!(res.body["backfill"]["records"], 2, "{:?}", res.body);
    let sub = res.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(symbols(&app, &bob, &sub, None).await, ["S1", "S3"]);

    // A backfill not yet read when the subscription is paused goes with the paused period:
    // no cursor reaches it after the resume, and none of it is counted.
    let (_, carol) = app.subscriber("Carol").await;
    let body = json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"},
                      "backfill": {"records": 2}});
    let res = app.post("/v1/subscriptions", Some(&carol), body).await;
    assert_eq!(res.status, 201, "{:?}", res.body);
    let sub = res.body["id"].as_str().expect("an id").to_owned();
    for status in ["paused", "active"] {
        let path = format!("/v1/subscriptions/{sub}");
        let res = app
            .patch(&path, Some(&carol), json!({"status": status}))
            .await;
        assert_eq!(res.status, 200, "{:?}", res.body);
    }
    let page = app
        .get(
            &format!("/v1/subscriptions/{sub}/records?after=0"),
            Some(&carol),
        )
        .await;
    assert_eq!(page.body["items"], json!([]), "{:?}", page.body);
}
