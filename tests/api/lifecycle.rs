//! A feed's end: deprecated with a date, it sells to no one new, shows the date in the
//! catalog and tells its subscribers; when the date comes it is archived by the schedule and
//! its subscriptions end at that instant, their fee prorated to it.

use crate::billing::dec;
use crate::helpers::*;
use crate::receiver::{TestClock, eventually};
use rust_decimal::Decimal;
use serde_json::json;
use std::str::FromStr;
use time::macros::datetime;

const ACME: &str = "acme@vendor.example";
const BOB: &str = "bob@sub.example";
const CAROL: &str = "carol@sub.example";

#[tokio::test]
async fn a_deprecated_feed_sells_no_more_shows_its_end_and_ends_its_subscriptions_then() {
    let clock = TestClock::new();
    clock.set(datetime!(2026-11-01 00:00 UTC));
    let app = spawn_on(|_| {}, clock.clone()).await;
    let body = json!({"name": "Acme", "admin_email": ACME, "admin_password": PASSWORD});
    assert_eq!(app.post("/v1/vendors", None, body).await.status, 201);
    for email in [BOB, CAROL] {
        let body = json!({"name": "Sub", "email": email, "password": PASSWORD});
        assert_eq!(app.post("/v1/subscribers", None, body).await.status, 201);
        app.verify_email(email).await;
    }
    let vendor = app.login(ACME).await;
    let source = app.source(&vendor).await;
    let feed = app.feed(&vendor, "Trades").await;
    let bob = app.login(BOB).await;
    let sub = app.subscribe(&bob, &feed).await;
    let path = format!("/v1/feeds/{feed}");

    let past = app
        .patch(
            &path,
            Some(&vendor),
            json!({"ends_at": "2026-10-31T00:00:00Z"}),
        )
        .await;
    assert_eq!(past.status, 422, "{:?}", past.body);
    assert_eq!(past.paths(), vec!["ends_at"]);
    let mut draft = feed_body(&source, "Draft");
    draft["status"] = json!("draft");
    let draft = app.post("/v1/feeds", Some(&vendor), draft).await.body["id"]
        .as_str()
        .expect("a feed")
        .to_owned();
    let unpublished = app
        .patch(
            &format!("/v1/feeds/{draft}"),
            Some(&vendor),
            json!({"ends_at": "2026-11-16T00:00:00Z"}),
        )
        .await;
    assert_eq!(unpublished.status, 422, "{:?}", unpublished.body);

    let deprecated = app
        .patch(
            &path,
            Some(&vendor),
            json!({"ends_at": "2026-11-16T00:00:00Z"}),
        )
        .await;
    assert_eq!(deprecated.status, 200, "{:?}", deprecated.body);
    assert_eq!(deprecated.body["ends_at"], "2026-11-16T00:00:00Z");
    let entry = app.get(&format!("/v1/catalog/{feed}"), None).await;
    assert_eq!(
        entry.body["ends_at"], "2026-11-16T00:00:00Z",
        "{:?}",
        entry.body
    );
    let carol = app.login(CAROL).await;
    let refused = app
        .post(
            "/v1/subscriptions",
            Some(&carol),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}}),
        )
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.paths(), vec!["feed_id"]);
    assert!(
        app.mails().iter().any(|m| m.contains(BOB)
            && m.contains("Subject: Trades ends on 2026-11-16")
            && m.contains(&sub)),
        "Bob is told when his subscription ends"
    );

    // The end comes: the schedule archives the feed (in the aws shape its own tick may be
    // first) and the subscription ends at the announced instant.
    clock.set(datetime!(2026-11-16 00:01 UTC));
    app.services
        .end_deprecated_feeds()
        .await
        .expect("deprecated feeds end");
    let vendor = app.login(ACME).await;
    eventually("the feed is archived", || async {
        app.get(&path, Some(&vendor)).await.body["status"] == "archived"
    })
    .await;
    let bob = app.login(BOB).await;
    let ended = app
        .get(&format!("/v1/subscriptions/{sub}"), Some(&bob))
        .await
        .body;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    let last = ended["history"]
        .as_array()
        .and_then(|h| h.last())
        .expect("a change");
    assert_eq!(last["at"], "2026-11-16T00:00:00Z");

    clock.set(datetime!(2026-12-02 00:00 UTC));
    app.services.close_due_months().await.expect("months close");
    let bob = app.login(BOB).await;
    let invoices = app.get("/v1/invoices", Some(&bob)).await.body;
    let fee = invoices["items"][0]["lines"]
        .as_array()
        .and_then(|lines| lines.iter().find(|l| l["kind"] == "fee"))
        .unwrap_or_else(|| panic!("no fee line in {invoices}"))
        .clone();
    assert_eq!(
        dec(&fee["amount"]),
        Decimal::from_str("24.50").expect("a decimal"),
        "half of November's 49.00"
    );
}
