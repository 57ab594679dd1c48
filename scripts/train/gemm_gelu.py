"""Rewrites a transformer's MLP input projection — `MatMul` followed by ONNX Runtime's fused
`BiasGelu` (or `FastGelu` with a bias), as its transformer optimiser leaves it — as one
`cascade.MatMulBiasGelu` node: the engine's own operator (engines/src/ops.rs), which on CUDA is a
single cuBLASLt product with the bias and GELU applied in its epilogue, instead of a GEMM that
writes the [M, 4·D] activation and a kernel that reads it back. The operator's GELU is the tanh
form (cuBLASLt's); BiasGelu's erf form differs from it by less than 5e-4 per activation.
`export_backbone.py --gemm-gelu` applies it after `--fuse`.

ONNX Runtime cannot see through the operator when it infers shapes, so an output dimension the
exporter left symbolic (DINOv2's embedding width, a Concat's) would stay unknown in the rewrite,
and the engine runs a model with an unknown output width without CUDA graphs. `rewrite`
therefore first infers the original's shapes (ONNX Runtime's symbolic shape inference, which
knows its fused nodes) and writes the dimensions it finds into the rewrite's declared outputs.

The rewritten model opens only where the operator is registered (the engine). For checking it
elsewhere, `expand` turns each node back into standard ONNX Runtime nodes with the same
arithmetic (`MatMul` and `com.microsoft.FastGelu`, also the tanh form).

    python gemm_gelu.py IN.onnx OUT.onnx
"""

import sys

import onnx
from onnx import helper

DOMAIN = "cascade"
OP = "MatMulBiasGelu"
GELUS = {("com.microsoft", "BiasGelu"), ("com.microsoft", "FastGelu")}


def _consumers(graph):
    uses = {}
    for n in graph.node:
        for i in n.input:
            uses.setdefault(i, []).append(n)
    return uses


def _shape(graph, name):
    for t in graph.initializer:
        if t.name == name:
            return list(t.dims)
    return None


def output_dims(model):
    """{output: [dim value or None]} of the model's declared outputs, symbolic dimensions
    resolved where ONNX Runtime's symbolic shape inference finds a number; None when the
    inference fails (the outputs then stay as declared)."""
    import copy

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(copy.deepcopy(model), auto_merge=True)
    except Exception as e:  # noqa: BLE001 (any failure of the inference: the declared shapes stay)
        print(f"[gemm_gelu] shape inference failed ({type(e).__name__}: {e}); output shapes stay as declared",
              file=sys.stderr)
        return None
    return {o.name: [d.dim_value if d.HasField("dim_value") else None for d in o.type.tensor_type.shape.dim]
            for o in inferred.graph.output}


def _pin_outputs(model, dims):
    """Writes the numbers of `dims` (from `output_dims`) into the model's symbolic output
    dimensions past the first: the batch axis stays a symbol whatever the inference merged it
    with. Returns how many were written."""
    pinned = 0
    for o in model.graph.output:
        for d, v in list(zip(o.type.tensor_type.shape.dim, dims.get(o.name, [])))[1:]:
            if v is not None and v > 0 and not d.HasField("dim_value"):
                d.dim_value = v  # replaces the symbol (a oneof)
                pinned += 1
    return pinned


def rewrite(model):
    """Returns (model, count): every MatMul → BiasGelu/FastGelu(bias) pair whose weight is a
    [K, N] initializer, whose bias is an [N] initializer, and whose product feeds nothing else,
    as one cascade.MatMulBiasGelu node (in place of the pair); the declared outputs' symbolic
    dimensions that the original's shape inference resolves are written as numbers."""
    g = model.graph
    uses = _consumers(g)
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    pairs = []
    for gelu in g.node:
        if (gelu.domain, gelu.op_type) not in GELUS or len(gelu.input) != 2 or not gelu.input[1]:
            continue
        mm = producer.get(gelu.input[0])
        if mm is None or mm.op_type != "MatMul" or mm.domain not in ("", "ai.onnx"):
            continue
        w, b = _shape(g, mm.input[1]), _shape(g, gelu.input[1])
        if w is None or b is None or len(w) != 2 or b != [w[1]]:
            continue
        if len(uses.get(mm.output[0], [])) != 1 or mm.output[0] in outputs:
            continue
        pairs.append((mm, gelu))
    # only where an output has a symbol past its first (batch) axis: the inference takes seconds
    open_width = any(not d.HasField("dim_value") for o in g.output for d in o.type.tensor_type.shape.dim[1:])
    dims = output_dims(model) if pairs and open_width else None
    for k, (mm, gelu) in enumerate(pairs):
        node = helper.make_node(OP, [mm.input[0], mm.input[1], gelu.input[1]], [gelu.output[0]],
                                name=f"{OP}_{k}", domain=DOMAIN)
        at = list(g.node).index(mm)
        g.node.remove(mm)
        g.node.remove(gelu)
        g.node.insert(at, node)
    if pairs and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    if dims:
        _pin_outputs(model, dims)
    return model, len(pairs)


def expand(model):
    """The rewritten model with each cascade.MatMulBiasGelu as MatMul + com.microsoft.FastGelu
    (the same function), which stock ONNX Runtime runs: for checking a rewrite outside the
    engine. Returns (model, count)."""
    g = model.graph
    count = 0
    for n in list(g.node):
        if n.domain != DOMAIN or n.op_type != OP:
            continue
        at = list(g.node).index(n)
        mid = f"{n.name or OP}_{count}_product"
        g.node.remove(n)
        g.node.insert(at, helper.make_node("FastGelu", [mid, n.input[2]], [n.output[0]], domain="com.microsoft",
                                           name=f"{n.name}_gelu"))
        g.node.insert(at, helper.make_node("MatMul", [n.input[0], n.input[1]], [mid], name=f"{n.name}_matmul"))
        count += 1
    if count:
        keep = [o for o in model.opset_import if o.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep)
        if not any(o.domain == "com.microsoft" for o in keep):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model, count


def main():
    src, dst = sys.argv[1], sys.argv[2]
    model, n = rewrite(onnx.load(src))
    if not n:
        print(f"{src}: no MatMul → BiasGelu/FastGelu pair with constant weight and bias; nothing written",
              file=sys.stderr)
        return 2
    onnx.save(model, dst)
    print(f"{n} MatMul → GELU pairs as {DOMAIN}.{OP}: {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
