//! End-to-end delivery: records pushed over HTTP go through a feed's pipeline to 10 webhook
//! subscriptions whose endpoints are sinks in this process. Measured:
//!
//! - peak acknowledged deliveries per second, from the first ingest request to the last record
//!   a sink acknowledged, with and without batching;
//! - ingest-to-delivery latency at half that peak, open loop: each record carries the time it
//!   was sent (`data.sent_us`) and the sink that receives it records now minus that;
//! - the server's peak resident memory (`VmHWM`).
//!
//! Afterwards the usage the server counted is compared with what the sinks acknowledged; a
//! mismatch fails the bench, because then the figures measure a broken server.

use crate::server::{Connection, call};
use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use hdrhistogram::Histogram;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Subscriptions (and sinks) per feed.
pub const SINKS: usize = 10;
/// Records per ingest request in the throughput runs.
const INGEST_BATCH: u64 = 1000;
/// How long the last deliveries may take to arrive after the last ingest.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What the sinks have acknowledged so far.
#[derive(Default)]
pub struct Tally {
    records: AtomicU64,
    latency_us: Mutex<Option<Histogram<u64>>>,
}

impl Tally {
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Starts recording latencies (throughput runs do not: their records queue by design).
    fn measure_latency(&self) -> anyhow::Result<()> {
        *self.latency_us.lock().expect("poisoned") =
            Some(Histogram::new_with_bounds(1, 600_000_000, 3)?);
        Ok(())
    }

    fn take_latency(&self) -> Option<Histogram<u64>> {
        self.latency_us.lock().expect("poisoned").take()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Batch(Vec<Delivered>),
    One(Delivered),
}

#[derive(Deserialize)]
struct Delivered {
    data: Stamp,
}

#[derive(Deserialize)]
struct Stamp {
    sent_us: u64,
}

async fn sink(State(tally): State<Arc<Tally>>, body: Bytes) -> StatusCode {
    let records = match serde_json::from_slice::<Body>(&body) {
        Ok(Body::Batch(r)) => r,
        Ok(Body::One(r)) => vec![r],
        // Not acknowledged: the server retries it, and the usage check at the end notices.
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let now = now_us();
    if let Some(h) = tally.latency_us.lock().expect("poisoned").as_mut() {
        for r in &records {
            h.saturating_record(now.saturating_sub(r.data.sent_us).max(1));
        }
    }
    tally
        .records
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

/// Starts `SINKS` webhook sinks on loopback; they all count into one tally.
pub async fn start_sinks(tally: Arc<Tally>) -> anyhow::Result<Vec<SocketAddr>> {
    start_n_sinks(tally, SINKS).await
}

/// Starts `n` webhook sinks on loopback counting into one tally.
pub async fn start_n_sinks(tally: Arc<Tally>, n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        let app = axum::Router::new()
            .route("/", axum::routing::post(sink))
            .with_state(tally.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    Ok(addrs)
}

fn record(n: u64, sent_us: u64) -> String {
    format!(
        r#"{{"id":"d{n}","data":{{"sym":"AAPL","px":187.5,"qty":100,"venue":"XNAS","sent_us":{sent_us}}}}}"#
    )
}

fn body(first: u64, count: u64) -> Vec<u8> {
    let sent = now_us();
    let records: Vec<String> = (first..first + count).map(|n| record(n, sent)).collect();
    format!(r#"{{"records":[{}]}}"#, records.join(",")).into_bytes()
}

/// Pushes `records` records (from id `first`) as fast as two connections can.
async fn push_all(
    addr: SocketAddr,
    token: &str,
    source: &str,
    first: u64,
    records: u64,
) -> anyhow::Result<()> {
    let path = format!("/v1/sources/{source}/records");
    let half = records / 2;
    let mut tasks = Vec::new();
    for (start, count) in [(first, half), (first + half, records - half)] {
        let mut conn = Connection::open(addr, token).await?;
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = start;
            while n < start + count {
                let size = INGEST_BATCH.min(start + count - n);
                let (status, answer) = conn.post(&path, body(n, size)).await?;
                if status != StatusCode::ACCEPTED || answer["accepted"] != json!(size) {
                    bail!("ingest answered {status}: {answer}");
                }
                n += size;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Waits until the sinks have acknowledged `target` records in all.
async fn drained(tally: &Tally, target: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while tally.records() < target {
        if Instant::now() > deadline {
            bail!(
                "only {} of {target} deliveries arrived within {DRAIN_TIMEOUT:?}",
                tally.records()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// A push source with a feed (filter and map) and `SINKS` webhook subscriptions on it, one
/// per sink, each by its own subscriber.
pub struct Fixture {
    pub source: String,
}

pub async fn fixture(
    addr: SocketAddr,
    token: &str,
    label: &str,
    sinks: &[SocketAddr],
    batch: Option<Value>,
) -> anyhow::Result<Fixture> {
    let source = crate::created(
        addr,
        "/v1/sources",
        Some(token),
        &json!({"name": format!("{label} ticks"), "kind": "push"}),
    )
    .await?;
    let feed = crate::created(
        addr,
        "/v1/feeds",
        Some(token),
        &json!({
            "name": format!("{label} ticks"), "source_id": source,
            "description": "Delivery benchmark",
            "pipeline": {"rules": [
                {"type": "filter", "expr": "record.px > 0.0"},
                {"type": "map", "fields": {"sym": "record.sym", "usd": "record.px * 1.08",
                    "qty": "record.qty", "sent_us": "record.sent_us"}}
            ]},
            "plans": [{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "49.00",
                "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.0001"}]}],
            "visibility": "public", "status": "published",
            "sample": {"sym": "AAPL", "usd": 202.5}
        }),
    )
    .await?;
    for (i, sink) in sinks.iter().enumerate() {
        let email = format!("{label}-{i}@subscriber.example");
        crate::expect(
            addr,
            "/v1/subscribers",
            None,
            &json!({"name": format!("Sub {i}"), "email": email, "password": crate::PASSWORD}),
            StatusCode::CREATED,
        )
        .await?;
        let sub_token = crate::login(addr, &email).await?;
        let mut subscription = json!({"feed_id": feed, "plan_id": "pro",
            "channel": {"type": "webhook", "url": format!("http://{sink}/")}});
        if let Some(b) = &batch {
            subscription["batch"] = b.clone();
        }
        crate::expect(
            addr,
            "/v1/subscriptions",
            Some(&sub_token),
            &subscription,
            StatusCode::CREATED,
        )
        .await?;
    }
    Ok(Fixture { source })
}

/// Acknowledged deliveries per second: `records` records pushed as fast as possible, timed
/// until the sinks have all `SINKS × records` deliveries. `first` keeps ids unique per run.
pub async fn peak(
    addr: SocketAddr,
    token: &str,
    fixture: &Fixture,
    tally: &Tally,
    first: u64,
    records: u64,
) -> anyhow::Result<f64> {
    let target = tally.records() + records * SINKS as u64;
    let started = Instant::now();
    push_all(addr, token, &fixture.source, first, records).await?;
    drained(tally, target).await?;
    Ok((records * SINKS as u64) as f64 / started.elapsed().as_secs_f64())
}

/// Latency of each delivery at `rate` records per second pushed in 100 small requests per
/// second for `duration`, each record delivered to `subscribers`: (p50, p99, max) in
/// milliseconds.
#[allow(clippy::too_many_arguments)]
pub async fn latency(
    addr: SocketAddr,
    token: &str,
    fixture: &Fixture,
    tally: &Tally,
    first: u64,
    rate: f64,
    duration: Duration,
    subscribers: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (rate * TICK.as_secs_f64()).round().max(1.0) as u64;
    let ticks = (duration.as_secs_f64() / TICK.as_secs_f64()) as u64;
    let target = tally.records() + per_tick * ticks * subscribers;
    tally.measure_latency()?;
    let path = format!("/v1/sources/{}/records", fixture.source);
    // Requests go out on schedule even when one is slow: each tick has its own task.
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(Arc::new(tokio::sync::Mutex::new(
            Connection::open(addr, token).await?,
        )));
    }
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = tokio::task::JoinSet::new();
    for t in 0..ticks {
        interval.tick().await;
        let conn = conns[t as usize % conns.len()].clone();
        let path = path.clone();
        sends.spawn(async move {
            let (status, answer) = conn
                .lock()
                .await
                .post(&path, body(first + t * per_tick, per_tick))
                .await?;
            if status != StatusCode::ACCEPTED {
                bail!("ingest answered {status}: {answer}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent??;
    }
    drained(tally, target).await?;
    let h = tally.take_latency().context("latency was not recorded")?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok((ms(0.5), ms(0.99), h.max() as f64 / 1000.0))
}

/// The server's deliveries counted in usage, over all of the vendor's subscriptions.
pub async fn usage_total(addr: SocketAddr, token: &str) -> anyhow::Result<u64> {
    let format = &time::format_description::well_known::Rfc3339;
    let now = time::OffsetDateTime::now_utc();
    let from = (now - time::Duration::days(1)).format(format)?;
    let to = (now + time::Duration::days(1)).format(format)?;
    let (status, points) = call(
        addr,
        Method::GET,
        &format!("/v1/usage?from={from}&to={to}&granularity=day"),
        Some(token),
        None,
    )
    .await?;
    if status != StatusCode::OK {
        bail!("usage answered {status}: {points}");
    }
    Ok(points
        .as_array()
        .context("usage is not a list")?
        .iter()
        .filter_map(|p| p["deliveries"].as_u64())
        .sum())
}

/// The peak resident set of a process, in MiB, from `/proc/{pid}/status`.
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    memory_mib(pid, "VmHWM")
}

/// The current resident set of a process, in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    memory_mib(pid, "VmRSS")
}

fn memory_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}
