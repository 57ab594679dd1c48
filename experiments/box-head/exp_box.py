"""Issue 26 part 6: a box-supervised patch head on DINOv2 tokens as an extra score, measured
leave-one-source-out beside the frozen head. Runs on the GPU machine with finetune's bundle plus
the TraCon images and boxes (README.md here); X=/tmp/ft OUT=$OUT python3 exp_box.py.

- Patch labels: each TraCon image goes through the backbone's processor (short side to 224,
  centre 224); a 14-px patch of the 16x16 grid is a cone patch when its centre lies in a cone box
  mapped through the same resize and crop; images without cones give negative patches only.
- Patch head: a logistic unit on standardised patch tokens (final tokens, or the block-8
  tokens), class-balanced, L2, full-batch Adam; negatives also from every patch of the training
  fold's street images without roadwork (a random view each).
- Image score: the largest patch logit (`max`) or the mean of the top 3 (`top3`).
- Per fold (a street source held out; TraCon always trains): the frozen head (finetune.py's
  linear probe on the 1152-d feature), the box score alone, and both stacked by a logistic fit
  on the training fold's images (view 0); the held-out images are scored on view 0 (levels 0-3).
  AUC and MCC at 0.5, pooled over folds, paired bootstrap of images for the differences.
"""

import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "train"))

import finetune as ft  # noqa: E402
from backbones import Embedder, load  # noqa: E402

X = os.environ.get("X", "/tmp/ft")
OUT = os.environ.get("OUT", "/tmp/out")
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GRID, PATCH, SIDE = 16, 14, 224


def log(*a):
    print("[box]", *a, flush=True)


def tracon(processor):
    """(pixel tensors [N,3,224,224], patch labels [N,256]) for every TraCon image with a label file."""
    from PIL import Image

    xs, ys = [], []
    for split in ("train", "val"):
        d = os.path.join(X, "tracon", split)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(os.path.join(d, "images"))):
            lab = os.path.join(d, "labels", os.path.splitext(name)[0] + ".txt")
            if not os.path.exists(lab):
                continue
            with Image.open(os.path.join(d, "images", name)) as im:
                im = im.convert("RGB")
                w, h = im.size
                xs.append(processor(images=[im], return_tensors="pt")["pixel_values"][0])
            # the processor's geometry: short side to 224 (long side truncated), centre crop
            s = SIDE / min(w, h)
            nw, nh = (SIDE, int(SIDE * h / w)) if w <= h else (int(SIDE * w / h), SIDE)
            x0, y0 = (nw - SIDE) // 2, (nh - SIDE) // 2
            y = np.zeros(GRID * GRID, np.float32)
            with open(lab) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) != 5:
                        continue
                    cx, cy, bw, bh = (float(v) for v in parts[1:])
                    bx0, bx1 = (cx - bw / 2) * w * s - x0, (cx + bw / 2) * w * s - x0
                    by0, by1 = (cy - bh / 2) * h * s - y0, (cy + bh / 2) * h * s - y0
                    for gy in range(GRID):
                        for gx in range(GRID):
                            px, py = (gx + 0.5) * PATCH, (gy + 0.5) * PATCH
                            if bx0 <= px <= bx1 and by0 <= py <= by1:
                                y[gy * GRID + gx] = 1
            ys.append(y)
    return torch.stack(xs), torch.from_numpy(np.stack(ys))


@torch.no_grad()
def tokens(model, x, batch=64):
    """Final and block-8 patch tokens, [N, 256, 384] each (fp16 on the device)."""
    fin, mid = [], []
    for i in range(0, len(x), batch):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=DEV.type == "cuda"):
            o = model(pixel_values=x[i:i + batch].to(DEV), output_hidden_states=True)
        fin.append(o.last_hidden_state[:, 1:].half())
        h = o.hidden_states[8][:, 1:].float()
        h = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-6)
        mid.append(h.half())
    return torch.cat(fin), torch.cat(mid)


def fit_patch(P, y, l2=0.01, steps=300):
    """Logistic unit on standardised tokens; returns a scorer of [N, 256, D] -> [N, 256] logits."""
    P = P.float()
    mu, sd = P.mean(0), P.std(0).clamp_min(1e-6)
    Z = (P - mu) / sd
    w = torch.zeros(P.shape[1], device=DEV, requires_grad=True)
    b = torch.zeros(1, device=DEV, requires_grad=True)
    pos = y.sum()
    wt = torch.where(y == 1, len(y) / (2 * pos), len(y) / (2 * (len(y) - pos)))
    opt = torch.optim.Adam([w, b], lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        z = Z @ w + b
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none") * wt).mean() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        opt.step()
    w, b = w.detach(), b.detach()
    return lambda T: (((T.float() - mu) / sd) @ w + b)


def image_scores(scorer, T):
    z = scorer(T)
    return {"max": z.max(1).values, "top3": z.topk(3, dim=1).values.mean(1)}


def stack(train_feats, y, test_feats):
    """Logistic fit of [head logit, box score] on the training fold; probabilities for the test."""
    A = torch.tensor(train_feats, dtype=torch.float32)
    mu, sd = A.mean(0), A.std(0).clamp_min(1e-6)
    A = (A - mu) / sd
    Y = torch.tensor(y, dtype=torch.float32)
    w = torch.zeros(A.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    pos = Y.sum()
    wt = torch.where(Y == 1, len(Y) / (2 * pos), len(Y) / (2 * (len(Y) - pos)))
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(500):
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(A @ w + b, Y, reduction="none") * wt).mean()
        loss.backward()
        opt.step()
    B = (torch.tensor(test_feats, dtype=torch.float32) - mu) / sd
    return torch.sigmoid(B @ w.detach() + b.detach()).numpy(), w.detach().tolist()


def main():
    from transformers import AutoImageProcessor

    t0 = time.time()
    model, config, arch = load(os.path.join(X, "dinov2_vits14_hf"))
    model = model.to(DEV).eval()
    processor = AutoImageProcessor.from_pretrained(os.path.join(X, "dinov2_vits14_hf"))
    emb = Embedder(model, config, arch, ["cls", "mean", "mid:8"]).eval()
    tx, ty = tracon(processor)
    if os.environ.get("LIMIT"):
        tx, ty = tx[: int(os.environ["LIMIT"])], ty[: int(os.environ["LIMIT"])]
    log(f"TraCon: {len(tx)} images, {int(ty.sum())} cone patches of {ty.numel()}")
    tfin, tmid = tokens(model, tx)
    items = ft.items_of(os.path.join(X, "views", "manifest.csv"))
    if os.environ.get("LIMIT"):  # a code-path check on a few images per group (CPU)
        n, seen = int(os.environ["LIMIT"]), {}
        items = [it for it in items if seen.setdefault(it["group"], []).append(1) or len(seen[it["group"]]) <= n]
    street = [it for it in items if it["group"] != "tracon"]

    class A:  # what finetune's loader needs
        batch, workers = 64, 12

    def pix(its, view):
        ds = [{**it, "views": [it["views"][min(view, len(it["views"]) - 1)]]} for it in its]
        xs = [x for x, _, _ in ft.loader(ds, processor, False, A)]
        return torch.cat(xs)

    # every street image's view 0 (scored) and view 1 (negatives for the patch head)
    sx0, sx1 = pix(street, 0), pix(street, 1)
    with torch.no_grad():
        f0 = torch.cat([emb(sx0[i:i + 64].to(DEV)).float().cpu() for i in range(0, len(sx0), 64)])
    s0fin, s0mid = tokens(model, sx0)
    s1fin, s1mid = tokens(model, sx1)
    # the frozen head's training features: all views of all images (as finetune.py)
    allv = [{**it, "views": [v]} for it in items for v in it["views"]]
    ax = [x for x, _, _ in ft.loader(allv, processor, False, A)]
    with torch.no_grad():
        fall = torch.cat([emb(x.to(DEV)).float().cpu() for x in ax])
    vlab = torch.tensor([float(it["label"]) for it in items for _ in it["views"]])
    vgroup = [it["group"] for it in items for _ in it["views"]]
    log(f"features ready in {time.time() - t0:.0f} s")

    y = np.array([it["label"] for it in street])
    g = np.array([it["group"] for it in street])
    lv = np.array([it["views"][0][1] for it in street])
    res = {k: np.zeros(len(street)) for k in ("head", "stack_head", "box_fin_max", "box_fin_top3", "box_mid_max", "box_mid_top3",
                                               "stack_fin_max", "stack_mid_max", "stack_fin_top3", "stack_mid_top3")}
    weights = {}
    for grp in sorted(set(g)):
        te = np.where(g == grp)[0]
        tr = np.where(g != grp)[0]
        # frozen head on every view of the training side (tracon included)
        keep = torch.tensor([gg != grp for gg in vgroup])
        clf = ft.Classifier(torch.nn.Identity(), fall.shape[1])
        ft.linear_probe(clf, fall[keep], vlab[keep])
        with torch.no_grad():
            hz = clf(f0).numpy()
        res["head"][te] = 1 / (1 + np.exp(-hz[te]))
        # the control: the same logistic re-fit on the head's logit alone (a recalibration)
        res["stack_head"][te], _ = stack(hz[tr][:, None], y[tr], hz[te][:, None])
        for name, (tt, s0, s1) in {"fin": (tfin, s0fin, s1fin), "mid": (tmid, s0mid, s1mid)}.items():
            neg = s1[torch.tensor(tr[y[tr] == 0])].reshape(-1, s1.shape[-1])
            P = torch.cat([tt.reshape(-1, tt.shape[-1]), neg])
            L = torch.cat([ty.reshape(-1), torch.zeros(len(neg))]).to(DEV)
            scorer = fit_patch(P.to(DEV), L)
            with torch.no_grad():
                sc = {k: v.float().cpu().numpy() for k, v in image_scores(scorer, s0).items()}
            for agg in ("max", "top3"):
                res[f"box_{name}_{agg}"][te] = sc[agg][te]
                p, w = stack(np.stack([hz[tr], sc[agg][tr]], 1), y[tr], np.stack([hz[te], sc[agg][te]], 1))
                res[f"stack_{name}_{agg}"][te] = p
                weights.setdefault(f"{name}_{agg}", []).append(w)
        log(grp, {k: round(ft.auc(v[te], y[te]), 3) if 0 < y[te].sum() < len(te) else None for k, v in res.items()})

    rng = np.random.default_rng(26)
    idx = [rng.integers(0, len(y), len(y)) for _ in range(1000)]
    out = {"n": int(len(y)), "roadwork": int(y.sum()), "settings": {}}
    for k, v in res.items():
        is_prob = not k.startswith("box")
        d = {"auc": ft.auc(v, y)}
        if is_prob:
            d["mcc"] = ft.mcc(v, y)
            d["mcc_levels"] = {str(level): ft.mcc(v[lv == level], y[lv == level]) for level in sorted(set(lv))}
        if k != "head":
            da = [ft.auc(v[i], y[i]) - ft.auc(res["head"][i], y[i]) for i in idx]
            d["auc_minus_head"] = [float(np.percentile(da, 2.5)), float(np.percentile(da, 97.5))]
            if is_prob:
                dm = [ft.mcc(v[i], y[i]) - ft.mcc(res["head"][i], y[i]) for i in idx]
                d["mcc_minus_head"] = [float(np.percentile(dm, 2.5)), float(np.percentile(dm, 97.5))]
        out["settings"][k] = d
        log(k, json.dumps(d))
    out["stack_weights"] = {k: np.mean(v, 0).tolist() for k, v in weights.items()}
    out["seconds"] = round(time.time() - t0, 1)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "box.json"), "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
