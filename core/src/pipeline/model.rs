//! The `model` rule on a batch: each record's input rows from its expressions, the model run
//! over the rows (a registered model in one run, a remote one in requests of `max_batch`
//! rows), then each record's fields from its own outputs. A record whose rows cannot be made,
//! or whose outputs are not finite numbers, fails alone; a model that fails on a batch (or a
//! request) fails every record of it.

use super::rules::{Compiled, Live, RuleError, Runner, Settled, Stage, kind};
use super::value::{to_cel, to_json};
use crate::CoreError;
use crate::domain::{Endpoint, ModelVersion};
use crate::expr::{Expr, evaluate};
use crate::ports::{LoadedModel, Tensor, off_runtime};
use cel::Value;
use cel::objects::{Key, Map};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A `model` rule, compiled.
pub(super) struct ModelStage {
    /// The registered model and version, or (`None`) the remote one.
    pub(super) registered: Option<(String, u32)>,
    /// The remote model.
    pub(super) endpoint: Option<Endpoint>,
    pub(super) inputs: BTreeMap<String, Expr>,
    pub(super) outputs: Vec<(String, Expr)>,
}

/// One row's outputs: each output's name and the row's values of it.
pub(super) type RowOutputs = Vec<(String, Vec<f64>)>;

/// Records ready for a model: each with its values per input, in the order of `names`.
#[derive(Default)]
pub(super) struct Rows {
    pub(super) names: Vec<String>,
    pub(super) records: Live,
    pub(super) values: Vec<Vec<Vec<f64>>>,
}

impl ModelStage {
    /// Each record's values for each input in `names` (with the width each row of it must
    /// have, when the model says): the records ready, and those whose rows cannot be made.
    pub(super) fn rows(
        &self,
        rule: usize,
        names: &[(String, Option<usize>)],
        live: Live,
        budget: u64,
    ) -> (Rows, Settled) {
        let mut rows = Rows {
            names: names.iter().map(|(n, _)| n.clone()).collect(),
            records: Vec::with_capacity(live.len()),
            values: Vec::with_capacity(live.len()),
        };
        let mut settled = Settled::new();
        let mut widths: Vec<Option<usize>> = names.iter().map(|(_, w)| *w).collect();
        for (index, record) in live {
            match self.row_of(&record, names, &mut widths, budget) {
                Ok(values) => {
                    rows.records.push((index, record));
                    rows.values.push(values);
                }
                Err(message) => settled.push((index, Err(RuleError { rule, message }))),
            }
        }
        (rows, settled)
    }

    /// One record's values per input; a row's width is the model's, or (remote) the first
    /// record's.
    fn row_of(
        &self,
        record: &Json,
        names: &[(String, Option<usize>)],
        widths: &mut [Option<usize>],
        budget: u64,
    ) -> Result<Vec<Vec<f64>>, String> {
        let bound = [("record", to_cel(record))];
        let mut values = Vec::with_capacity(names.len());
        for ((name, _), width) in names.iter().zip(widths.iter_mut()) {
            let expr = self
                .inputs
                .get(name)
                .ok_or_else(|| format!("no expression for input `{name}`"))?;
            let value = evaluate(expr.metered(), &bound, budget)
                .map_err(|e| format!("input `{name}`: {e}"))?;
            let mut flat = Vec::new();
            numbers(&value, &mut flat).map_err(|e| format!("input `{name}`: {e}"))?;
            let wanted = *width.get_or_insert(flat.len());
            if flat.len() != wanted {
                return Err(format!(
                    "input `{name}` takes {wanted} numbers per record, the expression gave {}",
                    flat.len()
                ));
            }
            values.push(flat);
        }
        Ok(values)
    }

    /// Runs a registered model over `rows`: each record's outputs, or why the run failed.
    pub(super) fn run(
        &self,
        model: &dyn LoadedModel,
        info: &ModelVersion,
        rows: &Rows,
    ) -> Result<Vec<RowOutputs>, String> {
        let n = rows.records.len();
        let tensors = info
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| Tensor {
                shape: std::iter::once(n)
                    .chain(input.shape.iter().skip(1).map(|d| match d {
                        Some(crate::domain::Dim::Size(s)) => *s as usize,
                        _ => 1,
                    }))
                    .collect(),
                values: rows
                    .values
                    .iter()
                    .flat_map(|r| r[i].iter().copied())
                    .collect(),
            })
            .collect();
        let (name, version) = self.registered.clone().unwrap_or_default();
        let outputs = model
            .run(tensors)
            .map_err(|e| format!("model `{name}` v{version} failed: {e}"))?;
        let names: Vec<String> = info.outputs.iter().map(|o| o.name.clone()).collect();
        split_rows(&names, &outputs, n)
    }

    /// Writes the rule's fields into each record from its outputs (`None`: the model failed
    /// on it, with the reason).
    pub(super) fn write(
        &self,
        rule: usize,
        records: Live,
        outputs: Result<Vec<RowOutputs>, String>,
        budget: u64,
    ) -> (Live, Settled) {
        let fail = |message: String| RuleError { rule, message };
        let mut kept = Vec::with_capacity(records.len());
        let mut settled = Settled::new();
        match outputs {
            Err(message) => {
                settled.extend(
                    records
                        .into_iter()
                        .map(|(i, _)| (i, Err(fail(message.clone())))),
                );
            }
            Ok(outputs) => {
                for ((index, record), row) in records.into_iter().zip(outputs) {
                    match self.fields(row, record, budget) {
                        Ok(record) => kept.push((index, record)),
                        Err(e) => settled.push((index, Err(fail(e)))),
                    }
                }
            }
        }
        (kept, settled)
    }

    /// The record with the rule's fields, from its outputs.
    fn fields(&self, row: RowOutputs, mut record: Json, budget: u64) -> Result<Json, String> {
        let mut map: HashMap<Key, Value> = HashMap::new();
        for (name, values) in row {
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(format!("output `{name}` is {bad}, not a finite number"));
            }
            let list = values.into_iter().map(Value::Float).collect();
            map.insert(Key::String(Arc::new(name)), Value::List(Arc::new(list)));
        }
        let outputs = Value::Map(Map { map: Arc::new(map) });
        let bound = [("outputs", outputs), ("record", to_cel(&record))];
        let Json::Object(fields) = &mut record else {
            return Err("a model rule needs the record to be an object".into());
        };
        for (name, expr) in &self.outputs {
            let field = |e: String| format!("field `{name}`: {e}");
            let value = evaluate(expr.metered(), &bound, budget).map_err(field)?;
            fields.insert(name.clone(), to_json(&value).map_err(field)?);
        }
        Ok(record)
    }
}

/// Each of `n` rows' slice of every output tensor (named by `names`, in order).
pub(super) fn split_rows(
    names: &[String],
    outputs: &[Tensor],
    n: usize,
) -> Result<Vec<RowOutputs>, String> {
    let mut rows: Vec<RowOutputs> = vec![Vec::with_capacity(names.len()); n];
    for (tensor, name) in outputs.iter().zip(names) {
        if tensor.shape.first() != Some(&n) || tensor.values.len() % n.max(1) != 0 {
            return Err(format!(
                "output `{name}` has shape {:?}, not {n} rows",
                tensor.shape
            ));
        }
        let width = tensor.values.len() / n.max(1);
        for (row, values) in rows.iter_mut().zip(tensor.values.chunks(width.max(1))) {
            row.push((name.clone(), values.to_vec()));
        }
    }
    Ok(rows)
}

/// Appends the numbers of `value` (a number, or lists of them, nested) to `out`.
fn numbers(value: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match value {
        Value::Float(f) if f.is_finite() => out.push(*f),
        Value::Int(i) => out.push(*i as f64),
        Value::UInt(u) => out.push(*u as f64),
        Value::List(items) => {
            for item in items.iter() {
                numbers(item, out)?;
            }
        }
        Value::Float(f) => return Err(format!("{f} is not a finite number")),
        other => return Err(format!("needs numbers, got {}", kind(other))),
    }
    Ok(())
}

/// The `model` stage `at` of `compiled`.
fn stage_at(compiled: &Compiled, after: bool, at: usize) -> Option<&ModelStage> {
    match compiled.stages(after).get(at) {
        Some((_, Stage::Model(stage))) => Some(stage),
        _ => None,
    }
}

/// Every record of `records` failed with `message`.
fn all_failed(rule: usize, records: Live, message: &str) -> Settled {
    records
        .into_iter()
        .map(|(i, _)| {
            let message = message.to_owned();
            (i, Err(RuleError { rule, message }))
        })
        .collect()
}

/// Runs the `model` stage `at` of `compiled` (rule `rule`) over `live`: a registered model
/// looked up and run on a compute thread of the runner's lane (a version no longer
/// registered fails every record), or a remote model asked `max_batch` rows at a time.
pub(super) async fn score(
    compiled: &Arc<Compiled>,
    after: bool,
    at: usize,
    rule: usize,
    live: Live,
    runner: &Runner<'_>,
) -> Result<(Live, Settled), CoreError> {
    let Some(stage) = stage_at(compiled, after, at) else {
        return Ok((live, Settled::new()));
    };
    let budget = compiled.map_budget();
    let c = compiled.clone();
    match (&stage.registered, &stage.endpoint) {
        (Some((name, version)), _) => {
            let Some((model, info)) = runner.lookup.model(name, *version).await? else {
                let message = format!("model `{name}` has no version {version} any more");
                return Ok((Vec::new(), all_failed(rule, live, &message)));
            };
            off_runtime(runner.compute, runner.lane, move || {
                let Some(stage) = stage_at(&c, after, at) else {
                    return (live, Settled::new());
                };
                let names: Vec<(String, Option<usize>)> = info
                    .inputs
                    .iter()
                    .map(|i| (i.name.clone(), i.row_width()))
                    .collect();
                let (rows, mut settled) = stage.rows(rule, &names, live, budget);
                if rows.records.is_empty() {
                    return (Vec::new(), settled);
                }
                let outputs = stage.run(model.as_ref(), &info, &rows);
                let (kept, failed) = stage.write(rule, rows.records, outputs, budget);
                settled.extend(failed);
                (kept, settled)
            })
            .await
        }
        (None, Some(endpoint)) => remote(c, (after, at, rule), endpoint, live, runner).await,
        (None, None) => Ok((
            Vec::new(),
            all_failed(rule, live, "the rule names no model"),
        )),
    }
}

/// A remote model over `live`, `max_batch` rows per request.
async fn remote(
    compiled: Arc<Compiled>,
    (after, at, rule): (bool, usize, usize),
    endpoint: &Endpoint,
    live: Live,
    runner: &Runner<'_>,
) -> Result<(Live, Settled), CoreError> {
    let budget = compiled.map_budget();
    let c = compiled.clone();
    let (rows, mut settled) = off_runtime(runner.compute, runner.lane, move || {
        let Some(stage) = stage_at(&c, after, at) else {
            return (Rows::default(), Settled::new());
        };
        let names: Vec<(String, Option<usize>)> =
            stage.inputs.keys().map(|k| (k.clone(), None)).collect();
        stage.rows(rule, &names, live, budget)
    })
    .await?;
    let Rows {
        names,
        mut records,
        mut values,
    } = rows;
    let mut kept = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let take = (endpoint.max_batch as usize).clamp(1, records.len());
        let chunk_records: Live = records.drain(..take).collect();
        let chunk = Rows {
            names: names.clone(),
            records: Vec::new(),
            values: values.drain(..take).collect(),
        };
        let body = super::remote::request(endpoint.protocol, &chunk, 0..take);
        let outputs = match runner.lookup.infer(endpoint, body).await {
            Ok(answer) => super::remote::answer(endpoint.protocol, &answer, take),
            Err(reason) => Err(reason),
        }
        .map_err(|e| {
            format!(
                "the remote model at {}: {e}",
                endpoint.url.url().host_str().unwrap_or("?")
            )
        });
        let c = compiled.clone();
        let (k, f) = off_runtime(runner.compute, runner.lane, move || {
            match stage_at(&c, after, at) {
                Some(stage) => stage.write(rule, chunk_records, outputs, budget),
                None => (chunk_records, Settled::new()),
            }
        })
        .await?;
        kept.extend(k);
        settled.extend(f);
    }
    Ok((kept, settled))
}
