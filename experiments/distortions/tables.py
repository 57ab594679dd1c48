#!/usr/bin/env python3
"""Markdown tables of exp_distort.py's tables.json and exp_levers.py's levers.json (the README's
and this folder's). Usage: python3 tables.py TABLES.json LEVERS.json"""
import itertools
import json
import sys

import numpy as np

NAMES = {"L0": "level 0 (centre square)", "CS1": "chroma x0.4", "CS2": "chroma x0.3", "CC1": "values x0.85",
         "CC2": "values x0.725", "JPEG1": "down/up-sampling /2", "JPEG2": "down/up-sampling /3",
         "GNC1": "colour noise 0.001", "GNC2": "colour noise 0.002", "GB1": "blur 7", "GB2": "blur 9",
         "rot": "rotation alone (+-20 deg)", "crop20-40": "crop alone, 20-40 % of the frame",
         "crop40-70": "crop alone, 40-70 %", "crop70-100": "crop alone, 70-100 %", "L1": "level 1 (rotation + crop)",
         "L2a": "level 2, draw a", "L2b": "level 2, draw b", "L3a": "level 3, draw a", "L3b": "level 3, draw b",
         "e0": "levels 0-3 drawn, draw 0", "e1": "levels 0-3 drawn, draw 1", "e2": "levels 0-3 drawn, draw 2"}


def ci(v):
    return f"[{v[0]:.2f}, {v[1]:.2f}]"


def per_condition(t):
    v = t["variants"]["shipped (t0-2)"]
    s, c = v["source"], v["city"]
    print("| condition | classifier AUC | Δ AUC vs level 0 | MCC | `speed` AUC / MCC | `accuracy` (former) AUC / MCC | LOCO AUC (classifier) |")
    print("|---|---|---|---|---|---|---|")
    for k in t["conditions"]:
        a = s["classifier"][k]
        d = f"{a['d_auc']:+.3f} {ci(a['d_auc_ci'])}" if "d_auc" in a else "—"
        sp, ac = s["speed"][k], s["accuracy"][k]
        print(f"| {NAMES[k]} | {a['auc']:.3f} {ci(a['auc_ci'])} | {d} | {a['mcc']:.2f} {ci(a['mcc_ci'])} | "
              f"{sp['auc']:.3f} / {sp['mcc']:.2f} | {ac['auc']:.3f} / {ac['mcc']:.2f} | {c['classifier'][k]['auc']:.3f} |")


def factorial(t):
    F = ["geometry", "chroma", "values", "down/up", "noise", "blur"]
    for scheme in ("source", "city"):
        fac = t["variants"]["shipped (t0-2)"][scheme]["factorial"]
        cells = {tuple(int(ch) for ch in k[1:]): v["auc"] for k, v in fac.items()}
        X = np.array(list(cells.keys()))
        y = np.array(list(cells.values()))
        S = 2 * X - 1
        cols, names = [np.ones(64)] + [S[:, i] for i in range(6)], ["mean"] + F
        for i, j in itertools.combinations(range(6), 2):
            cols.append(S[:, i] * S[:, j])
            names.append(f"{F[i]} x {F[j]}")
        coef = np.linalg.lstsq(np.stack(cols, 1), y, rcond=None)[0]
        eff = sorted(zip(names[1:], 2 * coef[1:]), key=lambda z: -abs(z[1]))
        print(f"\n{scheme}: level 0 {cells[(0,) * 6]:.3f}; all five at level-2 strength {cells[(0, 1, 1, 1, 1, 1)]:.3f}, "
              f"with the level-1 geometry {cells[(1,) * 6]:.3f}; geometry alone {cells[(1, 0, 0, 0, 0, 0)]:.3f}")
        print("effects on AUC (on minus off, averaged over the other factors): "
              + ", ".join(f"{n} {e:+.3f}" for n, e in eff[:10]))


def levers(t, lv):
    print("| variant | scheme | AUC L0 | L1 | L2 | L3 | levels 0-3 (3 draws) | MCC levels 0-3 | grey image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, v in t["variants"].items():
        for scheme in ("source", "city"):
            c = v[scheme]["classifier"]
            mix = np.mean([c[e]["auc"] for e in ("e0", "e1", "e2")])
            mm = np.mean([c[e]["mcc"] for e in ("e0", "e1", "e2")])
            print(f"| {name} | {scheme} | {c['L0']['auc']:.3f} | {c['L1']['auc']:.3f} | "
                  f"{np.mean([c['L2a']['auc'], c['L2b']['auc']]):.3f} | {np.mean([c['L3a']['auc'], c['L3b']['auc']]):.3f} | "
                  f"{mix:.3f} | {mm:.3f} | {v[scheme]['grey']:.2f} |")
    print()
    print("| shape | scheme | AUC L0 | L1 | L2 | L3 | levels 0-3 | MCC levels 0-3 | MCC calibrated (cross-fitted) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scheme in ("source", "city"):
        for who, r in lv["schemes"][scheme].items():
            mix = np.mean([r[e]["auc"] for e in ("e0", "e1", "e2")])
            mm = np.mean([r[e]["mcc"] for e in ("e0", "e1", "e2")])
            cal = r["calibration"]
            print(f"| {who} | {scheme} | {r['L0']['auc']:.3f} | {r['L1']['auc']:.3f} | "
                  f"{np.mean([r['L2a']['auc'], r['L2b']['auc']]):.3f} | {np.mean([r['L3a']['auc'], r['L3b']['auc']]):.3f} | "
                  f"{mix:.3f} | {mm:.3f} | {cal['before']['mcc']:.3f} → {cal['after']['mcc']:.3f} |")


def share(t):
    for scheme in ("source",):
        print("level-1 view by the crop's share of the frame:",
              "; ".join(f"{k}: n {v['n']}, AUC {v['auc']:.2f}, acc {v['acc']:.2f}"
                        for k, v in t["variants"]["shipped (t0-2)"][scheme]["by_share"].items()))
        print("level-3 views by how many distortions the validator drew:",
              "; ".join(f"{k}: n {v['n']}, AUC {v['auc']:.2f}"
                        for k, v in t["variants"]["shipped (t0-2)"][scheme]["by_drawn"]["count"].items()))


if __name__ == "__main__":
    t = json.load(open(sys.argv[1]))
    lv = json.load(open(sys.argv[2]))
    per_condition(t)
    factorial(t)
    print()
    share(t)
    print()
    levers(t, lv)
