"""Builds the small, real ONNX models the integration tests run (with the `onnx` package).

- `tint.onnx`: a classifier over [N,3,32,32] RGB in [0,1]: global average pool, then a linear
  layer whose logit for "roadwork" is 12 * (R - B) + 4 * (G - B) - 1: orange and red images
  score high, blue and grey ones low. Behaviour is easy to predict from a rendered image.
- `tint_embed.onnx`: the same pooling as an embedder: [N,3,32,32] -> [N,3] channel means.
- `tint_fixed.onnx`: the classifier with a fixed batch of 1 (for load-time checks).
- `det_*.onnx`: detectors in each output layout the engine decodes (`layout_detectors.py`).
- `mlp_erf.onnx`: a classifier over [N,3,32,32] whose hidden layer is a transformer MLP's
  input projection as ONNX Runtime's fusion leaves it (MatMul, then com.microsoft.BiasGelu) on
  [N, 4, 3] tokens (the pooled colour and three shifted copies); `mlp_cascade.onnx` the same
  rewritten by scripts/train/gemm_gelu.py to the engine's cascade.MatMulBiasGelu;
  `mlp_tanh.onnx` that rewrite expanded back to stock nodes of the same arithmetic (MatMul,
  FastGelu); `mlp_cascade_f16.onnx` the rewrite in float16 throughout.

Usage: python make_test_models.py OUT_DIR
"""

import os
import sys

import numpy as np
import onnx

import layout_detectors

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "train"))
import gemm_gelu  # noqa: E402
from onnx import TensorProto, helper, numpy_helper


def classifier(batch):
    w = np.array([[0.0, 12.0], [0.0, 4.0], [0.0, -16.0]], dtype=np.float32)  # [3, 2]
    b = np.array([0.0, -1.0], dtype=np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tint",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    return graph


def embedder():
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1),
    ]
    return helper.make_graph(
        nodes,
        "tint_embed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])],
    )


def mlp(dtype=np.float32):
    """Pool to [N,3], make four tokens of it ([N,4,3]: x, x+0.25, x-0.25, 1-x), MatMul [3,24],
    BiasGelu, MatMul [24,2], mean over the tokens: [N,2] logits. Pre-activations span about
    [-4, 4], where the GELU's curve (and its two forms' difference) matters."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 2.0, (3, 24)).astype(dtype)
    b1 = rng.normal(0, 1.0, (24,)).astype(dtype)
    w2 = rng.normal(0, 0.5, (24, 2)).astype(dtype)
    shift = np.array([[0.0, 0.0, 0.0], [0.25, 0.25, 0.25], [-0.25, -0.25, -0.25], [1.0, 1.0, 1.0]], dtype)
    sign = np.array([[1.0], [1.0], [1.0], [-1.0]], dtype)
    ty = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Reshape", ["pooled", "tok_shape"], ["one"]),  # [N,1,3]
        helper.make_node("Mul", ["one", "sign"], ["signed"]),  # [N,4,3]
        helper.make_node("Add", ["signed", "shift"], ["tokens"]),
        helper.make_node("MatMul", ["tokens", "W1"], ["h"]),
        helper.make_node("BiasGelu", ["h", "B1"], ["g"], domain="com.microsoft"),
        helper.make_node("MatMul", ["g", "W2"], ["per_token"]),
        helper.make_node("ReduceMean", ["per_token"], ["logits"], axes=[1], keepdims=0),
    ]
    return helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", ty, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", ty, ["N", 2])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 1, 3], np.int64), "tok_shape"),
            numpy_helper.from_array(sign, "sign"),
            numpy_helper.from_array(shift, "shift"),
            numpy_helper.from_array(w1, "W1"),
            numpy_helper.from_array(b1, "B1"),
            numpy_helper.from_array(w2, "W2"),
        ],
    )


def model_of(graph, metadata=None):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        helper.set_model_props(model, {k: v})
    return model


def save(graph, path, metadata=None):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        helper.set_model_props(model, {k: v})
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    save(classifier("N"), os.path.join(out, "tint.onnx"))
    save(classifier(1), os.path.join(out, "tint_fixed.onnx"))
    save(embedder(), os.path.join(out, "tint_embed.onnx"))
    for name, graph, meta in layout_detectors.models():
        save(graph, os.path.join(out, name), meta)
    onnx.save(model_of(mlp()), os.path.join(out, "mlp_erf.onnx"))
    rewritten, n = gemm_gelu.rewrite(model_of(mlp()))
    assert n == 1, n
    onnx.save(rewritten, os.path.join(out, "mlp_cascade.onnx"))
    onnx.save(gemm_gelu.expand(gemm_gelu.rewrite(model_of(mlp()))[0])[0], os.path.join(out, "mlp_tanh.onnx"))
    onnx.save(gemm_gelu.rewrite(model_of(mlp(np.float16)))[0], os.path.join(out, "mlp_cascade_f16.onnx"))


if __name__ == "__main__":
    main()
