//! Crash safety: `wharf serve` is SIGKILLed several times while records are pushed and
//! delivered, and restarted on the same data dir. Afterwards no acknowledged record is lost,
//! every record reaches every subscription at least once, usage equals the distinct records
//! each subscription acknowledged, and pushing everything again changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/receiver.rs"]
#[allow(dead_code)]
mod wait;

use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_wharf");
const PASSWORD: &str = "correct horse battery";

type Seen = Arc<Mutex<HashMap<String, usize>>>;

async fn receive(State(seen): State<Seen>, body: Bytes) -> &'static str {
    let record: Value = serde_json::from_slice(&body).unwrap();
    let id = record["data"]["n"].as_u64().unwrap().to_string();
    *seen.lock().unwrap().entry(id).or_default() += 1;
    "ok"
}

async fn receiver() -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn start(data: &std::path::Path, port: u16) -> Child {
    Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--allow-private-webhooks",
        ])
        .env("WHARF_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

async fn ready(client: &reqwest::Client, base: &str) {
    eventually("wharf is back", || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

async fn post(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = client.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged_and_counts_each_delivery_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut child = start(dir.path(), port);
    ready(&client, &base).await;

    post(
        &client,
        format!("{base}/v1/vendors"),
        None,
        json!({"name": "Acme", "admin_email": "v@acme.example", "admin_password": PASSWORD}),
    )
    .await;
    let vendor = post(
        &client,
        format!("{base}/v1/auth/token"),
        None,
        json!({"email": "v@acme.example", "password": PASSWORD}),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let source = post(
        &client,
        format!("{base}/v1/sources"),
        Some(&vendor),
        json!({"name": "s", "kind": "push"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let plan = json!({"id": "p", "name": "P", "currency": "usd", "monthly_fee": "1.00", "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.01"}]});
    let feed = post(
        &client,
        format!("{base}/v1/feeds"),
        Some(&vendor),
        json!({"name": "f", "source_id": source, "status": "published", "plans": [plan],
        "pipeline": {"rules": [{"type": "map", "fields": {"n": "record.n"}}]}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    post(
        &client,
        format!("{base}/v1/subscribers"),
        None,
        json!({"name": "s", "email": "s@sub.example", "password": PASSWORD}),
    )
    .await;
    let subscriber = post(
        &client,
        format!("{base}/v1/auth/token"),
        None,
        json!({"email": "s@sub.example", "password": PASSWORD}),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut hooks = Vec::new();
    for _ in 0..2 {
        let (url, seen) = receiver().await;
        let sub = post(
            &client,
            format!("{base}/v1/subscriptions"),
            Some(&subscriber),
            json!({"feed_id": feed, "plan_id": "p", "channel": {"type": "webhook", "url": url}}),
        )
        .await;
        hooks.push((sub["id"].as_str().unwrap().to_owned(), seen));
    }

    // Push batches of 20 from a loader while the server is killed and restarted.
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Whether the server is up: a refused request waits for the restart, not for a while.
    let (up, mut is_up) = tokio::sync::watch::channel(true);
    let loader = {
        let (client, base, source, vendor, acked, stop) = (
            client.clone(),
            base.clone(),
            source.clone(),
            vendor.clone(),
            acked.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<u64> = (n..n + 20).collect();
                let records: Vec<Value> = batch
                    .iter()
                    .map(|i| json!({"id": format!("r{i}"), "data": {"n": i}}))
                    .collect();
                let res = client
                    .post(format!("{base}/v1/sources/{source}/records"))
                    .bearer_auth(&vendor)
                    .json(&json!({"records": records}))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 202 => {
                        acked.lock().unwrap().extend(batch);
                        n += 20;
                    }
                    // Unacknowledged: retried with the same ids, which dedup makes safe.
                    _ => {
                        let _ = is_up.wait_for(|up| *up).await;
                        tokio::task::yield_now().await;
                    }
                }
            }
        })
    };
    for kill in 0..5u64 {
        // Under load for a while, so the kill lands in the middle of work.
        tokio::time::sleep(Duration::from_millis(400 + 150 * kill)).await;
        up.send_replace(false);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        child = start(dir.path(), port);
        ready(&client, &base).await;
        up.send_replace(true);
    }
    // And under load a while after the last restart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    loader.await.unwrap();
    let acked: HashSet<u64> = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "the load pushed records ({})",
        acked.len()
    );
    eprintln!("{} records acknowledged across 5 SIGKILLs", acked.len());

    let all_delivered = || {
        hooks.iter().all(|(_, seen)| {
            let seen = seen.lock().unwrap();
            acked.iter().all(|n| seen.contains_key(&n.to_string()))
        })
    };
    eventually(
        "every acknowledged record reached every subscription",
        || async { all_delivered() },
    )
    .await;

    let usage = |sub: String| {
        let (client, base, token) = (client.clone(), base.clone(), subscriber.clone());
        async move {
            let fmt = |t: time::OffsetDateTime| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            };
            let now = time::OffsetDateTime::now_utc();
            let (from, to) = (
                fmt(now - time::Duration::days(1)),
                fmt(now + time::Duration::days(1)),
            );
            let res = client
                .get(format!(
                    "{base}/v1/usage?subscription_id={sub}&from={from}&to={to}"
                ))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let points: Value = res.json().await.unwrap();
            points
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["deliveries"].as_u64().unwrap())
                .sum::<u64>()
        }
    };
    // Counting follows the acknowledgement in the same write as the position move: once the
    // counts stop short of nothing, they must equal what was seen, never more.
    eventually("every subscription's deliveries are counted", || async {
        for (sub, seen) in &hooks {
            let distinct = seen.lock().unwrap().len() as u64;
            if usage(sub.clone()).await < distinct {
                return false;
            }
        }
        true
    })
    .await;
    for (sub, seen) in &hooks {
        let distinct = seen.lock().unwrap().len() as u64;
        assert_eq!(
            usage(sub.clone()).await,
            distinct,
            "usage equals the distinct records delivered"
        );
    }

    // Everything pushed again, after the restarts: duplicates only, nothing new delivered or counted.
    let before: Vec<usize> = hooks.iter().map(|(_, s)| s.lock().unwrap().len()).collect();
    let all: Vec<u64> = acked.iter().copied().collect();
    let mut duplicates = 0;
    for chunk in all.chunks(500) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"id": format!("r{i}"), "data": {"n": i}}))
            .collect();
        let res = post(
            &client,
            format!("{base}/v1/sources/{source}/records"),
            Some(&vendor),
            json!({"records": records}),
        )
        .await;
        assert_eq!(res["accepted"], 0);
        duplicates += res["duplicates"].as_u64().unwrap();
    }
    assert_eq!(duplicates, acked.len() as u64);
    // Nothing arrives in the second after: time itself is what this checks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<usize> = hooks.iter().map(|(_, s)| s.lock().unwrap().len()).collect();
    assert_eq!(before, after);
    for (sub, seen) in &hooks {
        assert_eq!(usage(sub.clone()).await, seen.lock().unwrap().len() as u64);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
