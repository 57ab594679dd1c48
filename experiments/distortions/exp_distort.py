#!/usr/bin/env python3
"""Issue 30 (device): what the validator's level-2/3 distortions do to the shipped classifier and
to both hotkeys, and which levers win it back, on the grouped folds (leave one source out, LOSO;
leave one city out, LOCO) of experiments/gpu-heads (its folds, ViT re-implementation, head recipe
and Platt calibration, imported).

Every street-level image is scored under every condition of augment.py by heads that never saw
its source (or city); AUC and MCC at 0.5 are pooled over the held-out images, with 95 % intervals
from a bootstrap over images paired across conditions (the difference to level 0 is paired too).
The hotkeys are emulated from the same heads: `speed` = classifier, then the mirrored image when
the first score is within 0.25-0.75, mean of the two; `accuracy` = exits at 0.4/0.6 after the
classifier and after the mirror, then the 2x2 zoom (tiles of 0.5625 of the side, resized to 224,
best tile) at weight 0.5 (the shipped files; OCR and the optional detector left out: they added
evidence on none of the held-out street images).

Bundle in $X as experiments/gpu-heads/bundle.sh builds it. Writes $OUT/log.txt, $OUT/tables.json.
Usage: python3 exp_distort.py [--boot 1000]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "gpu-heads"))
sys.path.insert(0, HERE)
import augment as A  # noqa: E402
import run_all as R  # noqa: E402

OUT = os.environ.get("OUT", "/tmp/out")
SMOKE = R.SMOKE
DEV = os.environ.get("DEVICE", "cuda")


def log(*a):
    R.log(*a)


# ---------------------------------------------------------------- views
def make_views(rows, specs):
    import multiprocessing as mp

    n = len(rows)
    names = list(specs)
    imgs = {k: np.zeros((n, 224, 224, 3), np.uint8) for k in names}
    metas = {k: [None] * n for k in names}
    ok = np.ones(n, bool)
    jobs = [(i, r["path"], r["rel"], specs) for i, r in enumerate(rows)]
    t0 = time.time()
    ctx = mp.get_context("spawn")
    with ctx.Pool(int(os.environ.get("WORKERS", "16")), initializer=A.init) as pool:
        for c, (i, arrs, ms, err) in enumerate(pool.imap_unordered(A.views_of, jobs, chunksize=2)):
            if arrs is None:
                ok[i] = False
                log("unreadable", rows[i]["rel"], err)
                continue
            for k in names:
                imgs[k][i] = arrs[k]
                metas[k][i] = ms[k]
            if c % 100 == 0:
                log(f"views {c}/{n} {time.time() - t0:.0f}s")
    log(f"{len(names)} views x {n} images in {time.time() - t0:.0f}s")
    return imgs, metas, ok


# ---------------------------------------------------------------- test-time normalisation
CHROMA_TARGET = None


def normalise(x, mode):
    """x uint8-valued float tensor [B,H,W,3] -> same, normalised per image.
    'val': undo a global darkening (gain so the 99th percentile of max(R,G,B) reaches 245,
    1 to 1.5); 'valchroma': then undo a desaturation (chroma gain so the 90th percentile of
    chroma reaches the training set's median at level 0, 1 to 2.5)."""
    import torch

    B = x.shape[0]
    mx = x.max(3).values.reshape(B, -1)
    g = (245.0 / mx.quantile(0.99, dim=1).clamp_min(1.0)).clamp(1.0, 1.5)
    x = (x * g[:, None, None, None]).clamp(0, 255)
    if mode == "val":
        return x
    y, cb, cr = chroma_split(x)
    c = torch.sqrt(cb * cb + cr * cr).reshape(B, -1)
    h = (CHROMA_TARGET / c.quantile(0.9, dim=1).clamp_min(1.0)).clamp(1.0, 2.5)[:, None, None]
    return chroma_join(y, cb * h, cr * h)


def chroma_split(x):
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, 0.564 * (b - y), 0.713 * (r - y)


def chroma_join(y, cb, cr):
    import torch

    r = y + cr / 0.713
    b = y + cb / 0.564
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b], -1).clamp(0, 255)


# ---------------------------------------------------------------- features
def feats_of(vit, x):
    """The shipped 1152-d feature: CLS, mean patch token, layer-normalised CLS after block 8."""
    import torch
    import torch.nn.functional as F

    if os.environ.get("FAKE_VIT") == "1":  # local code-path check only: pooled pixels, no ViT
        g = torch.Generator().manual_seed(0)
        proj = torch.randn(3 * 16 * 16, 1152, generator=g).to(x.device)
        return F.adaptive_avg_pool2d(x, 16).reshape(len(x), -1) @ proj

    hs, fin, _, _ = vit.forward(x)
    z8 = F.layer_norm(hs[7][:, 0], (384,), eps=1e-6)
    return torch.cat([fin[:, 0], fin[:, 1:].mean(1), z8], 1)


TILE = [(0, 126), (98, 224)]  # the router's 2x2 zoom on 224: span 0.5625, step 0.4375


def embed(vit, a, mode):
    """a uint8 [n,224,224,3] -> features [n,1152] (mode plain|flip|val|valchroma) or [4,n,1152] (zoom)."""
    import torch
    import torch.nn.functional as F

    out = []
    bs = 256
    for s in range(0, len(a), bs):
        x = torch.from_numpy(np.ascontiguousarray(a[s:s + bs])).to(DEV).float()
        if mode in ("val", "valchroma"):
            x = normalise(x, mode)
        x = x.permute(0, 3, 1, 2) / 255.0
        mean = torch.tensor([0.485, 0.456, 0.406], device=DEV).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=DEV).view(1, 3, 1, 1)
        with torch.no_grad():
            if mode == "zoom":
                tiles = []
                for (y0, y1) in TILE:
                    for (x0, x1) in TILE:
                        t = F.interpolate(x[:, :, y0:y1, x0:x1], size=(224, 224), mode="bilinear", align_corners=False)
                        tiles.append(feats_of(vit, (t - mean) / std))
                out.append(torch.stack(tiles))
            else:
                if mode == "flip":
                    x = x.flip(3)
                out.append(feats_of(vit, (x - mean) / std))
    return torch.cat(out, -2)


# ---------------------------------------------------------------- heads (the train-head recipe)
def train(D, F, keys, l2=0.2):
    """Every outer fold's head and its inner-LOSO Platt. Returns (predict, final index per fold, (a,b) per fold)."""
    import torch

    sel = torch.tensor(D.idx, device=DEV)
    Xtr = torch.cat([F[k][sel] for k in keys], 0)
    n = len(D.idx)
    img = np.tile(np.arange(n), len(keys))
    y_rows = torch.tensor(D.y[img], device=DEV)
    fits = []
    for k, (_, _, test) in enumerate(D.outer):
        tr = ~test
        fits.append((k, None, tr))
        for s in sorted(set(D.src[tr])):
            inner = tr & (D.src != s)
            if len(set(D.y[inner])) == 2:
                fits.append((k, s, inner))
    Wr = np.zeros((len(fits), n * len(keys)), np.float32)
    for f, (_, _, m) in enumerate(fits):
        rm = m[img]
        Wr[f, rm] = R.class_weights(D.y[img][rm], D.src[img][rm], False)
    predict = R.fit_batched(Xtr, y_rows, torch.tensor(Wr, device=DEV), l2=l2)
    Z = predict(Xtr).cpu().numpy()
    final, ab = {}, {}
    for k, (_, _, test) in enumerate(D.outer):
        tr = (~test)[img]
        w = np.zeros(n * len(keys))
        w[tr] = R.class_weights(D.y[img][tr], D.src[img][tr], False)
        zs, ys, ws = [], [], []
        for f, (kk, s, _) in enumerate(fits):
            if kk != k:
                continue
            if s is None:
                final[k] = f
                continue
            rr = tr & (D.src[img] == s)
            zs.append(Z[f, rr]), ys.append(D.y[img][rr]), ws.append(w[rr])
        ab[k] = R.platt(np.concatenate(zs), np.concatenate(ys), np.concatenate(ws))
    return predict, final, ab


def probs(D, head, X, scheme):
    """Pooled held-out probabilities (image order over D.idx; NaN where not held out in scheme)."""
    import torch

    predict, final, ab = head
    sel = torch.tensor(D.idx, device=DEV)
    Z = predict(X[..., sel, :] if X.dim() == 2 else X[:, sel, :].reshape(-1, X.shape[-1])).cpu().numpy()
    p = np.full(len(D.idx), np.nan)
    reps = 1 if X.dim() == 2 else X.shape[0]
    for k in (D.loso if scheme == "source" else D.loco):
        m = D.outer[k][2]
        a, b = ab[k]
        z = Z[final[k]].reshape(reps, -1)
        pk = 1 / (1 + np.exp(-(a * z + b)))
        p[m] = pk.max(0)[m]  # zoom: the best tile
    return p


def hotkeys(p, pf, pz):
    speed = np.where((p >= 0.25) & (p <= 0.75), (p + pf) / 2, p)
    f2 = (p + pf) / 2
    f3 = (p + pf + 0.5 * pz) / 2.5
    acc = np.where((p < 0.4) | (p > 0.6), p, np.where((f2 < 0.4) | (f2 > 0.6), f2, f3))
    return {"classifier": p, "speed": speed, "accuracy": acc}


# ---------------------------------------------------------------- statistics
def mcc(p, y):
    return R.mcc_of(p, y)[0]


def fast_auc(p, y):
    return float(auc_rows(p[None, :], y[None, :])[0])


def auc_rows(P, Y):
    """AUC of each row of P [B,n] against Y [B,n] (ranks; ties are rare in these scores)."""
    r = np.argsort(np.argsort(P, axis=1, kind="mergesort"), axis=1) + 1
    npos = Y.sum(1)
    nneg = Y.shape[1] - npos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((r * Y).sum(1) - npos * (npos + 1) / 2) / (npos * nneg)


def mcc_rows(P, Y):
    pr = P >= 0.5
    tp = (pr & (Y == 1)).sum(1).astype(float)
    tn = (~pr & (Y == 0)).sum(1).astype(float)
    fp = (pr & (Y == 0)).sum(1).astype(float)
    fn = (~pr & (Y == 1)).sum(1).astype(float)
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (tp * tn - fp * fn) / den, 0.0)


class Boot:
    """Paired bootstrap over held-out images (the same resamples for every condition)."""

    def __init__(self, n, B, seed=30):
        self.ix = np.random.default_rng(seed).integers(0, n, (B, n))

    def stats(self, p, y, ref=None):
        Y = y[self.ix]
        a, m = auc_rows(p[self.ix], Y), mcc_rows(p[self.ix], Y)
        q = lambda v: [round(float(np.nanpercentile(v, 2.5)), 3), round(float(np.nanpercentile(v, 97.5)), 3)]  # noqa: E731
        auc_, mcc_ = fast_auc(p, y), mcc(p, y)
        r = {"auc": round(auc_, 3), "auc_ci": q(a), "mcc": round(mcc_, 3), "mcc_ci": q(m),
             "acc": round(float(((p >= 0.5) == y).mean()), 3), "pos_rate": round(float((p >= 0.5).mean()), 3),
             "mean_pos": round(float(p[y == 1].mean()), 3), "mean_neg": round(float(p[y == 0].mean()), 3)}
        if ref is not None:
            r["d_auc"] = round(auc_ - fast_auc(ref, y), 3)
            r["d_auc_ci"] = q(a - auc_rows(ref[self.ix], Y))
            r["d_mcc"] = round(mcc_ - mcc(ref, y), 3)
            r["d_mcc_ci"] = q(m - mcc_rows(ref[self.ix], Y))
        return r


def reliability(p, y, bins=10):
    e = np.linspace(0, 1, bins + 1)
    rows, ece = [], 0.0
    for j in range(bins):
        m = (p >= e[j]) & ((p < e[j + 1]) if j < bins - 1 else (p <= 1))
        if m.sum() == 0:
            continue
        conf, frac = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / len(p) * abs(conf - frac)
        rows.append([round(e[j], 1), int(m.sum()), round(conf, 3), round(frac, 3)])
    return {"bins": rows, "ece": round(float(ece), 3)}


def logit(p):
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def crossfit_platt(D, s_fit, s_apply, scheme):
    """Per outer fold: Platt on the other folds' held-out scores (one draw), applied to this
    fold's scores of another draw. Returns the calibrated scores (image order)."""
    keys = D.loso if scheme == "source" else D.loco
    out = np.full(len(s_apply), np.nan)
    y = D.y
    for k in keys:
        m = D.outer[k][2]
        others = D.street & ~m & ~np.isnan(s_fit)
        w = R.class_weights(y[others], D.src[others], False)
        a, b = R.platt(logit(s_fit[others]), y[others], w)
        out[m] = 1 / (1 + np.exp(-(a * logit(s_apply[m]) + b)))
    return out


# ---------------------------------------------------------------- main
def main():
    global CHROMA_TARGET
    ap = argparse.ArgumentParser()
    ap.add_argument("--boot", type=int, default=1000)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    R.LOGF = open(os.path.join(OUT, "log.txt"), "a")
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    rows = R.load_rows()
    if os.environ.get("LIMIT"):  # a local code-path check on a few images
        rows = rows[:: max(1, len(rows) // int(os.environ["LIMIT"]))]
    conds, fact, trv = A.conditions(), A.factorial(), A.train_views()
    specs = {**trv, **conds, **fact}
    imgs, metas, ok = make_views(rows, specs)
    vit = R.ViT(os.path.join(R.X, "weights.npz"), DEV)
    R.verify(vit, DEV)
    # the chroma target: the median 90th-percentile chroma of the level-0 views
    x0 = torch.from_numpy(imgs["L0"][ok]).float().to(DEV)
    _, cb, cr = chroma_split(x0)
    CHROMA_TARGET = float(torch.sqrt(cb * cb + cr * cr).reshape(len(x0), -1).quantile(0.9, dim=1).median())
    log(f"chroma target {CHROMA_TARGET:.1f}")
    del x0
    t0 = time.time()
    F = {}
    for k in trv:
        F[k] = embed(vit, imgs[k], "plain")
        if k.startswith("t") or k.startswith("w"):
            for nm in ("val", "valchroma"):
                F[f"{k}/{nm}"] = embed(vit, imgs[k], nm)
    for k in conds:
        F[k] = embed(vit, imgs[k], "plain")
        for nm in ("val", "valchroma"):
            F[f"{k}/{nm}"] = embed(vit, imgs[k], nm)
        F[f"{k}/flip"] = embed(vit, imgs[k], "flip")
        F[f"{k}/zoom"] = embed(vit, imgs[k], "zoom")
    for k in fact:
        F[k] = embed(vit, imgs[k], "plain")
    grey = np.full((1, 224, 224, 3), 128, np.uint8)
    F["grey"] = embed(vit, grey, "plain")
    if DEV == "cuda":
        torch.cuda.synchronize()
    log(f"embedded in {time.time() - t0:.0f}s")
    D = R.Data(rows, ok, {})
    y = D.y
    keep = D.street
    variants = {
        "shipped (t0-2)": (["t0", "t1", "t2"], ""),
        "uniform x6 (t0-5)": ([f"t{k}" for k in range(6)], ""),
        "weighted x6 (w0-5)": ([f"w{k}" for k in range(6)], ""),
        "t0-2 + w0-2": (["t0", "t1", "t2", "w0", "w1", "w2"], ""),
        "t0-2 + hard h0-2": (["t0", "t1", "t2", "h0", "h1", "h2"], ""),
        "shipped + value norm": (["t0", "t1", "t2"], "val"),
        "shipped + value+chroma norm": (["t0", "t1", "t2"], "valchroma"),
        "weighted x6 + value+chroma norm": ([f"w{k}" for k in range(6)], "valchroma"),
    }
    if SMOKE:
        variants = dict(list(variants.items())[:2])
    tables = {"conditions": list(conds), "factorial": list(fact), "variants": {}, "n_street": int(keep.sum()),
              "n_pos": int(y[keep].sum()), "chroma_target": CHROMA_TARGET}
    for scheme in ("source", "city"):
        boot = Boot(int(keep.sum()), a.boot if scheme == "source" else max(200, a.boot // 5))
        yk = y[keep]
        for vname, (keys, nm) in variants.items():
            t1 = time.time()
            sfx = f"/{nm}" if nm else ""
            head = train(D, F, [k + sfx for k in keys])
            res = {}
            P = {}
            for c in conds:
                p = probs(D, head, F[c + sfx], scheme)
                pf = probs(D, head, F[c + "/flip"], scheme) if not nm else p
                pz = probs(D, head, F[c + "/zoom"], scheme) if not nm else p
                P[c] = hotkeys(p, pf, pz)
            for who in ("classifier", "speed", "accuracy"):
                if nm and who != "classifier":
                    continue
                ref = P["L0"][who][keep]
                res[who] = {c: boot.stats(P[c][who][keep], yk, None if c == "L0" else ref) for c in conds}
            if vname.startswith("shipped (") and not nm:
                # the factorial, classifier alone
                fac = {}
                for c in fact:
                    p = probs(D, head, F[c], scheme)[keep]
                    fac[c] = {"auc": round(fast_auc(p, yk), 4), "mcc": round(mcc(p, yk), 4),
                              "mean_pos": round(float(p[yk == 1].mean()), 3), "mean_neg": round(float(p[yk == 0].mean()), 3)}
                res["factorial"] = fac
                # crop share of the level-1 geometry against correctness (classifier)
                res["by_share"] = by_share(P, metas, D, keep, yk)
                res["by_drawn"] = by_drawn(P, metas, D, keep, yk)
            # calibration of each fused score: Platt fitted on draw e0 of the other folds, applied to e1 and e2
            cal = {}
            for who in ("classifier", "speed", "accuracy"):
                if nm and who != "classifier":
                    continue
                before = np.concatenate([P["e1"][who][keep], P["e2"][who][keep]])
                after = np.concatenate([crossfit_platt(D, P["e0"][who], P[e][who], scheme)[keep] for e in ("e1", "e2")])
                yy = np.concatenate([yk, yk])
                cal[who] = {"before": {"mcc": round(mcc(before, yy), 3), "auc": round(fast_auc(before, yy), 3),
                                       "pos_rate": round(float((before >= 0.5).mean()), 3), **reliability(before, yy)},
                            "after": {"mcc": round(mcc(after, yy), 3), "auc": round(fast_auc(after, yy), 3),
                                      "pos_rate": round(float((after >= 0.5).mean()), 3), **reliability(after, yy)}}
            res["calibration"] = cal
            # a flat grey image through each fold's head (mean over folds)
            g = probs_all_folds(head, F["grey" if not nm else "grey"])
            res["grey"] = round(float(np.mean(g)), 3)
            tables["variants"].setdefault(vname, {})[scheme] = res
            c = res["classifier"]
            log(f"[{scheme}] {vname:32s} AUC L0 {c['L0']['auc']:.3f} L1 {c['L1']['auc']:.3f} "
                f"L2 {np.mean([c['L2a']['auc'], c['L2b']['auc']]):.3f} L3 {np.mean([c['L3a']['auc'], c['L3b']['auc']]):.3f} "
                f"mix {np.mean([c[e]['auc'] for e in ('e0', 'e1', 'e2')]):.3f} | MCC mix "
                f"{np.mean([c[e]['mcc'] for e in ('e0', 'e1', 'e2')]):.3f} grey {res['grey']} {time.time() - t1:.0f}s")
            json.dump(tables, open(os.path.join(OUT, "tables.json"), "w"))
    log("done")


def probs_all_folds(head, X):
    predict, final, ab = head
    Z = predict(X).cpu().numpy()
    return [1 / (1 + np.exp(-(ab[k][0] * Z[f][0] + ab[k][1]))) for k, f in final.items()]


def by_share(P, metas, D, keep, yk):
    """Classifier correctness on the level-1 view by the crop's share of the frame."""
    p = P["L1"]["classifier"][keep]
    share = np.array([(metas["L1"][i] or {}).get("share", np.nan) for i in D.idx])[keep]
    out = {}
    for lo, hi in ((0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.7), (0.7, 1.01)):
        m = (share >= lo) & (share < hi)
        if m.sum() < 10:
            continue
        out[f"{lo}-{min(hi, 1.0)}"] = {"n": int(m.sum()), "auc": round(fast_auc(p[m], yk[m]), 3),
                                       "mcc": round(mcc(p[m], yk[m]), 3), "acc": round(float(((p[m] >= 0.5) == yk[m]).mean()), 3)}
    return out


def by_drawn(P, metas, D, keep, yk):
    """Level-3 views (both draws): AUC with and without each distortion as the validator drew it."""
    ps, ds = [], []
    for c in ("L3a", "L3b"):
        ps.append(P[c]["classifier"][keep])
        ds.append([(metas[c][i] or {}).get("drawn", {}) for i in np.asarray(D.idx)[keep]])
    p = np.concatenate(ps)
    yy = np.concatenate([yk, yk])
    drawn = ds[0] + ds[1]
    out = {}
    for d in A.DISTORTIONS:
        lv = np.array([x.get(d, 0) for x in drawn])
        out[d] = {str(v): {"n": int((lv == v).sum()), "auc": round(fast_auc(p[lv == v], yy[lv == v]), 3)}
                  for v in (0, 1, 2) if (lv == v).sum() >= 20}
    nd = np.array([sum(1 for v in x.values() if v > 0) for x in drawn])
    out["count"] = {str(v): {"n": int((nd == v).sum()), "auc": round(fast_auc(p[nd == v], yy[nd == v]), 3)}
                    for v in range(6) if (nd == v).sum() >= 20}
    return out


if __name__ == "__main__":
    main()
