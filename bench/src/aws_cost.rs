//! `wharf-bench aws-cost`: what one million records delivered to N subscribers costs on the
//! aws shape.
//!
//! It runs the aws shape's handlers against an emulator (moto) as `wharf serve --backend aws`
//! does (queue and stream stand-ins, no schedule), creates a feed with N subscribers on `sqs`
//! channels, pushes records through the ingest API, waits until every subscriber's queue holds
//! every record and every delivery is metered, and prices what the run did:
//! - the AWS calls the handlers and the API made, counted by the clients' call counter
//!   (DynamoDB in request units estimated from the items sent and answers received, SQS and
//!   SNS in billed 64 KiB requests);
//! - one Lambda invocation per handler batch and per API request, with the time the handler
//!   took here (an emulator answers slower than AWS, so this overstates duration);
//! - one HTTP API request per ingest call.
//!
//! An emulator answers far slower than AWS, and Lambda bills wall time, so it also reports
//! how long the run waited on the emulator and a second total with Lambda time modelled for
//! AWS ([`lambda_seconds`]).
//!
//! Setup calls (the feed, subscriptions, queues) are left out: they do not grow with records.

use anyhow::Context;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wharf::aws::{Resources, aws_shape};
use wharf::config::{Backend, Config};
use wharf_aws::aws_sdk_sqs;
use wharf_aws::calls::Billed;
use wharf_core::ports::{DeliveryStore, SystemClock};
use wharf_workers::handlers::{Deliveries, Handlers};

/// List prices in USD, us-east-1, as published on AWS's pricing pages in 2025 (the on-demand
/// DynamoDB prices after the November 2024 cut). Free tiers are left out.
pub mod prices {
    /// Lambda, per request.
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// Lambda, per GB-second on arm64 (the template's default architecture).
    pub const LAMBDA_GB_SECOND_ARM: f64 = 0.000_013_333_4;
    /// Lambda memory the template gives each function, in GB.
    pub const LAMBDA_MEMORY_GB: f64 = 0.5;
    /// SQS standard queue, per request (each started 64 KiB).
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// SNS standard topic, per publish request (each started 64 KiB); deliveries to SQS free.
    pub const SNS_PUBLISH: f64 = 0.50 / 1e6;
    /// DynamoDB on-demand, per write request unit.
    pub const DYNAMODB_WRITE_UNIT: f64 = 0.625 / 1e6;
    /// DynamoDB on-demand, per read request unit.
    pub const DYNAMODB_READ_UNIT: f64 = 0.125 / 1e6;
    /// API Gateway HTTP API, per request (each started 512 KiB).
    pub const HTTP_API_REQUEST: f64 = 1.00 / 1e6;
    /// The date these were taken.
    pub const AS_OF: &str = "2025 list prices, us-east-1";
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub records: usize,
    pub subscribers: usize,
    /// Billed use by (service, operation), setup excluded.
    pub calls: Vec<(String, String, Billed)>,
    /// Invocations and handler time, by handler (the API's requests included as `api`).
    pub invocations: Vec<(String, u64, Duration)>,
    /// Ingest API requests.
    pub api_requests: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Wall time during which at least one call awaited the emulator's answer.
    pub waited: Duration,
}

/// One priced line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub item: String,
    pub quantity: f64,
    pub usd: f64,
}

/// Prices a run; answers the lines and the cost per million records.
pub fn price(m: &Measured) -> (Vec<Line>, f64) {
    let mut lines = Vec::new();
    for (service, operation, b) in &m.calls {
        let name = format!("{service} {operation}");
        match service.to_ascii_lowercase().as_str() {
            "dynamodb" if b.write_units + b.read_units == 0.0 => lines.push(Line {
                item: format!("{name} (control, free)"),
                quantity: b.calls as f64,
                usd: 0.0,
            }),
            "dynamodb" => {
                if b.write_units > 0.0 {
                    lines.push(Line {
                        item: format!("{name} (write units)"),
                        quantity: b.write_units,
                        usd: b.write_units * prices::DYNAMODB_WRITE_UNIT,
                    });
                }
                if b.read_units > 0.0 {
                    lines.push(Line {
                        item: format!("{name} (read units)"),
                        quantity: b.read_units,
                        usd: b.read_units * prices::DYNAMODB_READ_UNIT,
                    });
                }
            }
            "sqs" => lines.push(Line {
                item: name,
                quantity: b.chunks as f64,
                usd: b.chunks as f64 * prices::SQS_REQUEST,
            }),
            "sns" if operation.starts_with("Publish") => lines.push(Line {
                item: name,
                quantity: b.chunks as f64,
                usd: b.chunks as f64 * prices::SNS_PUBLISH,
            }),
            // Lambda's stream pollers read DynamoDB Streams at no charge; SNS control calls
            // (topic and subscription changes) are free.
            _ => lines.push(Line {
                item: format!("{name} (free)"),
                quantity: b.calls as f64,
                usd: 0.0,
            }),
        }
    }
    for (handler, n, time) in &m.invocations {
        let gb_s = time.as_secs_f64() * prices::LAMBDA_MEMORY_GB;
        lines.push(Line {
            item: format!("Lambda {handler} invocations"),
            quantity: *n as f64,
            usd: *n as f64 * prices::LAMBDA_REQUEST,
        });
        lines.push(Line {
            item: format!("Lambda {handler} GB-seconds"),
            quantity: gb_s,
            usd: gb_s * prices::LAMBDA_GB_SECOND_ARM,
        });
    }
    lines.push(Line {
        item: "API Gateway HTTP API requests".into(),
        quantity: m.api_requests as f64,
        usd: m.api_requests as f64 * prices::HTTP_API_REQUEST,
    });
    let total: f64 = lines.iter().map(|l| l.usd).sum();
    let per_million = total * 1e6 / m.records.max(1) as f64;
    (lines, per_million)
}

/// The typical time AWS takes to answer one call in-region, assumed from AWS's published
/// figures and common measurements (single-digit milliseconds for DynamoDB items, tens for
/// transactions and SNS and SQS requests), on the high side.
pub fn typical_latency(service: &str, operation: &str) -> Duration {
    match (service.to_ascii_lowercase().as_str(), operation) {
        ("dynamodb", "TransactWriteItems" | "TransactGetItems") => Duration::from_millis(30),
        ("dynamodb", _) => Duration::from_millis(10),
        ("sns", _) => Duration::from_millis(40),
        ("sqs", _) => Duration::from_millis(20),
        _ => Duration::from_millis(30),
    }
}

/// Lambda time (seconds, all handlers) as measured here, and with the emulator's answer
/// times replaced by AWS's: the handlers' time less the time the process waited on the
/// emulator, plus every call (the pollers' long polls aside) at its [`typical_latency`], one
/// after another although some run concurrently, so an overestimate.
pub fn lambda_seconds(m: &Measured) -> (f64, f64) {
    let measured: f64 = m.invocations.iter().map(|(_, _, t)| t.as_secs_f64()).sum();
    let calls: f64 = m
        .calls
        .iter()
        .filter(|(_, op, _)| !wharf_aws::calls::is_poll(op))
        .map(|(s, op, b)| b.calls as f64 * typical_latency(s, op).as_secs_f64())
        .sum();
    let own = (measured - m.waited.as_secs_f64()).max(0.0);
    (measured, own + calls)
}

/// The cost per million records with Lambda time as [`lambda_seconds`] models it on AWS.
pub fn per_million_on_aws(m: &Measured) -> f64 {
    let (_, per_million) = price(m);
    let (measured, on_aws) = lambda_seconds(m);
    let usd = |s: f64| s * prices::LAMBDA_MEMORY_GB * prices::LAMBDA_GB_SECOND_ARM;
    per_million + (usd(on_aws) - usd(measured)) * 1e6 / m.records.max(1) as f64
}

/// The naive design's cost per million records, priced with the same table: every record
/// ingested by its own API request and Lambda invocation (SQS send, receive, delete; a
/// conditional raw write and an output write), then one SQS message and one Lambda
/// invocation per record and subscriber, which reads the subscription (1 read unit), moves
/// its position and usage in a two-item transaction (4 write units) and sends to the
/// subscriber's queue. Each invocation is taken at 10 ms.
pub fn naive_per_million(subscribers: usize) -> f64 {
    let records = 1e6;
    let deliveries = records * subscribers as f64;
    let invocations = records + deliveries;
    let lambda = invocations * prices::LAMBDA_REQUEST
        + invocations * 0.010 * prices::LAMBDA_MEMORY_GB * prices::LAMBDA_GB_SECOND_ARM;
    let sqs = (records * 3.0 + deliveries * 4.0) * prices::SQS_REQUEST;
    let dynamodb = (records * 2.0 + deliveries * 4.0) * prices::DYNAMODB_WRITE_UNIT
        + deliveries * prices::DYNAMODB_READ_UNIT;
    let api = records * prices::HTTP_API_REQUEST;
    lambda + sqs + dynamodb + api
}

/// Runs `records` records to `subscribers` `sqs` subscribers through the aws shape on the
/// emulator at `endpoint_url`.
pub async fn measure(
    endpoint_url: &str,
    records: usize,
    subscribers: usize,
) -> anyhow::Result<Measured> {
    let name = format!("wharf-cost-{}", &wharf_core::UserId::new().as_str()[4..]);
    let data_dir = std::env::temp_dir().join(&name);
    let config = Config {
        backend: Backend::Aws,
        data_dir: data_dir.clone(),
        aws: wharf::config::AwsConfig {
            endpoint_url: Some(endpoint_url.to_owned()),
            region: Some("us-east-1".into()),
            table: name.clone(),
            queue_prefix: name.clone(),
            bucket: name.clone(),
            user_pool_name: name.clone(),
            access_key_id: Some("testing".into()),
            secret_access_key: Some(wharf::config::Secret("testing".into())),
            ..Default::default()
        },
        ..Config::default()
    };
    let shape = aws_shape(&config, Arc::new(SystemClock), Resources::Bootstrap).await?;
    let handlers = Arc::new(Handlers::new(
        shape.services.clone(),
        config.delivery(),
        Deliveries::Awaited,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = wharf_api::router(shape.services.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let api = Api {
        url,
        http: reqwest::Client::new(),
    };

    // Setup: a vendor, a push source, a feed passing every record, N subscribers.
    let password = "Correct horse battery 9!";
    api.post(
        "/v1/vendors",
        None,
        json!({"name": "Cost", "admin_email": "v@cost.example", "admin_password": password}),
    )
    .await?;
    let vendor = api.login("v@cost.example", password).await?;
    let source = api
        .post(
            "/v1/sources",
            Some(&vendor),
            json!({"name": "ticks", "kind": "push"}),
        )
        .await?["id"]
        .as_str()
        .context("a source id")?
        .to_owned();
    let feed = api
        .post(
            "/v1/feeds",
            Some(&vendor),
            json!({
                "name": "Ticks", "source_id": source, "description": "every tick",
                "pipeline": {"rules": [{"type": "filter", "expr": "record.px > 0.0"}]},
                "plans": [{"id": "pro", "name": "Pro", "currency": "usd", "monthly_fee": "10.00",
                           "included_deliveries": 0, "tiers": [{"up_to": null, "unit_price": "0.001"}]}],
                "visibility": "public", "status": "published"
            }),
        )
        .await?["id"]
        .as_str()
        .context("a feed id")?
        .to_owned();
    // The subscribers' side is read on clients of its own, so it is not counted.
    let theirs = wharf::aws::clients(&config).await;
    let mut queues = Vec::new();
    for i in 0..subscribers {
        let email = format!("s{i}@cost.example");
        api.post(
            "/v1/subscribers",
            None,
            json!({"name": format!("S{i}"), "email": email, "password": password}),
        )
        .await?;
        let token = api.login(&email, password).await?;
        let queue = theirs
            .sqs
            .create_queue()
            .queue_name(format!("subscriber-{i}-{}", &name[11..]))
            .send()
            .await?
            .queue_url
            .context("a queue URL")?;
        let arn = wharf_aws::bootstrap::queue_arn(&theirs, &queue).await?;
        api.post(
            "/v1/subscriptions",
            Some(&token),
            json!({"feed_id": feed, "plan_id": "pro", "channel": {"type": "sqs", "queue_arn": arn}}),
        )
        .await?;
        queues.push(queue);
    }

    let their_store = wharf_aws::DynamoStore::new(theirs.clone());
    let stand_ins = wharf_aws::emulate::spawn(
        &shape.clients,
        &shape.queues,
        handlers,
        &data_dir,
        false,
        Arc::default(),
    );
    shape.clients.calls.estimate_units();
    let before = shape.clients.calls.billed();
    let started = Instant::now();
    let mut api_time = Duration::ZERO;
    let mut api_requests = 0;
    let batch = 500;
    for chunk in 0..records.div_ceil(batch) {
        let from = chunk * batch;
        let items: Vec<Value> = (from..records.min(from + batch))
            .map(|i| json!({"id": format!("t{i}"), "data": {"sym": "AAPL", "px": 100.0 + (i % 100) as f64, "seq": i}}))
            .collect();
        let sent = Instant::now();
        api.post(
            &format!("/v1/sources/{source}/records"),
            Some(&vendor),
            json!({ "records": items }),
        )
        .await?;
        api_time += sent.elapsed();
        api_requests += 1;
    }

    // Done when every queue holds every record and every delivery is counted.
    let want = records as u64;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let mut held = 0u64;
        for queue in &queues {
            let attributes = theirs
                .sqs
                .get_queue_attributes()
                .queue_url(queue)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .send()
                .await?
                .attributes
                .unwrap_or_default();
            held += attributes
                .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
                .min(want);
        }
        let metered = their_store
            .usage_totals(
                time::OffsetDateTime::now_utc() - time::Duration::days(1),
                time::OffsetDateTime::now_utc() + time::Duration::days(1),
            )
            .await?
            .iter()
            .map(|(_, n)| n.usage)
            .sum::<u64>();
        if held >= want * subscribers as u64 && metered >= want * subscribers as u64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not delivered within 30 minutes: {held} in queues, {metered} metered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();
    let waited = shape.clients.calls.waited();
    for task in &stand_ins.tasks {
        task.abort();
    }
    let calls = diff(&before, &shape.clients.calls.billed());
    let mut invocations: Vec<(String, u64, Duration)> = stand_ins
        .invocations
        .snapshot()
        .into_iter()
        .map(|(h, n, t)| (h.to_owned(), n, t))
        .collect();
    invocations.push(("api".into(), api_requests, api_time));
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(Measured {
        records,
        subscribers,
        calls,
        invocations,
        api_requests,
        elapsed,
        waited,
    })
}

fn diff(
    before: &[(String, String, Billed)],
    after: &[(String, String, Billed)],
) -> Vec<(String, String, Billed)> {
    let before: BTreeMap<(&str, &str), &Billed> = before
        .iter()
        .map(|(s, o, b)| ((s.as_str(), o.as_str()), b))
        .collect();
    after
        .iter()
        .filter_map(|(s, o, a)| {
            let b = before
                .get(&(s.as_str(), o.as_str()))
                .copied()
                .cloned()
                .unwrap_or_default();
            let d = Billed {
                calls: a.calls - b.calls,
                chunks: a.chunks - b.chunks,
                write_units: a.write_units - b.write_units,
                read_units: a.read_units - b.read_units,
            };
            (d.calls > 0).then(|| (s.clone(), o.clone(), d))
        })
        .collect()
}

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> anyhow::Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
        Ok(body)
    }

    async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        Ok(self
            .post(
                "/v1/auth/token",
                None,
                json!({"email": email, "password": password}),
            )
            .await?["access_token"]
            .as_str()
            .context("an access token")?
            .to_owned())
    }
}

/// Runs the measurement and prints what it cost.
pub async fn report(endpoint_url: &str, records: usize, subscribers: usize) -> anyhow::Result<()> {
    let m = measure(endpoint_url, records, subscribers).await?;
    let (lines, per_million) = price(&m);
    println!(
        "{} records to {} subscribers in {:.1} s ({}):",
        m.records,
        m.subscribers,
        m.elapsed.as_secs_f64(),
        prices::AS_OF
    );
    for l in &lines {
        println!("  {:<48} {:>14.1} {:>12.6} USD", l.item, l.quantity, l.usd);
    }
    let (measured, on_aws) = lambda_seconds(&m);
    println!(
        "Lambda: {measured:.1} s of handler time here, {:.1} s of the run waiting on the \
         emulator; with AWS's typical latencies instead: {on_aws:.1} s",
        m.waited.as_secs_f64()
    );
    println!("cost per 1M records: {per_million:.2} USD (Lambda time as measured here)");
    println!(
        "cost per 1M records: {:.2} USD (Lambda time with AWS's typical latencies)",
        per_million_on_aws(&m)
    );
    println!(
        "naive per-record design, same prices: {:.2} USD per 1M records",
        naive_per_million(subscribers)
    );
    Ok(())
}
