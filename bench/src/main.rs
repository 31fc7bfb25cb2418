//! `wharf-bench`: measures a built `wharf` binary against the product's quality bars and prints
//! a Markdown table for the README. It reports; it never fails on a slow figure (wall-clock
//! times depend on the machine). It exits non-zero only when the measurement itself is broken:
//! a child that will not start, or non-200 answers during a run.
//!
//! - `api`: closed-loop throughput of an authenticated, tenant-scoped `GET /v1/feeds/{id}`
//!   against a bare axum route (the `bare-server` subcommand of this same binary), and
//!   open-loop latency of the feed route at a fixed rate.
//! - `start`: time from spawn to a 200 on `/readyz` with an existing data dir.
//! - `ingest`: records/s over HTTP against a bare batched SQLite insert.
//! - `billing`: one billing run over 10,000 subscriptions with a month of hourly counters,
//!   against the bare SQL under it.
//! - `deliver`: end-to-end acknowledged deliveries/s to 10 webhook sinks, with and without
//!   batching, latency at half that rate, and the server's peak memory.
// A benchmark's steps read top to bottom; its functions may be long.
#![allow(clippy::too_many_lines)]

mod aws_cost;
mod billing;
mod deliver;
mod ingest;
mod load;
mod models;
mod neighbours;
mod server;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use hyper::{Method, StatusCode};
use load::{Outcome, Target};
use serde_json::{Value, json};
use server::{Child, call, free_addr};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const THROUGHPUT_BAR: f64 = 0.40;
const P99_BAR_MS: f64 = 5.0;
const START_BAR_MS: f64 = 100.0;

#[derive(Parser)]
#[command(
    name = "wharf-bench",
    about = "Measures Wharf against its quality bars"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Throughput and latency of the API against a bare axum route.
    Api(ApiArgs),
    /// Start time on an existing data dir.
    Start(StartArgs),
    /// Ingest over HTTP against a bare batched SQLite insert of the same rows.
    Ingest(IngestArgs),
    /// End-to-end deliveries to 10 webhook sinks, latency and peak memory.
    Deliver(DeliverArgs),
    /// One billing run over many subscriptions with a month of hourly usage counters.
    Billing(BillingArgs),
    /// A quiet tenant's delivery and API latency alone, then beside a noisy tenant.
    Neighbours(NeighboursArgs),
    /// The aws shape's cost per million records delivered: records through its handlers on
    /// an emulator (moto) to `sqs` subscribers, the AWS calls, Lambda invocations and API
    /// requests counted and priced with AWS's list prices.
    AwsCost(AwsCostArgs),
    /// Model rules against the bare engine (tract) on the same rows, in one process.
    Models {
        /// Measured seconds of each side.
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// The baseline for `api`: one axum route `GET /` answering static JSON, nothing else.
    BareServer {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Args)]
struct AwsCostArgs {
    /// The emulator's endpoint (such as `http://127.0.0.1:5000` for `moto_server`).
    #[arg(long)]
    aws_endpoint_url: String,
    /// Records to push.
    #[arg(long, default_value_t = 1000)]
    records: usize,
    /// Subscribers, each on its own SQS queue.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
}

#[derive(Args)]
struct ApiArgs {
    /// The `wharf` binary to measure (build it with `--release`).
    #[arg(long)]
    binary: PathBuf,
    /// Measured seconds of each run. Keep the whole bench under the 15-minute access token
    /// lifetime, or the last runs will count 401s.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unmeasured seconds before each closed-loop run (connection and cache warm-up).
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Concurrent keep-alive connections of the closed-loop runs.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests per second of the open-loop run.
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Connections the open-loop schedule is spread over.
    #[arg(long, default_value_t = 64)]
    open_connections: usize,
    /// Worker threads of the load generator; one leaves the server a core on a 2-core machine.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

#[derive(Args)]
struct IngestArgs {
    /// The `wharf` binary to measure.
    #[arg(long)]
    binary: PathBuf,
    /// Measured seconds of each run.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Concurrent pushing connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Rounds of (bare insert, ingest alone, ingest with processing); the best of each counts.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

#[derive(Args)]
struct DeliverArgs {
    /// The `wharf` binary to measure.
    #[arg(long)]
    binary: PathBuf,
    /// Records pushed in the unbatched throughput run (each is delivered 10 times).
    #[arg(long, default_value_t = 20_000)]
    records: u64,
    /// Records pushed in the batched throughput run.
    #[arg(long, default_value_t = 100_000)]
    batched_records: u64,
    /// Seconds of each latency run.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
}

#[derive(Args)]
struct NeighboursArgs {
    /// The `wharf` binary to measure.
    #[arg(long)]
    binary: PathBuf,
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// The quiet tenant's records per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// The quiet tenant's API calls per second.
    #[arg(long, default_value_t = 200)]
    api_rate: u32,
    /// The noisy tenant's published feeds on its one source.
    #[arg(long, default_value_t = 300)]
    noisy_feeds: usize,
    /// The noisy tenant's records per second.
    #[arg(long, default_value_t = 100)]
    noisy_rate: u64,
    /// The noisy tenant's webhook subscriptions to an endpoint that never answers.
    #[arg(long, default_value_t = 20)]
    hanging: usize,
    /// The noisy tenant's `http_poll` sources whose server answers after 9 seconds.
    #[arg(long, default_value_t = 5)]
    slow_sources: usize,
    /// The filter of each noisy feed (default: 1,000 evaluations per record).
    #[arg(long)]
    noisy_filter: Option<String>,
}

#[derive(Args)]
struct BillingArgs {
    /// The `wharf` binary to measure.
    #[arg(long)]
    binary: PathBuf,
    /// Subscriptions billed, each by its own subscriber.
    #[arg(long, default_value_t = 10_000)]
    subscriptions: u64,
}

#[derive(Args)]
struct StartArgs {
    /// The `wharf` binary to measure.
    #[arg(long)]
    binary: PathBuf,
    /// Timed starts.
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::BareServer { listen } => tokio::runtime::Runtime::new()?.block_on(bare(listen)),
        Command::Api(args) => {
            let runtime = client_runtime(args.client_threads)?;
            runtime.block_on(interruptible(api(args)))
        }
        Command::Start(args) => client_runtime(1)?.block_on(interruptible(start(args))),
        Command::Ingest(args) => client_runtime(1)?.block_on(interruptible(ingest_bench(args))),
        Command::Deliver(args) => client_runtime(1)?.block_on(interruptible(deliver_bench(args))),
        Command::Billing(args) => client_runtime(1)?.block_on(interruptible(billing_bench(args))),
        Command::Neighbours(args) => {
            client_runtime(1)?.block_on(interruptible(neighbours_bench(args)))
        }
        Command::Models { secs } => {
            tokio::runtime::Runtime::new()?.block_on(interruptible(models::report(secs)))
        }
        Command::AwsCost(args) => tokio::runtime::Runtime::new()?.block_on(aws_cost::report(
            &args.aws_endpoint_url,
            args.records,
            args.subscribers,
        )),
    }
}

/// A current-thread runtime for one thread: no hand-offs between a driver and a worker.
fn client_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    Ok(builder.enable_all().build()?)
}

/// Ctrl-C drops `work`, and with it the children (`kill_on_drop`) and the temp dirs.
async fn interruptible(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn bare(listen: SocketAddr) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                r#"{"status":"ok"}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// The binary as an absolute path: children run in their temp dir.
fn absolute(binary: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(binary).with_context(|| format!("no binary at {}", binary.display()))
}

fn serve(binary: &Path, data_dir: &Path, cwd: &Path) -> anyhow::Result<Child> {
    serve_with(binary, data_dir, cwd, &[])
}

fn serve_with(binary: &Path, data_dir: &Path, cwd: &Path, extra: &[&str]) -> anyhow::Result<Child> {
    let addr = free_addr()?;
    let listen = addr.to_string();
    let mut args = vec![
        "serve".as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
        "--listen".as_ref(),
        listen.as_ref(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    Child::spawn(binary, args, cwd, addr, true)
}

async fn expect(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &Value,
    want: StatusCode,
) -> anyhow::Result<Value> {
    let (status, res) = call(addr, Method::POST, path, token, Some(body)).await?;
    if status != want {
        bail!("POST {path} answered {status}, expected {want}: {res}");
    }
    Ok(res)
}

/// POSTs `body` to `path`, expecting a 201; the new object's id.
async fn created(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> anyhow::Result<String> {
    field(
        &expect(addr, path, token, body, StatusCode::CREATED).await?,
        "id",
    )
}

fn field(v: &Value, name: &str) -> anyhow::Result<String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no `{name}` in {v}"))
}

/// An access token for a user of the bench's password.
async fn login(addr: SocketAddr, email: &str) -> anyhow::Result<String> {
    field(
        &expect(
            addr,
            "/v1/auth/token",
            None,
            &json!({"email": email, "password": PASSWORD}),
            StatusCode::OK,
        )
        .await?,
        "access_token",
    )
}

/// Signs up a vendor named `name` (admin `<name>@vendor.example`); its admin's token.
async fn vendor(addr: SocketAddr, name: &str) -> anyhow::Result<String> {
    let email = format!("{}@vendor.example", name.to_lowercase());
    expect(
        addr,
        "/v1/vendors",
        None,
        &json!({"name": name, "admin_email": email, "admin_password": PASSWORD}),
        StatusCode::CREATED,
    )
    .await?;
    login(addr, &email).await
}

/// A vendor with one push source and one published feed; returns (admin token, feed id).
async fn seed(addr: SocketAddr) -> anyhow::Result<(String, String)> {
    let token = vendor(addr, "Bench").await?;
    let source = created(
        addr,
        "/v1/sources",
        Some(&token),
        &json!({"name": "ticks", "kind": "push"}),
    )
    .await?;
    let plan = json!({"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "49.00",
        "included_deliveries": 10000,
        "tiers": [{"up_to": 100000, "unit_price": "0.0010"}, {"up_to": null, "unit_price": "0.0005"}]});
    let feed_body = json!({
        "name": "Bench ticks", "source_id": source, "description": "Bench ticks for benchmarking",
        "pipeline": {"rules": [
            {"type": "filter", "expr": "record.price > 100.0"},
            {"type": "map", "fields": {"symbol": "record.sym", "usd": "record.px * 1.08"}}
        ]},
        "plans": [plan], "visibility": "public", "status": "published",
        "sample": {"symbol": "AAPL", "usd": 201.5}
    });
    let feed = created(addr, "/v1/feeds", Some(&token), &feed_body).await?;
    Ok((token, feed))
}

/// A fresh server on its own data dir with the seed, a source its feed processes and a
/// source no feed reads: (server, admin token, fed source, lone source).
async fn ingest_server(
    binary: &Path,
    dir: &Path,
) -> anyhow::Result<(Child, String, String, String)> {
    let wharf = serve(binary, &dir.join("data"), dir)?;
    let mut wharf = wharf;
    wharf.wait_ready("/readyz", READY_TIMEOUT).await?;
    let (token, feed) = seed(wharf.addr).await?;
    let (_, feed_doc) = call(
        wharf.addr,
        Method::GET,
        &format!("/v1/feeds/{feed}"),
        Some(&token),
        None,
    )
    .await?;
    let fed = field(&feed_doc, "source_id")?;
    let lone = created(
        wharf.addr,
        "/v1/sources",
        Some(&token),
        &json!({"name": "no feed", "kind": "push"}),
    )
    .await?;
    Ok((wharf, token, fed, lone))
}

async fn ingest_bench(args: IngestArgs) -> anyhow::Result<()> {
    let binary = absolute(&args.binary)?;
    let duration = Duration::from_secs(args.duration_secs);
    let dir = tempfile::tempdir()?;
    // Disk write-back makes single runs of either side swing by a third on these machines,
    // so the sides take turns and each reports its best round.
    let (mut bare, mut http_alone, mut http) = (0f64, 0f64, 0f64);
    for round in 1..=args.rounds {
        // Every run starts on an empty database, so none inherits another's file size or
        // the processor's backlog.
        eprintln!(
            "round {round} of {}, {} s each:",
            args.rounds, args.duration_secs
        );
        let b = ingest::bare_insert(&dir.path().join(format!("bare-{round}.db")), duration)?;
        eprintln!("  bare batched insert (WAL, synchronous=NORMAL): {b:.0} rows/s");
        let mut rates = [0f64; 2];
        for (i, fed_by_feed) in [false, true].into_iter().enumerate() {
            let run_dir = dir.path().join(format!("run-{round}-{i}"));
            std::fs::create_dir_all(&run_dir)?;
            let (wharf, token, fed, lone) = ingest_server(&binary, &run_dir).await?;
            let source = if fed_by_feed { &fed } else { &lone };
            rates[i] =
                ingest::over_http(wharf.addr, &token, source, args.connections, duration).await?;
            wharf.stop().await?;
            std::fs::remove_dir_all(&run_dir)?;
        }
        eprintln!(
            "  over HTTP into a source no feed reads: {:.0} records/s",
            rates[0]
        );
        eprintln!(
            "  over HTTP into a source a feed processes: {:.0} records/s",
            rates[1]
        );
        std::fs::remove_file(dir.path().join(format!("bare-{round}.db")))?;
        bare = bare.max(b);
        http_alone = http_alone.max(rates[0]);
        http = http.max(rates[1]);
    }
    println!();
    println!("| metric (best of {} rounds) | value | bar |", args.rounds);
    println!("| --- | --- | --- |");
    println!(
        "| bare batched SQLite insert, batches of 100 rows of ~1 KiB, WAL + synchronous=NORMAL | {bare:.0} rows/s | baseline |"
    );
    let verdict = |ratio: f64| if ratio >= 50.0 { "met" } else { "**not met**" };
    for (what, rate) in [
        ("into a source no feed reads", http_alone),
        ("into a source a feed processes (processor running)", http),
    ] {
        let ratio = rate / bare * 100.0;
        println!(
            "| ingest over HTTP {what}, batches of 100 × ~1 KiB, {} connections, 202 after commit | {rate:.0} records/s = {ratio:.1}% of bare | ≥ 50%: {} |",
            args.connections,
            verdict(ratio)
        );
    }
    Ok(())
}

async fn neighbours_bench(args: NeighboursArgs) -> anyhow::Result<()> {
    let binary = absolute(&args.binary)?;
    let setup = neighbours::Setup {
        binary: &binary,
        secs: args.secs,
        rate: args.rate,
        api_rate: args.api_rate,
        noisy_feeds: args.noisy_feeds,
        noisy_rate: args.noisy_rate,
        hanging: args.hanging,
        slow_sources: args.slow_sources,
        noisy_filter: args.noisy_filter.clone(),
    };
    let (alone, beside) = neighbours::run(&setup).await?;
    println!();
    println!(
        "| quiet tenant ({} records/s to a webhook, {} API calls/s) | alone | beside the noisy tenant | ratio | bar |",
        args.rate, args.api_rate
    );
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "{}",
        neighbours_row("ingest-to-delivery", alone.delivery, beside.delivery, 1)
    );
    println!(
        "{}",
        neighbours_row("`GET /v1/sources/{id}`", alone.api, beside.api, 2)
    );
    println!(
        "| API errors | {} | {} | | |",
        alone.api_errors, beside.api_errors
    );
    println!(
        "| noisy records pushed during the run (each offered to {} feeds) | | {} | | |",
        args.noisy_feeds, beside.noisy_records
    );
    Ok(())
}

/// A row of the neighbours table: p50 / p99 / max alone and beside, the p99 ratio against
/// the bar of 2×.
fn neighbours_row(
    what: &str,
    alone: (f64, f64, f64),
    beside: (f64, f64, f64),
    places: usize,
) -> String {
    let ratio = beside.1 / alone.1.max(f64::EPSILON);
    let verdict = if ratio <= 2.0 { "met" } else { "**not met**" };
    let ms = |(p50, p99, max): (f64, f64, f64)| {
        format!("{p50:.places$} / {p99:.places$} / {max:.places$} ms")
    };
    format!(
        "| {what} p50 / p99 / max | {} | {} | p99 {ratio:.2}× | ≤ 2×: {verdict} |",
        ms(alone),
        ms(beside)
    )
}

async fn deliver_bench(args: DeliverArgs) -> anyhow::Result<()> {
    use deliver::{SINKS, Tally};
    let binary = absolute(&args.binary)?;
    let dir = tempfile::tempdir()?;
    let tally = std::sync::Arc::new(Tally::default());
    let sinks = deliver::start_sinks(tally.clone()).await?;
    let mut wharf = serve_with(
        &binary,
        &dir.path().join("data"),
        dir.path(),
        &["--allow-private-webhooks"],
    )?;
    wharf.wait_ready("/readyz", READY_TIMEOUT).await?;
    let addr = wharf.addr;
    let pid = wharf.pid().context("the server is not running")?;
    let (token, _) = seed(addr).await?;
    let single = deliver::fixture(addr, &token, "single", &sinks, None).await?;
    let batched = deliver::fixture(
        addr,
        &token,
        "batched",
        &sinks,
        Some(json!({"max_records": 100, "max_wait_ms": 50})),
    )
    .await?;
    let mut next = 0;
    report_memory(pid);
    eprintln!("warming up…");
    for f in [&single, &batched] {
        deliver::peak(addr, &token, f, &tally, next, 1000).await?;
        next += 1000;
    }
    eprintln!(
        "{} records to {SINKS} webhooks, one per request…",
        args.records
    );
    let single_peak = deliver::peak(addr, &token, &single, &tally, next, args.records).await?;
    next += args.records;
    eprintln!("  {single_peak:.0} deliveries/s");
    report_memory(pid);
    eprintln!(
        "{} records to {SINKS} webhooks, batches of up to 100…",
        args.batched_records
    );
    let batched_peak =
        deliver::peak(addr, &token, &batched, &tally, next, args.batched_records).await?;
    next += args.batched_records;
    eprintln!("  {batched_peak:.0} deliveries/s");
    report_memory(pid);
    let duration = Duration::from_secs(args.latency_secs);
    let mut latencies = Vec::new();
    for (f, peak) in [(&single, single_peak), (&batched, batched_peak)] {
        let rate = peak / SINKS as f64 / 2.0;
        eprintln!(
            "latency at {rate:.0} records/s ({:.0} deliveries/s)…",
            rate * SINKS as f64
        );
        let l =
            deliver::latency(addr, &token, f, &tally, next, rate, duration, SINKS as u64).await?;
        next += (rate * duration.as_secs_f64()) as u64 + 1000;
        eprintln!("  p50 {:.1} ms, p99 {:.1} ms", l.0, l.1);
        report_memory(pid);
        latencies.push((rate, l));
    }
    let rss = deliver::peak_rss_mib(pid)?;
    let acknowledged = tally.records();
    let counted = deliver::usage_total(addr, &token).await?;
    wharf.stop().await?;
    if counted != acknowledged {
        bail!("the sinks acknowledged {acknowledged} deliveries but usage counts {counted}");
    }
    let verdict = |met: bool| if met { "met" } else { "**not met**" };
    println!();
    println!("| metric | value | bar |");
    println!("| --- | --- | --- |");
    println!(
        "| acknowledged deliveries/s to {SINKS} webhook sinks, one record per request ({} records) | {single_peak:.0} | ≥ 15,000: {} |",
        args.records,
        verdict(single_peak >= 15_000.0)
    );
    println!(
        "| the same with batches of up to 100 records ({} records) | {batched_peak:.0} | ≥ 100,000: {} |",
        args.batched_records,
        verdict(batched_peak >= 100_000.0)
    );
    for ((rate, (p50, p99, max)), what) in latencies
        .iter()
        .zip(["unbatched", "batched, max_wait_ms 50"])
    {
        println!(
            "| ingest-to-delivery latency at half the peak ({:.0} deliveries/s, {what}): p50 / p99 / max | {p50:.1} / {p99:.1} / {max:.1} ms | p99 ≤ 250 ms: {} |",
            rate * SINKS as f64,
            verdict(*p99 <= 250.0)
        );
    }
    println!(
        "| server peak RSS (VmHWM) over the whole run | {rss:.1} MiB | ≤ 150 MB: {} |",
        verdict(rss * 1.048_576 <= 150.0)
    );
    println!(
        "| deliveries acknowledged by the sinks = usage counted by the server | {acknowledged} = {counted} | |"
    );
    Ok(())
}

async fn billing_bench(args: BillingArgs) -> anyhow::Result<()> {
    let binary = absolute(&args.binary)?;
    let outcome = billing::run(&binary, args.subscriptions).await?;
    println!("| Measure | Wharf | Baseline | Bar |\n|---|---|---|---|");
    billing::report(&outcome);
    Ok(())
}

fn report_memory(pid: u32) {
    if let (Ok(now), Ok(peak)) = (deliver::rss_mib(pid), deliver::peak_rss_mib(pid)) {
        eprintln!("  server memory: {now:.1} MiB resident, {peak:.1} MiB at most so far");
    }
}

async fn api(args: ApiArgs) -> anyhow::Result<()> {
    let binary = absolute(&args.binary)?;
    let own = std::env::current_exe().context("cannot find this binary")?;
    let duration = Duration::from_secs(args.duration_secs);
    let warmup = Duration::from_secs(args.warmup_secs);
    // Declared before the children so it is removed after they are killed.
    let dir = tempfile::tempdir()?;

    let mut wharf = serve(&binary, &dir.path().join("data"), dir.path())?;
    wharf.wait_ready("/readyz", READY_TIMEOUT).await?;
    let (token, feed) = seed(wharf.addr).await?;
    let feed_path = format!("/v1/feeds/{feed}");
    let (status, body) = call(wharf.addr, Method::GET, &feed_path, Some(&token), None).await?;
    if status != StatusCode::OK {
        bail!("GET {feed_path} answered {status}: {body}");
    }

    let bare_addr = free_addr()?;
    let mut bare = Child::spawn(
        &own,
        ["bare-server", "--listen", &bare_addr.to_string()],
        dir.path(),
        bare_addr,
        false,
    )?;
    bare.wait_ready("/", READY_TIMEOUT).await?;

    let bare_target = Target::new(bare.addr, "/", None)?;
    let feed_target = Target::new(wharf.addr, &feed_path, Some(&token))?;
    let health_target = Target::new(wharf.addr, "/healthz", None)?;
    let closed = |t: &'static str, target: Target| {
        let connections = args.connections;
        async move {
            eprintln!(
                "closed loop: {t}, {connections} connections, {} s…",
                duration.as_secs()
            );
            let out = load::closed_loop(&target, connections, warmup, duration).await?;
            eprintln!("  {:.0} req/s, {} errors", out.rate(), out.errors());
            anyhow::Ok(out)
        }
    };
    let bare1 = closed("bare GET /", bare_target.clone()).await?;
    let feed1 = closed("GET /v1/feeds/{id}", feed_target.clone()).await?;
    let bare2 = closed("bare GET /", bare_target.clone()).await?;
    let feed2 = closed("GET /v1/feeds/{id}", feed_target.clone()).await?;
    // Not a bar: Wharf's router without auth or store, to tell where the feed route's time goes.
    let health = closed("GET /healthz", health_target).await?;

    eprintln!(
        "open loop: GET /v1/feeds/{{id}} at {} req/s over {} connections, {} s…",
        args.rate,
        args.open_connections,
        duration.as_secs()
    );
    let open = load::open_loop(&feed_target, args.rate, args.open_connections, duration).await?;
    eprintln!("  {:.0} req/s, {} errors", open.rate(), open.errors());
    // Not a bar: the same schedule on the bare route shows the tail that the machine and the
    // generator add by themselves.
    eprintln!("open loop: bare GET / at the same rate…");
    let open_bare =
        load::open_loop(&bare_target, args.rate, args.open_connections, duration).await?;
    eprintln!(
        "  {:.0} req/s, {} errors",
        open_bare.rate(),
        open_bare.errors()
    );

    bare.stop().await?;
    wharf.stop().await?;

    let report = ApiReport {
        args: &args,
        bare: [&bare1, &bare2],
        feed: [&feed1, &feed2],
        health: &health,
        open: &open,
        open_bare: &open_bare,
    };
    println!("{}", report.markdown());
    let broken: Vec<_> = [
        ("bare run 1", &bare1),
        ("feed run 1", &feed1),
        ("bare run 2", &bare2),
        ("feed run 2", &feed2),
        ("healthz run", &health),
        ("open-loop run", &open),
        ("bare open-loop run", &open_bare),
    ]
    .into_iter()
    .filter(|(_, o)| o.errors() > 0)
    .map(|(name, o)| {
        format!(
            "{name}: {} non-200, {} failed ({})",
            o.non_200,
            o.failed,
            o.first_error.as_deref().unwrap_or("")
        )
    })
    .collect();
    if !broken.is_empty() {
        bail!(
            "runs with errors, figures not valid:\n{}",
            broken.join("\n")
        );
    }
    Ok(())
}

struct ApiReport<'a> {
    args: &'a ApiArgs,
    bare: [&'a Outcome; 2],
    feed: [&'a Outcome; 2],
    health: &'a Outcome,
    open: &'a Outcome,
    open_bare: &'a Outcome,
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// `12345` → `12,345`: the table is read by people.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn flag(o: &Outcome) -> String {
    if o.errors() == 0 {
        String::new()
    } else {
        format!(" ⚠ {} errors", o.errors())
    }
}

impl ApiReport<'_> {
    fn markdown(&self) -> String {
        let a = self.args;
        let ratio = (self.feed[0].rate() / self.bare[0].rate()
            + self.feed[1].rate() / self.bare[1].rate())
            / 2.0;
        let open_p99 = self.open.ms(0.99);
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let runs = |o: [&Outcome; 2]| {
            format!(
                "{} / {} req/s{}{}",
                thousands(o[0].rate()),
                thousands(o[1].rate()),
                flag(o[0]),
                flag(o[1])
            )
        };
        let latency = |o: [&Outcome; 2]| {
            format!(
                "{:.2} / {:.2} ms, {:.2} / {:.2} ms",
                o[0].ms(0.5),
                o[1].ms(0.5),
                o[0].ms(0.99),
                o[1].ms(0.99)
            )
        };
        // Below 5k req/s the bar is not tested at all, so no verdict.
        let latency_bar = if a.rate >= 5000 {
            format!(
                "p99 ≤ 5 ms at 5k req/s: {}",
                verdict(open_p99 <= P99_BAR_MS)
            )
        } else {
            format!("p99 ≤ 5 ms at 5k req/s: not measured (rate {})", a.rate)
        };
        let rows = vec![
            (
                format!(
                    "Bare axum `GET /` throughput (closed loop, {} conns, runs 1 / 2)",
                    a.connections
                ),
                runs(self.bare),
                "—".to_owned(),
            ),
            (
                "Authenticated tenant-scoped `GET /v1/feeds/{id}` throughput (runs 1 / 2)".into(),
                runs(self.feed),
                "—".into(),
            ),
            (
                "Feed / bare throughput (mean of the two pairs)".into(),
                format!("{:.1}%", ratio * 100.0),
                format!(
                    "≥ 40% of bare route throughput: {}",
                    verdict(ratio >= THROUGHPUT_BAR)
                ),
            ),
            (
                "Bare p50 (runs 1 / 2), p99 (runs 1 / 2)".into(),
                latency(self.bare),
                "—".into(),
            ),
            (
                "Feed p50 (runs 1 / 2), p99 (runs 1 / 2)".into(),
                latency(self.feed),
                "—".into(),
            ),
            (
                "Diagnostic: unauthenticated `GET /healthz` throughput, p50 / p99".into(),
                format!(
                    "{} req/s, {:.2} / {:.2} ms{}",
                    thousands(self.health.rate()),
                    self.health.ms(0.5),
                    self.health.ms(0.99),
                    flag(self.health)
                ),
                "—".into(),
            ),
            (
                format!(
                    "Feed open loop at {} req/s ({} conns): p50 / p99 / p99.9 / max",
                    thousands(f64::from(a.rate)),
                    a.open_connections
                ),
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms{}",
                    self.open.ms(0.5),
                    open_p99,
                    self.open.ms(0.999),
                    self.open.latency.max() as f64 / 1000.0,
                    flag(self.open)
                ),
                latency_bar,
            ),
            (
                "Open loop achieved rate".into(),
                format!("{} req/s", thousands(self.open.rate())),
                "—".into(),
            ),
            (
                "Open loop, behind schedule at send (1 ms timer + waiting for the connection's \
                 previous answer; included above): p50 / p99"
                    .into(),
                format!(
                    "{:.2} / {:.2} ms",
                    self.open.send_lag.value_at_quantile(0.5) as f64 / 1000.0,
                    self.open.send_lag.value_at_quantile(0.99) as f64 / 1000.0
                ),
                "—".into(),
            ),
            (
                "Diagnostic: bare `GET /` on the same open-loop schedule: p50 / p99 / p99.9 / max"
                    .into(),
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms{}",
                    self.open_bare.ms(0.5),
                    self.open_bare.ms(0.99),
                    self.open_bare.ms(0.999),
                    self.open_bare.latency.max() as f64 / 1000.0,
                    flag(self.open_bare)
                ),
                "—".into(),
            ),
        ];
        let mut out = format!(
            "\n{cpus} CPUs; load generator on {} thread(s); {} s per run after {} s warm-up.\n\n\
             | metric | value | bar |\n| --- | --- | --- |\n",
            a.client_threads, a.duration_secs, a.warmup_secs
        );
        for (metric, value, bar) in rows {
            out.push_str(&format!("| {metric} | {value} | {bar} |\n"));
        }
        out
    }
}

async fn start(args: StartArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let binary = absolute(&args.binary)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");

    // The first start migrates the database and creates the keys; the bar is about later ones.
    let mut first = serve(&binary, &data, dir.path())?;
    let cold = first.wait_ready("/readyz", READY_TIMEOUT).await?;
    first.stop().await?;
    eprintln!("first start (empty data dir): {} ms", cold.as_millis());

    let mut spawn_to_ready = Vec::with_capacity(args.runs);
    let mut self_reported = Vec::new();
    for run in 1..=args.runs {
        let mut child = serve(&binary, &data, dir.path())?;
        let took = child.wait_ready("/readyz", READY_TIMEOUT).await?;
        // The server's own figure (from its `main`) separates exec and loading from our polling.
        if let Some(ms) = child
            .stdout_line("Wharf is ready in ")
            .await
            .and_then(|l| l.split_whitespace().nth(4)?.parse::<f64>().ok())
        {
            self_reported.push(ms);
        }
        child.stop().await?;
        eprintln!("  run {run}: {:.1} ms", took.as_secs_f64() * 1000.0);
        spawn_to_ready.push(took.as_secs_f64() * 1000.0);
    }
    spawn_to_ready.sort_by(f64::total_cmp);
    self_reported.sort_by(f64::total_cmp);
    let p50 = median(&spawn_to_ready);
    let max = spawn_to_ready.last().copied().unwrap_or(0.0);

    println!(
        "\n| metric | value | bar |\n| --- | --- | --- |\n\
         | Start on an existing data dir, spawn → `/readyz` 200 ({} runs, 1 ms polls): p50 / max | {p50:.1} / {max:.1} ms | ≤ 100 ms on an existing data dir (judged on max): {} |\n\
         | Same, as the server reports it (`main` → listening): p50 / max | {} | — |\n\
         | First start on an empty data dir (migrations, key creation) | {} ms | — |",
        args.runs,
        verdict(max <= START_BAR_MS),
        if self_reported.is_empty() {
            "not printed".to_owned()
        } else {
            format!(
                "{:.0} / {:.0} ms",
                median(&self_reported),
                self_reported.last().copied().unwrap_or(0.0)
            )
        },
        cold.as_millis()
    );
    Ok(())
}

/// The middle of sorted `values`.
fn median(values: &[f64]) -> f64 {
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
