//! `wharf serve --demo`: a demo vendor with a synthetic market-data source, a live feed
//! (filter and map), a 1-minute VWAP feed (filter, window, map) and a model-scored one (each
//! bar's range in basis points by an ONNX model after the window), a demo subscriber on the
//! pull channel, and a generator pushing ticks. Credentials are generated on first start and
//! kept in the data dir (`demo-credentials.json`, mode 0600) so later starts print the same.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use wharf_core::domain::{IngestRecord, Principal};
use wharf_core::services::{NewSubscriberAccount, NewVendor};
use wharf_core::{Services, SourceId};

/// What the demo prints.
#[derive(Serialize, Deserialize)]
pub struct Demo {
    /// Demo vendor login.
    pub vendor_email: String,
    /// Its password.
    pub vendor_password: String,
    /// Demo subscriber login.
    pub subscriber_email: String,
    /// Its password.
    pub subscriber_password: String,
    /// The synthetic source.
    pub source_id: String,
    /// The live feed.
    pub live_feed_id: String,
    /// The 1-minute window feed.
    pub bars_feed_id: String,
    /// The model-scored feed (absent in credentials of an older demo).
    #[serde(default)]
    pub scored_feed_id: Option<String>,
    /// The subscriber's pull subscriptions (live, bars).
    pub subscription_ids: Vec<String>,
}

const FILE: &str = "demo-credentials.json";

/// Seeds the demo once (or reads what an earlier start seeded).
pub async fn seed(services: &Services, data_dir: &Path) -> anyhow::Result<Demo> {
    let path = data_dir.join(FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).context("cannot read demo-credentials.json");
    }
    let password = || wharf_core::credentials::random_token(12).map_err(|e| anyhow::anyhow!("{e}"));
    let (vendor_password, subscriber_password) = (password()?, password()?);
    let err = |e: wharf_core::CoreError| anyhow::anyhow!("{e:?}");
    let signup = services
        .signup_vendor(NewVendor {
            name: "Demo Markets".into(),
            admin_email: "vendor@demo.example".into(),
            admin_password: vendor_password.clone(),
        })
        .await
        .map_err(err)?;
    let vendor = Principal::User {
        id: signup.admin.id.clone(),
        roles: signup.admin.roles.clone(),
        tenant: Some(signup.vendor.id.clone()),
    };
    let source = services
        .create_source(
            &vendor,
            serde_json::from_value(
                serde_json::json!({"name": "Synthetic ticks", "kind": "push", "retention_days": 7,
            "schema": {"type": "object", "required": ["sym", "px", "qty"]}}),
            )?,
        )
        .await
        .map_err(err)?;
    let (live, bars) = demo_feeds(services, &vendor, &source.id).await?;
    let scored = scored_feed(services, &vendor, &source.id).await?;
    let subscriber = services
        .signup_subscriber(NewSubscriberAccount {
            name: "Demo Subscriber".into(),
            email: "subscriber@demo.example".into(),
            password: subscriber_password.clone(),
        })
        .await
        .map_err(err)?;
    let who = Principal::User {
        id: subscriber.id.clone(),
        roles: vec![wharf_core::domain::Role::Subscriber],
        tenant: None,
    };
    let mut subscription_ids = Vec::new();
    for feed in [&live.id, &bars.id, &scored.id] {
        let sub = services
            .create_subscription(&who, serde_json::from_value(serde_json::json!({"feed_id": feed, "plan_id": "starter", "channel": {"type": "pull"}}))?)
            .await
            .map_err(err)?;
        subscription_ids.push(sub.subscription.id.to_string());
    }
    let demo = Demo {
        vendor_email: signup.admin.email.to_string(),
        vendor_password,
        subscriber_email: subscriber.email.to_string(),
        subscriber_password,
        source_id: source.id.to_string(),
        live_feed_id: live.id.to_string(),
        bars_feed_id: bars.id.to_string(),
        scored_feed_id: Some(scored.id.to_string()),
        subscription_ids,
    };
    write_private(&path, &serde_json::to_vec_pretty(&demo)?)?;
    Ok(demo)
}

/// The demo's two feeds on `source`: large trades as they come, and one-minute VWAP bars.
async fn demo_feeds(
    services: &Services,
    vendor: &Principal,
    source: &wharf_core::SourceId,
) -> anyhow::Result<(wharf_core::domain::Feed, wharf_core::domain::Feed)> {
    let err = |e: wharf_core::CoreError| anyhow::anyhow!("{e:?}");
    let plan = starter_plan();
    let live = services
        .create_feed(vendor, serde_json::from_value(serde_json::json!({
            "name": "Large trades (live)", "source_id": source, "status": "published",
            "description": "Every trade above 10,000 USD notional, with its notional",
            "pipeline": {"rules": [
                {"type": "filter", "expr": "record.px * record.qty > 10000.0"},
                {"type": "map", "fields": {"symbol": "record.sym", "price": "record.px", "qty": "record.qty", "notional": "record.px * record.qty"}}]},
            "plans": [plan]}))?)
        .await
        .map_err(err)?;
    let bars = services
        .create_feed(vendor, serde_json::from_value(serde_json::json!({
            "name": "1-minute VWAP bars", "source_id": source, "status": "published",
            "description": "Per symbol and minute: trade count, VWAP, high and low",
            "pipeline": {"rules": [
                {"type": "filter", "expr": "record.qty > 0.0"},
                {"type": "window", "every": "1m", "window": "1m", "group_by": "record.sym",
                 "aggregates": {"trades": "count()", "vwap": "sum(record.px * record.qty) / sum(record.qty)", "high": "max(record.px)", "low": "min(record.px)"}},
                {"type": "map", "fields": {"symbol": "record.group", "minute_end": "record.window_end", "trades": "record.trades",
                                           "vwap": "record.vwap", "high": "record.high", "low": "record.low"}}]},
            "plans": [plan]}))?)
        .await
        .map_err(err)?;
    Ok((live, bars))
}

/// The demo feeds' one plan: free, 100,000 deliveries a month included.
fn starter_plan() -> serde_json::Value {
    serde_json::json!({"id": "starter", "name": "Starter", "currency": "usd", "monthly_fee": "0.00",
        "included_deliveries": 100000, "tiers": [{"up_to": null, "unit_price": "0.0001"}]})
}

/// The demo's model (made by `testkit/models/make.py`): a bar's range, high − low, in basis
/// points of its VWAP.
const RANGE_BPS: &[u8] = include_bytes!("../testkit/models/range_bps.onnx");

/// A feed scoring each one-minute bar with the demo's model.
async fn scored_feed(
    services: &Services,
    vendor: &Principal,
    source: &wharf_core::SourceId,
) -> anyhow::Result<wharf_core::domain::Feed> {
    let err = |e: wharf_core::CoreError| anyhow::anyhow!("{e:?}");
    services
        .register_model(vendor, "range-bps", RANGE_BPS.to_vec())
        .await
        .map_err(err)?;
    let plan = starter_plan();
    services
        .create_feed(vendor, serde_json::from_value(serde_json::json!({
            "name": "1-minute bar ranges (model-scored)", "source_id": source, "status": "published",
            "description": "Per symbol and minute: VWAP and the bar's range in basis points, scored by an ONNX model",
            "pipeline": {"rules": [
                {"type": "filter", "expr": "record.qty > 0.0"},
                {"type": "window", "every": "1m", "window": "1m", "group_by": "record.sym",
                 "aggregates": {"vwap": "sum(record.px * record.qty) / sum(record.qty)", "high": "max(record.px)", "low": "min(record.px)"}},
                {"type": "model", "model": "range-bps", "inputs": {"x": "[record.vwap, record.high, record.low]"},
                 "outputs": {"range_bps": "outputs.bps[0]"}},
                {"type": "map", "fields": {"symbol": "record.group", "minute_end": "record.window_end",
                                           "vwap": "record.vwap", "range_bps": "record.range_bps"}}]},
            "plans": [plan]}))?)
        .await
        .map_err(err)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)?;
    Ok(())
}

/// Pushes a few synthetic ticks every 200 ms as the demo vendor, forever.
pub async fn generate_ticks(services: Services, demo: &Demo) -> anyhow::Result<()> {
    let source: SourceId = demo.source_id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let feed = services
        .store
        .locate_feed(
            &demo
                .live_feed_id
                .parse()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let vendor = Principal::ApiKey {
        id: wharf_core::ApiKeyId::new(),
        tenant: feed.tenant_id,
        scopes: vec![wharf_core::domain::ApiKeyScope::Ingest],
    };
    let symbols = [
        ("AAPL", 190.0),
        ("MSFT", 420.0),
        ("NVDA", 130.0),
        ("AMZN", 185.0),
        ("GOOG", 170.0),
    ];
    let mut prices: Vec<f64> = symbols.iter().map(|(_, p)| *p).collect();
    let mut seed = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f64 / 10_000.0
    };
    loop {
        let mut ticks = Vec::new();
        for (i, (sym, _)) in symbols.iter().enumerate() {
            prices[i] *= 1.0 + (next() - 0.5) * 0.002;
            let qty = (next() * 200.0).floor();
            ticks.push(IngestRecord { id: None, ts: None, data: serde_json::json!({"sym": sym, "px": (prices[i] * 100.0).round() / 100.0, "qty": qty}) });
        }
        if let Err(e) = services.ingest(&vendor, &source, ticks).await {
            tracing::warn!(error = %e, "demo ticks were not stored");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
