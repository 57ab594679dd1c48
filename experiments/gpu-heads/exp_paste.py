"""Round 7 (device): synthetic positives (cones pasted onto street frames without roadwork).

Each street negative gets N_SYN pasted copies (label 1, same source and city as the frame);
they train only: a fold that holds a source out also holds its pasted copies out, and they are
never scored. Same recipe, folds and metrics as exp_tess.py (dino 1152-d, l2, Platt, cut 0.5).
"""
import csv
import json
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exp_tess as T  # noqa: E402
import paste  # noqa: E402
import run_all as R  # noqa: E402

OUT = T.OUT
DEV = "cuda"
T.ORDER = ["cls", "mean", "cn8"]
LOG = T.LOG


def synth_rows(rows, n_syn, seed=5):
    sp = []
    for r in rows:
        if r["source"] == "tracon" and r["label"] == 1:
            sp += paste.sprites_of(r["path"])
    T.log(f"{len(sp)} cone sprites")
    if not sp:
        raise SystemExit("no cone sprites found in the web cone photos")
    rng = random.Random(seed)
    out_dir = "/tmp/syn"
    os.makedirs(out_dir, exist_ok=True)
    syn = []
    for r in rows:
        if not r["street"] or r["label"] != 0:
            continue
        for j in range(n_syn):
            from PIL import Image

            try:
                img = paste.paste(Image.open(r["path"]), sp, rng)
            except OSError as e:  # an unreadable frame: no pasted copy
                T.log("left out", r["rel"], repr(e))
                continue
            p = os.path.join(out_dir, f"{len(syn):05d}.jpg")
            img.save(p, quality=92)
            syn.append(dict(r, path=p, rel="syn/" + r["rel"] + f"#{j}", label=1, street=False, synthetic=True))
    return syn


def main():
    import torch

    os.makedirs(OUT, exist_ok=True)
    t0 = time.time()
    rows = R.load_rows()
    n_real = len(rows)
    syn = synth_rows(rows, 2)
    rows = rows + syn
    T.log(f"{len(syn)} synthetic positives in {time.time() - t0:.1f}s")
    imgs, levels, ok = R.augment_all(rows)
    vit = R.ViT(os.path.join(R.X, "weights.npz"), DEV)
    feats = {}
    for j, tag in enumerate(R.TRAIN_TAGS + R.EVAL_TAGS):
        parts = []
        for s in range(0, len(rows), 128):
            a = np.ascontiguousarray(imgs[s:s + 128, j])
            x = R.pixels(a, DEV)
            with torch.no_grad():
                d = T.dino_feats(vit, x)
            parts.append(torch.cat([d[b] for b in T.ORDER], 1))
        feats[f"224/{tag}"] = torch.cat(parts)
    T.log(f"features {time.time() - t0:.1f}s")
    res = []
    blocks = ["cls", "mean", "cn8"]
    is_syn = np.array([r.get("synthetic", False) for r in rows])
    syn_j = np.array([int(r["rel"].rsplit("#", 1)[1]) if r.get("synthetic") else -1 for r in rows])
    for name, keep in (("real only", ~is_syn), ("real + 1 pasted per negative", ~is_syn | (syn_j == 0)),
                       ("real + 2 pasted per negative", np.ones(len(rows), bool))):
        ok2 = ok & keep
        D = R.Data(rows, ok2, feats)
        for l2 in (0.2, 0.5):
            o, secs = R.run_variant(D, {"blocks": blocks, "l2": l2, "views": 3})
            res.append(T.report(D, f"{name} l2 {l2}", o, secs))
    json.dump(res, open(os.path.join(OUT, "results7.json"), "w"), indent=1)
    T.log(f"total {time.time() - t0:.1f}s")
    open(os.path.join(OUT, "log7.txt"), "w").write("\n".join(LOG))


if __name__ == "__main__":
    main()
