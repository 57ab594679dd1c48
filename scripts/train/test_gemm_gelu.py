"""gemm_gelu.py's rewrite keeps what ONNX Runtime can no longer infer through the engine's
operator: an output dimension the exporter left symbolic is written as the number the original's
shape inference finds (the engine runs a model with an unknown output width without CUDA graphs)."""

import os
import sys
import unittest

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gemm_gelu  # noqa: E402


def model(out_dims):
    """x [N,T,3] -> MatMul [3,8] -> BiasGelu -> Concat with x on the last axis: [N,T,11],
    declared as `out_dims`."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("BiasGelu", ["h", "B"], ["g"], domain="com.microsoft"),
        helper.make_node("Concat", ["g", "x"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "concat_after_gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        initializer=[numpy_helper.from_array(rng.normal(size=(3, 8)).astype(np.float32), "W"),
                     numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "B")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m


def declared(m):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in m.graph.output[0].type.tensor_type.shape.dim]


class RewriteTest(unittest.TestCase):
    def test_a_symbolic_output_width_is_written_as_its_number(self):
        m, n = gemm_gelu.rewrite(model(["N", "T", "width"]))
        self.assertEqual(n, 1)
        self.assertEqual([x.op_type for x in m.graph.node], ["MatMulBiasGelu", "Concat"])
        # the batch and token counts stay symbols; the width is 8 + 3
        self.assertEqual(declared(m), ["N", "T", 11])

    def test_the_batch_axis_stays_a_symbol(self):
        dims = {"y": [4, 5, 11]}  # as if the inference had merged the batch with a constant
        m = model(["N", "T", "width"])
        self.assertEqual(gemm_gelu._pin_outputs(m, dims), 2)
        self.assertEqual(declared(m), ["N", 5, 11])

    def test_numbers_already_declared_and_models_without_a_pair_stay(self):
        m, n = gemm_gelu.rewrite(model(["N", 5, 11]))
        self.assertEqual((n, declared(m)), (1, ["N", 5, 11]))
        plain = model(["N", "T", "width"])
        del plain.graph.node[1]  # no GELU: nothing to rewrite
        plain.graph.node[1].input[0] = "h"
        m, n = gemm_gelu.rewrite(plain)
        self.assertEqual((n, declared(m)), (0, ["N", "T", "width"]))


if __name__ == "__main__":
    unittest.main()
