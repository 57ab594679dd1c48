#!/usr/bin/env python3
"""Issue 30, round 2 (device): the levers left after exp_distort.py — test-time denoising (the
factorial put colour noise, with darkening and desaturation, as the largest colour effect and
blur as its partial cure), test-time augmentation, and the shape of each hotkey (the `accuracy`
zoom's weight and reduction, exit bands) — each with its fused score calibrated by cross-fitting
(Platt on the other folds' held-out scores of one draw, applied to another draw).

Same bundle, folds, head recipe and statistics as exp_distort.py (imported).
Usage: python3 exp_levers.py [--boot 1000]
"""
import argparse
import json
import os
import time

import numpy as np

import exp_distort as E

R, A = E.R, E.A


def noise_sigma(x):
    """Immerkaer's estimate of the noise standard deviation of each image's luma (x [B,H,W,3] 0-255)."""
    import torch
    import torch.nn.functional as F

    y = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[:, None]
    k = torch.tensor([[1.0, -2, 1], [-2, 4, -2], [1, -2, 1]], device=x.device)[None, None]
    r = F.conv2d(y, k).abs()
    h, w = r.shape[2:]
    return (r.sum((1, 2, 3)) * np.sqrt(np.pi / 2) / (6 * h * w))


def gblur(x, sigma):
    import torch
    import torch.nn.functional as F

    rad = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-rad, rad + 1, device=x.device, dtype=torch.float32)
    g = torch.exp(-(t ** 2) / (2 * sigma * sigma))
    g = g / g.sum()
    c = x.permute(0, 3, 1, 2)
    c = F.conv2d(F.pad(c, (rad, rad, 0, 0), mode="reflect"), g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    c = F.conv2d(F.pad(c, (0, 0, rad, rad), mode="reflect"), g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return c.permute(0, 2, 3, 1)


def denoise(x, lo=5.0, span=6.0):
    """A Gaussian blur whose sigma grows with the estimated noise: none below `lo`, up to 1.5."""
    import torch

    s = ((noise_sigma(x) - lo) / span).clamp(0, 1.5)
    out = x.clone()
    for lo_, hi_, sig in ((0.05, 0.5, 0.5), (0.5, 0.9, 0.8), (0.9, 1.2, 1.1), (1.2, 9, 1.4)):
        m = (s >= lo_) & (s < hi_)
        if m.any():
            out[m] = gblur(x[m], sig)
    return out, s


def embed(vit, a, mode):
    import torch

    if mode not in ("dn", "dnflip"):
        return E.embed(vit, a, mode)
    out = []
    for s in range(0, len(a), 256):
        x = torch.from_numpy(np.ascontiguousarray(a[s:s + 256])).to(E.DEV).float()
        x, _ = denoise(x)
        if mode == "dnflip":
            x = x.flip(2)
        out.append(E.embed(vit, x.round().clamp(0, 255).to(torch.uint8).cpu().numpy(), "plain"))
    return torch.cat(out, 0)


def shapes(p, pf, pz, pzm):
    """Hotkey shapes: the shipped two, and the alternatives measured."""
    out = E.hotkeys(p, pf, pz)
    f2 = (p + pf) / 2
    out["tta flip (always)"] = f2
    out["tta flip + tiles mean"] = (p + pf + 4 * pzm) / 6
    for w in (0.25, 0.5):
        for red, z in (("max", pz), ("mean", pzm)):
            f3 = (p + pf + w * z) / (2 + w)
            out[f"accuracy zoom {red} w{w}"] = np.where((p < 0.4) | (p > 0.6), p, np.where((f2 < 0.4) | (f2 > 0.6), f2, f3))
    out["accuracy no zoom"] = np.where((p < 0.4) | (p > 0.6), p, f2)
    out["speed exits 0.4/0.6"] = np.where((p >= 0.4) & (p <= 0.6), f2, p)
    out["speed exits 0.1/0.9"] = np.where((p >= 0.1) & (p <= 0.9), f2, p)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boot", type=int, default=1000)
    a = ap.parse_args()
    os.makedirs(E.OUT, exist_ok=True)
    R.LOGF = open(os.path.join(E.OUT, "log.txt"), "a")
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    rows = R.load_rows()
    if os.environ.get("LIMIT"):
        rows = rows[:: max(1, len(rows) // int(os.environ["LIMIT"]))]
    conds = A.conditions()
    trv = {k: v for k, v in A.train_views().items() if k in ("t0", "t1", "t2")}
    imgs, metas, ok = E.make_views(rows, {**trv, **conds})
    vit = R.ViT(os.path.join(R.X, "weights.npz"), E.DEV)
    t0 = time.time()
    F = {}
    for k in trv:
        F[k] = embed(vit, imgs[k], "plain")
        F[k + "/dn"] = embed(vit, imgs[k], "dn")
    sig = {}
    for k in conds:
        for m in ("plain", "flip", "zoom", "dn", "dnflip"):
            F[f"{k}/{m}"] = embed(vit, imgs[k], m)
        x = torch.from_numpy(imgs[k][ok]).float().to(E.DEV)
        sig[k] = float(noise_sigma(x).median())
    E.log("median noise estimate per condition:", json.dumps({k: round(v, 2) for k, v in sig.items()}))
    E.log(f"embedded in {time.time() - t0:.0f}s")
    D = R.Data(rows, ok, {})
    keep, y = D.street, D.y
    yk = y[keep]
    out = {"noise": sig, "schemes": {}}
    for scheme in ("source", "city"):
        boot = E.Boot(int(keep.sum()), a.boot if scheme == "source" else max(200, a.boot // 5))
        res = {}
        heads = {"shipped": E.train(D, F, ["t0", "t1", "t2"]), "denoised": E.train(D, F, ["t0/dn", "t1/dn", "t2/dn"])}
        P = {}
        for c in conds:
            pr = lambda h, key: E.probs(D, heads[h], F[key], scheme)  # noqa: E731
            p, pf = pr("shipped", f"{c}/plain"), pr("shipped", f"{c}/flip")
            pz = pr("shipped", f"{c}/zoom")
            # the tiles' mean (probs takes the max over tiles): per tile, then averaged
            Xz = F[f"{c}/zoom"]
            pzm = np.mean([E.probs(D, heads["shipped"], Xz[j], scheme) for j in range(Xz.shape[0])], 0)
            P[c] = shapes(p, pf, pz, pzm)
            P[c]["classifier, denoised at test"] = pr("shipped", f"{c}/dn")
            P[c]["classifier, denoised head"] = pr("denoised", f"{c}/dn")
            pdf = pr("denoised", f"{c}/dnflip")
            pd = P[c]["classifier, denoised head"]
            P[c]["speed, denoised head"] = np.where((pd >= 0.25) & (pd <= 0.75), (pd + pdf) / 2, pd)
        for who in P["L0"]:
            ref = P["L0"][who][keep]
            r = {c: boot.stats(P[c][who][keep], yk, None if c == "L0" else ref) for c in conds}
            before = np.concatenate([P["e1"][who][keep], P["e2"][who][keep]])
            after = np.concatenate([E.crossfit_platt(D, P["e0"][who], P[e][who], scheme)[keep] for e in ("e1", "e2")])
            yy = np.concatenate([yk, yk])
            r["calibration"] = {"before": {"mcc": round(E.mcc(before, yy), 3), "auc": round(E.fast_auc(before, yy), 3),
                                           "pos_rate": round(float((before >= 0.5).mean()), 3), **E.reliability(before, yy)},
                                "after": {"mcc": round(E.mcc(after, yy), 3), "auc": round(E.fast_auc(after, yy), 3),
                                          "pos_rate": round(float((after >= 0.5).mean()), 3), **E.reliability(after, yy)}}
            res[who] = r
            mix = np.mean([r[e]["auc"] for e in ("e0", "e1", "e2")])
            mixm = np.mean([r[e]["mcc"] for e in ("e0", "e1", "e2")])
            E.log(f"[{scheme}] {who:34s} AUC L0 {r['L0']['auc']:.3f} L1 {r['L1']['auc']:.3f} "
                  f"L2 {np.mean([r['L2a']['auc'], r['L2b']['auc']]):.3f} L3 {np.mean([r['L3a']['auc'], r['L3b']['auc']]):.3f} "
                  f"mix {mix:.3f} MCC mix {mixm:.3f} | calibrated e1+e2 MCC {r['calibration']['before']['mcc']:.3f} -> "
                  f"{r['calibration']['after']['mcc']:.3f}")
        out["schemes"][scheme] = res
        json.dump(out, open(os.path.join(E.OUT, "levers.json"), "w"))
    E.log("done")


if __name__ == "__main__":
    main()
