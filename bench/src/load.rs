//! The load generator: keep-alive HTTP/1.1 connections (one task each) driven either
//! closed-loop (each connection sends its next request as soon as the previous answer is read:
//! measures throughput) or open-loop (requests on a fixed schedule: measures latency).
//!
//! Open-loop latency is counted from each request's *scheduled* time, not from when it was
//! actually written, so a server that stalls cannot hide the requests that queued behind the
//! stall (no coordinated omission). Latencies are recorded in microseconds.

use anyhow::Context;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Highest latency the histograms track; anything slower saturates at this value.
const MAX_LATENCY_US: u64 = 60_000_000;

/// The request every connection of a run repeats.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    uri: Uri,
    host: HeaderValue,
    bearer: Option<HeaderValue>,
}

impl Target {
    pub fn new(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<Target> {
        Ok(Target {
            addr,
            uri: path.parse().with_context(|| format!("bad path {path}"))?,
            host: HeaderValue::from_str(&addr.to_string())?,
            bearer: token
                .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
                .transpose()?,
        })
    }

    /// Built from pre-parsed parts so the generator spends its one thread sending, not parsing.
    fn request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = self.uri.clone();
        req.headers_mut().insert(HOST, self.host.clone());
        if let Some(b) = &self.bearer {
            req.headers_mut().insert(AUTHORIZATION, b.clone());
        }
        req
    }
}

/// The merged result of one run.
pub struct Outcome {
    /// Latency of the 200 answers, µs.
    pub latency: Histogram<u64>,
    /// Open loop only: how late each request left against its schedule, µs. Shows how much of
    /// `latency` is the generator's own timer and scheduling rather than the server.
    pub send_lag: Histogram<u64>,
    pub ok: u64,
    pub non_200: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// The measured window (closed loop) or first schedule slot to last answer (open loop).
    pub elapsed: Duration,
}

impl Outcome {
    fn empty(template: &Histogram<u64>) -> Outcome {
        Outcome {
            latency: template.clone(),
            send_lag: template.clone(),
            ok: 0,
            non_200: 0,
            failed: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: Outcome) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        self.send_lag.add(&other.send_lag)?;
        self.ok += other.ok;
        self.non_200 += other.non_200;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed = self.elapsed.max(other.elapsed);
        Ok(())
    }

    fn error(&mut self, what: String) {
        self.first_error.get_or_insert(what);
    }

    /// 200 answers per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    pub fn errors(&self) -> u64 {
        self.non_200 + self.failed
    }

    /// Latency at `q` in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    // Small requests back to back: Nagle would add delayed-ACK stalls to every exchange.
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // A broken connection also fails the next `send_request`, which is where it is counted.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn connect_all(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<SendRequest<Empty<Bytes>>>> {
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        senders.push(connect(addr).await?);
    }
    Ok(senders)
}

/// One exchange; reads the whole body so the connection can carry the next request.
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
) -> anyhow::Result<StatusCode> {
    sender.ready().await?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    res.into_body().collect().await?;
    Ok(status)
}

/// Counts one answer into `out`; a transport error replaces the connection. Returns false
/// when no new connection can be made, which ends that connection's task.
async fn settle(
    out: &mut Outcome,
    target: &Target,
    sender: &mut SendRequest<Empty<Bytes>>,
    result: anyhow::Result<StatusCode>,
    latency: Option<Duration>,
) -> bool {
    match result {
        Ok(StatusCode::OK) => {
            if let Some(l) = latency {
                out.ok += 1;
                out.latency.saturating_record(micros(l));
            }
            true
        }
        Ok(status) => {
            out.non_200 += 1;
            out.error(format!("HTTP {status}"));
            true
        }
        Err(e) => {
            out.failed += 1;
            out.error(format!("{e:#}"));
            match connect(target.addr).await {
                Ok(s) => {
                    *sender = s;
                    true
                }
                Err(e) => {
                    out.error(format!("{e:#}"));
                    false
                }
            }
        }
    }
}

/// `connections` connections send back to back for `warmup + duration`; only requests sent
/// after the warm-up count towards rate and latency (errors always count).
pub async fn closed_loop(
    target: &Target,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let template = histogram()?;
    // Handshakes happen before the clock starts so the window holds requests only.
    let senders = connect_all(target.addr, connections).await?;
    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let mut tasks = JoinSet::new();
    for mut sender in senders {
        let target = target.clone();
        let mut out = Outcome::empty(&template);
        tasks.spawn(async move {
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let result = exchange(&mut sender, target.request()).await;
                let latency = (sent >= measure_from).then(|| sent.elapsed());
                if !settle(&mut out, &target, &mut sender, result, latency).await {
                    break;
                }
            }
            out
        });
    }
    let mut total = Outcome::empty(&template);
    while let Some(out) = tasks.join_next().await {
        total.merge(out?)?;
    }
    total.elapsed = duration;
    Ok(total)
}

/// `rate` requests per second for `duration`, request `k` scheduled at `start + k / rate` and
/// sent on connection `k % connections`. A connection still waiting for an earlier answer sends
/// late, and that wait is part of the recorded latency.
pub async fn open_loop(
    target: &Target,
    rate: u32,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        rate > 0 && connections > 0,
        "rate and connections must be > 0"
    );
    let template = histogram()?;
    let senders = connect_all(target.addr, connections).await?;
    let total_requests = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let interval_ns = 1_000_000_000 / u64::from(rate);
    // A short lead so the first slots are not already late when the tasks first run.
    let start = Instant::now() + Duration::from_millis(20);
    let stride = connections as u64;
    let mut tasks = JoinSet::new();
    for (i, mut sender) in senders.into_iter().enumerate() {
        let target = target.clone();
        let mut out = Outcome::empty(&template);
        tasks.spawn(async move {
            let mut k = i as u64;
            let mut last_done = start;
            while k < total_requests {
                let scheduled = start + Duration::from_nanos(interval_ns * k);
                tokio::time::sleep_until(scheduled).await;
                out.send_lag
                    .saturating_record(micros(Instant::now().saturating_duration_since(scheduled)));
                let result = exchange(&mut sender, target.request()).await;
                last_done = Instant::now();
                let latency = Some(last_done.saturating_duration_since(scheduled));
                if !settle(&mut out, &target, &mut sender, result, latency).await {
                    break;
                }
                k += stride;
            }
            out.elapsed = last_done.saturating_duration_since(start);
            out
        });
    }
    let mut total = Outcome::empty(&template);
    while let Some(out) = tasks.join_next().await {
        total.merge(out?)?;
    }
    Ok(total)
}
