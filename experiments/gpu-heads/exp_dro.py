"""Round 8 (device): heads that must fit every (source, label) group: GroupDRO, V-REx and
group-balanced ERM against the shipped recipe, on the 1152-d DINOv2 features. No Platt (cut 0.5,
class-balanced), so compare AUC and best-cut MCC; 'base' is the same fit without groups."""
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exp_mil as M  # noqa: E402
import exp_tess as T  # noqa: E402
import run_all as R  # noqa: E402

DEV = "cuda"
OUT = T.OUT
T.ORDER = ["cls", "mean", "cn8"]


def fit_group(X, y, w, groups, mode, l2=0.2, epochs=300, lr=0.01, eta=0.1, beta=1.0):
    import torch
    import torch.nn.functional as F

    mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)
    Xs = (X - mu) / sd
    W = torch.zeros(X.shape[1], device=DEV, requires_grad=True)
    b = torch.zeros(1, device=DEV, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    G = int(groups.max()) + 1
    onehot = F.one_hot(groups, G).float()  # [R, G]
    gw = onehot * w[:, None]
    gsum = gw.sum(0).clamp_min(1e-9)
    q = torch.ones(G, device=DEV) / G
    for _ in range(epochs):
        opt.zero_grad()
        z = Xs @ W + b
        l = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        Lg = (gw * l[:, None]).sum(0) / gsum  # per-group weighted mean loss
        if mode == "dro":
            with torch.no_grad():
                q = q * torch.exp(eta * Lg)
                q = q / q.sum()
            loss = (q * Lg).sum()
        elif mode == "vrex":
            loss = Lg.mean() + beta * Lg.var()
        elif mode == "gbal":
            loss = Lg.mean()
        else:
            loss = (w * l).sum() / w.sum()
        loss = loss + 0.5 * l2 * (W * W).sum()
        loss.backward()
        opt.step()
    W, b = W.detach(), b.detach()
    return lambda Q: ((Q - mu) / sd) @ W + b


def main():
    import torch

    t0 = time.time()
    os.makedirs(OUT, exist_ok=True)
    rows = R.load_rows()
    imgs, levels, ok = R.augment_all(rows)
    vit = R.ViT(os.path.join(R.X, "weights.npz"), DEV)
    D = R.Data(rows, ok, None)
    feats = {}
    for j, tag in enumerate(R.TRAIN_TAGS + R.EVAL_TAGS):
        parts = []
        for s in range(0, len(D.idx), 128):
            a = np.ascontiguousarray(imgs[D.idx[s:s + 128], j])
            x = R.pixels(a, DEV)
            with torch.no_grad():
                d = T.dino_feats(vit, x)
            parts.append(torch.cat([d[b] for b in T.ORDER], 1))
        feats[tag] = torch.cat(parts)
    T.log(f"features {time.time() - t0:.1f}s")
    tv = R.TRAIN_TAGS
    n = len(D.idx)
    X = torch.cat([feats[t] for t in tv])
    yv = torch.tensor(np.tile(D.y, len(tv)), device=DEV, dtype=torch.float32)
    src_rows = np.tile(D.src, len(tv))
    keys = sorted(set(zip(D.src, D.y)))
    gid = {k: i for i, k in enumerate(keys)}
    grp_rows = torch.tensor([gid[(s, l)] for s, l in zip(src_rows, np.tile(D.y, len(tv)))], device=DEV)
    variants = {
        "erm (recipe, no Platt)": dict(mode="erm"),
        "group-balanced": dict(mode="gbal"),
        "groupdro eta 0.1": dict(mode="dro", eta=0.1),
        "groupdro eta 1": dict(mode="dro", eta=1.0),
        "vrex beta 1": dict(mode="vrex", beta=1.0),
        "vrex beta 10": dict(mode="vrex", beta=10.0),
        "erm l2 1": dict(mode="erm", l2=1.0),
        "groupdro eta 0.1 l2 1": dict(mode="dro", eta=0.1, l2=1.0),
        "erm tracon weight 0.3": dict(mode="erm", tracon_w=0.3),
        "erm without tracon": dict(mode="erm", tracon_w=0.0),
        "groupdro eta 1 tracon 0.3": dict(mode="dro", eta=1.0, tracon_w=0.3),
    }
    res = []
    only = [v for v in os.environ.get("ONLY", "").split(",") if v]
    for name, kw in variants.items():
        if only and name not in only:
            continue
        for scheme in ("source", "city"):
            ks = D.loso if scheme == "source" else D.loco
            probs = {e: np.full(n, np.nan) for e in R.EVAL_TAGS}
            for k in ks:
                test = D.outer[k][2]
                tr = np.tile(~test, len(tv))
                w = torch.tensor(R.class_weights(np.tile(D.y, len(tv))[tr], src_rows[tr], False), device=DEV,
                                 dtype=torch.float32)
                kw2 = dict(kw)
                tw = kw2.pop("tracon_w", None)
                if tw is not None:
                    w = w * torch.tensor(np.where(src_rows[tr] == "tracon", tw, 1.0), device=DEV, dtype=torch.float32)
                keep = (w > 0).cpu().numpy()
                ti = torch.tensor(np.where(tr)[0][keep], device=DEV)
                w = w[torch.tensor(keep, device=DEV)]
                if tw is not None:  # classes even again after re-weighting or dropping rows
                    yk = yv[ti]
                    for c in (0.0, 1.0):
                        m = yk == c
                        w[m] = w[m] * (len(w) / 2) / w[m].sum()
                g = grp_rows[ti]
                _, g = torch.unique(g, return_inverse=True)
                f = fit_group(X[ti], yv[ti], w, g, **kw2)
                te = torch.tensor(np.where(test)[0], device=DEV)
                for e in R.EVAL_TAGS:
                    with torch.no_grad():
                        probs[e][test] = torch.sigmoid(f(feats[e][te])).cpu().numpy()
            for e in R.EVAL_TAGS:
                m = M.metrics(D, probs[e], None)
                m.update({"variant": name, "scheme": scheme, "eval": e})
                res.append(m)
                T.log(f"{name:<24} {scheme:<6} {e} MCC {m['mcc']:.3f} AUC {m['auc']:.3f} best-cut {m['mcc_best_cut']:.3f} "
                      f"| no-night AUC {m['auc_no_night']:.3f} | within {m['within_auc']} | {m['per_source_acc']}")
    json.dump(res, open(os.path.join(OUT, "results8.json"), "w"), indent=1)
    T.log(f"total {time.time() - t0:.1f}s")
    open(os.path.join(OUT, "log8.txt"), "w").write("\n".join(T.LOG))


if __name__ == "__main__":
    main()
