//! Prices are versions: a plan's prices never change under a subscription that bought them.
//! A change puts a new version on sale for new subscribers; a plan taken off sale stays
//! rateable for the subscriptions on it; and a subscription that cannot be rated is listed in
//! the run's problems instead of holding the month from closing.

use crate::billing::{dec, pulled};
use crate::helpers::*;
use crate::receiver::TestClock;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use time::macros::datetime;
use wharf_core::domain::Role;

const ACME: &str = "acme@vendor.example";
const BOB: &str = "bob@sub.example";

/// Signs up the vendor Acme (admin `ACME`) and a subscriber per address, all with
/// `PASSWORD`, so a test can log them in again after its clock jumps.
async fn sign_up(app: &TestApp, subscribers: &[&str]) {
    let body = json!({"name": "Acme", "admin_email": ACME, "admin_password": PASSWORD});
    let signed_up = app.post("/v1/vendors", None, body).await;
    assert_eq!(signed_up.status, 201, "{:?}", signed_up.body);
    for email in subscribers {
        let body = json!({"name": "Sub", "email": email, "password": PASSWORD});
        assert_eq!(app.post("/v1/subscribers", None, body).await.status, 201);
        app.verify_email(email).await;
    }
}

/// Asks for `period`'s billing run as a new platform finance user: (its token, the answer).
pub(crate) async fn close(app: &TestApp, period: &str) -> (String, Res) {
    let finance = app.platform(Role::PlatformFinance).await;
    let run = app
        .post(
            "/v1/billing/runs",
            Some(&finance),
            json!({"period": period}),
        )
        .await;
    (finance, run)
}

fn pro(unit_price: &str) -> Value {
    json!({"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "0.00",
           "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": unit_price}]})
}

fn records(n: usize) -> Value {
    json!({"records": (0..n).map(|i| json!({"id": format!("r{i}"), "data": {"sym": "AAPL", "price": 150.0, "px": 150.0}})).collect::<Vec<_>>()})
}

fn usage_line<'a>(invoices: &'a Value, sub: &str) -> &'a Value {
    invoices["items"]
        .as_array()
        .expect("a list of invoices")
        .iter()
        .flat_map(|inv| inv["lines"].as_array().expect("lines").iter())
        .find(|l| l["subscription_id"] == sub && l["kind"] == "usage")
        .unwrap_or_else(|| panic!("no usage line of {sub} in {invoices}"))
}

#[tokio::test]
async fn a_repriced_plan_is_a_new_version_and_each_subscription_is_rated_at_the_prices_it_bought() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-02 10:00 UTC));
    let app = spawn_on(|_| {}, clock.clone()).await;
    let (_, vendor) = app.vendor("Acme").await;
    let (_, bob) = app.subscriber("Bob").await;
    let (_, eve) = app.subscriber("Eve").await;
    let source = app.source(&vendor).await;
    let mut body = feed_body(&source, "Trades");
    body["plans"] = json!([pro("0.01")]);
    let feed = app.post("/v1/feeds", Some(&vendor), body).await;
    assert_eq!(feed.status, 201, "{:?}", feed.body);
    assert_eq!(feed.body["plans"][0]["version"], 1);
    let feed = feed.body["id"].as_str().expect("an id").to_owned();
    let bobs = app.subscribe(&bob, &feed).await;
    let path = format!("/v1/feeds/{feed}");

    let repriced = app
        .patch(&path, Some(&vendor), json!({"plans": [pro("1.00")]}))
        .await;
    assert_eq!(repriced.status, 200, "{:?}", repriced.body);
    assert_eq!(repriced.body["plans"][0]["version"], 2);
    assert_eq!(repriced.body["plans"][0]["tiers"][0]["unit_price"], "1.00");
    assert_eq!(repriced.body["retired_plans"][0]["version"], 1);
    assert_eq!(
        repriced.body["retired_plans"][0]["tiers"][0]["unit_price"],
        "0.01"
    );
    // The same prices again (a version sent by the vendor is ignored): no new version.
    let mut same = pro("1.00");
    same["version"] = json!(7);
    let unchanged = app
        .patch(&path, Some(&vendor), json!({"plans": [same]}))
        .await;
    assert_eq!(unchanged.status, 200, "{:?}", unchanged.body);
    assert_eq!(unchanged.body["plans"][0]["version"], 2);

    let eves = app.subscribe(&eve, &feed).await;
    let bob_sub = app
        .get(&format!("/v1/subscriptions/{bobs}"), Some(&bob))
        .await;
    assert_eq!(bob_sub.body["plan_version"], 1, "{:?}", bob_sub.body);
    let eve_sub = app
        .get(&format!("/v1/subscriptions/{eves}"), Some(&eve))
        .await;
    assert_eq!(eve_sub.body["plan_version"], 2, "{:?}", eve_sub.body);

    let pushed = app
        .post(
            &format!("/v1/sources/{source}/records"),
            Some(&vendor),
            records(3),
        )
        .await;
    assert_eq!(pushed.status, 202, "{:?}", pushed.body);
    pulled(&app, &bob, &bobs, 3).await;
    pulled(&app, &eve, &eves, 3).await;

    // Bob leaves; the vendor then takes the plan off sale for a new one. Bob's version and
    // Eve's are retired, not gone: both are rated for November.
    let cancelled = app
        .delete(&format!("/v1/subscriptions/{bobs}"), Some(&bob))
        .await;
    assert!(cancelled.status.is_success(), "{:?}", cancelled.body);
    let mut basic = pro("0.50");
    basic["id"] = json!("basic");
    let removed = app
        .patch(&path, Some(&vendor), json!({"plans": [basic]}))
        .await;
    assert_eq!(removed.status, 200, "{:?}", removed.body);
    let retired: Vec<(String, u64)> = removed.body["retired_plans"]
        .as_array()
        .expect("retired plans")
        .iter()
        .map(|p| {
            let id = p["id"].as_str().expect("an id").to_owned();
            (id, p["version"].as_u64().expect("a version"))
        })
        .collect();
    assert!(retired.contains(&("pro".into(), 1)), "{retired:?}");
    assert!(retired.contains(&("pro".into(), 2)), "{retired:?}");
    let late = app
        .post(
            "/v1/subscriptions",
            Some(&bob),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}}),
        )
        .await;
    assert_eq!(
        late.status, 422,
        "a plan off sale is not sold: {:?}",
        late.body
    );
    assert_eq!(late.body["errors"][0]["path"], "plan_id");

    clock.set(datetime!(2026-12-01 01:00 UTC));
    let (finance, run) = close(&app, "2026-11").await;
    assert_eq!(run.status, 201, "{:?}", run.body);
    assert_eq!(run.body["problems"], json!([]), "{:?}", run.body);
    let invoices = app.get("/v1/invoices?period=2026-11", Some(&finance)).await;
    let (bob_line, eve_line) = (
        usage_line(&invoices.body, &bobs),
        usage_line(&invoices.body, &eves),
    );
    assert_eq!(bob_line["plan_version"], 1);
    assert_eq!(
        dec(&bob_line["amount"]),
        Decimal::from_str("0.03").expect("0.03")
    );
    assert_eq!(eve_line["plan_version"], 2);
    assert_eq!(
        dec(&eve_line["amount"]),
        Decimal::from_str("3.00").expect("3.00")
    );
}

#[tokio::test]
async fn archiving_a_feed_ends_its_subscriptions_then_prorates_the_fee_and_tells_each_subscriber() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-01 00:00 UTC));
    let app = spawn_on(|_| {}, clock.clone()).await;
    sign_up(&app, &[BOB]).await;
    let vendor = app.login(ACME).await;
    let bob = app.login(BOB).await;
    let source = app.source(&vendor).await;
    let mut body = feed_body(&source, "Trades");
    let mut monthly = pro("0.01");
    monthly["monthly_fee"] = json!("30.00");
    body["plans"] = json!([monthly]);
    let feed = app.post("/v1/feeds", Some(&vendor), body).await;
    assert_eq!(feed.status, 201, "{:?}", feed.body);
    let feed = feed.body["id"].as_str().expect("an id").to_owned();
    let sub = app.subscribe(&bob, &feed).await;

    // Archived halfway through November (15 of 30 days).
    clock.set(datetime!(2026-11-16 00:00 UTC));
    let vendor = app.login(ACME).await;
    let archived = app
        .patch(
            &format!("/v1/feeds/{feed}"),
            Some(&vendor),
            json!({"status": "archived"}),
        )
        .await;
    assert_eq!(archived.status, 200, "{:?}", archived.body);
    let bob = app.login(BOB).await;
    let ended = app
        .get(&format!("/v1/subscriptions/{sub}"), Some(&bob))
        .await;
    assert_eq!(ended.body["status"], "cancelled", "{:?}", ended.body);
    assert_eq!(
        ended.body["history"]
            .as_array()
            .expect("history")
            .last()
            .expect("a change")["at"],
        archived.body["updated_at"],
        "ended at the instant the feed was archived"
    );
    let outbox = app.dir.path().join("outbox");
    let mails: Vec<String> = std::fs::read_dir(&outbox)
        .map(|d| {
            d.map(|e| std::fs::read_to_string(e.expect("an entry").path()).expect("a mail"))
                .collect()
        })
        .unwrap_or_default();
    let notice = mails
        .iter()
        .find(|m| m.contains(BOB) && m.contains("Trades"))
        .unwrap_or_else(|| panic!("no notice to Bob among {mails:?}"));
    assert!(notice.contains("Subject: Trades has ended"), "{notice}");
    // The body is quoted-printable: soft line breaks joined, it names the subscription.
    let text = notice.replace("=\r\n", "").replace("=\n", "");
    assert!(text.contains(&sub), "{text}");

    clock.set(datetime!(2026-12-01 01:00 UTC));
    let (finance, run) = close(&app, "2026-11").await;
    assert_eq!(run.status, 201, "{:?}", run.body);
    let invoices = app.get("/v1/invoices?period=2026-11", Some(&finance)).await;
    let fee = invoices.body["items"][0]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["subscription_id"] == sub.as_str() && l["kind"] == "fee")
        .cloned()
        .unwrap_or_else(|| panic!("no fee line in {:?}", invoices.body));
    assert_eq!(
        dec(&fee["quantity"]),
        Decimal::from_str("0.5").expect("0.5")
    );
    assert_eq!(
        dec(&fee["amount"]),
        Decimal::from_str("15.00").expect("15.00")
    );
}

#[tokio::test]
async fn months_close_by_themselves_a_day_after_they_end_in_order() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-20 12:00 UTC));
    let app = spawn_on(|_| {}, clock.clone()).await;
    let (_, vendor) = app.vendor("Acme").await;
    let (_, bob) = app.subscriber("Bob").await;
    let feed = app.feed(&vendor, "Trades").await;
    let sub = app.subscribe(&bob, &feed).await;
    let invoices = |period: &'static str| {
        let app = &app;
        async move {
            let finance = app.platform(Role::PlatformFinance).await;
            let list = app
                .get(&format!("/v1/invoices?period={period}"), Some(&finance))
                .await;
            assert_eq!(list.status, 200, "{:?}", list.body);
            list.body["items"].as_array().expect("items").clone()
        }
    };

    clock.set(datetime!(2026-12-01 23:00 UTC));
    app.idle().await;
    assert!(
        invoices("2026-11").await.is_empty(),
        "23 hours after the month ended, it is still open"
    );

    clock.set(datetime!(2026-12-02 00:30 UTC));
    app.idle().await;
    let november = invoices("2026-11").await;
    assert_eq!(november.len(), 1, "{november:?}");
    assert!(
        november[0]["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .any(|l| l["subscription_id"] == sub.as_str() && l["kind"] == "fee")
    );
    let (_, again) = close(&app, "2026-11").await;
    assert_eq!(again.status, 200, "closed already: {:?}", again.body);
    assert_eq!(again.body["status"], "completed");

    // Days later, December and January have closed in order, each once.
    clock.set(datetime!(2027-02-03 00:00 UTC));
    app.idle().await;
    assert_eq!(invoices("2026-12").await.len(), 1);
    assert_eq!(invoices("2027-01").await.len(), 1);
    assert_eq!(invoices("2026-11").await.len(), 1);
    assert_eq!(close(&app, "2027-01").await.1.status, 200, "closed already");
}

async fn csv_of(app: &TestApp, path: &str, token: &str) -> Vec<Vec<String>> {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("an answer");
    assert_eq!(res.status(), 200);
    let kind = res.headers()["content-type"]
        .to_str()
        .expect("a type")
        .to_owned();
    assert!(kind.starts_with("text/csv"), "{kind}");
    crate::billing::parse_csv(&res.text().await.expect("a body"))
}

#[tokio::test]
async fn finance_exports_are_csv_in_which_no_cell_is_a_formula() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-10 00:00 UTC));
    let app = spawn_on(|_| {}, clock.clone()).await;
    let (_, vendor) = app.vendor("Acme").await;
    let body = json!({"name": "Bob", "email": BOB, "password": PASSWORD});
    assert_eq!(app.post("/v1/subscribers", None, body).await.status, 201);
    let bob = app.login(BOB).await;
    let source = app.source(&vendor).await;
    let mut body = feed_body(&source, "=cmd|' /C calc'!A0");
    let mut plan = pro("0.01");
    plan["name"] = json!("=HYPERLINK(\"http://pay.invalid\",\"pay\")");
    body["plans"] = json!([plan]);
    let feed = app.post("/v1/feeds", Some(&vendor), body).await;
    assert_eq!(feed.status, 201, "{:?}", feed.body);
    let feed = feed.body["id"].as_str().expect("an id").to_owned();
    let sub = app.subscribe(&bob, &feed).await;
    let pushed = app
        .post(
            &format!("/v1/sources/{source}/records"),
            Some(&vendor),
            records(2),
        )
        .await;
    assert_eq!(pushed.status, 202, "{:?}", pushed.body);
    pulled(&app, &bob, &sub, 2).await;

    clock.set(datetime!(2026-12-01 01:00 UTC));
    let (finance, run) = close(&app, "2026-11").await;
    assert_eq!(run.status, 201, "{:?}", run.body);

    let invoices = csv_of(&app, "/v1/invoices?period=2026-11", &finance).await;
    let cells: Vec<&String> = invoices.iter().flatten().collect();
    assert!(
        cells.iter().all(|c| !c.starts_with(['=', '+', '@'])),
        "{invoices:?}"
    );
    let description = invoices[0]
        .iter()
        .position(|h| h == "description")
        .expect("a column");
    assert!(
        invoices[1..]
            .iter()
            .all(|r| r[description].starts_with("'=HYPERLINK")),
        "the plan's name is kept, as text: {invoices:?}"
    );

    let payouts = csv_of(&app, "/v1/payouts?period=2026-11", &finance).await;
    assert_eq!(payouts[0][..3], ["payout_id", "vendor_id", "period"]);
    let json = app.get("/v1/payouts?period=2026-11", Some(&finance)).await;
    assert_eq!(
        payouts.len(),
        1 + json.body.as_array().expect("payouts").len()
    );
    let gross = payouts[0]
        .iter()
        .position(|h| h == "gross")
        .expect("a column");
    assert_eq!(
        payouts[1][gross],
        json.body[0]["gross"].as_str().expect("gross")
    );

    let summary = app
        .get("/v1/billing/summary?period=2026-11", Some(&finance))
        .await;
    assert_eq!(summary.status, 200, "{:?}", summary.body);
    let row = &summary.body["vendors"][0];
    assert_eq!(summary.body["vendors"].as_array().expect("rows").len(), 1);
    assert_eq!(row["gross"], json.body[0]["gross"]);
    assert_eq!(row["net"], json.body[0]["net"]);
    assert_eq!(row["outstanding"], row["gross"], "nothing paid yet: {row}");
    assert_eq!(dec(&row["paid"]), Decimal::ZERO);
    assert_eq!(row["invoices"], 1);
    let (_, other) = app.vendor("Other").await;
    let theirs = app
        .get("/v1/billing/summary?period=2026-11", Some(&other))
        .await;
    assert_eq!(theirs.status, 200, "{:?}", theirs.body);
    assert_eq!(
        theirs.body["vendors"],
        json!([]),
        "another vendor's month is not shown"
    );

    let bob = app.login(BOB).await;
    let refused = app
        .get("/v1/billing/summary?period=2026-11", Some(&bob))
        .await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    let usage = csv_of(
        &app,
        &format!(
            "/v1/usage?subscription_id={sub}&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z"
        ),
        &bob,
    )
    .await;
    assert_eq!(
        usage[0],
        ["subscription_id", "period_start", "deliveries", "backfill"]
    );
    let counted: u64 = usage[1..]
        .iter()
        .map(|r| r[2].parse::<u64>().expect("a count"))
        .sum();
    assert_eq!(counted, 2);
}

#[tokio::test]
async fn a_scheduled_move_rates_old_subscriptions_at_the_new_version_from_next_month() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-02 10:00 UTC));
    let app = spawn_on(|_| {}, clock.clone()).await;
    sign_up(&app, &[BOB]).await;
    let vendor = app.login(ACME).await;
    let bob = app.login(BOB).await;
    let source = app.source(&vendor).await;
    let mut body = feed_body(&source, "Trades");
    body["plans"] = json!([pro("0.01")]);
    let feed = app.post("/v1/feeds", Some(&vendor), body).await;
    let feed = feed.body["id"].as_str().expect("an id").to_owned();
    let sub = app.subscribe(&bob, &feed).await;
    let path = format!("/v1/feeds/{feed}");
    let repriced = app
        .patch(&path, Some(&vendor), json!({"plans": [pro("1.00")]}))
        .await;
    assert_eq!(repriced.body["plans"][0]["version"], 2);

    let (_, intruder) = app.vendor("Other").await;
    let move_path = format!("{path}/plans/pro/move");
    let foreign = app.post(&move_path, Some(&intruder), json!({})).await;
    assert_eq!(foreign.status, 404, "{:?}", foreign.body);
    let moved = app.post(&move_path, Some(&vendor), json!({})).await;
    assert_eq!(moved.status, 200, "{:?}", moved.body);
    assert_eq!(moved.body["version"], 2);
    assert_eq!(moved.body["subscriptions"], 1);
    assert_eq!(moved.body["takes_effect_at"], "2026-12-01T00:00:00Z");
    let again = app.post(&move_path, Some(&vendor), json!({})).await;
    assert_eq!(again.body["subscriptions"], 0, "{:?}", again.body);
    let outbox = app.dir.path().join("outbox");
    let told = std::fs::read_dir(&outbox)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|m| m.contains(BOB) && m.contains("New prices for Trades"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(told, 1, "Bob is told once");

    let push = |ids: &'static [&'static str]| {
        let (app, source) = (&app, &source);
        async move {
            let vendor = app.login(ACME).await;
            let batch = json!({"records": ids.iter().map(|id| json!({"id": id, "data": {"sym": id, "price": 150.0, "px": 150.0}})).collect::<Vec<_>>()});
            let res = app
                .post(
                    &format!("/v1/sources/{source}/records"),
                    Some(&vendor),
                    batch,
                )
                .await;
            assert_eq!(res.status, 202, "{:?}", res.body);
        }
    };
    push(&["n1", "n2"]).await;
    pulled(&app, &bob, &sub, 2).await;
    clock.set(datetime!(2026-12-05 10:00 UTC));
    push(&["d1", "d2", "d3"]).await;
    let bob = app.login(BOB).await;
    pulled(&app, &bob, &sub, 5).await;

    clock.set(datetime!(2027-01-01 01:00 UTC));
    let mut finance = String::new();
    for period in ["2026-11", "2026-12"] {
        let run;
        (finance, run) = close(&app, period).await;
        assert!([200, 201].contains(&run.status.as_u16()), "{:?}", run.body);
    }
    let line = |period: &'static str| {
        let (app, finance, sub) = (&app, &finance, &sub);
        async move {
            let invoices = app
                .get(&format!("/v1/invoices?period={period}"), Some(finance))
                .await;
            usage_line(&invoices.body, sub).clone()
        }
    };
    let november = line("2026-11").await;
    assert_eq!(november["plan_version"], 1);
    assert_eq!(
        dec(&november["amount"]),
        Decimal::from_str("0.02").expect("0.02")
    );
    let december = line("2026-12").await;
    assert_eq!(december["plan_version"], 2);
    assert_eq!(
        dec(&december["amount"]),
        Decimal::from_str("3.00").expect("3.00")
    );
}

/// A small deterministic generator (an LCG), so each seed replays the same history.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % sides
    }
}

/// The first day of the month after the one starting on `first`.
fn next_month(first: time::Date) -> time::Date {
    let month = first.month().next();
    let year = first.year() + i32::from(month == time::Month::January);
    time::Date::from_calendar_date(year, month, 1).expect("a date")
}

/// Every invoice of `period`, in id order, as finance reads it.
async fn month_invoices(app: &TestApp, period: &str) -> Vec<Value> {
    let finance = app.platform(Role::PlatformFinance).await;
    let list = app
        .get(
            &format!("/v1/invoices?period={period}&limit=200"),
            Some(&finance),
        )
        .await;
    let mut items = list.body["items"].as_array().expect("items").clone();
    items.sort_by_key(|i| i["id"].as_str().expect("an id").to_owned());
    items
}

#[tokio::test]
async fn a_closed_month_never_changes_and_late_usage_appears_once_on_a_later_invoice() {
    use time::macros::date;
    let (mut late_lines, mut deliveries) = (0, 0);
    for seed in [1_u64, 7, 42] {
        let mut dice = Dice(seed);
        let clock = TestClock::new();
        clock.set(datetime!(2026-11-05 09:00 UTC));
        let app = spawn_on(|_| {}, clock.clone()).await;
        let emails = ["a@sub.example", "b@sub.example"];
        sign_up(&app, &emails).await;
        let vendor = app.login(ACME).await;
        let source = app.source(&vendor).await;
        let mut body = feed_body(&source, "Trades");
        let mut plan = pro("0.01");
        plan["monthly_fee"] = json!("10.00");
        plan["included_deliveries"] = json!(1);
        body["plans"] = json!([plan]);
        let feed = app.post("/v1/feeds", Some(&vendor), body).await;
        let feed = feed.body["id"].as_str().expect("an id").to_owned();
        let mut subs = Vec::new();
        for email in emails {
            subs.push(app.subscribe(&app.login(email).await, &feed).await);
        }
        let mut pushed = 0;
        let mut act = |at: time::OffsetDateTime, dice: &mut Dice| {
            clock.set(at);
            let n = dice.roll(4) as usize;
            let who = dice.roll(3) as usize;
            let ids: Vec<String> = (0..n)
                .map(|_| {
                    pushed += 1;
                    format!("r{pushed}")
                })
                .collect();
            (ids, who)
        };
        let mut closed: Vec<(String, Vec<Value>)> = Vec::new();
        let months = [
            (date!(2026 - 11 - 01), "2026-11"),
            (date!(2026 - 12 - 01), "2026-12"),
            (date!(2027 - 01 - 01), "2027-01"),
        ];
        for (start, label) in months {
            let next = next_month(start);
            for day in [10_u8, 27] {
                let at = start
                    .replace_day(day)
                    .expect("a day")
                    .midnight()
                    .assume_utc();
                let (ids, who) = act(at, &mut dice);
                let vendor = app.login(ACME).await;
                if !ids.is_empty() {
                    let batch = json!({"records": ids.iter().map(|id| json!({"id": id, "data": {"sym": id, "price": 150.0, "px": 150.0}})).collect::<Vec<_>>()});
                    let res = app
                        .post(
                            &format!("/v1/sources/{source}/records"),
                            Some(&vendor),
                            batch,
                        )
                        .await;
                    assert_eq!(res.status, 202, "{:?}", res.body);
                }
                // Nobody, the first, or both subscribers read what there is.
                for (i, email) in emails.iter().enumerate().take(who) {
                    let token = app.login(email).await;
                    let path = format!("/v1/subscriptions/{}/records?limit=1000", subs[i]);
                    assert_eq!(app.get(&path, Some(&token)).await.status, 200);
                }
            }
            // The month closes; then an acknowledgement of its last hour lands late.
            clock.set(next.midnight().assume_utc() + time::Duration::hours(1));
            let (_, run) = close(&app, label).await;
            assert!([200, 201].contains(&run.status.as_u16()), "{:?}", run.body);
            closed.push((label.to_owned(), month_invoices(&app, label).await));
            clock.set(next.midnight().assume_utc() - time::Duration::minutes(30));
            let token = app.login(emails[1]).await;
            let path = format!("/v1/subscriptions/{}/records?limit=1000", subs[1]);
            assert_eq!(app.get(&path, Some(&token)).await.status, 200);
            clock.set(next.midnight().assume_utc() + time::Duration::hours(2));
            for (period, invoices) in &closed {
                assert_eq!(
                    &month_invoices(&app, period).await,
                    invoices,
                    "seed {seed}: {period} changed after it closed"
                );
            }
        }
        // Every delivery counted is billed exactly once: on its month's usage line, or as an
        // adjustment line of a later month. (February closes too, to bill January's late.)
        clock.set(datetime!(2027-03-01 01:00 UTC));
        let (_, run) = close(&app, "2027-02").await;
        assert!([200, 201].contains(&run.status.as_u16()), "{:?}", run.body);
        for (i, email) in emails.iter().enumerate() {
            let token = app.login(email).await;
            let usage = app
                .get(
                    &format!("/v1/usage?subscription_id={}&from=2026-11-01T00:00:00Z&to=2027-03-01T00:00:00Z", subs[i]),
                    Some(&token),
                )
                .await;
            let counted: u64 = usage
                .body
                .as_array()
                .expect("points")
                .iter()
                .map(|p| p["deliveries"].as_u64().expect("a count"))
                .sum();
            let mut billed = Decimal::ZERO;
            for period in ["2026-11", "2026-12", "2027-01", "2027-02"] {
                for inv in month_invoices(&app, period).await {
                    for line in inv["lines"].as_array().expect("lines") {
                        if line["subscription_id"] == subs[i].as_str()
                            && (line["kind"] == "usage" || line["kind"] == "adjustment")
                        {
                            billed += dec(&line["quantity"]);
                            late_lines += usize::from(line["kind"] == "adjustment");
                        }
                    }
                }
            }
            assert_eq!(
                billed,
                Decimal::from(counted),
                "seed {seed}: subscriber {i}"
            );
            deliveries += counted;
        }
    }
    assert!(
        late_lines > 0 && deliveries > 0,
        "the histories billed late usage: {late_lines} lines, {deliveries} deliveries"
    );
}
