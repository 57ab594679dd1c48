"""Round 6 (device): does TesseraNet (street-object model) add to DINOv2 on held-out street scenes?

Same augmentation/folds/recipe as run_all.py (logistic, l2, class-balanced, Platt on inner
leave-one-source-out logits; cut 0.5). Train views t0-t2, eval e0, e1.
"""
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_all as R  # noqa: E402

R.TRAIN_TAGS = ["t0", "t1", "t2"]
R.EVAL_TAGS = ["e0", "e1"]
OUT = os.environ.get("OUT", "/tmp/out")
R.OUT = OUT
DEV = "cuda"
WIDTH = {"cls": 384, "mean": 384, "cn8": 384, "tp": 34, "tm": 34, "tap2": 320, "tap2max": 320, "att": 320, "tap1": 160}
ORDER = list(WIDTH)
LOG = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


def col_index(blocks):
    off, cols = {}, []
    o = 0
    for b in ORDER:
        off[b] = o
        o += WIDTH[b]
    for b in blocks:
        cols.extend(range(off[b], off[b] + WIDTH[b]))
    return cols


R.col_index = col_index


def dino_feats(vit, x):
    import torch

    hs, fin, _, _ = vit.forward(x)
    return {"cls": fin[:, 0], "mean": fin[:, 1:].mean(1),
            "cn8": torch.nn.functional.layer_norm(hs[7][:, 0], (384,), eps=1e-6)}


def tess_session(path):
    import onnx
    import onnxruntime as ort
    from onnx import helper

    m = onnx.load(path)
    for w in ["/model/tap_norm.1/LayerNormalization_output_0", "/model/tap_norm.2/LayerNormalization_output_0",
              "/model/attention.1/Add_1_output_0"]:
        m.graph.output.append(helper.make_tensor_value_info(w, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 16
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def tess_feats(sess, a):
    from PIL import Image

    x = np.stack([np.array(Image.fromarray(im).resize((448, 448), Image.BILINEAR)) for im in a])
    x = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    probs, masks, t1, t2, att = sess.run(None, {"image": x})
    return {"tp": np.concatenate([probs.max(2), probs.mean(2)], 1),
            "tm": np.concatenate([masks.max((2, 3)), masks.mean((2, 3))], 1),
            "tap2": t2.mean((1, 2)), "tap2max": t2.max((1, 2)), "att": att.mean(1), "tap1": t1.mean((1, 2))}


def main():
    import torch

    os.makedirs(OUT, exist_ok=True)
    t0 = time.time()
    rows = R.load_rows()
    imgs, levels, ok = R.augment_all(rows)
    vit = R.ViT(os.path.join(R.X, "weights.npz"), DEV)
    sess = tess_session(os.environ.get("TESS", "/tmp/tessm/tesseranet_4x4.onnx"))
    feats = {}
    tags = R.TRAIN_TAGS + R.EVAL_TAGS
    n = len(rows)
    for j, tag in enumerate(tags):
        parts = []
        for s in range(0, n, 64):
            a = np.ascontiguousarray(imgs[s:s + 64, j])
            x = R.pixels(a, DEV)
            with torch.no_grad():
                d = {k: v.float().cpu().numpy() for k, v in dino_feats(vit, x).items()}
            d.update(tess_feats(sess, a))
            parts.append(np.concatenate([d[b] for b in ORDER], 1))
        feats[f"224/{tag}"] = torch.tensor(np.concatenate(parts), device=DEV, dtype=torch.float32)
        log(f"features {tag} {time.time() - t0:.1f}s")
    D = R.Data(rows, ok, feats)
    variants = {
        "dino": ["cls", "mean", "cn8"],
        "tess_p": ["tp", "tm"],
        "tess_all": ["tp", "tm", "tap2", "att"],
        "tess_tap": ["tap2", "tap2max", "tap1"],
        "dino+tp": ["cls", "mean", "cn8", "tp", "tm"],
        "dino+tess_all": ["cls", "mean", "cn8", "tp", "tm", "tap2", "att"],
        "dino+att": ["cls", "mean", "cn8", "att"],
        "dino+tap2": ["cls", "mean", "cn8", "tap2"],
    }
    outs, res = {}, []
    for name, blocks in variants.items():
        for l2 in (0.2, 1.0) if name != "dino" else (0.2,):
            key = f"{name}_l2_{l2}"
            o, secs = R.run_variant(D, {"blocks": blocks, "l2": l2, "views": 3})
            outs[key] = o
            res.append(report(D, key, o, secs))
    # late fusion: mean of calibrated probabilities of two separately trained heads
    for a, b in (("dino_l2_0.2", "tess_all_l2_1.0"), ("dino_l2_0.2", "tess_all_l2_0.2"), ("dino_l2_0.2", "tess_tap_l2_1.0")):
        o = {k: {e: (outs[a][k][e] + outs[b][k][e]) / 2 for e in R.EVAL_TAGS} | {"_ab": (0, 0)} for k in outs[a]}
        res.append(report(D, f"late({a}+{b})", o, 0))
    json.dump(res, open(os.path.join(OUT, "results6.json"), "w"), indent=1)
    log(f"total {time.time() - t0:.1f}s")
    open(os.path.join(OUT, "log6.txt"), "w").write("\n".join(LOG))


def report(D, name, o, secs):
    r = {"variant": name}
    line = f"{name:<44}"
    for scheme in ("source", "city"):
        ms, aucs = [], []
        for e in R.EVAL_TAGS:
            p, keep = R.pooled(D, o, scheme, e)
            m, acc, cm = R.mcc_of(p[keep], D.y[keep])
            na = keep & (D.src != "pranav_au_night")
            r[f"{scheme}_{e}"] = {"mcc": round(m, 3), "acc": round(acc, 3), "auc": round(R.auc_of(p[keep], D.y[keep]), 3),
                                  "mcc_no_night": round(R.mcc_of(p[na], D.y[na])[0], 3), "cm": cm}
            ms.append(m)
            aucs.append(r[f"{scheme}_{e}"]["auc"])
        line += f" | {scheme[:3]} MCC {np.mean(ms):.3f} ({ms[0]:.3f}/{ms[1]:.3f}) AUC {np.mean(aucs):.3f}"
    p, keep = R.pooled(D, o, "source", "e0")
    r["per_source"] = {s[:8]: round(float(((p[keep & (D.src == s)] >= 0.5) == D.y[keep & (D.src == s)]).mean()), 2)
                       for s in sorted(set(D.src[D.street]))}
    log(line + f" {r['per_source']} ({secs:.0f}s)")
    return r


if __name__ == "__main__":
    main()
