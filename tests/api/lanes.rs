//! Each tenant's records are processed in a lane of their own: a tenant whose rules are
//! expensive holds back its own backlog, not another tenant's records. (Local shape: the
//! aws shape's stream handler works on the tenants of a batch side by side.)

use crate::helpers::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tenants_record_passes_a_noisy_tenants_backlog() {
    let app = spawn_app().await;
    let (_, noisy) = app.vendor("Noisy").await;
    let source = app.source(&noisy).await;
    let mut body = feed_body(&source, "expensive");
    // 90,000 steps a record: within the budget, and slow.
    body["pipeline"] = json!({"rules": [
        {"type": "filter", "expr": "record.items.all(a, record.items.all(b, a + b >= 0))"}
    ]});
    let created = app.post("/v1/feeds", Some(&noisy), body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let noisy_feed = created.body["id"].as_str().unwrap().to_owned();
    let (_, quiet) = app.vendor("Quiet").await;
    let quiet_feed = app.feed(&quiet, "cheap").await;
    let quiet_source = app
        .get(&format!("/v1/feeds/{quiet_feed}"), Some(&quiet))
        .await
        .body["source_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, subscriber) = app.subscriber("bob").await;
    let noisy_sub = app.subscribe(&subscriber, &noisy_feed).await;
    let quiet_sub = app.subscribe(&subscriber, &quiet_feed).await;

    let items: Vec<u32> = (0..300).collect();
    const BACKLOG: usize = 100;
    for batch in 0..BACKLOG / 100 {
        let records: Vec<_> = (0..100)
            .map(|i| json!({"id": format!("n{batch}-{i}"), "data": {"items": items}}))
            .collect();
        let res = app
            .post(
                &format!("/v1/sources/{source}/records"),
                Some(&noisy),
                json!({"records": records}),
            )
            .await;
        assert_eq!(res.status, 202, "{:?}", res.body);
    }
    let res = app
        .post(
            &format!("/v1/sources/{quiet_source}/records"),
            Some(&quiet),
            json!({"records": [{"id": "q", "data": {"sym": "MSFT", "price": 420.0, "px": 420.0}}]}),
        )
        .await;
    assert_eq!(res.status, 202, "{:?}", res.body);

    let started = std::time::Instant::now();
    loop {
        let pulled = app
            .get(
                &format!("/v1/subscriptions/{quiet_sub}/records"),
                Some(&subscriber),
            )
            .await;
        if pulled.body["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
        {
            break;
        }
        // Waiting for the record itself; the deadline only stops a broken run.
        assert!(
            started.elapsed().as_secs() < 120,
            "the quiet record never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let quiet_after = started.elapsed();
    let noisy_so_far = app
        .get(
            &format!("/v1/subscriptions/{noisy_sub}/records?limit=1000"),
            Some(&subscriber),
        )
        .await;
    let processed = noisy_so_far.body["items"].as_array().map_or(0, Vec::len);
    app.idle().await;
    let total = started.elapsed();
    eprintln!("quiet record after {quiet_after:?}, noisy backlog done after {total:?}");
    assert!(
        processed < BACKLOG,
        "the quiet record came only after the whole noisy backlog ({processed} records)"
    );
}
