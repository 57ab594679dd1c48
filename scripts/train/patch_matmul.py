"""Rewrites a vision transformer's patch embedding — a Conv whose kernel equals its stride, on
the image input — as reshape, transpose and one MatMul (the same arithmetic: non-overlapping
patches are a matrix product), so that it runs on the GEMM kernels instead of cuDNN's
convolutions. For an input of fixed height and width. On an H200 it took ViT-B/16 fp16 with
CUDA graphs from 6.47 to 6.01 ms a batch of 64 in ONNX Runtime (the DINOv2 classifier 3.76 ->
3.50; experiments/cuda-transformers). `export_backbone.py --patch-matmul` applies it.

    python patch_matmul.py IN.onnx OUT.onnx HEIGHT WIDTH
"""

import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def rewrite(model, height, width):
    g = model.graph
    image = g.input[0].name
    inits = {t.name: t for t in g.initializer}
    for idx, n in enumerate(g.node):
        if n.op_type != "Conv" or n.input[0] != image:
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        k, s = list(a.get("kernel_shape", [])), list(a.get("strides", [1, 1]))
        if len(k) != 2 or k != s or any(a.get("pads", [0, 0, 0, 0])) or a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
            continue
        w = numpy_helper.to_array(inits[n.input[1]])  # [C_out, C_in, p, q]
        c_out, c_in, p, q = w.shape
        h, wd = height // p, width // q
        pre = f"patchmm{idx}_"
        new = [
            numpy_helper.from_array(np.array([-1, c_in, h, p, wd, q], np.int64), pre + "s1"),
            numpy_helper.from_array(np.array([-1, h, wd, c_in * p * q], np.int64), pre + "s2"),
            numpy_helper.from_array(np.ascontiguousarray(w.reshape(c_out, -1).T), pre + "w"),
        ]
        nodes = [
            helper.make_node("Reshape", [image, pre + "s1"], [pre + "r1"], name=pre + "r1"),
            helper.make_node("Transpose", [pre + "r1"], [pre + "t1"], perm=[0, 2, 4, 1, 3, 5], name=pre + "t1"),
            helper.make_node("Reshape", [pre + "t1", pre + "s2"], [pre + "r2"], name=pre + "r2"),
            helper.make_node("MatMul", [pre + "r2", pre + "w"], [pre + "mm"], name=pre + "mm"),
        ]
        last = pre + "mm"
        if len(n.input) > 2 and n.input[2]:
            nodes.append(helper.make_node("Add", [last, n.input[2]], [pre + "b"], name=pre + "b"))
            last = pre + "b"
        nodes.append(helper.make_node("Transpose", [last], [n.output[0]], perm=[0, 3, 1, 2], name=pre + "t2"))
        del g.node[idx]
        for j, m in enumerate(nodes):
            g.node.insert(idx + j, m)
        g.initializer.extend(new)
        if not any(n.input[1] in m.input for m in g.node):
            g.initializer.remove(inits[n.input[1]])
        return model, (c_out, c_in, p, q)
    raise ValueError("no patch Conv (kernel = stride, no padding) on the image input")


def main():
    src, dst, height, width = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    try:
        model, shape = rewrite(onnx.load(src), height, width)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    onnx.save(model, dst)
    print(f"patch Conv {shape} -> MatMul: {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
