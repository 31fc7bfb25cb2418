//! Crash safety: `wharf serve` is SIGKILLed 20 times while records are pushed and delivered,
//! and restarted on the same data dir each time. Afterwards no acknowledged record is lost,
//! every record reaches every subscription at least once, usage equals the distinct records
//! each subscription acknowledged, and pushing everything again changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

#[path = "api/receiver.rs"]
#[allow(dead_code)]
mod wait;

use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wait::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_wharf");
const PASSWORD: &str = "correct horse battery";
/// How many times the server is killed.
const KILLS: u64 = 20;

/// Records a webhook receiver saw, by record number, with how often.
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

/// A `wharf serve` process on a data dir and port, killed and restarted at will.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let server = Server {
            child: spawn(dir.path(), port),
            base: format!("http://127.0.0.1:{port}"),
            dir,
            port,
            client,
        };
        server.ready().await;
        server
    }

    async fn ready(&self) {
        eventually("wharf is up", || async {
            self.client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// SIGKILL, then a start on the same data dir.
    async fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = spawn(self.dir.path(), self.port);
        self.ready().await;
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Value {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap()
    }

    async fn login(&self, email: &str) -> String {
        let body = json!({"email": email, "password": PASSWORD});
        self.post("/v1/auth/token", None, body).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Deliveries counted for `sub` today.
    async fn usage(&self, token: &str, sub: &str) -> u64 {
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let now = time::OffsetDateTime::now_utc();
        let (from, to) = (
            fmt(now - time::Duration::days(1)),
            fmt(now + time::Duration::days(1)),
        );
        let url = format!(
            "{}/v1/usage?subscription_id={sub}&from={from}&to={to}",
            self.base
        );
        let res = self
            .client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let points: Value = res.json().await.unwrap();
        points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["deliveries"].as_u64().unwrap())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &std::path::Path, port: u16) -> Child {
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

/// A vendor's source and feed (every record passes), and two webhook subscriptions.
struct Market {
    vendor: String,
    source: String,
    subscriber: String,
    hooks: Vec<(String, Seen)>,
}

impl Market {
    async fn open(server: &Server) -> Market {
        let body =
            json!({"name": "Acme", "admin_email": "v@acme.example", "admin_password": PASSWORD});
        server.post("/v1/vendors", None, body).await;
        let vendor = server.login("v@acme.example").await;
        let body = json!({"name": "s", "kind": "push"});
        let source = server.post("/v1/sources", Some(&vendor), body).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let plan = json!({"id": "p", "name": "P", "currency": "usd", "monthly_fee": "1.00", "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.01"}]});
        let body = json!({"name": "f", "source_id": source, "status": "published", "plans": [plan],
            "pipeline": {"rules": [{"type": "map", "fields": {"n": "record.n"}}]}});
        let feed = server.post("/v1/feeds", Some(&vendor), body).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = json!({"name": "s", "email": "s@sub.example", "password": PASSWORD});
        server.post("/v1/subscribers", None, body).await;
        let subscriber = server.login("s@sub.example").await;
        let mut hooks = Vec::new();
        for _ in 0..2 {
            let (url, seen) = receiver().await;
            let body = json!({"feed_id": feed, "plan_id": "p", "channel": {"type": "webhook", "url": url}});
            let sub = server
                .post("/v1/subscriptions", Some(&subscriber), body)
                .await;
            hooks.push((sub["id"].as_str().unwrap().to_owned(), seen));
        }
        Market {
            vendor,
            source,
            subscriber,
            hooks,
        }
    }

    fn records(numbers: &[u64]) -> Value {
        let records: Vec<Value> = numbers
            .iter()
            .map(|i| json!({"id": format!("r{i}"), "data": {"n": i}}))
            .collect();
        json!({ "records": records })
    }

    fn seen(&self) -> Vec<usize> {
        self.hooks
            .iter()
            .map(|(_, s)| s.lock().unwrap().len())
            .collect()
    }
}

/// Pushes batches of 20 while the server is killed and restarted `KILLS` times; answers the
/// numbers of the records the server acknowledged.
async fn load_through_kills(server: &mut Server, market: &Market) -> HashSet<u64> {
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Whether the server is up: a refused request waits for the restart, not for a while.
    let (up, mut is_up) = tokio::sync::watch::channel(true);
    let loader = {
        let (client, url, vendor, acked, stop) = (
            server.client.clone(),
            format!("{}/v1/sources/{}/records", server.base, market.source),
            market.vendor.clone(),
            acked.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<u64> = (n..n + 20).collect();
                let body = Market::records(&batch);
                let res = client
                    .post(&url)
                    .bearer_auth(&vendor)
                    .json(&body)
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
    for kill in 0..KILLS {
        // Under load for a while, so the kill lands in the middle of work; the waits vary
        // so the kills land at different points of the work.
        tokio::time::sleep(Duration::from_millis(150 + 60 * (kill % 5))).await;
        up.send_replace(false);
        server.kill_and_restart().await;
        up.send_replace(true);
    }
    // And under load a while after the last restart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    acked.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged_and_counts_each_delivery_once() {
    let mut server = Server::start().await;
    let market = Market::open(&server).await;
    let acked = load_through_kills(&mut server, &market).await;
    assert!(
        acked.len() >= 100,
        "the load pushed records ({})",
        acked.len()
    );
    eprintln!(
        "{} records acknowledged across {KILLS} SIGKILLs",
        acked.len()
    );

    eventually(
        "every acknowledged record reached every subscription",
        || async {
            market.hooks.iter().all(|(_, seen)| {
                let seen = seen.lock().unwrap();
                acked.iter().all(|n| seen.contains_key(&n.to_string()))
            })
        },
    )
    .await;
    // Counting is the same write as the position move: once the counts reach what was seen,
    // they must equal it, never more.
    let token = &market.subscriber;
    eventually("every subscription's deliveries are counted", || async {
        for (sub, seen) in &market.hooks {
            let distinct = seen.lock().unwrap().len() as u64;
            if server.usage(token, sub).await < distinct {
                return false;
            }
        }
        true
    })
    .await;
    for (sub, seen) in &market.hooks {
        let distinct = seen.lock().unwrap().len() as u64;
        let counted = server.usage(token, sub).await;
        assert_eq!(
            counted, distinct,
            "usage equals the distinct records delivered"
        );
    }

    // Everything pushed again, after the restarts: duplicates only, nothing new delivered
    // or counted.
    let before = market.seen();
    let all: Vec<u64> = acked.iter().copied().collect();
    let mut duplicates = 0;
    let path = format!("/v1/sources/{}/records", market.source);
    for chunk in all.chunks(500) {
        let res = server
            .post(&path, Some(&market.vendor), Market::records(chunk))
            .await;
        assert_eq!(res["accepted"], 0);
        duplicates += res["duplicates"].as_u64().unwrap();
    }
    assert_eq!(duplicates, acked.len() as u64);
    // Nothing arrives in the second after: time itself is what this checks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(before, market.seen());
    for (sub, seen) in &market.hooks {
        assert_eq!(
            server.usage(token, sub).await,
            seen.lock().unwrap().len() as u64
        );
    }
}
