//! `billing`: one billing run over many subscriptions with a month of hourly usage counters.
//!
//! One subscriber and one subscription are made through the API on a server whose clock
//! starts in December 2030; the store is then stopped and the subscription is cloned in SQL
//! (a subscriber per subscription) with a counter for every hour of January 2031. A server
//! started on 1 February closes January through `POST /v1/billing/runs`; the bench times that
//! call, checks every invoice's usage quantity against the counters it wrote, and beside it
//! times the bare SQL the run cannot avoid: summing the counters per subscription and writing
//! one row per invoice in one transaction.

use crate::server::{Child, call, free_addr};
use crate::{PASSWORD, READY_TIMEOUT, expect, field, login, seed};
use anyhow::{Context, bail, ensure};
use hyper::{Method, StatusCode};
use rusqlite::{Connection, params};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// 2031-01-01T00:00:00Z and 2031-02-01T00:00:00Z in unix seconds.
const JANUARY: (i64, i64) = (1_924_992_000, 1_927_670_400);
const HOURS: i64 = (JANUARY.1 - JANUARY.0) / 3600;
const BAR_SECS: f64 = 10.0;

/// The deterministic counter of subscription `i` in hour `h`: totals from 0 to about 230k a
/// month, so the plan's included deliveries and both tiers are crossed.
fn count(i: u64, h: i64) -> i64 {
    (i % 300) as i64 + h % 7
}

pub struct Outcome {
    pub subscriptions: u64,
    pub counters: u64,
    pub run_secs: f64,
    pub bare_secs: f64,
}

/// A server on `data` whose clock starts at `clock`.
async fn server(binary: &Path, dir: &Path, clock: &str) -> anyhow::Result<Child> {
    let addr = free_addr()?;
    let data = dir.join("data");
    let listen = addr.to_string();
    let mut child = Child::spawn_with_env(
        binary,
        [
            "serve".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--listen".as_ref(),
            std::ffi::OsStr::new(&listen),
        ],
        dir,
        addr,
        false,
        &[("WHARF_CLOCK_START", clock)],
    )?;
    child.wait_ready("/readyz", READY_TIMEOUT).await?;
    Ok(child)
}

/// An id of the same kind as `like`, unique per `n`, sorting after it.
fn sibling(like: &str, n: u64) -> String {
    let prefix = &like[..like.len() - 12];
    format!("{prefix}{n:012x}")
}

/// Clones subscription `sub` (and its subscriber) until there are `n`, and writes every
/// hour's counter of January; returns each subscription's expected January total.
fn populate(db: &Path, sub: &str, n: u64) -> anyhow::Result<HashMap<String, i64>> {
    let mut c = Connection::open(db)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    let subscriber: String = c.query_row(
        "SELECT subscriber_id FROM subscriptions WHERE id = ?",
        [sub],
        |r| r.get(0),
    )?;
    let tenant: String = c.query_row(
        "SELECT tenant_id FROM subscriptions WHERE id = ?",
        [sub],
        |r| r.get(0),
    )?;
    let tx = c.transaction()?;
    let mut ids = vec![(sub.to_owned(), subscriber.clone(), 0)];
    {
        let mut add_subscriber = tx.prepare(
            "INSERT INTO subscribers (id, doc)
             SELECT ?1, json_set(doc, '$.id', ?1, '$.email', ?2) FROM subscribers WHERE id = ?3",
        )?;
        let mut add_subscription = tx.prepare(
            "INSERT INTO subscriptions (id, tenant_id, feed_id, subscriber_id, revision, doc)
             SELECT ?1, tenant_id, feed_id, ?2, revision,
                    json_set(doc, '$.id', ?1, '$.subscriber_id', ?2)
             FROM subscriptions WHERE id = ?3",
        )?;
        for i in 1..n {
            let (s, u) = (sibling(sub, i), sibling(&subscriber, i));
            add_subscriber.execute(params![
                u,
                format!("bench-{i}@subscriber.example"),
                subscriber
            ])?;
            add_subscription.execute(params![s, u, sub])?;
            ids.push((s, u, i));
        }
    }
    // Bulk load in key order without the secondary indexes, then build them once.
    tx.execute_batch("DROP INDEX usage_by_tenant; DROP INDEX usage_by_subscriber;")?;
    ids.sort();
    let mut expected = HashMap::new();
    {
        let mut put = tx.prepare(
            "INSERT INTO usage (subscription_id, hour, tenant_id, subscriber_id, count)
             VALUES (?, ?, ?, ?, ?)",
        )?;
        for (s, u, i) in &ids {
            let mut total = 0;
            for h in 0..HOURS {
                let k = count(*i, h);
                total += k;
                put.execute(params![s, (JANUARY.0 + h * 3600) * 1_000_000, tenant, u, k])?;
            }
            expected.insert(s.clone(), total);
        }
    }
    tx.execute_batch(
        "CREATE INDEX usage_by_tenant ON usage (tenant_id, subscription_id, hour);
         CREATE INDEX usage_by_subscriber ON usage (subscriber_id, subscription_id, hour);",
    )?;
    tx.commit()?;
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")?;
    Ok(expected)
}

/// The floor under any run: the counters summed per subscription and one ~1 KiB row per
/// subscription written in one durable transaction, on the same file.
fn bare(db: &Path) -> anyhow::Result<f64> {
    let mut c = Connection::open(db)?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS bench_invoices (id TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    )?;
    let doc = "x".repeat(1024);
    let started = Instant::now();
    let tx = c.transaction()?;
    {
        let mut sums = tx.prepare(
            "SELECT subscription_id, SUM(count) FROM usage WHERE hour >= ? AND hour < ?
             GROUP BY subscription_id",
        )?;
        let mut put = tx.prepare("INSERT INTO bench_invoices (id, doc) VALUES (?, ?)")?;
        let mut rows = sums.query(params![JANUARY.0 * 1_000_000, JANUARY.1 * 1_000_000])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let total: i64 = row.get(1)?;
            put.execute(params![id, format!("{total}{doc}")])?;
        }
    }
    tx.commit()?;
    let secs = started.elapsed().as_secs_f64();
    c.execute_batch("DROP TABLE bench_invoices")?;
    Ok(secs)
}

/// Every invoice of January, page by page: (usage quantity per subscription, invoices).
async fn invoices(child: &Child, token: &str) -> anyhow::Result<(HashMap<String, i64>, u64)> {
    let mut usage = HashMap::new();
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/invoices?period=2031-01&limit=200&cursor={c}"),
            None => "/v1/invoices?period=2031-01&limit=200".to_owned(),
        };
        let (status, page) = call(child.addr, Method::GET, &path, Some(token), None).await?;
        ensure!(
            status == StatusCode::OK,
            "GET {path} answered {status}: {page}"
        );
        for invoice in page["items"].as_array().context("no items")? {
            count += 1;
            for line in invoice["lines"].as_array().context("no lines")? {
                if line["kind"] == "usage" {
                    let sub = field(line, "subscription_id")?;
                    let q: f64 = field(line, "quantity")?.parse()?;
                    *usage.entry(sub).or_default() += q.round() as i64;
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok((usage, count)),
        }
    }
}

pub async fn run(binary: &Path, n: u64) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");

    let setup = server(binary, dir.path(), "2030-12-15T00:00:00Z").await?;
    let (_, feed) = seed(setup.addr).await?;
    let email = "billing@subscriber.example";
    expect(
        setup.addr,
        "/v1/subscribers",
        None,
        &json!({"name": "Billing bench", "email": email, "password": PASSWORD}),
        StatusCode::CREATED,
    )
    .await?;
    let token = login(setup.addr, email).await?;
    let sub = field(
        &expect(
            setup.addr,
            "/v1/subscriptions",
            Some(&token),
            &json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "pull"}}),
            StatusCode::CREATED,
        )
        .await?,
        "id",
    )?;
    setup.stop().await?;

    let db = data.join("wharf.db");
    let started = Instant::now();
    let expected = populate(&db, &sub, n)?;
    let counters = n * HOURS as u64;
    eprintln!(
        "billing: {n} subscriptions and {counters} hourly counters written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let created = std::process::Command::new(binary)
        .args([
            "admin",
            "create",
            "--email",
            "finance@bench.example",
            "--password",
        ])
        .arg(PASSWORD)
        .args(["--role", "platform_finance", "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .env("WHARF_LOG", "warn")
        .output()?;
    ensure!(
        created.status.success(),
        "admin create failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );

    let closing = server(binary, dir.path(), "2031-02-01T00:00:05Z").await?;
    let finance = login(closing.addr, "finance@bench.example").await?;
    let started = Instant::now();
    let (status, body) = call(
        closing.addr,
        Method::POST,
        "/v1/billing/runs",
        Some(&finance),
        Some(&json!({"period": "2031-01"})),
    )
    .await?;
    let run_secs = started.elapsed().as_secs_f64();
    ensure!(
        status == StatusCode::CREATED,
        "billing run answered {status}: {body}"
    );
    ensure!(
        body["invoices"] == json!(n),
        "expected {n} invoices, the run made {}",
        body["invoices"]
    );
    let (billed, count) = invoices(&closing, &finance).await?;
    ensure!(count == n, "listed {count} invoices, expected {n}");
    for (sub, total) in &expected {
        let got = billed.get(sub).copied().unwrap_or(0);
        if got != *total {
            bail!("subscription {sub}: invoiced {got} deliveries, its counters sum to {total}");
        }
    }
    closing.stop().await?;

    let bare_secs = bare(&db)?;
    Ok(Outcome {
        subscriptions: n,
        counters,
        run_secs,
        bare_secs,
    })
}

pub fn report(o: &Outcome) {
    println!(
        "| Billing run, {} subscriptions, {} hourly counters | {:.2} s ({:.0} subscriptions/s) | bare SQL sum + invoice rows {:.2} s | ≤ {BAR_SECS:.0} s: {} |",
        crate::thousands(o.subscriptions as f64),
        crate::thousands(o.counters as f64),
        o.run_secs,
        o.subscriptions as f64 / o.run_secs,
        o.bare_secs,
        crate::verdict(o.run_secs <= BAR_SECS),
    );
    println!(
        "\nEvery invoice's usage quantity equals the sum of its subscription's counters; \
         the run took {:.1}× the bare SQL.",
        o.run_secs / o.bare_secs
    );
}
