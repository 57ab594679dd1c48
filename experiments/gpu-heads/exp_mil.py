"""Round 5 (device): do patch-level heads (MIL) or fine-tuning the last blocks lift street MCC?

Reuses run_all.py (reference augmentation, torch ViT-S/14 checked against ORT, fold layout).
Train views t0-t2, eval views e0, e1. Leave-one-source-out over street sources (tracon always
trains); LOCO for the variants named in LOCO_FOR. Heads are class-balanced, cut at 0.5 (no Platt),
so every variant is compared the same way; AUC is threshold-free.
"""
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_all as R  # noqa: E402

R.TRAIN_TAGS = ["t0", "t1", "t2"]
R.EVAL_TAGS = ["e0", "e1"]
OUT = os.environ.get("OUT", "/tmp/out")
DEV = "cuda"
ONLY = [v for v in os.environ.get("ONLY", "").split(",") if v]
LOCO_FOR = set(os.environ.get("LOCO_FOR", "base,mil_lse_fin,ft2").split(","))
LOG = []
ALLP = {}


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.append(s)


def tokens(vit, imgs, idx, tags):
    import torch

    fin, h8, h10 = {}, {}, {}
    for j, tag in enumerate(tags):
        a_f, a_8, a_10 = [], [], []
        for s in range(0, len(idx), 128):
            x = R.pixels(imgs[idx[s:s + 128], j], DEV)
            with torch.no_grad():
                hs, f, _, _ = vit.forward(x)
            a_f.append(f.half())
            a_8.append(hs[7].half())
            a_10.append(hs[9].half())
        fin[tag], h8[tag], h10[tag] = torch.cat(a_f), torch.cat(a_8), torch.cat(a_10)
    return fin, h8, h10


def ln(x):
    import torch.nn.functional as F

    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


def base_feats(fin, h8):
    """The shipped 1152-d embedding: CLS, mean patch, LN(CLS after block 8)."""
    import torch

    f = fin.float()
    return torch.cat([f[:, 0], f[:, 1:].mean(1), ln(h8[:, 0].float())], 1)


def class_w(y, src, by_source=False):
    return R.class_weights(y, src, by_source)


class Block:
    """One encoder block with trainable copies of the pretrained weights."""

    def __init__(self, vit, l):
        import torch

        t, pre = vit.t, f"backbone.encoder.layer.{l}"
        g = lambda k: torch.nn.Parameter(t[k].clone())
        self.p = {
            "n1w": g(pre + ".norm1.weight"), "n1b": g(pre + ".norm1.bias"),
            "q": g(f"L{l}.query.w"), "qb": g(pre + ".attention.attention.query.bias"),
            "k": g(f"L{l}.key.w"), "kb": g(pre + ".attention.attention.key.bias"),
            "v": g(f"L{l}.value.w"), "vb": g(pre + ".attention.attention.value.bias"),
            "o": g(f"L{l}.dense.w"), "ob": g(pre + ".attention.output.dense.bias"),
            "ls1": g(pre + ".layer_scale1.lambda1"),
            "n2w": g(pre + ".norm2.weight"), "n2b": g(pre + ".norm2.bias"),
            "f1": g(f"L{l}.fc1.w"), "f1b": g(pre + ".mlp.fc1.bias"),
            "f2": g(f"L{l}.fc2.w"), "f2b": g(pre + ".mlp.fc2.bias"),
            "ls2": g(pre + ".layer_scale2.lambda1"),
        }

    def __call__(self, z):
        import torch
        import torch.nn.functional as F

        p = self.p
        B, T, _ = z.shape
        y = F.layer_norm(z, (384,), p["n1w"], p["n1b"], eps=1e-6)
        q = (y @ p["q"] + p["qb"]).view(B, T, 6, 64).transpose(1, 2)
        k = (y @ p["k"] + p["kb"]).view(B, T, 6, 64).transpose(1, 2)
        v = (y @ p["v"] + p["vb"]).view(B, T, 6, 64).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, 384)
        z = z + p["ls1"] * (o @ p["o"] + p["ob"])
        y = F.layer_norm(z, (384,), p["n2w"], p["n2b"], eps=1e-6)
        y = F.gelu(y @ p["f1"] + p["f1b"]) @ p["f2"] + p["f2b"]
        return z + p["ls2"] * y


def fit_linear(X, y, w, l2=0.2, epochs=300, lr=0.01):
    """The train-head recipe: standardise, full-batch Adam on weighted BCE, coupled L2."""
    import torch

    mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)
    Xs = (X - mu) / sd
    W = torch.zeros(X.shape[1], device=DEV, requires_grad=True)
    b = torch.zeros(1, device=DEV, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr)
    wn = w / w.sum()
    for _ in range(epochs):
        opt.zero_grad()
        z = Xs @ W + b
        loss = (wn * torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")).sum()
        loss = loss + 0.5 * l2 * (W * W).sum()
        loss.backward()
        opt.step()
    W, b = W.detach(), b.detach()
    return (lambda Q: ((Q - mu) / sd) @ W + b), (mu, sd, W, b)


def fit_mil(Xb, P, y, w, pool, l2=0.2, l2p=1e-3, epochs=300, lr=0.01, r=5.0, att_hidden=32):
    """Global logistic on the base features plus a pooled per-patch score. P [R,256,384] fp16."""
    import torch

    mu, sd = Xb.mean(0), Xb.std(0).clamp_min(1e-6)
    Pf = P[: min(len(P), 512)].float().reshape(-1, 384)
    pmu, psd = Pf.mean(0), Pf.std(0).clamp_min(1e-6)
    W = torch.zeros(Xb.shape[1], device=DEV, requires_grad=True)
    b = torch.zeros(1, device=DEV, requires_grad=True)
    wp = (torch.randn(384, device=DEV) * 0.01).requires_grad_(True)
    bp = torch.zeros(1, device=DEV, requires_grad=True)
    params = [W, b, wp, bp]
    if pool == "att":
        V = (torch.randn(384, att_hidden, device=DEV) * 0.05).requires_grad_(True)
        U = (torch.randn(384, att_hidden, device=DEV) * 0.05).requires_grad_(True)
        wa = (torch.randn(att_hidden, device=DEV) * 0.05).requires_grad_(True)
        params += [V, U, wa]
    opt = torch.optim.Adam(params, lr=lr)
    wn = w / w.sum()

    def score(Xq, Pq):
        out = []
        for s in range(0, len(Pq), 1024):
            ps = (Pq[s:s + 1024].float() - pmu) / psd
            sp = ps @ wp + bp  # [B,256]
            if pool == "max":
                pooled = sp.max(1).values
            elif pool == "lse":
                pooled = (torch.logsumexp(r * sp, 1) - math.log(sp.shape[1])) / r
            elif pool == "att":
                a = torch.softmax((torch.tanh(ps @ V) * torch.sigmoid(ps @ U)) @ wa, 1)
                pooled = (a * sp).sum(1)
            else:
                raise ValueError(pool)
            out.append(pooled)
        return ((Xq - mu) / sd) @ W + b + torch.cat(out)

    for _ in range(epochs):
        opt.zero_grad()
        z = score(Xb, P)
        loss = (wn * torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")).sum()
        loss = loss + 0.5 * l2 * (W * W).sum() + 0.5 * l2p * (wp * wp).sum()
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    return score


def fit_ft(vit, H10, H8, y, w, nblocks=2, epochs=4, lr=2e-5, bs=64, l2=0.2):
    """LP-FT: the linear head first (recipe), then blocks 11..12 (or just 12) and head jointly."""
    import torch

    blocks = [Block(vit, l) for l in range(12 - nblocks, 12)]
    fw, fb = vit.t["backbone.layernorm.weight"], vit.t["backbone.layernorm.bias"]
    import torch.nn.functional as F

    def emb(h10, h8):
        z = h10.float()
        if nblocks == 1:
            z = vit_block_frozen(z)
        for bl in blocks:
            z = bl(z)
        f = F.layer_norm(z, (384,), fw, fb, eps=1e-6)
        return torch.cat([f[:, 0], f[:, 1:].mean(1), ln(h8[:, 0].float())], 1)

    frozen11 = Block(vit, 10)
    for p in frozen11.p.values():
        p.requires_grad_(False)

    def vit_block_frozen(z):
        return frozen11(z)

    with torch.no_grad():
        X0 = torch.cat([emb(H10[s:s + 256], H8[s:s + 256]) for s in range(0, len(H10), 256)])
    _, (mu, sd, W0, b0) = fit_linear(X0, y, w, l2=l2)
    W = W0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    bp = [p for bl in blocks for p in bl.p.values()]
    opt = torch.optim.AdamW([{"params": bp, "lr": lr, "weight_decay": 0.0}, {"params": [W, b], "lr": 1e-3, "weight_decay": 0.0}])
    n = len(y)
    g = torch.Generator(device="cpu").manual_seed(7)
    wn = w / w.mean()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g).to(DEV)
        for s in range(0, n, bs):
            i = perm[s:s + bs]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                x = emb(H10[i], H8[i])
            z = ((x.float() - mu) / sd) @ W + b
            loss = (wn[i] * F.binary_cross_entropy_with_logits(z, y[i], reduction="none")).mean()
            loss = loss + 0.5 * l2 * (W * W).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def score(h10, h8):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            xs = torch.cat([emb(h10[s:s + 256], h8[s:s + 256]) for s in range(0, len(h10), 256)])
        return ((xs.float() - mu) / sd) @ W + b

    return score


def metrics(D, probs, rows_mask):
    y = D.y
    st = D.street
    out = {}
    p = probs[st]
    yy = y[st]
    m, acc, cm = R.mcc_of(p, yy)
    out["mcc"], out["acc"], out["auc"] = round(m, 3), round(acc, 3), round(R.auc_of(p, yy), 3)
    na = st & (D.src != "pranav_au_night")
    out["mcc_no_night"] = round(R.mcc_of(probs[na], y[na])[0], 3)
    out["auc_no_night"] = round(R.auc_of(probs[na], y[na]), 3)
    best = max(R.mcc_of(p, yy, t)[0] for t in np.linspace(0.05, 0.95, 37))
    out["mcc_best_cut"] = round(best, 3)
    out["within_auc"] = {s: round(R.auc_of(probs[D.src == s], y[D.src == s]), 3)
                         for s in ("cityscapes_pix2pix", "dashcam_mi3lab_workzone", "gtsdb_germany")}
    out["per_source_acc"] = {s[:8]: round(float(((probs[D.src == s] >= 0.5) == y[D.src == s]).mean()), 2)
                             for s in sorted(set(D.src[st]))}
    out["cm"] = cm
    return out


def main():
    import torch

    os.makedirs(OUT, exist_ok=True)
    t0 = time.time()
    rows = R.load_rows()
    imgs, levels, ok = R.augment_all(rows)
    vit = R.ViT(os.path.join(R.X, "weights.npz"), DEV)
    log("verify", json.dumps(R.verify(vit, DEV)))
    D = R.Data(rows, ok, None)
    tags = R.TRAIN_TAGS + R.EVAL_TAGS
    fin, h8, h10 = tokens(vit, imgs, D.idx, tags)
    del imgs
    log(f"tokens {time.time() - t0:.1f}s; n={len(D.idx)}")
    base = {t: base_feats(fin[t], h8[t]) for t in tags}
    p8 = {t: ln(h8[t][:, 1:].float()).half() for t in tags}
    n = len(D.idx)
    tv = R.TRAIN_TAGS
    yv = torch.tensor(np.tile(D.y, len(tv)), device=DEV, dtype=torch.float32)
    src_rows = np.tile(D.src, len(tv))
    Xb = torch.cat([base[t] for t in tv])
    Pfin = torch.cat([fin[t][:, 1:] for t in tv])
    P8 = torch.cat([p8[t] for t in tv])
    H10 = torch.cat([h10[t] for t in tv])
    H8 = torch.cat([h8[t] for t in tv])

    variants = {
        "base": lambda tr, w: fit_linear(Xb[tr], yv[tr], w)[0],
        "base_bal": lambda tr, w: fit_linear(Xb[tr], yv[tr], w)[0],
        "mil_max_fin": lambda tr, w: fit_mil(Xb[tr], Pfin[tr], yv[tr], w, "max"),
        "mil_lse_fin": lambda tr, w: fit_mil(Xb[tr], Pfin[tr], yv[tr], w, "lse"),
        "mil_lse_fin_l2p": lambda tr, w: fit_mil(Xb[tr], Pfin[tr], yv[tr], w, "lse", l2p=0.1),
        "mil_att_fin": lambda tr, w: fit_mil(Xb[tr], Pfin[tr], yv[tr], w, "att"),
        "mil_lse_p8": lambda tr, w: fit_mil(Xb[tr], P8[tr], yv[tr], w, "lse"),
        "ft1": lambda tr, w: fit_ft(vit, H10[tr], H8[tr], yv[tr], w, nblocks=1),
        "ft2": lambda tr, w: fit_ft(vit, H10[tr], H8[tr], yv[tr], w, nblocks=2),
        "ft2_lr5e-5": lambda tr, w: fit_ft(vit, H10[tr], H8[tr], yv[tr], w, nblocks=2, lr=5e-5),
    }
    inputs = {"base": lambda t: (base[t],), "base_bal": lambda t: (base[t],)}
    for k in variants:
        if k.startswith("mil") and k.endswith("p8"):
            inputs[k] = lambda t: (base[t], p8[t])
        elif k.startswith("mil"):
            inputs[k] = lambda t: (base[t], fin[t][:, 1:])
        elif k.startswith("ft"):
            inputs[k] = lambda t: (h10[t], h8[t])
    results = []
    for name, fitter in variants.items():
        if ONLY and name not in ONLY:
            continue
        for scheme in ("source", "city"):
            if scheme == "city" and name not in LOCO_FOR:
                continue
            ks = D.loso if scheme == "source" else D.loco
            ts = time.time()
            probs = {e: np.full(n, np.nan) for e in R.EVAL_TAGS}
            for k in ks:
                test = D.outer[k][2]
                train = ~test
                tr_rows = np.tile(train, len(tv))
                w = torch.tensor(class_w(np.tile(D.y, len(tv))[tr_rows], src_rows[tr_rows], name.endswith("_bal")),
                                 device=DEV, dtype=torch.float32)
                trt = torch.tensor(np.where(tr_rows)[0], device=DEV)
                score = fitter(trt, w)
                te = torch.tensor(np.where(test)[0], device=DEV)
                for e in R.EVAL_TAGS:
                    args = [a[te] for a in inputs[name](e)]
                    with torch.no_grad():
                        z = score(*args)
                    probs[e][test] = torch.sigmoid(z.float()).cpu().numpy()
            for e in R.EVAL_TAGS:
                m = metrics(D, probs[e], None)
                m.update({"variant": name, "scheme": scheme, "eval": e, "secs": round(time.time() - ts, 1)})
                results.append(m)
                log(f"{name:<16} {scheme:<6} {e} MCC {m['mcc']:.3f} AUC {m['auc']:.3f} acc {m['acc']:.3f} "
                    f"| no-night MCC {m['mcc_no_night']:.3f} AUC {m['auc_no_night']:.3f} | best-cut {m['mcc_best_cut']:.3f} "
                    f"| within {m['within_auc']} | {m['per_source_acc']} cm {m['cm']} ({m['secs']}s)")
            ALLP[f"{name}|{scheme}"] = np.stack([probs[e] for e in R.EVAL_TAGS])
        json.dump(results, open(os.path.join(OUT, "results5.json"), "w"), indent=1)
        open(os.path.join(OUT, "log5.txt"), "w").write("\n".join(LOG))
    np.savez(os.path.join(OUT, "probs5.npz"), idx=D.idx, **ALLP)
    log(f"total {time.time() - t0:.1f}s")
    open(os.path.join(OUT, "log5.txt"), "w").write("\n".join(LOG))


if __name__ == "__main__":
    main()
