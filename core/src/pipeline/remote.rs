//! The bodies of remote models: what a request of some rows carries and what an answer gives
//! each row, in the Open Inference Protocol's REST form and in the `instances` /
//! `predictions` JSON form.

use super::model::{RowOutputs, Rows, split_rows};
use crate::domain::Protocol;
use crate::ports::Tensor;
use serde_json::{Value as Json, json};
use std::ops::Range;

/// The body asking for the rows `range` of `rows`.
pub(super) fn request(protocol: Protocol, rows: &Rows, range: Range<usize>) -> Vec<u8> {
    let chunk = &rows.values[range];
    let body = match protocol {
        Protocol::OpenInference => {
            let inputs: Vec<Json> = rows
                .names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let width = chunk.first().map_or(0, |r| r[i].len());
                    let data: Vec<f64> = chunk.iter().flat_map(|r| r[i].iter().copied()).collect();
                    json!({"name": name, "shape": [chunk.len(), width], "datatype": "FP32", "data": data})
                })
                .collect();
            json!({ "inputs": inputs })
        }
        Protocol::Json => {
            let instances: Vec<Json> = chunk
                .iter()
                .map(|r| match r.as_slice() {
                    [only] => json!(only),
                    all => Json::Object(
                        rows.names
                            .iter()
                            .zip(all)
                            .map(|(name, values)| (name.clone(), json!(values)))
                            .collect(),
                    ),
                })
                .collect();
            json!({ "instances": instances })
        }
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Each of the `n` rows' outputs in an answer, or what is wrong with it.
pub(super) fn answer(protocol: Protocol, body: &[u8], n: usize) -> Result<Vec<RowOutputs>, String> {
    let body: Json =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    match protocol {
        Protocol::OpenInference => {
            let outputs = body["outputs"]
                .as_array()
                .ok_or("the answer has no `outputs` list")?;
            let mut names = Vec::with_capacity(outputs.len());
            let mut tensors = Vec::with_capacity(outputs.len());
            for output in outputs {
                let name = output["name"].as_str().ok_or("an output has no `name`")?;
                let shape = output["shape"]
                    .as_array()
                    .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
                    .ok_or_else(|| format!("output `{name}` has no `shape`"))?;
                let mut values = Vec::new();
                flatten(&output["data"], &mut values)
                    .map_err(|e| format!("output `{name}`: {e}"))?;
                names.push(name.to_owned());
                tensors.push(Tensor { shape, values });
            }
            split_rows(&names, &tensors, n)
        }
        Protocol::Json => {
            let predictions = body["predictions"]
                .as_array()
                .ok_or("the answer has no `predictions` list")?;
            if predictions.len() != n {
                return Err(format!(
                    "the answer has {} predictions for {n} rows",
                    predictions.len()
                ));
            }
            predictions
                .iter()
                .map(|p| match p {
                    Json::Object(fields) => fields
                        .iter()
                        .map(|(name, v)| {
                            let mut values = Vec::new();
                            flatten(v, &mut values)
                                .map_err(|e| format!("prediction `{name}`: {e}"))?;
                            Ok((name.clone(), values))
                        })
                        .collect(),
                    other => {
                        let mut values = Vec::new();
                        flatten(other, &mut values).map_err(|e| format!("a prediction: {e}"))?;
                        Ok(vec![("predictions".to_owned(), values)])
                    }
                })
                .collect()
        }
    }
}

/// Appends the numbers of `value` (a number or nested lists of them) to `out`; JSON has no
/// NaN, so a non-number is an error.
fn flatten(value: &Json, out: &mut Vec<f64>) -> Result<(), String> {
    match value {
        Json::Number(n) => out.push(n.as_f64().ok_or("a number out of range")?),
        Json::Array(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        other => return Err(format!("needs numbers, got {other}")),
    }
    Ok(())
}
