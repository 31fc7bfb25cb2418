//! tract against onnxruntime: the fixture models of `testkit/models` (made by its `make.py`)
//! run on the rows onnxruntime ran, to 1e-5 relative; what each model takes and gives is
//! read from the file; what is not a model is refused with a reason.

use wharf_core::domain::Dim;
use wharf_core::ports::{ModelEngine, Tensor};
use wharf_onnx::TractEngine;

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
    let path = std::path::Path::new(&dir)
        .join("../../testkit/models")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0)
}

fn flat(v: &serde_json::Value) -> Vec<f64> {
    match v {
        serde_json::Value::Array(items) => items.iter().flat_map(flat).collect(),
        n => vec![n.as_f64().expect("a number")],
    }
}

#[test]
fn every_fixture_gives_what_onnxruntime_gave_on_the_same_rows() {
    let reference: serde_json::Value =
        serde_json::from_slice(&fixture("reference.json")).expect("json");
    let engine = TractEngine;
    for name in ["linear", "mlp", "trees", "trees3", "range_bps"] {
        let bytes = fixture(&format!("{name}.onnx"));
        let signature = engine.inspect(&bytes).expect("a model");
        let model = engine.load(&bytes).expect("loads");
        let case = &reference[name];
        let rows = case["inputs"].as_array().expect("rows");
        let width = rows[0].as_array().expect("a row").len();
        let input = Tensor {
            shape: vec![rows.len(), width],
            values: flat(&case["inputs"]),
        };
        let outputs = model.run(vec![input]).expect("runs");
        assert_eq!(outputs.len(), signature.outputs.len(), "{name}");
        for (info, ours) in signature.outputs.iter().zip(&outputs) {
            let theirs = flat(&case["outputs"][&info.name]);
            assert_eq!(ours.values.len(), theirs.len(), "{name}.{}", info.name);
            assert_eq!(ours.shape[0], rows.len(), "{name}.{}", info.name);
            for (i, (a, b)) in ours.values.iter().zip(&theirs).enumerate() {
                assert!(close(*a, *b), "{name}.{}[{i}]: {a} against {b}", info.name);
            }
        }
    }
}

#[test]
fn a_models_inputs_and_outputs_are_read_from_the_file() {
    let signature = TractEngine
        .inspect(&fixture("linear.onnx"))
        .expect("a model");
    assert_eq!(signature.inputs.len(), 1);
    assert_eq!(signature.inputs[0].name, "x");
    assert_eq!(signature.inputs[0].dtype, "float32");
    assert_eq!(
        signature.inputs[0].shape,
        vec![Some(Dim::Named("N".into())), Some(Dim::Size(3))]
    );
    assert_eq!(signature.inputs[0].row_width(), Some(3));
    assert_eq!(signature.outputs[0].name, "y");
    let trees = TractEngine
        .inspect(&fixture("trees.onnx"))
        .expect("a model");
    let names: Vec<&str> = trees.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["label", "probabilities"]);
}

#[test]
fn what_is_not_a_model_is_refused_with_a_reason() {
    for bytes in [
        &b"not a model at all"[..],
        &[][..],
        &fixture("linear.onnx")[..60],
    ] {
        let refused = TractEngine.inspect(bytes).expect_err("not a model");
        assert!(!refused.is_empty());
    }
}

#[test]
fn a_batch_of_the_wrong_width_is_an_error_not_a_panic() {
    let model = TractEngine.load(&fixture("linear.onnx")).expect("loads");
    let wrong = Tensor {
        shape: vec![2, 4],
        values: vec![1.0; 8],
    };
    assert!(model.run(vec![wrong]).is_err());
}

#[test]
fn a_damaged_file_is_an_error_never_a_crash() {
    let good = fixture("mlp.onnx");
    for at in (0..good.len()).step_by(5) {
        let mut bad = good.clone();
        bad[at] ^= 0x5a;
        // Refused or accepted, but answered: a panic inside tract is an error too.
        if let Ok(model) = TractEngine.load(&bad) {
            let row = Tensor {
                shape: vec![1, 4],
                values: vec![0.5; 4],
            };
            let _ = model.run(vec![row]);
        }
    }
}
