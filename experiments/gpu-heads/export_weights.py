"""The shipped DINOv2 cut's weights under semantic names (weights.npz, shapes.json) and onnxruntime's
outputs on fixed inputs (verify.npz), for the torch re-implementation in run_all.py to load and check
itself against. Runs here (onnx + onnxruntime CPU): python export_weights.py [DIR]"""
import json, os, re, sys, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper, helper, TensorProto
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "target", "models", "dinov2_vits14.onnx")
DST = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "device-bundle", "x")
os.makedirs(DST, exist_ok=True)
m = onnx.load(SRC)
g = m.graph
inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
W = {}
for k, v in inits.items():
    if k.startswith("backbone."):
        W[k] = v
W["pos_cls"] = inits["onnx::Concat_1957"]
W["pos_patch"] = inits["onnx::Reshape_1962"]
roles = {"attention/attention/key": "key", "attention/attention/value": "value", "attention/attention/query": "query",
         "attention/output/dense": "dense", "mlp/fc1": "fc1", "mlp/fc2": "fc2"}
for n in g.node:
    if n.op_type == "MatMul":
        mm = re.match(r"/backbone/encoder/layer\.(\d+)/(.*)/MatMul$", n.name)
        if mm and mm.group(2) in roles:
            W[f"L{mm.group(1)}.{roles[mm.group(2)]}.w"] = inits[n.input[1]]
assert sum(1 for k in W if k.endswith(".w")) == 72, len(W)
np.savez(os.path.join(DST, "weights.npz"), **W)
json.dump({k: list(v.shape) for k, v in W.items()}, open(os.path.join(DST, "shapes.json"), "w"))
# reference: add extra outputs (layer 7 output, final LN tokens) and run on fixed inputs
extra = ["/backbone/encoder/layer.7/Add_1_output_0", "/backbone/layernorm/Add_1_output_0"]
d = g.input[0].type.tensor_type.shape.dim
print("input dims", d)
d[2].dim_param = "H"; d[3].dim_param = "W"
for e in extra:
    g.output.append(helper.make_tensor_value_info(e, TensorProto.FLOAT, None))
s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
def verify_inputs(size):
    """Deterministic inputs (same on the device: run_all.py has a copy)."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    return x * 0.3 + np.sin(np.linspace(0, 20, size))[None, None, :, None].astype(np.float32)


out = {}
for size in (224, 448):
    x = verify_inputs(size)
    r = s.run(None, {"input_image": x})
    out[f"xsum{size}"] = np.float64(x.astype(np.float64).sum())
    out[f"emb{size}"] = r[0]
    out[f"l7_{size}"] = r[1][:, :40]
    out[f"ln_{size}"] = r[2][:, :40]
np.savez(os.path.join(DST, "verify.npz"), **out)
print("ok", {k: v.shape for k, v in out.items()})
