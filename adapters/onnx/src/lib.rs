//! The model engine both shapes run: ONNX files loaded, type-checked, optimized and run by
//! tract (pure Rust). A dimension a model leaves open (the batch size, usually) stays a
//! symbol through planning and takes the batch's size at each run.

use std::io::Cursor;
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use wharf_core::domain::{Dim, TensorInfo};
use wharf_core::ports::{LoadedModel, ModelEngine, Signature, Tensor};

/// Element types a model's inputs may have: what rows of numbers become.
const INPUT_TYPES: [DatumType; 4] = [
    DatumType::F32,
    DatumType::F64,
    DatumType::I64,
    DatumType::I32,
];

/// tract as Wharf's model engine.
#[derive(Debug, Default, Clone, Copy)]
pub struct TractEngine;

/// A model tract planned, with the element type of each input.
struct Planned {
    plan: Arc<TypedRunnableModel>,
    input_types: Vec<DatumType>,
    labels: Vec<LabelFix>,
}

/// tract labels every row of a two-class tree ensemble classifier with its first class (it
/// takes the argmax over the positive class's score alone); its probabilities are right. So
/// the label output of such a classifier is made again from the probabilities: each row's
/// class with the highest one (the first of equals, as onnxruntime does).
struct LabelFix {
    /// The model output holding the labels.
    label: usize,
    /// The model output holding the probabilities (one column per class).
    probabilities: usize,
    /// The classes, in the probabilities' column order.
    classes: Vec<f64>,
}

/// Runs `f`, turning a panic inside tract (a file crafted to trip it) into an error: a
/// vendor's file must not take a worker down.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("tract failed on this model".into()))
}

impl ModelEngine for TractEngine {
    fn inspect(&self, bytes: &[u8]) -> Result<Signature, String> {
        guarded(|| signature(bytes))
    }

    fn load(&self, bytes: &[u8]) -> Result<Arc<dyn LoadedModel>, String> {
        guarded(|| load(bytes))
    }
}

/// What a model file takes and gives.
fn signature(bytes: &[u8]) -> Result<Signature, String> {
    let (model, _, _) = plan(bytes)?;
    let infos = |outlets: &[OutletId]| -> Result<Vec<TensorInfo>, String> {
        outlets
            .iter()
            .map(|outlet| {
                let fact = model.outlet_fact(*outlet).map_err(reason)?;
                Ok(TensorInfo {
                    name: model.node(outlet.node).name.clone(),
                    dtype: dtype_name(fact.datum_type),
                    shape: fact.shape.iter().map(dim).collect(),
                })
            })
            .collect()
    };
    let mut outputs = infos(&model.outputs)?;
    // An output's name is its outlet's label when the graph gave it one.
    for (info, outlet) in outputs.iter_mut().zip(&model.outputs) {
        if let Some(label) = model.outlet_label(*outlet) {
            info.name = label.to_owned();
        }
    }
    Ok(Signature {
        inputs: infos(&model.inputs)?,
        outputs,
    })
}

/// A model file loaded for running.
fn load(bytes: &[u8]) -> Result<Arc<dyn LoadedModel>, String> {
    let (model, input_types, labels) = plan(bytes)?;
    let plan = model.into_runnable().map_err(reason)?;
    Ok(Arc::new(Planned {
        plan,
        input_types,
        labels,
    }))
}

impl LoadedModel for Planned {
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        guarded(|| self.run_batch(inputs))
    }
}

impl Planned {
    fn run_batch(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        if inputs.len() != self.input_types.len() {
            return Err(format!(
                "the model takes {} inputs, got {}",
                self.input_types.len(),
                inputs.len()
            ));
        }
        let tensors = inputs
            .into_iter()
            .zip(&self.input_types)
            .map(|(t, dt)| to_tract(t, *dt).map(TValue::from))
            .collect::<Result<TVec<_>, _>>()?;
        let outputs = self.plan.run(tensors).map_err(reason)?;
        let mut outputs = outputs
            .into_iter()
            .map(|t| from_tract(&t))
            .collect::<Result<Vec<_>, _>>()?;
        for fix in &self.labels {
            let scores = outputs[fix.probabilities].values.clone();
            let width = fix.classes.len();
            for (row, label) in outputs[fix.label].values.iter_mut().enumerate() {
                let Some(mine) = scores.get(row * width..(row + 1) * width) else {
                    return Err("the classifier gave fewer probabilities than labels".into());
                };
                let best = mine
                    .iter()
                    .enumerate()
                    .fold(0, |best, (i, p)| if *p > mine[best] { i } else { best });
                *label = fix.classes[best];
            }
        }
        Ok(outputs)
    }
}

/// The two-class tree ensemble classifiers of `proto` whose label and probabilities are
/// outputs of the graph (see [`LabelFix`]), in the terms of `model`'s outputs.
fn label_fixes(proto: &tract_onnx::pb::ModelProto, model: &TypedModel) -> Vec<LabelFix> {
    let Some(graph) = &proto.graph else {
        return Vec::new();
    };
    let output_at = |name: &str| {
        model
            .outputs
            .iter()
            .position(|o| model.outlet_label(*o) == Some(name))
    };
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "TreeEnsembleClassifier")
        .filter_map(|n| {
            let attr = |name: &str| n.attribute.iter().find(|a| a.name == name);
            let classes = &attr("classlabels_int64s")?.ints;
            let one_column = attr("class_ids").is_none_or(|a| a.ints.iter().all(|c| *c == 0));
            if classes.len() != 2 || !one_column || n.output.len() < 2 {
                return None;
            }
            Some(LabelFix {
                label: output_at(&n.output[0])?,
                probabilities: output_at(&n.output[1])?,
                classes: classes.iter().map(|c| *c as f64).collect(),
            })
        })
        .collect()
}

/// Reads, types and optimizes a model: the optimized model, its inputs' element types and
/// the labels to make again.
fn plan(bytes: &[u8]) -> Result<(TypedModel, Vec<DatumType>, Vec<LabelFix>), String> {
    let onnx = tract_onnx::onnx();
    let not_a_model = |e| format!("not an ONNX model tract can read: {}", reason(e));
    let proto = onnx
        .proto_model_for_read(&mut Cursor::new(bytes))
        .map_err(not_a_model)?;
    let mut model = onnx.model_for_proto_model(&proto).map_err(not_a_model)?;
    let mut input_types = Vec::new();
    for i in 0..model.inputs.len() {
        let fact = model.input_fact(i).map_err(reason)?.clone();
        let name = model.node(model.inputs[i].node).name.clone();
        let dt = fact
            .datum_type
            .concretize()
            .ok_or_else(|| format!("input `{name}` has no element type"))?;
        if !INPUT_TYPES.contains(&dt) {
            return Err(format!(
                "input `{name}` is {}: inputs must be float or integer tensors",
                dtype_name(dt)
            ));
        }
        let rank =
            fact.shape.rank().concretize().ok_or_else(|| {
                format!("input `{name}` has no fixed rank, which tract cannot plan")
            })?;
        // Open dimensions become symbols (the first one named `N`, the batch) so the plan
        // takes any size there.
        let dims: Vec<TDim> = (0..usize::try_from(rank).map_err(reason)?)
            .map(|d| match fact.shape.dim(d).and_then(|f| f.concretize()) {
                Some(known) => known,
                None if d == 0 => model.symbols.sym("N").into(),
                None => model.symbols.sym(&format!("{name}_{d}")).into(),
            })
            .collect();
        model
            .set_input_fact(i, InferenceFact::dt_shape(dt, dims))
            .map_err(reason)?;
        input_types.push(dt);
    }
    let typed = model
        .into_typed()
        .map_err(|e| format!("tract cannot type this model: {}", reason(e)))?;
    let optimized = typed
        .into_optimized()
        .map_err(|e| format!("tract cannot plan this model: {}", reason(e)))?;
    let labels = label_fixes(&proto, &optimized);
    Ok((optimized, input_types, labels))
}

fn to_tract(t: Tensor, dt: DatumType) -> Result<tract_onnx::prelude::Tensor, String> {
    let floats = tract_ndarray::ArrayD::from_shape_vec(t.shape, t.values).map_err(reason)?;
    let tensor: tract_onnx::prelude::Tensor = floats.into();
    tensor
        .cast_to_dt(dt)
        .map(|c| c.into_owned())
        .map_err(reason)
}

fn from_tract(t: &TValue) -> Result<Tensor, String> {
    let as_f64 = t.cast_to::<f64>().map_err(reason)?;
    let view = as_f64.to_plain_array_view::<f64>().map_err(reason)?;
    Ok(Tensor {
        shape: t.shape().to_vec(),
        values: view.iter().copied().collect(),
    })
}

fn dim(d: &TDim) -> Option<Dim> {
    match d.to_i64() {
        Ok(n) => u64::try_from(n).ok().map(Dim::Size),
        Err(_) => Some(Dim::Named(d.to_string())),
    }
}

fn dtype_name(dt: DatumType) -> String {
    match dt {
        DatumType::F32 => "float32".into(),
        DatumType::F64 => "float64".into(),
        DatumType::F16 => "float16".into(),
        DatumType::I64 => "int64".into(),
        DatumType::I32 => "int32".into(),
        DatumType::Bool => "bool".into(),
        DatumType::String => "string".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn reason(e: impl std::fmt::Display) -> String {
    // tract's errors chain their causes; the first line says what failed.
    let text = format!("{e:#}");
    text.chars().take(400).collect()
}
