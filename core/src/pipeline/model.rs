//! The `model` rule on a batch: each record's input rows from its expressions, one run of
//! the model over every row, then each record's fields from its own outputs. A record whose
//! rows cannot be made, or whose outputs are not finite numbers, fails alone; a model that
//! fails on the batch fails every record of it.

use super::rules::{Live, RuleError, Settled, kind};
use super::value::{to_cel, to_json};
use crate::domain::ModelVersion;
use crate::expr::{Expr, evaluate};
use crate::ports::{LoadedModel, Tensor};
use cel::Value;
use cel::objects::{Key, Map};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A `model` rule, compiled.
pub(super) struct ModelStage {
    pub(super) name: String,
    pub(super) version: u32,
    pub(super) inputs: BTreeMap<String, Expr>,
    pub(super) outputs: Vec<(String, Expr)>,
}

impl ModelStage {
    /// Scores `live` with `model` (`info` says what it takes and gives): the records kept,
    /// with their new fields, and those that failed.
    pub(super) fn score(
        &self,
        rule: usize,
        model: &dyn LoadedModel,
        info: &ModelVersion,
        live: Live,
        budget: u64,
    ) -> (Live, Settled) {
        let fail = |message: String| RuleError { rule, message };
        let mut settled = Settled::new();
        let mut ready: Live = Vec::with_capacity(live.len());
        let mut rows: Vec<Vec<f64>> = vec![Vec::new(); info.inputs.len()];
        for (index, record) in live {
            match self.rows_of(&record, info, budget) {
                Ok(values) => {
                    for (all, mine) in rows.iter_mut().zip(values) {
                        all.extend(mine);
                    }
                    ready.push((index, record));
                }
                Err(e) => settled.push((index, Err(fail(e)))),
            }
        }
        if ready.is_empty() {
            return (ready, settled);
        }
        let n = ready.len();
        let tensors = info
            .inputs
            .iter()
            .zip(rows)
            .map(|(input, values)| Tensor {
                shape: std::iter::once(n)
                    .chain(input.shape.iter().skip(1).map(|d| match d {
                        Some(crate::domain::Dim::Size(s)) => *s as usize,
                        _ => 1,
                    }))
                    .collect(),
                values,
            })
            .collect();
        let outputs = match model.run(tensors) {
            Ok(outputs) => outputs,
            Err(e) => {
                let message = format!("model `{}` v{} failed: {e}", self.name, self.version);
                settled.extend(
                    ready
                        .into_iter()
                        .map(|(i, _)| (i, Err(fail(message.clone())))),
                );
                return (Vec::new(), settled);
            }
        };
        let mut kept = Vec::with_capacity(n);
        for (row, (index, record)) in ready.into_iter().enumerate() {
            match self.fields(row, n, &outputs, info, record, budget) {
                Ok(record) => kept.push((index, record)),
                Err(e) => settled.push((index, Err(fail(e)))),
            }
        }
        (kept, settled)
    }

    /// One record's values for each input, in the model's order, each as wide as a row of
    /// that input.
    fn rows_of(
        &self,
        record: &Json,
        info: &ModelVersion,
        budget: u64,
    ) -> Result<Vec<Vec<f64>>, String> {
        let bound = [("record", to_cel(record))];
        info.inputs
            .iter()
            .map(|input| {
                let expr = self
                    .inputs
                    .get(&input.name)
                    .ok_or_else(|| format!("no expression for input `{}`", input.name))?;
                let value = evaluate(expr.metered(), &bound, budget)
                    .map_err(|e| format!("input `{}`: {e}", input.name))?;
                let mut flat = Vec::new();
                numbers(&value, &mut flat).map_err(|e| format!("input `{}`: {e}", input.name))?;
                let width = input.row_width().unwrap_or(0);
                if flat.len() != width {
                    return Err(format!(
                        "input `{}` takes {width} numbers per record, the expression gave {}",
                        input.name,
                        flat.len()
                    ));
                }
                Ok(flat)
            })
            .collect()
    }

    /// The record with the rule's fields, from row `row` of the `n` rows' outputs.
    fn fields(
        &self,
        row: usize,
        n: usize,
        outputs: &[Tensor],
        info: &ModelVersion,
        mut record: Json,
        budget: u64,
    ) -> Result<Json, String> {
        let mut map: HashMap<Key, Value> = HashMap::new();
        for (tensor, output) in outputs.iter().zip(&info.outputs) {
            if tensor.shape.first() != Some(&n) || tensor.values.len() % n != 0 {
                return Err(format!(
                    "output `{}` has shape {:?}, not {n} rows",
                    output.name, tensor.shape
                ));
            }
            let width = tensor.values.len() / n;
            let mine = &tensor.values[row * width..(row + 1) * width];
            if let Some(bad) = mine.iter().find(|v| !v.is_finite()) {
                return Err(format!(
                    "output `{}` is {bad}, not a finite number",
                    output.name
                ));
            }
            let list = mine.iter().map(|v| Value::Float(*v)).collect();
            map.insert(
                Key::String(Arc::new(output.name.clone())),
                Value::List(Arc::new(list)),
            );
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
