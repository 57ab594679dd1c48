"""Tune the hotkeys' exit thresholds, flip, zoom and text weights on grouped held-out evidence.

Input: the JSON that `scripts/tune/grouped_cv.py --probe --json FILE` writes. Its probe hotkey runs every
stage of `accuracy` on every held-out image (classifier, mirrored classifier, 2×2 zoom with the
best tile, OCR + keywords) with no early exit, so the reason of each answer lists all the
evidence. This script replays the router and the weighted fuser on that evidence for many
settings (what `cascade-router` and `weighted` do: the weighted mean of the scores present,
renormalised; exit when the fused score is at or below `exit_low` or at or above `exit_high`),
so a grid costs nothing but arithmetic; the chosen settings are then checked for real with
`grouped_cv.py` (same folds, another eval seed).

Prints the best settings of each shape on the tuning scheme (pooled street-level MCC over the
held-out folds), and how they do on the other schemes in the file.

Usage: .venv/bin/python experiments/exit-replay/tune_policies.py target/tune/dino_s1.json [--tune source/seed1] [--top 5]
"""

import argparse
import itertools
import json
import math
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts", "tune"))
from grouped_cv import figures, parse_evidence  # noqa: E402

# model calls per stage: classifier 1, flip 1, zoom 4 (+ OCR)
COST = {"roadwork": 1, "roadwork:flip": 1, "roadwork:zoom": 4, "text": 0}


def simulate(items, stages, weights):
    """stages: [(names, exit_low, exit_high)]; returns [(prediction, label, fold, calls)]."""
    out = []
    for ev, label, fold in items:
        have = {}
        calls = 0
        pred = None
        for k, (names, lo, hi) in enumerate(stages):
            for n in names:
                calls += COST.get(n, 0)
                if n in ev:
                    have[n] = ev[n]
            num = sum(weights.get(n, 0) * s for n, s in have.items())
            den = sum(weights.get(n, 0) for n in have)
            fused = min(1.0, max(0.0, num / den)) if den > 0 else 0.5
            last = k == len(stages) - 1
            if last or (lo is not None and fused <= lo) or (hi is not None and fused >= hi):
                pred = fused
                break
        out.append((pred, label, fold, calls))
    return out


def score(sim):
    f = figures([(p, y) for p, y, _, _ in sim])
    f["calls"] = sum(c for *_, c in sim) / max(1, len(sim))
    return f


def fold_boot(sim_a, sim_b, boot=2000, seed=1):
    """90% interval, over folds resampled, of MCC(b) − MCC(a)."""
    folds = sorted({f for _, _, f, _ in sim_a})
    by_a = {f: [(p, y) for p, y, g, _ in sim_a if g == f] for f in folds}
    by_b = {f: [(p, y) for p, y, g, _ in sim_b if g == f] for f in folds}
    rng = random.Random(seed)
    d = []
    for _ in range(boot):
        pick = [rng.choice(folds) for _ in folds]
        d.append(figures([x for f in pick for x in by_b[f]])["mcc"] - figures([x for f in pick for x in by_a[f]])["mcc"])
    d.sort()
    return d[int(0.05 * boot)], d[int(0.95 * boot) - 1]


def items_of(data, key):
    rows = data[key]["rows"]["probe"]
    return [(parse_evidence(r["reason"]), r["label"] == 1, r["fold"]) for r in rows if r["street"]]


def speed_shape(p):
    lo, hi, wf = p
    return [(["roadwork"], lo, hi), (["roadwork:flip"], None, None)], {"roadwork": 1.0, "roadwork:flip": wf}


def accuracy_shape(p):
    lo1, hi1, lo2, hi2, wf, wz, wt = p
    return ([(["roadwork"], lo1, hi1), (["roadwork:flip"], lo2, hi2), (["roadwork:zoom", "text"], None, None)],
            {"roadwork": 1.0, "roadwork:flip": wf, "roadwork:zoom": wz, "text": wt})


BANDS = [(0.05, 0.95), (0.1, 0.9), (0.2, 0.8), (0.25, 0.75), (0.3, 0.7), (0.4, 0.6), (0.49, 0.51), (0.0, 1.0)]


def grids():
    speed = [(lo, hi, wf) for (lo, hi) in BANDS for wf in (0.0, 0.5, 1.0)]
    acc = [(lo1, hi1, lo2, hi2, wf, wz, wt)
           for (lo1, hi1) in BANDS for (lo2, hi2) in BANDS if lo2 >= lo1 and hi2 <= hi1
           for wf in (0.0, 1.0) for wz in (0.0, 0.25, 0.5, 1.0, 2.0) for wt in (0.0, 1.0, 3.0)]
    return {"speed": (speed_shape, speed), "accuracy": (accuracy_shape, acc)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--tune", default="source/seed1")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--max-calls", type=float, default=99, help="accuracy: most model calls per image on average")
    a = ap.parse_args()
    data = json.load(open(a.file))
    tune = items_of(data, a.tune)
    others = [k for k in data if k != a.tune]
    best = {}
    for name, (shape, grid) in grids().items():
        scored = []
        for p in grid:
            stages, w = shape(p)
            f = score(simulate(tune, stages, w))
            if f["calls"] <= a.max_calls or name == "speed":
                scored.append((f["mcc"], f["accuracy"], -f["calls"], p, f))
        scored.sort(reverse=True)
        print(f"\n{name}: best on {a.tune} (pooled street-level MCC over held-out folds)")
        for m, acc, c, p, f in scored[: a.top]:
            line = f"  {p}  MCC {m:.3f} acc {acc:.3f} calls {-c:.2f}"
            for k in others:
                g = score(simulate(items_of(data, k), *shape(p)))
                line += f" | {k}: MCC {g['mcc']:.3f} acc {g['accuracy']:.3f}"
            print(line)
        best[name] = scored[0][3]
    # the shipped shapes as they are now, for reference
    shipped = {"speed": (0.25, 0.75, 1.0), "accuracy": (0.1, 0.9, 0.2, 0.8, 1.0, 0.5, 3.0)}
    g = grids()
    for k in [a.tune] + others:
        items = items_of(data, k)
        print(f"\n{k}:")
        sims = {}
        for label, params in (("shipped", shipped), ("tuned", best)):
            for h in ("speed", "accuracy"):
                sims[(label, h)] = simulate(items, *g[h][0](params[h]))
                f = score(sims[(label, h)])
                print(f"  {label:<8} {h:<9} {params[h]}  MCC {f['mcc']:.3f} acc {f['accuracy']:.3f} calls {f['calls']:.2f}")
        for label in ("shipped", "tuned"):
            lo, hi = fold_boot(sims[(label, "speed")], sims[(label, "accuracy")])
            d = score(sims[(label, "accuracy")])["mcc"] - score(sims[(label, "speed")])["mcc"]
            print(f"  {label}: accuracy − speed MCC {d:+.3f} (90% over folds {lo:+.3f} … {hi:+.3f})")


if __name__ == "__main__":
    main()
