//! Ingest throughput: records pushed over HTTP (batches of 100 records of about 1 KiB, several
//! connections) against the baseline of a bare batched SQLite insert of the same rows, with the
//! same durability (WAL, synchronous=NORMAL), measured in the same run.

use crate::server::Connection;
use anyhow::bail;
use hyper::StatusCode;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BATCH: usize = 100;

fn payload(n: u64) -> String {
    // About 1 KiB of JSON per record.
    format!("{n:08}-{}", "x".repeat(980))
}

/// Rows per second of a bare batched insert into a rowid table with a unique key.
pub fn bare_insert(file: &std::path::Path, duration: Duration) -> anyhow::Result<f64> {
    let conn = rusqlite::Connection::open(file)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE t (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, data TEXT NOT NULL);",
    )?;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO t (id, data) VALUES (?1, ?2)")?;
            for _ in 0..BATCH {
                let data =
                    json!({"sym": "AAPL", "px": 187.5, "qty": 100, "note": payload(n)}).to_string();
                insert.execute(rusqlite::params![format!("r{n}"), data])?;
                n += 1;
            }
        }
        tx.commit()?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// One request body of `BATCH` records with ids `r{first}`…, rendered straight to bytes so
/// the load generator spends its core on sending rather than on building JSON values.
fn batch_body(first: u64) -> Vec<u8> {
    use std::fmt::Write;
    let mut body = String::with_capacity(BATCH * 1100);
    body.push_str(r#"{"records":["#);
    for n in first..first + BATCH as u64 {
        if n > first {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"id":"r{n}","data":{{"sym":"AAPL","px":187.5,"qty":100,"note":"{}"}}}}"#,
            payload(n)
        );
    }
    body.push_str("]}");
    body.into_bytes()
}

/// Records per second accepted (202) by `POST /v1/sources/{source}/records`, each connection
/// kept alive and sending its next batch as soon as the previous one is answered.
pub async fn over_http(
    addr: SocketAddr,
    token: &str,
    source: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections as u64 {
        let mut conn = Connection::open(addr, token).await?;
        let path = format!("/v1/sources/{source}/records");
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            let mut n = c * 1_000_000_000;
            while started.elapsed() < duration {
                let (status, body) = conn.post(&path, batch_body(n)).await?;
                n += BATCH as u64;
                if status != StatusCode::ACCEPTED {
                    bail!("ingest answered {status}: {body}");
                }
                accepted += body["accepted"].as_u64().unwrap_or(0);
            }
            anyhow::Ok(accepted)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
