"""Quick head experiments on cached embeddings (numpy only), before `train-head` settles them.

Reads the JSON lines `cascade train-head --dump FILE` writes (one line per augmented view:
path, label, source, view, level, x), one file per backbone; several files are fused by
concatenating their vectors per (path, view). Runs leave-one-source-out over the street-level
sources (the web cone photos always train) and prints the pooled street-level MCC of a few head
settings: L2 strength, source balancing, a one-hidden-layer MLP. Scores are per view (the
views are validator draws at levels 0-3), calibrated like `--calibrate` (Platt on the inner
out-of-fold logits) when --calibrate is given, else cut at 0.5.

Usage: .venv/bin/python experiments/head-search/head_search.py target/tune/dino_v3.jsonl [more.jsonl ...] [--calibrate]
"""

import json
import math
import sys

import numpy as np

NOT_STREET = {"tracon"}


def load(files):
    per = []
    for f in files:
        d = {}
        for line in open(f):
            r = json.loads(line)
            d[(r["path"], r["view"])] = r
        per.append(d)
    keys = sorted(set.intersection(*[set(d) for d in per]))
    x = np.array([np.concatenate([d[k]["x"] for d in per]) for k in keys], dtype=np.float32)
    y = np.array([per[0][k]["label"] for k in keys], dtype=np.float32)
    src = np.array([per[0][k]["source"] for k in keys])
    lvl = np.array([per[0][k]["level"] if per[0][k]["level"] is not None else -1 for k in keys])
    return x, y, src, lvl


def weights(y, src, balance):
    w = np.ones_like(y)
    if balance:
        for s in np.unique(src):
            m = src == s
            w[m] = 1.0 / m.sum()
    for c in (0, 1):
        m = y == c
        w[m] *= len(y) / 2 / w[m].sum()
    return w


def fit_logistic(x, y, w, l2, epochs=300, lr=0.01):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd
    n, d = xs.shape
    wt = np.zeros(d, dtype=np.float64)
    b = 0.0
    m = np.zeros(d + 1)
    v = np.zeros(d + 1)
    tot = w.sum()
    for t in range(1, epochs + 1):
        z = xs @ wt + b
        p = 1 / (1 + np.exp(-z))
        r = w * (p - y) / tot
        g = np.concatenate([xs.T @ r + l2 * wt, [r.sum()]])
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        step = lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        wt -= step[:-1]
        b -= step[-1]
    return lambda q: ((q - mu) / sd) @ wt + b


def fit_mlp(x, y, w, l2, hidden=64, epochs=300, lr=0.003, seed=1):
    rng = np.random.default_rng(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd
    n, d = xs.shape
    w1 = rng.normal(0, math.sqrt(2 / d), (d, hidden)) * 0.5
    b1 = np.zeros(hidden)
    w2 = rng.normal(0, math.sqrt(2 / hidden), hidden) * 0.5
    b2 = 0.0
    params = [w1, b1, w2, np.array([b2])]
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    tot = w.sum()
    for t in range(1, epochs + 1):
        w1, b1, w2, b2 = params
        h = np.maximum(0, xs @ w1 + b1)
        z = h @ w2 + b2[0]
        p = 1 / (1 + np.exp(-z))
        r = w * (p - y) / tot
        gw2 = h.T @ r + l2 * w2
        gb2 = np.array([r.sum()])
        dh = np.outer(r, w2) * (h > 0)
        gw1 = xs.T @ dh + l2 * w1
        gb1 = dh.sum(0)
        for i, g in enumerate([gw1, gb1, gw2, gb2]):
            ms[i] = 0.9 * ms[i] + 0.1 * g
            vs[i] = 0.999 * vs[i] + 0.001 * g * g
            params[i] = params[i] - lr * (ms[i] / (1 - 0.9 ** t)) / (np.sqrt(vs[i] / (1 - 0.999 ** t)) + 1e-8)
    w1, b1, w2, b2 = params
    return lambda q: np.maximum(0, ((q - mu) / sd) @ w1 + b1) @ w2 + b2[0]


def platt(z, y, w):
    a, b = 1.0, 0.0
    for _ in range(200):
        p = 1 / (1 + np.exp(-(a * z + b)))
        r = w * (p - y)
        s = w * p * (1 - p) + 1e-9
        g = np.array([(r * z).sum(), r.sum()])
        h = np.array([[(s * z * z).sum(), (s * z).sum()], [(s * z).sum(), s.sum()]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(h, g)
        def loss(a_, b_):
            t = a_ * z + b_
            return (w * (np.logaddexp(0, t) - y * t)).sum()
        cur, k = loss(a, b), 1.0
        while k > 1e-6 and loss(a - k * step[0], b - k * step[1]) >= cur:
            k /= 2
        if k <= 1e-6:
            break
        a, b = a - k * step[0], b - k * step[1]
    return a, b


def mcc(pred, y):
    tp = float(((pred == 1) & (y == 1)).sum()); tn = float(((pred == 0) & (y == 0)).sum())
    fp = float(((pred == 1) & (y == 0)).sum()); fn = float(((pred == 0) & (y == 1)).sum())
    d = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / d if d else 0.0


def run(x, y, src, lvl, fitter, balance, calibrate):
    street = np.array([s not in NOT_STREET for s in src])
    out = np.full(len(y), np.nan)
    for s in sorted(set(src[street])):
        test = src == s
        tr = ~test
        w = weights(y[tr], src[tr], balance)
        f = fitter(x[tr], y[tr], w)
        z = f(x[test])
        if calibrate:
            # inner leave-one-source-out on the training side for Platt
            zin = np.full(tr.sum(), np.nan)
            xs, ys, ss = x[tr], y[tr], src[tr]
            for s2 in sorted(set(ss)):
                t2 = ss == s2
                if len(set(ys[~t2])) < 2:
                    continue
                f2 = fitter(xs[~t2], ys[~t2], weights(ys[~t2], ss[~t2], balance))
                zin[t2] = f2(xs[t2])
            ok = ~np.isnan(zin)
            a, b = platt(zin[ok], ys[ok], w[ok])
            z = a * z + b
        out[test] = z
    pred = (out > 0).astype(int)
    m = mcc(pred[street], y[street])
    acc = (pred[street] == y[street]).mean()
    per = {s: round(float((pred[src == s] == y[src == s]).mean()), 3) for s in sorted(set(src[street]))}
    lv = {int(l): round(mcc(pred[street & (lvl == l)], y[street & (lvl == l)]), 3) for l in sorted(set(lvl[street]))}
    return m, acc, per, lv


def main():
    files = [f for f in sys.argv[1:] if not f.startswith("--")]
    calibrate = "--calibrate" in sys.argv
    x, y, src, lvl = load(files)
    print(f"{len(y)} views, dim {x.shape[1]}, {int(y.sum())} positive; calibrate={calibrate}")
    settings = [
        ("logistic l2=0.01", lambda a, b, c: fit_logistic(a, b, c, 0.01), False),
        ("logistic l2=0.01 balanced", lambda a, b, c: fit_logistic(a, b, c, 0.01), True),
        ("logistic l2=0.1 balanced", lambda a, b, c: fit_logistic(a, b, c, 0.1), True),
        ("logistic l2=1 balanced", lambda a, b, c: fit_logistic(a, b, c, 1.0), True),
        ("mlp64 l2=0.01 balanced", lambda a, b, c: fit_mlp(a, b, c, 0.01), True),
        ("mlp64 l2=0.1 balanced", lambda a, b, c: fit_mlp(a, b, c, 0.1), True),
    ]
    only = [s for s in sys.argv[1:] if s.startswith("--only=")]
    for name, fitter, balance in settings:
        if only and only[0][7:] not in name:
            continue
        m, acc, per, lv = run(x, y, src, lvl, fitter, balance, calibrate)
        print(f"{name:<28} street MCC {m:.3f} acc {acc:.3f}  per level {lv}\n    {per}")


if __name__ == "__main__":
    main()
