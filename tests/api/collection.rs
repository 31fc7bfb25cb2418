//! Collection through Stripe, against the strict stand-in (`testkit/stripe_standin.py`): a
//! saved payment method is charged, the others are sent the invoice and shown its page, a
//! failed payment starts dunning that pauses the subscriptions behind the invoice until it is
//! paid, a push that failed midway is finished by the schedule without doubling anything, and
//! a vendor with a Connect account is paid its net once the month's invoices are paid.

use crate::billing::{dec, pulled};
use crate::helpers::*;
use crate::receiver::{TestClock, eventually};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use std::sync::Arc;
use time::OffsetDateTime;
use time::macros::datetime;
use wharf_core::domain::Role;
use wharf_testkit::stripe::StripeStandIn;

const SECRET_KEY: &str = "sk_test_collection";
const WEBHOOK_SECRET: &str = "whsec_collection";
/// The Connect endpoint's: `account.updated` is signed with it.
const CONNECT_SECRET: &str = "whsec_collection_connect";

/// An app collecting through a fresh stand-in that sends its events to the app's endpoint.
pub(crate) struct Collecting {
    pub app: TestApp,
    pub stripe: StripeStandIn,
    pub clock: Arc<TestClock>,
}

impl Collecting {
    pub async fn start(at: OffsetDateTime) -> Collecting {
        let stripe =
            StripeStandIn::start_with_connect(SECRET_KEY, WEBHOOK_SECRET, Some(CONNECT_SECRET));
        let clock = TestClock::new();
        let api_base = stripe.url().to_owned();
        let app = spawn_on(
            |c| {
                c.stripe = Some(wharf::config::StripeConfig {
                    secret_key: wharf::config::Secret(SECRET_KEY.into()),
                    webhook_secret: wharf::config::Secret(WEBHOOK_SECRET.into()),
                    connect_webhook_secret: Some(wharf::config::Secret(CONNECT_SECRET.into())),
                    api_base,
                });
            },
            clock.clone(),
        )
        .await;
        let c = Collecting { app, stripe, clock };
        c.control(
            "/_standin/endpoint",
            json!({"url": c.app.url("/v1/webhooks/stripe")}),
        )
        .await;
        c.set_clock(at).await;
        c
    }

    /// Moves both clocks (Wharf checks the age of Stripe's signatures against its own).
    pub async fn set_clock(&self, at: OffsetDateTime) {
        self.clock.set(at);
        self.control("/_standin/clock", json!({"now": at.unix_timestamp()}))
            .await;
    }

    /// What happens outside Stripe's API (a page completed, an invoice paid, a failure).
    pub async fn control(&self, path: &str, body: Value) -> Value {
        let res = self
            .app
            .client
            .post(format!("{}{path}", self.stripe.url()))
            .json(&body)
            .send()
            .await
            .expect("the stand-in answers");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.expect("JSON")
    }

    /// Every object, request and event of the stand-in.
    pub async fn state(&self) -> Value {
        self.app
            .client
            .get(format!("{}/_standin/state", self.stripe.url()))
            .send()
            .await
            .expect("the stand-in answers")
            .json()
            .await
            .expect("JSON")
    }

    /// The stand-in's objects of `kind` (`invoice`, `customer`…).
    pub async fn objects(&self, kind: &str) -> Vec<Value> {
        let state = self.state().await;
        let objects = state["objects"].as_object().expect("objects");
        objects
            .values()
            .filter(|o| o["object"] == kind)
            .cloned()
            .collect()
    }

    /// Asserts that Stripe refused none of Wharf's calls.
    pub async fn nothing_refused(&self) {
        let state = self.state().await;
        let refused: Vec<&Value> = state["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .filter(|r| r["status"].as_u64().is_none_or(|s| s >= 400))
            .collect();
        assert!(refused.is_empty(), "Stripe refused: {refused:#?}");
    }

    /// A subscriber saves a card through the page Wharf makes for it.
    pub async fn save_card(&self, token: &str, declines: bool) {
        let page = self
            .app
            .post("/v1/billing/payment-method", Some(token), json!({}))
            .await;
        assert_eq!(page.status, 201, "{:?}", page.body);
        let url = page.body["url"].as_str().expect("a url");
        assert!(url.starts_with(self.stripe.url()), "{url}");
        let session = url.rsplit('/').next().expect("a session id");
        self.control(
            &format!("/_standin/checkout/{session}/complete"),
            json!({"declines": declines}),
        )
        .await;
    }

    /// Vendor Acme with one feed at 30.00 a month and 0.25 a delivery; each subscriber named
    /// (`{name}@sub.example`) subscribed and given three records: (vendor token, feed,
    /// [(token, subscription)]). Tokens expire when the clock jumps: log in again.
    pub async fn market(&self, names: &[&str]) -> (String, String, Vec<(String, String)>) {
        let app = &self.app;
        let (_, vendor) = app.vendor("Acme").await;
        let source = app.source(&vendor).await;
        let mut body = feed_body(&source, "Trades");
        body["plans"] = json!([{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "30.00",
            "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.25"}]}]);
        let feed = app.post("/v1/feeds", Some(&vendor), body).await.body["id"]
            .as_str()
            .expect("a feed")
            .to_owned();
        let mut subscribers = Vec::new();
        for name in names {
            let email = format!("{name}@sub.example");
            let body = json!({"name": name, "email": email, "password": PASSWORD});
            assert_eq!(app.post("/v1/subscribers", None, body).await.status, 201);
            app.verify_email(&email).await;
            let token = app.login(&email).await;
            let sub = app.subscribe(&token, &feed).await;
            subscribers.push((token, sub));
        }
        let records: Vec<Value> = ["a", "b", "c"]
            .iter()
            .map(|id| json!({"id": id, "data": {"sym": "AAPL", "price": 150.0, "px": 150.0}}))
            .collect();
        let records = json!({ "records": records });
        let pushed = app
            .post(
                &format!("/v1/sources/{source}/records"),
                Some(&vendor),
                records,
            )
            .await;
        assert_eq!(pushed.status, 202, "{:?}", pushed.body);
        for (token, sub) in &subscribers {
            pulled(app, token, sub, 3).await;
        }
        (vendor, feed, subscribers)
    }

    /// Closes the months that are due (or finds them closed by the aws shape's own tick).
    pub async fn close(&self) {
        self.app
            .services
            .close_due_months()
            .await
            .expect("months close");
    }

    /// One round of collection, as the schedule runs it.
    pub async fn collect(&self) -> wharf_core::services::Collected {
        self.app
            .services
            .collect_payments()
            .await
            .expect("collection runs")
    }

    /// The invoice of the subscriber `token` (the one it has).
    pub async fn invoice(&self, token: &str) -> Value {
        let list = self.app.get("/v1/invoices", Some(token)).await;
        assert_eq!(list.status, 200, "{:?}", list.body);
        list.body["items"][0].clone()
    }

    /// Waits until the subscriber's invoice has `status`.
    pub async fn invoice_becomes(&self, token: &str, status: &str) -> Value {
        eventually(&format!("the invoice is {status}"), || async {
            self.invoice(token).await["status"] == status
        })
        .await;
        self.invoice(token).await
    }
}

#[tokio::test]
async fn a_saved_card_is_charged_and_an_invoice_without_one_is_sent_with_its_page() {
    let c = Collecting::start(datetime!(2026-11-01 00:00 UTC)).await;
    let (vendor, _, subs) = c.market(&["bob", "carol"]).await;
    c.save_card(&subs[0].0, false).await;
    let as_vendor = c
        .app
        .post("/v1/billing/payment-method", Some(&vendor), json!({}))
        .await;
    assert_eq!(
        as_vendor.status, 403,
        "only subscribers save payment methods"
    );

    c.set_clock(datetime!(2026-12-02 10:00 UTC)).await;
    // This call closes November, or the aws shape's own tick did.
    c.close().await;
    let (bob, carol) = (
        &c.app.login("bob@sub.example").await,
        &c.app.login("carol@sub.example").await,
    );
    let bobs = c.invoice_becomes(bob, "paid").await;
    assert_eq!(bobs["collection_method"], "charge_automatically");
    assert_eq!(
        dec(&bobs["total"]),
        Decimal::from_str("30.75").expect("a decimal")
    );
    let carols = c.invoice(carol).await;
    assert_eq!(carols["status"], "open", "{carols}");
    assert_eq!(carols["collection_method"], "send_invoice");
    assert_eq!(carols["due_at"], "2027-01-01T10:00:00Z", "30 days to pay");
    let page = carols["hosted_invoice_url"].as_str().expect("a page");
    assert!(page.starts_with(c.stripe.url()), "{page}");

    let stripe_invoices = c.objects("invoice").await;
    assert_eq!(stripe_invoices.len(), 2, "{stripe_invoices:#?}");
    let remote = |id: &Value| {
        stripe_invoices
            .iter()
            .find(|i| &i["id"] == id)
            .expect("the Stripe invoice")
            .clone()
    };
    let (bob_remote, carol_remote) = (
        remote(&bobs["stripe_invoice_id"]),
        remote(&carols["stripe_invoice_id"]),
    );
    assert_eq!(bob_remote["sent"], false, "a charged invoice is not sent");
    assert_eq!(
        carol_remote["sent"], true,
        "an invoice without a card is sent"
    );
    assert_eq!(carol_remote["amount_due"], 3075, "30.75 in cents");
    let customers = c.objects("customer").await;
    let bob_customer = customers
        .iter()
        .find(|x| x["id"] == bob_remote["customer"])
        .expect("Bob's customer");
    assert!(
        bob_customer["invoice_settings"]["default_payment_method"].is_string(),
        "the saved card became the default: {bob_customer}"
    );

    // Carol pays on the hosted page.
    let id = carol_remote["id"].as_str().expect("an id");
    c.control(&format!("/_standin/invoices/{id}/pay"), json!({}))
        .await;
    c.invoice_becomes(carol, "paid").await;
    c.nothing_refused().await;
}

#[tokio::test]
async fn an_invoice_unpaid_after_the_dunning_days_pauses_its_subscriptions_until_it_is_paid() {
    let c = Collecting::start(datetime!(2026-11-01 00:00 UTC)).await;
    let (_, feed, subs) = c.market(&["bob"]).await;
    let (bob, sub) = (&subs[0].0, &subs[0].1);
    // A second subscription to the vendor, which Bob pauses himself.
    let own = c.app.subscribe(bob, &feed).await;
    let own_path = format!("/v1/subscriptions/{own}");
    let paused = c
        .app
        .patch(&own_path, Some(bob), json!({"status": "paused"}))
        .await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    c.save_card(bob, true).await;
    c.set_clock(datetime!(2026-12-02 10:00 UTC)).await;
    c.close().await;
    let bob = &c.app.login("bob@sub.example").await;
    let failed = c.invoice_becomes(bob, "failed").await;
    assert_eq!(failed["payment_failed_at"], "2026-12-02T10:00:00Z");
    assert!(
        c.app
            .mails()
            .iter()
            .any(|m| m.contains("Subject: Payment failed") && m.contains("within 7 days")),
        "the subscriber is told at the first failure"
    );
    let path = format!("/v1/subscriptions/{sub}");

    // Six days on, nothing is paused yet; seven days on, the subscription is.
    c.set_clock(datetime!(2026-12-08 10:00 UTC)).await;
    assert_eq!(c.collect().await.overdue, 0);
    let bob = &c.app.login("bob@sub.example").await;
    assert_eq!(c.app.get(&path, Some(bob)).await.body["status"], "active");
    c.set_clock(datetime!(2026-12-09 10:00 UTC)).await;
    let bob = &c.app.login("bob@sub.example").await;
    // This call pauses (or, in the aws shape, the schedule's own tick did).
    c.collect().await;
    eventually("the invoice records the pause", || async {
        c.invoice(bob).await["subscriptions_paused_at"] == "2026-12-09T10:00:00Z"
    })
    .await;
    assert_eq!(c.collect().await.overdue, 0, "paused once");
    let paused = c.app.get(&path, Some(bob)).await.body;
    assert_eq!(paused["status"], "paused", "{paused}");
    assert_eq!(paused["paused_for_invoice"], failed["id"]);
    let reason = paused["disabled_reason"].as_str().expect("a reason");
    assert!(
        reason.contains(failed["id"].as_str().expect("an id")),
        "{reason}"
    );
    let resume = c
        .app
        .patch(&path, Some(bob), json!({"status": "active"}))
        .await;
    assert_eq!(resume.status, 409, "paying resumes it, not a PATCH");
    let own_resume = c
        .app
        .patch(&own_path, Some(bob), json!({"status": "active"}))
        .await;
    assert_eq!(
        own_resume.status, 409,
        "nothing to this vendor resumes while overdue"
    );
    let fresh = c
        .app
        .post(
            "/v1/subscriptions",
            Some(bob),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}}),
        )
        .await;
    assert_eq!(fresh.status, 409, "no way around dunning: {:?}", fresh.body);
    assert!(
        c.app
            .mails()
            .iter()
            .any(|m| m.contains("Subject: Subscriptions paused") && m.contains(sub.as_str())),
        "the subscriber is told what is paused"
    );

    let id = failed["stripe_invoice_id"].as_str().expect("pushed");
    c.control(&format!("/_standin/invoices/{id}/pay"), json!({}))
        .await;
    c.invoice_becomes(bob, "paid").await;
    let resumed = c.app.get(&path, Some(bob)).await.body;
    assert_eq!(resumed["status"], "active", "{resumed}");
    assert!(resumed.get("paused_for_invoice").is_none(), "{resumed}");
    assert_eq!(resumed["disabled_reason"], Value::Null);
    let own = c.app.get(&own_path, Some(bob)).await.body;
    assert_eq!(
        own["status"], "paused",
        "what Bob paused stays paused: {own}"
    );
    let own_resume = c
        .app
        .patch(&own_path, Some(bob), json!({"status": "active"}))
        .await;
    assert_eq!(
        own_resume.status, 200,
        "and resumes when he wants, once paid"
    );
    c.nothing_refused().await;
}

#[tokio::test]
async fn a_push_that_failed_midway_is_finished_by_the_schedule_without_doubling_anything() {
    // Even a day later, when Stripe has forgotten the first calls' idempotency keys.
    let c = Collecting::start(datetime!(2026-11-01 00:00 UTC)).await;
    c.market(&["bob"]).await;
    c.control(
        "/_standin/fail",
        json!({"path": "/v1/invoices/in_\\w+/finalize", "status": 500, "times": 1}),
    )
    .await;
    c.set_clock(datetime!(2026-12-02 10:00 UTC)).await;
    c.close().await;
    let bob = &c.app.login("bob@sub.example").await;
    // A day goes by: Stripe no longer knows the keys of the first push's calls. (Not in the
    // aws shape, whose own schedule tick may be pushing at this very moment: keys that
    // expire in the middle of two concurrent pushes are not a day-later retry.)
    if BACKEND_UNDER_TEST == Backend::Local {
        c.control("/_standin/forget-keys", json!({})).await;
    }
    // Pushed again by this call or, in the aws shape, already by the schedule's own tick.
    c.collect().await;
    let pushed = c.invoice(bob).await;
    assert!(pushed["stripe_invoice_id"].is_string(), "{pushed}");
    assert_eq!(pushed["collection_method"], "send_invoice", "no card saved");
    // Asked again, by the schedule or a rerun, nothing more reaches Stripe.
    c.collect().await;
    let finance = c.app.platform(Role::PlatformFinance).await;
    let rerun = c
        .app
        .post(
            "/v1/billing/runs",
            Some(&finance),
            json!({"period": "2026-11"}),
        )
        .await;
    assert_eq!(rerun.status, 200, "{:?}", rerun.body);
    assert_eq!(c.objects("customer").await.len(), 1, "one customer");
    let invoices = c.objects("invoice").await;
    assert_eq!(invoices.len(), 1, "one Stripe invoice: {invoices:#?}");
    assert_eq!(invoices[0]["status"], "open");
    assert_eq!(invoices[0]["sent"], true);
    let mut cents: Vec<i64> = c
        .objects("invoiceitem")
        .await
        .iter()
        .map(|i| i["amount"].as_i64().expect("cents"))
        .collect();
    cents.sort_unstable();
    assert_eq!(cents, vec![75, 3000], "fee and 3 × 0.25, once each");
    let payouts = c.app.get("/v1/payouts", Some(&finance)).await;
    assert_eq!(
        payouts.body[0]["status"], "statement",
        "a vendor without a payout account gets a statement: {:?}",
        payouts.body
    );
    let state = c.state().await;
    let refused: Vec<&Value> = state["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| r["status"] != 200)
        .collect();
    assert_eq!(refused.len(), 1, "only the injected failure: {refused:#?}");
}

#[tokio::test]
async fn a_vendor_is_paid_its_net_once_its_invoices_are_paid_and_a_failed_transfer_is_retried() {
    let c = Collecting::start(datetime!(2026-11-01 00:00 UTC)).await;
    let (vendor, _, subs) = c.market(&["bob", "carol"]).await;
    let link = c
        .app
        .post("/v1/vendors/me/payout-account", Some(&vendor), json!({}))
        .await;
    assert_eq!(link.status, 201, "{:?}", link.body);
    assert_eq!(link.body["payouts_enabled"], false);
    let account = link.body["account_id"]
        .as_str()
        .expect("an account")
        .to_owned();
    assert!(
        link.body["url"]
            .as_str()
            .expect("a url")
            .starts_with(c.stripe.url())
    );
    let as_subscriber = c
        .app
        .post("/v1/vendors/me/payout-account", Some(&subs[0].0), json!({}))
        .await;
    assert_eq!(as_subscriber.status, 403, "vendor admins only");
    c.control(&format!("/_standin/accounts/{account}/onboard"), json!({}))
        .await;
    let again = c
        .app
        .post("/v1/vendors/me/payout-account", Some(&vendor), json!({}))
        .await;
    assert_eq!(
        again.body["account_id"],
        account.as_str(),
        "one account per vendor"
    );
    assert_eq!(again.body["payouts_enabled"], true, "onboarding completed");
    assert_eq!(c.objects("account").await.len(), 1);
    c.save_card(&subs[0].0, false).await;

    c.set_clock(datetime!(2026-12-02 10:00 UTC)).await;
    c.close().await;
    c.invoice_becomes(&c.app.login("bob@sub.example").await, "paid")
        .await;
    let finance = c.app.platform(Role::PlatformFinance).await;
    let payout = || async {
        let list = c.app.get("/v1/payouts", Some(&finance)).await;
        assert_eq!(list.status, 200, "{:?}", list.body);
        list.body[0].clone()
    };
    let collect = || async { c.collect().await.transferred };
    assert_eq!(collect().await, 0, "Carol has not paid");
    assert_eq!(payout().await["status"], "pending");

    // Stripe fails the first transfer, whoever makes it once Carol pays.
    c.control(
        "/_standin/fail",
        json!({"path": "/v1/transfers", "status": 500, "times": 1}),
    )
    .await;
    let carol = c.app.login("carol@sub.example").await;
    let carols = c.invoice(&carol).await;
    let id = carols["stripe_invoice_id"].as_str().expect("pushed");
    c.control(&format!("/_standin/invoices/{id}/pay"), json!({}))
        .await;
    c.invoice_becomes(&carol, "paid").await;
    // The first attempt fails (made by this call or the aws shape's own tick) and waits
    // 5 minutes; a second attempt racing it under the same key may land it at once.
    eventually("the transfer is attempted", || async {
        collect().await;
        payout().await["status"] != "pending"
    })
    .await;
    let first = payout().await;
    if first["status"] == "failed" {
        assert!(first["transfer_error"].is_string(), "{first}");
        assert_eq!(
            first["transfer_retry_at"], "2026-12-02T10:05:00Z",
            "{first}"
        );
        assert_eq!(collect().await, 0, "not before it is due");
        c.set_clock(datetime!(2026-12-02 10:06 UTC)).await;
    }
    eventually("the payout is transferred", || async {
        collect().await;
        payout().await["status"] == "transferred"
    })
    .await;
    assert_eq!(collect().await, 0, "paid once");
    let paid = payout().await;
    assert!(paid.get("transfer_error").is_none(), "{paid}");
    let state = c.state().await;
    let attempts: Vec<&Value> = state["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| r["path"] == "/v1/transfers")
        .collect();
    assert_eq!(attempts[0]["status"], 500, "{attempts:#?}");
    // Later attempts (two ticks may race) answer 200 under the same key: one transfer.
    assert!(
        attempts[1..]
            .iter()
            .all(|r| r["status"] == 200 && r["idempotency_key"] == attempts[0]["idempotency_key"]),
        "an outage keeps the key: the first attempt may have landed: {attempts:#?}"
    );
    let transfers = c.objects("transfer").await;
    assert_eq!(transfers.len(), 1, "{transfers:#?}");
    assert_eq!(paid["transfer_id"], transfers[0]["id"]);
    assert_eq!(transfers[0]["destination"], account.as_str());
    assert_eq!(transfers[0]["currency"], "usd");
    let cents = dec(&paid["net"]) * Decimal::from(100);
    assert_eq!(
        Decimal::from(transfers[0]["amount"].as_i64().expect("cents")),
        cents
    );
    assert!(
        cents > Decimal::ZERO
            && dec(&paid["gross"]) == Decimal::from_str("61.50").expect("a decimal")
    );
}

#[tokio::test]
async fn a_sent_invoice_unpaid_past_its_due_date_and_the_dunning_days_pauses_its_subscriptions() {
    let c = Collecting::start(datetime!(2026-11-01 00:00 UTC)).await;
    let (_, _, subs) = c.market(&["bob"]).await;
    let sub = subs[0].1.clone();
    c.set_clock(datetime!(2026-12-02 10:00 UTC)).await;
    c.close().await;
    let bob = c.app.login("bob@sub.example").await;
    eventually("the invoice is sent", || async {
        c.invoice(&bob).await["due_at"] == "2027-01-01T10:00:00Z"
    })
    .await;
    // Due on 1 January, seven days' grace: still active on the 8th at 09:59, paused after.
    let path = format!("/v1/subscriptions/{sub}");
    for (at, status) in [
        (datetime!(2027-01-08 09:59 UTC), "active"),
        (datetime!(2027-01-08 10:01 UTC), "paused"),
    ] {
        c.set_clock(at).await;
        let bob = c.app.login("bob@sub.example").await;
        eventually(&format!("the subscription is {status}"), || async {
            c.collect().await;
            c.app.get(&path, Some(&bob)).await.body["status"] == status
        })
        .await;
    }
}
