"""Builds the small, real ONNX models the integration tests run (with the `onnx` package).

- `tint.onnx`: a classifier over [N,3,32,32] RGB in [0,1]: global average pool, then a linear
  layer whose logit for "roadwork" is 12 * (R - B) + 4 * (G - B) - 1: orange and red images
  score high, blue and grey ones low. Behaviour is easy to predict from a rendered image.
- `tint_embed.onnx`: the same pooling as an embedder: [N,3,32,32] -> [N,3] channel means.
- `tint_fixed.onnx`: the classifier with a fixed batch of 1 (for load-time checks).
- `det_*.onnx`: detectors in each output layout the engine decodes (`layout_detectors.py`).

Usage: python make_test_models.py OUT_DIR
"""

import os
import sys

import numpy as np
import onnx

import layout_detectors
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


if __name__ == "__main__":
    main()
