"""Issue 28, first lever on the CPU: ONNX Runtime's int8 quantization of the shipped DINOv2 cut,
timed against the plain fp32 call in one run, and its effect on the shipped head's scores.

    .cache/train-venv/bin/python experiments/cpu-int8/quant.py   (onnxruntime 1.31.1; its optimiser needs sympy) [--threads 2] [--runs 40]

Variants: fp32 as shipped; fp32 through ONNX Runtime's transformer optimiser (fusion only);
dynamic int8 (weights int8 per channel, activations quantised at run time) of MatMul, on the
shipped graph and on the fused one. Each is timed at batch 1 on a 224x224 input (median of
`--runs` after warm-up, `--threads` intra-op threads, sequential), and run on every image of both
labelled sets prepared as the registry's `dino-embed` entry prepares them (short side 224,
centre 224, bilinear, ImageNet mean/std); the shipped head (policies/heads/roadwork.json) turns
each embedding into a score: the table gives the largest score change against fp32, how many
answers cross 0.5, and the AUC on the street-level images of both (in-sample for the head:
a comparison of variants, not an accuracy figure).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "models"))
from dinov2_int8 import prepare  # noqa: E402  (the registry's dino-embed preparation)
SHARED = os.environ.get("CASCADE_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")
SRC = os.path.join(ROOT, "target", "models", "dinov2_vits14.onnx")


class Calibration:
    """ONNX Runtime's calibration reader over `images` (prepared inputs), one at a time."""

    def __init__(self, name, images):
        self.items = iter([{name: x[None]} for x in images])

    def get_next(self):
        return next(self.items, None)

    def rewind(self):
        pass


def variants(work, calibration=None, only=None):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.transformers import optimizer

    out = {"fp32": SRC}
    if calibration is not None:
        # static QDQ: activation ranges from calibration images instead of per call; MatMul only
        # (LayerNorm, softmax and GELU stay float), weights int8 per channel, activations uint8
        name = onnx.load(SRC).graph.input[0].name
        for label, extra in (("int8 static QDQ", {}), ("int8 static QDQ, reduced range", {"reduce_range": True})):
            dst = os.path.join(work, label.replace(" ", "_").replace(",", "") + ".onnx")
            quantize_static(SRC, dst, Calibration(name, calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["MatMul"], **extra,
                            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            out[label] = dst
    if only == "static":
        out["int8 dynamic"] = os.path.join(ROOT, "target", "models", "dinov2_vits14_int8.onnx")
        return out
    fused = os.path.join(work, "fused.onnx")
    optimizer.optimize_model(SRC, model_type="vit", num_heads=6, hidden_size=384, opt_level=0).save_model_to_file(fused)
    out["fp32 fused"] = fused
    for name, src in (("int8 dynamic", SRC), ("int8 dynamic fused", fused)):
        dst = os.path.join(work, name.replace(" ", "_") + ".onnx")
        # shape inference leaves some MatMul outputs untyped in this graph: they are float
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        out[name] = dst
    return out


def head_scores(emb, head):
    x = (emb - np.array(head["mean"])) / np.array(head["std"]) if head.get("mean") else emb
    for layer in head["layers"]:
        x = x @ np.array(layer["weights"]).T + np.array(layer["bias"])
        if layer["relu"]:
            x = np.maximum(x, 0)
    return 1 / (1 + np.exp(-x[:, -1]))


def auc(p, y):
    pos, neg = p[y == 1], p[y == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--static", type=int, default=0, metavar="N",
                    help="also static QDQ int8, calibrated on every N-th image of both sets (0: not); "
                         "then the dynamic file is set-up's (target/models) and the fused variants are left out")
    a = ap.parse_args()
    rows = []
    for data in ("roadwork-dev", "roadwork-more"):
        base = os.path.join(SHARED, "data", data)
        for line in open(os.path.join(base, "manifest.csv")).read().splitlines()[1:]:
            path, label = line.split(",")[:2]
            rows.append((os.path.join(base, path), int(label), path.split("/")[0]))
    X = np.stack([prepare(p) for p, _, _ in rows])
    y = np.array([l for _, l, _ in rows])
    street = np.array([g != "tracon" for _, _, g in rows])
    head = json.load(open(os.path.join(ROOT, "policies", "heads", "roadwork.json")))
    work = tempfile.mkdtemp()
    res, ref = {}, None
    calibration = X[:: a.static] if a.static else None
    for name, path in variants(work, calibration, "static" if a.static else None).items():
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inp = s.get_inputs()[0].name
        x1 = X[:1]
        for _ in range(5):
            s.run(None, {inp: x1})
        ts = []
        for i in range(a.runs):
            t = time.perf_counter()
            s.run(None, {inp: X[i % len(X)][None]})
            ts.append(time.perf_counter() - t)
        ms = 1000 * sorted(ts)[len(ts) // 2]
        emb = np.concatenate([s.run(None, {inp: X[i:i + 16]})[0] for i in range(0, len(X), 16)])
        p = head_scores(emb, head)
        if ref is None:
            ref, ref_ms = p, ms
        res[name] = {"ms_p50": ms, "vs_fp32": ms / ref_ms, "size_mb": os.path.getsize(path) / 1e6,
                     "max_score_change": float(np.abs(p - ref).max()), "crossings": int(((p > 0.5) != (ref > 0.5)).sum()),
                     "auc_street": auc(p[street], y[street])}
        print(name, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res[name].items()}), flush=True)
    print(f"{len(rows)} images ({street.sum()} street-level), {a.threads} threads, batch 1, median of {a.runs}"
          + (f"; static variants calibrated on {len(calibration)} of them (in-sample)" if a.static else ""))


if __name__ == "__main__":
    main()
