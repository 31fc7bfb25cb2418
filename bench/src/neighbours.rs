//! Noisy neighbours: a quiet tenant's figures alone, then beside a noisy tenant, each run on
//! a fresh server. The quiet tenant pushes records at a steady rate through a feed (filter and
//! map) to one webhook sink and reads its source over the API at a steady rate; measured are
//! the ingest-to-delivery latency of its records and the latency of its API calls.
//!
//! The noisy tenant has, in the second run: one source read by many published feeds (the
//! quota raised to allow them), each with a filter of a thousand evaluations per record
//! (within the budget), records pushed to that source all along, webhook subscriptions on
//! some of the feeds to an endpoint that never answers, and `http_poll` sources whose server
//! answers only after 9 seconds.

use crate::deliver::{self, Tally};
use crate::load::{Target, open_loop};
use crate::server::{Child, Connection, free_addr};
use anyhow::{Context, bail};
use hyper::StatusCode;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What the bench is told.
pub struct Setup<'a> {
    pub binary: &'a Path,
    /// Seconds of each measured run.
    pub secs: u64,
    /// The quiet tenant's records per second.
    pub rate: f64,
    /// The quiet tenant's API calls per second.
    pub api_rate: u32,
    /// The noisy tenant's published feeds on its one source.
    pub noisy_feeds: usize,
    /// The noisy tenant's records per second.
    pub noisy_rate: u64,
    /// The noisy tenant's webhook subscriptions to an endpoint that never answers.
    pub hanging: usize,
    /// The noisy tenant's `http_poll` sources whose server answers after 9 seconds.
    pub slow_sources: usize,
    /// The filter of each noisy feed (`None`: [`EXPENSIVE`]).
    pub noisy_filter: Option<String>,
}

/// The quiet tenant's figures in one run, in milliseconds.
pub struct Figures {
    pub delivery: (f64, f64, f64),
    pub api: (f64, f64, f64),
    pub api_errors: u64,
    /// Records the noisy tenant pushed during the run.
    pub noisy_records: u64,
}

/// The quiet tenant alone, then beside the noisy one.
pub async fn run(setup: &Setup<'_>) -> anyhow::Result<(Figures, Figures)> {
    eprintln!("the quiet tenant alone…");
    let alone = measure(setup, false).await?;
    eprintln!("the quiet tenant beside the noisy one…");
    let beside = measure(setup, true).await?;
    Ok((alone, beside))
}

async fn measure(setup: &Setup<'_>, noisy: bool) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let data = dir.path().join("data");
    let listen = addr.to_string();
    let feeds = (setup.noisy_feeds + 10).to_string();
    let mut wharf = Child::spawn_with_env(
        setup.binary,
        [
            "serve".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
            "--allow-private-webhooks".as_ref(),
        ],
        dir.path(),
        addr,
        false,
        &[
            ("WHARF_EGRESS_ALLOW", r#"["127.0.0.0/8", "::1"]"#),
            ("WHARF_LIMITS__QUOTAS__PUBLISHED_FEEDS_PER_SOURCE", &feeds),
            ("WHARF_LIMITS__QUOTAS__FEEDS_PER_TENANT", &feeds),
        ],
    )?;
    wharf.wait_ready("/readyz", crate::READY_TIMEOUT).await?;
    let tally = Arc::new(Tally::default());
    let sinks = deliver::start_n_sinks(tally.clone(), 1).await?;
    let token = crate::vendor(addr, "Quiet").await?;
    let quiet = deliver::fixture(addr, &token, "quiet", &sinks, None).await?;
    let noise = if noisy {
        Some(Noise::start(addr, setup).await?)
    } else {
        None
    };
    // Let the noise build up before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let duration = Duration::from_secs(setup.secs);
    let target = Target::new(addr, &format!("/v1/sources/{}", quiet.source), Some(&token))?;
    let (api, delivery) = tokio::join!(
        open_loop(&target, setup.api_rate, 8, duration),
        deliver::latency(addr, &token, &quiet, &tally, 0, setup.rate, duration, 1)
    );
    let (api, delivery) = (api?, delivery?);
    let noisy_records = match noise {
        Some(noise) => noise.stop().await?,
        None => 0,
    };
    wharf.stop().await?;
    if api.ok == 0 {
        bail!(
            "no API call succeeded: {}",
            api.first_error.unwrap_or_default()
        );
    }
    Ok(Figures {
        delivery,
        api: (api.ms(0.5), api.ms(0.99), api.latency.max() as f64 / 1000.0),
        api_errors: api.errors(),
        noisy_records,
    })
}

/// The noisy tenant at work, until stopped.
struct Noise {
    stop: Arc<AtomicBool>,
    pushed: Arc<AtomicU64>,
    pusher: tokio::task::JoinHandle<anyhow::Result<()>>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

/// A filter of 10 × 10 × 10 evaluations per record: expensive, and within the default budget.
pub const EXPENSIVE: &str = "[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, \
     [1,2,3,4,5,6,7,8,9,10].all(c, double(a * b * c) + record.px > 0.0)))";

impl Noise {
    async fn start(addr: SocketAddr, setup: &Setup<'_>) -> anyhow::Result<Noise> {
        let token = crate::vendor(addr, "Noisy").await?;
        let (hanging, hang_server) = hanging_endpoint().await?;
        let (slow, slow_server) = slow_source_server().await?;
        let source = crate::created(
            addr,
            "/v1/sources",
            Some(&token),
            &json!({"name": "firehose", "kind": "push"}),
        )
        .await?;
        eprintln!("  {} noisy feeds…", setup.noisy_feeds);
        let mut feeds = Vec::new();
        for i in 0..setup.noisy_feeds {
            let feed = crate::expect(
                addr,
                "/v1/feeds",
                Some(&token),
                &json!({
                    "name": format!("noisy {i}"), "source_id": source,
                    "pipeline": {"rules": [{"type": "filter", "expr": setup.noisy_filter.as_deref().unwrap_or(EXPENSIVE)}]},
                    "plans": [{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "1.00",
                        "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.0001"}]}],
                    "status": "published"
                }),
                StatusCode::CREATED,
            )
            .await
            .context("a noisy feed")?;
            feeds.push(crate::field(&feed, "id")?);
        }
        let email = "noisy@subscriber.example";
        crate::expect(
            addr,
            "/v1/subscribers",
            None,
            &json!({"name": "Noisy", "email": email, "password": crate::PASSWORD}),
            StatusCode::CREATED,
        )
        .await?;
        let subscriber = crate::login(addr, email).await?;
        for feed in feeds.iter().cycle().take(setup.hanging) {
            crate::expect(
                addr,
                "/v1/subscriptions",
                Some(&subscriber),
                &json!({"feed_id": feed, "plan_id": "pro",
                    "channel": {"type": "webhook", "url": format!("http://{hanging}/")}}),
                StatusCode::CREATED,
            )
            .await?;
        }
        for i in 0..setup.slow_sources {
            crate::expect(
                addr,
                "/v1/sources",
                Some(&token),
                &json!({"name": format!("slow {i}"), "kind": "http_poll",
                    "url": format!("http://{slow}/px"), "every": "10s"}),
                StatusCode::CREATED,
            )
            .await
            .context("a slow source")?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let pushed = Arc::new(AtomicU64::new(0));
        let pusher = tokio::spawn(push_steadily(
            addr,
            token,
            source,
            setup.noisy_rate,
            stop.clone(),
            pushed.clone(),
        ));
        Ok(Noise {
            stop,
            pushed,
            pusher,
            servers: vec![hang_server, slow_server],
        })
    }

    /// Stops pushing; the records pushed.
    async fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.pusher.await??;
        for server in self.servers {
            server.abort();
        }
        Ok(self.pushed.load(Ordering::Relaxed))
    }
}

/// Pushes `rate` records per second in ten requests a second until `stop`.
async fn push_steadily(
    addr: SocketAddr,
    token: String,
    source: String,
    rate: u64,
    stop: Arc<AtomicBool>,
    pushed: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let per_request = (rate / 10).max(1);
    let mut conn = Connection::open(addr, &token).await?;
    let path = format!("/v1/sources/{source}/records");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let records: Vec<String> = (next..next + per_request)
            .map(|n| format!(r#"{{"id":"n{n}","data":{{"px":{n}.5}}}}"#))
            .collect();
        next += per_request;
        let (status, answer) = conn
            .post(
                &path,
                format!(r#"{{"records":[{}]}}"#, records.join(",")).into_bytes(),
            )
            .await?;
        if status != StatusCode::ACCEPTED {
            bail!("the noisy ingest answered {status}: {answer}");
        }
        pushed.fetch_add(per_request, Ordering::Relaxed);
    }
    Ok(())
}

/// An endpoint that accepts connections and never answers them.
async fn hanging_endpoint() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok((addr, server))
}

/// A poll source's server that answers an empty list after 9 seconds.
async fn slow_source_server() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/px",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(9)).await;
            axum::Json(json!([]))
        }),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, server))
}
