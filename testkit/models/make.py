"""Makes the ONNX models the model tests run, and what onnxruntime answers for them.

    python3 testkit/models/make.py      # needs: pip install onnx onnxruntime scikit-learn skl2onnx

Writes, beside this script:
- linear.onnx: y = x · W + b, x float [N, 3], y float [N, 1];
- mlp.onnx: x float [N, 4] → Gemm 4×8 → Relu → Gemm 8×3 → Softmax → probs float [N, 3];
- trees.onnx: a random forest classifier of scikit-learn (trained on generated data),
  exported with skl2onnx without ZipMap: x float [N, 4] → label int64 [N],
  probabilities float [N, 2];
- trees3.onnx: the same for three classes (probabilities float [N, 3]);
- range_bps.onnx: the demo's model: x float [N, 3] (vwap, high, low) → bps float [N, 1],
  a bar's range (high − low) in basis points of its VWAP;
- open_width.onnx: x float [N, K] → y float [N, 1], the sum of each row: its rows have no
  fixed width, which a `model` rule cannot fill (the rule is refused when saved);
- reference.json: for each model, rows of inputs and onnxruntime's outputs for them.

Everything is seeded: running it again writes the same files.
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier

HERE = pathlib.Path(__file__).resolve().parent
OPSET = 17


def save(model, name):
    model.ir_version = 8
    onnx.checker.check_model(model)
    (HERE / f"{name}.onnx").write_bytes(model.SerializeToString())


def linear():
    w = numpy_helper.from_array(np.array([[0.5], [-1.25], [2.0]], dtype=np.float32), "W")
    b = numpy_helper.from_array(np.array([0.1], dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [w, b],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), "linear")


def mlp(rng):
    w1 = numpy_helper.from_array(rng.normal(size=(4, 8)).astype(np.float32), "W1")
    b1 = numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "B1")
    w2 = numpy_helper.from_array(rng.normal(size=(8, 3)).astype(np.float32), "W2")
    b2 = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "B2")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "W2", "B2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [w1, b1, w2, b2],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), "mlp")


def trees(rng, classes, name):
    x = rng.normal(size=(400, 4)).astype(np.float32)
    signal = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] - x[:, 3]
    y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, classes + 1)[1:-1]))
    forest = RandomForestClassifier(n_estimators=8, max_depth=4, random_state=7).fit(x, y)
    model = to_onnx(
        forest,
        initial_types=[("x", FloatTensorType([None, 4]))],
        options={id(forest): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    save(model, name)


def range_bps():
    spread = numpy_helper.from_array(np.array([[0.0], [1.0], [-1.0]], dtype=np.float32), "S")
    level = numpy_helper.from_array(np.array([[1.0], [0.0], [0.0]], dtype=np.float32), "L")
    scale = numpy_helper.from_array(np.array([10000.0], dtype=np.float32), "K")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "S"], ["range"]),
            helper.make_node("MatMul", ["x", "L"], ["vwap"]),
            helper.make_node("Div", ["range", "vwap"], ["share"]),
            helper.make_node("Mul", ["share", "K"], ["bps"]),
        ],
        "range_bps",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("bps", TensorProto.FLOAT, ["N", 1])],
        [spread, level, scale],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), "range_bps")


def open_width():
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        "open_width",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [axes],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), "open_width")


def reference(rng):
    cases = {}
    for name, width in [("linear", 3), ("mlp", 4), ("trees", 4), ("trees3", 4), ("range_bps", 3)]:
        rows = rng.normal(size=(16, width)).astype(np.float32)
        if name == "range_bps":
            rows = (100.0 + np.abs(rows) * 5.0).astype(np.float32)
        session = onnxruntime.InferenceSession(str(HERE / f"{name}.onnx"))
        outputs = session.run(None, {"x": rows})
        names = [o.name for o in session.get_outputs()]
        cases[name] = {
            "inputs": rows.tolist(),
            "outputs": {n: np.asarray(v).tolist() for n, v in zip(names, outputs)},
        }
    (HERE / "reference.json").write_text(json.dumps(cases, indent=1) + "\n")


if __name__ == "__main__":
    rng = np.random.default_rng(20261203)
    linear()
    mlp(rng)
    trees(rng, 2, "trees")
    trees(rng, 3, "trees3")
    range_bps()
    open_width()
    reference(rng)
