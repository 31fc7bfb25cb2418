//! Entitlements: a subscription gets the records its feed output while it was active, and no
//! others, whatever cursor it reads from: none from before it started, none from while it was
//! paused. Every record it gets is counted the first time.

use crate::helpers::*;
use crate::pipeline::usage_of;
use crate::receiver::eventually;
use serde_json::{Value, json};

fn trades(ids: &[&str]) -> Value {
    json!({"records": ids.iter().map(|id| json!({"id": id, "data": {"sym": id, "price": 150.0, "px": 150.0}})).collect::<Vec<_>>()})
}

/// The symbols of the records a pull returns: after the cursor `after`, or (`None`) where the
/// subscription's deliveries stand.
pub(crate) async fn symbols(
    app: &TestApp,
    token: &str,
    sub: &str,
    after: Option<&str>,
) -> Vec<String> {
    let cursor = after.map(|a| format!("&after={a}")).unwrap_or_default();
    let page = app
        .get(
            &format!("/v1/subscriptions/{sub}/records?limit=100{cursor}"),
            Some(token),
        )
        .await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            i["record"]["data"]["symbol"]
                .as_str()
                .expect("a symbol")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_pull_subscription_never_reads_what_came_before_it_or_while_it_was_paused() {
    let app = spawn_app().await;
    let (_, vendor) = app.vendor("Acme").await;
    let source = app.source(&vendor).await;
    let feed = app
        .post("/v1/feeds", Some(&vendor), feed_body(&source, "Trades"))
        .await;
    assert_eq!(feed.status, 201, "{:?}", feed.body);
    let feed = feed.body["id"].as_str().expect("an id").to_owned();
    let push = |ids: &'static [&'static str]| {
        let (app, vendor, path) = (&app, &vendor, format!("/v1/sources/{source}/records"));
        async move {
            let res = app.post(&path, Some(vendor), trades(ids)).await;
            assert_eq!(res.status, 202, "{:?}", res.body);
        }
    };
    // A probe that is always active shows when each record has reached the feed.
    let (_, watcher) = app.subscriber("watcher").await;
    let probe = app.subscribe(&watcher, &feed).await;
    let reached = |n: usize| {
        let (app, watcher, probe) = (&app, &watcher, &probe);
        async move {
            eventually(&format!("{n} records reach the feed"), || async {
                symbols(app, watcher, probe, Some("0")).await.len() == n
            })
            .await;
        }
    };
    push(&["early1", "early2"]).await;
    reached(2).await;

    let (_, bob) = app.subscriber("bob").await;
    let sub = app.subscribe(&bob, &feed).await;
    push(&["a1", "a2"]).await;
    reached(4).await;
    assert_eq!(symbols(&app, &bob, &sub, Some("0")).await, vec!["a1", "a2"]);

    let path = format!("/v1/subscriptions/{sub}");
    let paused = app
        .patch(&path, Some(&bob), json!({"status": "paused"}))
        .await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    push(&["p1", "p2", "p3"]).await;
    reached(7).await;
    let resumed = app
        .patch(&path, Some(&bob), json!({"status": "active"}))
        .await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    push(&["b1"]).await;
    reached(8).await;

    assert_eq!(
        symbols(&app, &bob, &sub, Some("0")).await,
        vec!["a1", "a2", "b1"],
        "from the feed's first position: only what came while active"
    );
    assert_eq!(
        symbols(&app, &bob, &sub, Some("0")).await.len(),
        3,
        "read again"
    );
    app.idle().await;
    assert_eq!(
        usage_of(&app, &bob, &sub).await,
        3,
        "each record it read counted once, none it did not"
    );
}
