//! Billing end to end: records delivered through the pipeline become usage, a billing run
//! turns usage into invoices whose quantities equal the acknowledged deliveries, the CSV
//! export parses back to the same numbers, late usage is billed once on the next month, and
//! payouts split the gross.

use crate::helpers::*;
use crate::receiver::{TestClock, eventually};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use time::macros::datetime;
use wharf_core::domain::Role;

pub(crate) fn dec(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
    .unwrap()
}

/// A minimal RFC 4180 reader: quoted fields with doubled quotes, CRLF rows.
pub(crate) fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

pub(crate) async fn pulled(app: &TestApp, token: &str, sub: &str, n: usize) {
    let path = format!("/v1/subscriptions/{sub}/records?after=0");
    eventually(&format!("{n} records are pulled"), || async {
        app.get(&path, Some(token)).await.body["items"]
            .as_array()
            .map_or(0, Vec::len)
            == n
    })
    .await;
}

const WEBHOOK_SECRET: &str = "whsec_billing_test";

fn id_of(invoice: &Value) -> String {
    invoice["id"].as_str().unwrap().to_owned()
}

/// POSTs a Stripe event signed with `secret` at unix time `t`: (status, body).
async fn stripe_post(app: &TestApp, event: &Value, t: i64, secret: &str) -> (u16, Value) {
    let body = serde_json::to_vec(event).unwrap();
    let signature = wharf_stripe::signature::sign(secret, &body, t).unwrap();
    let res = app
        .client
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn trades(ids: &[&str]) -> Value {
    json!({"records": ids.iter().map(|id| json!({"id": id, "data": {"sym": "AAPL", "price": 150.0, "px": 150.0}})).collect::<Vec<_>>()})
}

/// November closed: Acme sells a feed (30.00 a month, 2 deliveries included, then 0.015
/// each); Bob subscribed at 12:00 on the 20th and pulled 5 records; Eve subscribed to
/// nothing; the clock is at 01:00 on 1 December and the month's run is done.
struct ClosedNovember {
    app: TestApp,
    clock: std::sync::Arc<TestClock>,
    /// The push path of Acme's source.
    records: String,
    /// Acme's feed.
    feed: String,
    sub: String,
    bob_id: String,
    /// The month's one invoice.
    invoice: Value,
    /// The run's answer.
    run: Res,
}

impl ClosedNovember {
    async fn new() -> ClosedNovember {
        let clock = TestClock::new();
        clock.set(datetime!(2026-11-20 12:00 UTC));
        let app = spawn_on(
            |c| {
                c.stripe = Some(wharf::config::StripeConfig {
                    secret_key: wharf::config::Secret("sk_test_unused".into()),
                    webhook_secret: wharf::config::Secret(WEBHOOK_SECRET.into()),
                    connect_webhook_secret: None,
                    api_base: "http://127.0.0.1:9".into(),
                })
            },
            clock.clone(),
        )
        .await;
        let signed_up = app
            .post(
                "/v1/vendors",
                None,
                json!({"name": "Acme", "admin_email": "acme@vendor.example", "admin_password": PASSWORD}),
            )
            .await;
        assert_eq!(signed_up.status, 201);
        for (name, email) in [("Bob", "bob@sub.example"), ("Eve", "eve@sub.example")] {
            let body = json!({"name": name, "email": email, "password": PASSWORD});
            assert_eq!(app.post("/v1/subscribers", None, body).await.status, 201);
        }
        let bob = app.login("bob@sub.example").await;
        let bob_id = app.get("/v1/me", Some(&bob)).await.body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let vendor = app.login("acme@vendor.example").await;
        let source = app.source(&vendor).await;
        let mut body = feed_body(&source, "Trades");
        body["plans"] = json!([{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "30.00",
            "included_deliveries": 2, "tiers": [{"up_to": null, "unit_price": "0.0150"}]}]);
        let feed = app.post("/v1/feeds", Some(&vendor), body).await;
        assert_eq!(feed.status, 201, "{:?}", feed.body);
        let feed = feed.body["id"].as_str().unwrap().to_owned();
        let sub = app.subscribe(&bob, &feed).await;
        let records = format!("/v1/sources/{source}/records");
        let pushed = app
            .post(&records, Some(&vendor), trades(&["a", "b", "c", "d", "e"]))
            .await;
        assert_eq!(pushed.status, 202);
        pulled(&app, &bob, &sub, 5).await;
        // Tokens expire as the clock jumps, so everyone logs in again after each jump.
        clock.set(datetime!(2026-12-01 01:00 UTC));
        let finance = app.platform(Role::PlatformFinance).await;
        let run = app
            .post(
                "/v1/billing/runs",
                Some(&finance),
                json!({"period": "2026-11"}),
            )
            .await;
        let list = app.get("/v1/invoices?period=2026-11", Some(&finance)).await;
        let invoice = list.body["items"][0].clone();
        ClosedNovember {
            app,
            clock,
            records,
            feed,
            sub,
            bob_id,
            invoice,
            run,
        }
    }

    fn invoice_id(&self) -> String {
        id_of(&self.invoice)
    }

    fn line(&self, kind: &str) -> Value {
        self.invoice["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} line in {}", self.invoice))
    }
}

#[tokio::test]
async fn a_billing_run_needs_an_ended_month_in_order_and_platform_finance() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-20 12:00 UTC));
    let app = spawn_on(|_| {}, clock.clone()).await;
    let finance = app.platform(Role::PlatformFinance).await;
    let (_, vendor) = app.vendor("Acme").await;
    let run = |token: String, period: &str| {
        let body = json!({"period": period});
        let app = &app;
        async move { app.post("/v1/billing/runs", Some(&token), body).await }
    };
    let early = run(finance.clone(), "2026-11").await;
    assert_eq!(early.status, 422, "{:?}", early.body);
    assert_eq!(early.body["errors"][0]["path"], "period");
    assert_eq!(run(vendor, "2026-11").await.status, 403);
    assert_eq!(run(finance, "2026-13").await.status, 422);
    clock.set(datetime!(2027-01-01 00:30 UTC));
    let finance = app.platform(Role::PlatformFinance).await;
    assert_eq!(
        run(finance.clone(), "2027-01").await.status,
        422,
        "January has not ended"
    );
    assert_eq!(run(finance.clone(), "2026-12").await.status, 201);
    let out_of_order = run(finance, "2026-10").await;
    assert_eq!(out_of_order.status, 409, "{:?}", out_of_order.body);
}

#[tokio::test]
async fn a_closed_month_has_one_invoice_of_the_prorated_fee_and_the_acknowledged_usage() {
    let month = ClosedNovember::new().await;
    let app = &month.app;
    assert_eq!(month.run.status, 201, "{:?}", month.run.body);
    assert_eq!(month.run.body["status"], "completed");
    assert_eq!(month.run.body["invoices"], 1);
    let finance = app.platform(Role::PlatformFinance).await;
    let again = app
        .post(
            "/v1/billing/runs",
            Some(&finance),
            json!({"period": "2026-11"}),
        )
        .await;
    assert_eq!(again.status, 200, "a second run creates nothing");
    let list = app.get("/v1/invoices?period=2026-11", Some(&finance)).await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        1,
        "one invoice, whatever the number of runs"
    );
    let invoice = &month.invoice;
    assert_eq!(invoice["subscriber_id"], month.bob_id.as_str());
    assert_eq!(invoice["status"], "open");
    let (fee, usage) = (month.line("fee"), month.line("usage"));
    // Subscribed at 12:00 on the 20th: 10.5 of 30 days = 0.35 of 30.00 = 10.50.
    assert_eq!(dec(&fee["quantity"]), Decimal::from_str("0.35").unwrap());
    assert_eq!(dec(&fee["amount"]), Decimal::from_str("10.50").unwrap());
    // 5 acknowledged deliveries, 2 included: 3 × 0.015 = 0.045 → 0.05 (half-up).
    assert_eq!(dec(&usage["quantity"]), Decimal::from(5));
    assert_eq!(dec(&usage["amount"]), Decimal::from_str("0.05").unwrap());
    assert_eq!(dec(&invoice["total"]), Decimal::from_str("10.55").unwrap());
    let bob = app.login("bob@sub.example").await;
    let usage_api = app
        .get(
            "/v1/usage?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z",
            Some(&bob),
        )
        .await;
    let counted: u64 = usage_api
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["deliveries"].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted, 5,
        "invoice quantity equals the acknowledged deliveries"
    );
}

#[tokio::test]
async fn the_invoice_csv_carries_the_same_numbers_one_row_per_line() {
    let month = ClosedNovember::new().await;
    let app = &month.app;
    let finance = app.platform(Role::PlatformFinance).await;
    let csv = app
        .client
        .get(app.url("/v1/invoices?period=2026-11"))
        .bearer_auth(&finance)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let rows = parse_csv(&csv.text().await.unwrap());
    assert_eq!(rows[0][..3], ["invoice_id", "period", "vendor_id"]);
    let lines = month.invoice["lines"].as_array().unwrap();
    assert_eq!(rows.len(), 1 + lines.len());
    let col = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
    let csv_total: Decimal = rows[1..]
        .iter()
        .map(|r| Decimal::from_str(&r[col("amount")]).unwrap())
        .sum();
    assert_eq!(csv_total, dec(&month.invoice["total"]));
    let usage_row = rows[1..]
        .iter()
        .find(|r| r[col("kind")] == "usage")
        .unwrap();
    assert_eq!(usage_row[col("invoice_id")], month.invoice_id());
    assert_eq!(usage_row[col("quantity")], "5");
    assert_eq!(usage_row[col("currency")], "usd");
}

#[tokio::test]
async fn invoices_and_payouts_are_seen_by_their_subscriber_vendor_and_finance_only() {
    let month = ClosedNovember::new().await;
    let app = &month.app;
    let id = month.invoice_id();
    let (bob, eve, vendor) = (
        app.login("bob@sub.example").await,
        app.login("eve@sub.example").await,
        app.login("acme@vendor.example").await,
    );
    let status =
        |path: String, token: String| async move { app.get(&path, Some(&token)).await.status };
    assert_eq!(status(format!("/v1/invoices/{id}"), bob.clone()).await, 200);
    assert_eq!(status(format!("/v1/invoices/{id}"), eve.clone()).await, 404);
    assert_eq!(
        app.get("/v1/invoices", Some(&eve)).await.body["items"],
        json!([])
    );
    // The vendor's first admin also holds vendor_finance: it sees its tenant's invoices;
    // another vendor sees none of them.
    let own = app.get("/v1/invoices", Some(&vendor)).await;
    assert_eq!(own.body["items"][0]["id"], id.as_str());
    let (_, other) = app.vendor("Other").await;
    assert_eq!(
        app.get("/v1/invoices", Some(&other)).await.body["items"],
        json!([])
    );
    assert_eq!(
        status(format!("/v1/invoices/{id}"), other.clone()).await,
        404
    );
    assert_eq!(app.get("/v1/payouts", Some(&other)).await.body, json!([]));
    assert_eq!(app.get("/v1/payouts", Some(&bob)).await.status, 403);
    // Payouts: 20% platform fee by default.
    let finance = app.platform(Role::PlatformFinance).await;
    let payouts = app.get("/v1/payouts?period=2026-11", Some(&finance)).await;
    assert_eq!(payouts.status, 200);
    let payout = &payouts.body[0];
    assert_eq!(dec(&payout["gross"]), Decimal::from_str("10.55").unwrap());
    assert_eq!(
        dec(&payout["platform_fee"]),
        Decimal::from_str("2.11").unwrap()
    );
    assert_eq!(dec(&payout["net"]), Decimal::from_str("8.44").unwrap());
}

#[tokio::test]
async fn stripe_events_move_the_invoice_once_per_event_and_need_a_fresh_signature() {
    let month = ClosedNovember::new().await;
    let app = &month.app;
    let id = month.invoice_id();
    let bob = app.login("bob@sub.example").await;
    let event = |event: &str, kind: &str| {
        json!({"id": event, "type": kind, "data": {"object": {"id": "in_test_1", "object": "invoice",
            "metadata": {"wharf_invoice_id": id}}}})
    };
    let now = datetime!(2026-12-01 01:00 UTC).unix_timestamp();
    let status_of_invoice = || async {
        app.get(&format!("/v1/invoices/{id}"), Some(&bob))
            .await
            .body["status"]
            .clone()
    };
    let failed = stripe_post(
        app,
        &event("evt_1", "invoice.payment_failed"),
        now,
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(
        (failed.0, failed.1["outcome"].clone()),
        (200, json!("applied"))
    );
    let read = app.get(&format!("/v1/invoices/{id}"), Some(&bob)).await;
    assert_eq!(read.body["status"], "failed");
    assert_eq!(read.body["stripe_invoice_id"], "in_test_1");
    let paid = stripe_post(app, &event("evt_2", "invoice.paid"), now, WEBHOOK_SECRET).await;
    assert_eq!(paid.1["outcome"], "applied");
    let replayed = stripe_post(
        app,
        &event("evt_1", "invoice.payment_failed"),
        now,
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(
        replayed.1["outcome"], "duplicate",
        "a redelivered event changes nothing"
    );
    assert_eq!(status_of_invoice().await, "paid");
    let forged = stripe_post(
        app,
        &event("evt_3", "invoice.payment_failed"),
        now,
        "whsec_wrong",
    )
    .await;
    assert_eq!(forged.0, 400, "a wrong signature is a bad request");
    let stale = stripe_post(
        app,
        &event("evt_4", "invoice.payment_failed"),
        now - 3600,
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(stale.0, 400, "outside the 5-minute tolerance");
    assert_eq!(stale.1["type"], "/problems/bad-signature");
    let unsigned = app
        .client
        .post(app.url("/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&event("evt_6", "invoice.payment_failed")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 400, "no Stripe-Signature header");
    let other = stripe_post(
        app,
        &json!({"id": "evt_5", "type": "customer.created", "data": {"object": {}}}),
        now,
        WEBHOOK_SECRET,
    )
    .await;
    assert_eq!(other.1["outcome"], "ignored");
    assert_eq!(status_of_invoice().await, "paid");
}

#[tokio::test]
async fn usage_acknowledged_after_a_run_is_billed_once_as_an_adjustment_of_the_next_month() {
    let month = ClosedNovember::new().await;
    let app = &month.app;
    // Two deliveries of November acknowledged after its run: billed once, on December.
    month.clock.set(datetime!(2026-11-30 23:00 UTC));
    let (vendor, bob) = (
        app.login("acme@vendor.example").await,
        app.login("bob@sub.example").await,
    );
    let late = app
        .post(&month.records, Some(&vendor), trades(&["f", "g"]))
        .await;
    assert_eq!(late.status, 202);
    pulled(app, &bob, &month.sub, 7).await;
    month.clock.set(datetime!(2027-01-01 00:30 UTC));
    let (finance, bob) = (
        app.platform(Role::PlatformFinance).await,
        app.login("bob@sub.example").await,
    );
    let december = app
        .post(
            "/v1/billing/runs",
            Some(&finance),
            json!({"period": "2026-12"}),
        )
        .await;
    assert_eq!(december.status, 201, "{:?}", december.body);
    let dec_invoices = app.get("/v1/invoices?period=2026-12", Some(&bob)).await;
    let dec_lines = dec_invoices.body["items"][0]["lines"]
        .as_array()
        .unwrap()
        .clone();
    let adjustment = dec_lines
        .iter()
        .find(|l| l["kind"] == "adjustment")
        .unwrap();
    assert_eq!(adjustment["service_period"], "2026-11");
    assert_eq!(dec(&adjustment["quantity"]), Decimal::from(2));
    // Billed 5 (0.045 before rounding); 7 cost 5 × 0.015 = 0.075; the difference 0.030.
    assert_eq!(
        dec(&adjustment["amount"]),
        Decimal::from_str("0.03").unwrap()
    );
    let dec_fee = dec_lines.iter().find(|l| l["kind"] == "fee").unwrap();
    assert_eq!(dec(&dec_fee["amount"]), Decimal::from_str("30.00").unwrap());
}

#[tokio::test]
async fn late_usage_is_priced_at_the_version_its_month_was_rated_at() {
    let month = ClosedNovember::new().await;
    let app = &month.app;
    // On 30 November Acme reprices (0.10 a delivery) and moves Bob to it from 1 December;
    // then two deliveries of November are acknowledged, after its run.
    month.clock.set(datetime!(2026-11-30 22:00 UTC));
    let vendor = app.login("acme@vendor.example").await;
    let path = format!("/v1/feeds/{}", month.feed);
    let plans = json!({"plans": [{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "30.00",
        "included_deliveries": 2, "tiers": [{"up_to": null, "unit_price": "0.10"}]}]});
    assert_eq!(app.patch(&path, Some(&vendor), plans).await.status, 200);
    let moved = app
        .post(&format!("{path}/plans/pro/move"), Some(&vendor), json!({}))
        .await;
    assert_eq!(
        moved.body["takes_effect_at"], "2026-12-01T00:00:00Z",
        "{:?}",
        moved.body
    );
    month.clock.set(datetime!(2026-11-30 23:00 UTC));
    let (vendor, bob) = (
        app.login("acme@vendor.example").await,
        app.login("bob@sub.example").await,
    );
    let late = app
        .post(&month.records, Some(&vendor), trades(&["f", "g"]))
        .await;
    assert_eq!(late.status, 202);
    pulled(app, &bob, &month.sub, 7).await;
    month.clock.set(datetime!(2027-01-01 00:30 UTC));
    let (finance, bob) = (
        app.platform(Role::PlatformFinance).await,
        app.login("bob@sub.example").await,
    );
    let december = app
        .post(
            "/v1/billing/runs",
            Some(&finance),
            json!({"period": "2026-12"}),
        )
        .await;
    assert_eq!(december.status, 201, "{:?}", december.body);
    let invoices = app.get("/v1/invoices?period=2026-12", Some(&bob)).await;
    let lines = invoices.body["items"][0]["lines"]
        .as_array()
        .expect("lines")
        .clone();
    let adjustment = lines
        .iter()
        .find(|l| l["kind"] == "adjustment")
        .expect("an adjustment line");
    assert_eq!(adjustment["plan_version"], 1, "{adjustment}");
    // November's prices: 7 cost 5 × 0.015, 5 were billed at 3 × 0.015: 0.03, not 0.20.
    assert_eq!(
        dec(&adjustment["amount"]),
        Decimal::from_str("0.03").expect("a decimal")
    );
    let fee = lines
        .iter()
        .find(|l| l["kind"] == "fee")
        .expect("a fee line");
    assert_eq!(
        fee["plan_version"], 2,
        "December is rated at the version moved to"
    );
}
