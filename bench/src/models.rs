//! Model rules against the bare engine, in one process and one run: the MLP fixture
//! (`testkit/models/mlp.onnx`, 4 → 8 → 3 with a softmax) run by tract on batches of 100 rows,
//! against the same rows as JSON records through a compiled pipeline whose `model` rule runs
//! it (the rows made by CEL from each record, the outputs written back by CEL, on the
//! pipeline's compute lanes); the time a model rule adds to a record; and the memory of
//! loaded models.

use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wharf_core::domain::{ModelVersion, Pipeline, Rule};
use wharf_core::pipeline::{Compiled, LoadedVersion, Lookup, Runner};
use wharf_core::ports::{LoadedModel, ModelEngine, Tensor};
use wharf_core::{CoreError, ModelId, VendorId};
use wharf_onnx::TractEngine;

const MLP: &[u8] = include_bytes!("../../testkit/models/mlp.onnx");
const BATCH: usize = 100;

/// Looks up the one model the bench runs.
struct One(LoadedVersion);

#[async_trait]
impl Lookup for One {
    async fn lookup(&self, _: &str, _: &str) -> Result<Option<Value>, CoreError> {
        Ok(None)
    }

    async fn model(&self, _: &str, _: u32) -> Result<Option<LoadedVersion>, CoreError> {
        Ok(Some(self.0.clone()))
    }
}

/// Rows of 4 numbers from a fixed sequence.
fn rows(n: usize, seed: usize) -> Vec<[f64; 4]> {
    (0..n)
        .map(|i| {
            let x = (i + seed) as f64;
            [
                (x * 0.37).sin(),
                (x * 0.11).cos(),
                (x * 0.05).sin() * 2.0,
                x % 7.0 / 7.0,
            ]
        })
        .collect()
}

fn pipeline(with_model: bool) -> anyhow::Result<Pipeline> {
    let mut rules = vec![json!({"type": "filter", "expr": "size(record.v) == 4"})];
    if with_model {
        rules.push(json!({"type": "model", "model": "mlp", "version": 1,
            "inputs": {"x": "record.v"},
            "outputs": {"p0": "outputs.probs[0]", "p1": "outputs.probs[1]", "p2": "outputs.probs[2]"}}));
    }
    let rules: Vec<Rule> = serde_json::from_value(Value::Array(rules))?;
    Ok(Pipeline { version: 1, rules })
}

/// The MLP's registration as the registry would store it.
fn registered() -> anyhow::Result<ModelVersion> {
    let signature = TractEngine.inspect(MLP).map_err(anyhow::Error::msg)?;
    Ok(ModelVersion {
        id: ModelId::new(),
        vendor_id: VendorId::new(),
        name: "mlp".into(),
        version: 1,
        sha256: String::new(),
        size: MLP.len() as u64,
        format: "onnx".into(),
        inputs: signature.inputs,
        outputs: signature.outputs,
        created_at: time::OffsetDateTime::now_utc(),
    })
}

/// Rows per second of the bare engine on batches of `BATCH`.
fn bare(model: &dyn LoadedModel, duration: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < duration {
        let batch = rows(BATCH, n);
        let input = Tensor {
            shape: vec![BATCH, 4],
            values: batch.iter().flatten().copied().collect(),
        };
        let out = model.run(vec![input]).map_err(anyhow::Error::msg)?;
        std::hint::black_box(out);
        n += BATCH;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn records(batch: usize, seed: usize) -> Vec<Value> {
    rows(batch, seed)
        .into_iter()
        .map(|r| json!({"sym": "AAPL", "v": r}))
        .collect()
}

/// Records per second through `compiled`, batches of `batch` records, and each batch's time.
async fn through(
    compiled: &Arc<Compiled>,
    runner: &Runner<'_>,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let started = Instant::now();
    let mut n = 0;
    let mut times = Vec::new();
    while started.elapsed() < duration {
        let input = records(batch, n);
        let at = Instant::now();
        let out = compiled.apply_all(input, runner).await?;
        times.push(at.elapsed());
        if out.iter().any(Result::is_err) {
            anyhow::bail!(
                "a record failed the pipeline: {:?}",
                out.iter().find(|o| o.is_err())
            );
        }
        n += batch;
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), times))
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times.get(i).copied().unwrap_or_default()
}

/// Runs the comparisons, `secs` seconds each, and prints the table.
pub async fn report(secs: u64) -> anyhow::Result<()> {
    let duration = Duration::from_secs(secs);
    let model = TractEngine.load(MLP).map_err(anyhow::Error::msg)?;
    let lookup = One((model.clone(), Arc::new(registered()?)));
    let lanes = wharf_workers::compute::Lanes::per_core();
    let runner = Runner {
        compute: &lanes,
        lane: "tenant:bench",
        lookup: &lookup,
    };
    let budgets = wharf_core::limits::Budgets::default();
    let with = Arc::new(Compiled::new(&pipeline(true)?, budgets));
    let without = Arc::new(Compiled::new(&pipeline(false)?, budgets));

    let engine = bare(model.as_ref(), duration)?;
    eprintln!("bare engine, batches of {BATCH}: {engine:.0} rows/s");
    let (rule, _) = through(&with, &runner, BATCH, duration).await?;
    eprintln!("pipeline with the model rule, batches of {BATCH}: {rule:.0} records/s");
    let (_, mut one_with) = through(&with, &runner, 1, duration).await?;
    let (_, mut one_without) = through(&without, &runner, 1, duration).await?;
    let mut added = |p: f64| {
        percentile(&mut one_with, p).as_secs_f64() - percentile(&mut one_without, p).as_secs_f64()
    };
    let (p50, p99) = (added(0.50) * 1e6, added(0.99) * 1e6);

    let rss = || crate::deliver::rss_mib(std::process::id());
    let before = rss()?;
    let mut kept = Vec::new();
    for _ in 0..20 {
        kept.push(TractEngine.load(MLP).map_err(anyhow::Error::msg)?);
    }
    let per_model = (rss()? - before).max(0.0) * 1024.0 / 20.0;
    std::hint::black_box(&kept);

    let ratio = rule / engine;
    println!();
    println!("| metric ({secs} s each, one process) | value | bar |");
    println!("| --- | --- | --- |");
    println!(
        "| bare tract, MLP 4→8→3 + softmax, batches of {BATCH} rows | {engine:.0} rows/s | baseline |"
    );
    println!(
        "| the same rows as records through a pipeline whose model rule runs it (CEL rows and outputs, compute lanes) | {rule:.0} records/s = {ratio:.2}× | ≥ 0.6×: {} |",
        if ratio >= 0.6 { "met" } else { "**not met**" }
    );
    println!(
        "| time a model rule adds to one record (batch of 1), p50 / p99 | {p50:.0} µs / {p99:.0} µs | reported |"
    );
    println!("| resident memory per loaded MLP, 20 loaded | {per_model:.0} KiB | reported |");
    Ok(())
}
