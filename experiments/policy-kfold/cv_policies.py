"""Held-out comparison of the shipped policies: stratified k-fold over a labelled manifest.

For each fold the roadwork head is retrained (`cascade train-head`) on the other folds only,
the shipped hotkeys are pointed at that head, and `cascade eval --validator-style --json`
runs them on the held-out fold. Confusion matrices are summed over folds, so every image is
scored by a head that never saw it. Prints a table (and JSON with --json).

Random folds put frames of one video on both sides; scripts/tune/grouped_cv.py is the grouped
(leave one source / city out) comparison on both data sets that the shipped settings are tuned on,
and supersedes this study (experiments/README.md says what it found).

Usage: python experiments/policy-kfold/cv_policies.py [--manifest M] [--folds 5] [--seed 7] [--hotkeys speed,accuracy] [--backbone B]
       [--cascade PATH] [--components DIR] [--detector ONNX] [--reuse-heads]
       [--set hotkey:key.path=value ...]   (override a parameter, e.g. accuracy:fuser.params.weights.text=3)

`--cascade` runs a copy of the binary (e.g. one kept out of the way of a rebuild) and
`--components` another folder of compiled components; the ONNX Runtime library defaults to
target/ort beside this checkout unless ORT_DYLIB_PATH is set. Work goes to target/cv/seed<N>/;
`--reuse-heads` keeps a fold's head when its training rows are unchanged, and `--detector`
points the registry's optional detector at an ONNX file (e.g. ../shared/models/yolox_nano).
"""

import argparse
import csv
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "tune"))
import grouped_cv  # noqa: E402

CASCADE = os.path.join(ROOT, "target", "release", "cascade")
COMPONENTS = os.path.join(ROOT, "target", "components")
ORT = os.path.join(ROOT, "target", "ort", "libonnxruntime.so")


def folds_of(rows, k, seed):
    rng = random.Random(seed)
    fold = {}
    for label in ("1", "0"):
        idx = [i for i, r in enumerate(rows) if r["label"] == label]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold[i] = j % k
    return fold


def write_manifest(path, rows, base):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for r in rows:
            w.writerow([os.path.join(base, r["path"]), r["label"]])


def fresh(head, train_csv):
    """Whether `head` exists and was trained on exactly the rows of `train_csv`."""
    stamp = head + ".train.csv"
    if not (os.path.exists(head) and os.path.exists(stamp)):
        return False
    return open(stamp).read() == open(train_csv).read()


def shipped_backbone():
    """The embedder the shipped head was trained on (its registry name)."""
    h = json.load(open(os.path.join(ROOT, "policies", "heads", "roadwork.json")))
    return (h.get("backbone") or {}).get("model", "effnet-embed")


def policies_for(fold_dir, head, overrides, detector=None, backbone=None):
    """A copy of policies/ whose registry paths are absolute, whose head is the fold's and whose
    roadwork classifier runs the backbone that head was trained on."""
    src = os.path.join(ROOT, "policies")
    dst = grouped_cv.policies_for(src, os.path.join(fold_dir, "policies"), head, backbone or shipped_backbone(),
                                  overrides, probe=False)
    if detector:
        path = os.path.join(dst, "models.toml")
        reg = open(path).read()
        reg = reg.replace(json.dumps(os.path.join(ROOT, "models", "detector.onnx")), json.dumps(os.path.abspath(detector)))
        open(path, "w").write(reg)
    return dst


def toml_override(key, value):
    """`a.b.c=v` as a dotted-key TOML line under its table (only for keys the file lacks)."""
    table, _, leaf = key.rpartition(".")
    return f"[{table}]\n{leaf} = {value}\n" if table else f"{leaf} = {value}\n"


def run(args):
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", ORT)
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def mcc(c):
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    d = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / d if d else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", default=os.path.join(os.path.dirname(ROOT), "shared", "data", "roadwork-dev", "manifest.csv"))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hotkeys", default="speed,accuracy")
    ap.add_argument("--set", action="append", default=[], help="hotkey:table.key=value")
    ap.add_argument("--cascade", default=CASCADE, help="the cascade binary to run")
    ap.add_argument("--components", default=COMPONENTS, help="folder of compiled components")
    ap.add_argument("--backbone", default=None, help="embedder for the heads (default: the shipped head's)")
    ap.add_argument("--detector", help="an object detector ONNX to use as models/detector.onnx (e.g. yolox_nano)")
    ap.add_argument("--reuse-heads", action="store_true",
                    help="keep a fold's head when it was trained on the same rows (same binary assumed)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    overrides = []
    for s in a.set:
        m = re.fullmatch(r"([\w-]+):([\w.\-\"]+)=(.+)", s)
        if not m:
            sys.exit(f"--set {s!r}: expected hotkey:key.path=value")
        overrides.append(m.groups())
    base = os.path.dirname(os.path.abspath(a.manifest))
    rows = list(csv.DictReader(open(a.manifest)))
    fold = folds_of(rows, a.folds, a.seed)
    backbone = a.backbone or shipped_backbone()
    work = os.path.join(ROOT, "target", "cv", f"seed{a.seed}")
    os.makedirs(work, exist_ok=True)
    hotkeys = a.hotkeys.split(",")
    total = {h: {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "n": 0, "ms": 0.0, "stages": {}} for h in hotkeys}
    for k in range(a.folds):
        d = os.path.join(work, f"fold{k}")
        os.makedirs(d, exist_ok=True)
        train = [r for i, r in enumerate(rows) if fold[i] != k]
        test = [r for i, r in enumerate(rows) if fold[i] == k]
        write_manifest(os.path.join(d, "train.csv"), train, base)
        write_manifest(os.path.join(d, "test.csv"), test, base)
        head = os.path.join(d, "head.json")
        if not (a.reuse_heads and fresh(head, os.path.join(d, "train.csv"))):
            run([a.cascade, "train-head", "--policies", os.path.join(ROOT, "policies"), "--backbone", backbone,
                 "--manifest", os.path.join(d, "train.csv"), "--validator-style", "--out", head])
            shutil.copyfile(os.path.join(d, "train.csv"), head + ".train.csv")
        pol = policies_for(d, head, overrides, a.detector, backbone)
        for h in hotkeys:
            r = json.loads(run([a.cascade, "eval", "--policies", pol, "--components", a.components,
                                "--hotkey", h, "--manifest",
                                os.path.join(d, "test.csv"), "--validator-style", "--json"]))
            t = total[h]
            for key in ("tp", "fp", "tn", "fn"):
                t[key] += r["confusion"][key]
            t["n"] += r["n"]
            t["ms"] += r["model_ms_per_request"] * r["n"]
            for s, share in r["stage_share"].items():
                t["stages"][s] = t["stages"].get(s, 0) + round(share * r["n"])
            print(f"fold {k} {h:<10} acc {r['accuracy']:.3f} mcc {r['mcc']:.3f}", file=sys.stderr)
    out = {}
    for h, t in total.items():
        acc = (t["tp"] + t["tn"]) / t["n"]
        m = mcc(t)
        out[h] = {"n": t["n"], "accuracy": acc, "mcc": m, "reward": (0.5 * m + 0.5 * acc) ** 3,
                  "confusion": {k: t[k] for k in ("tp", "fp", "tn", "fn")},
                  "model_ms_per_request": t["ms"] / t["n"], "stages": t["stages"]}
    if a.json:
        print(json.dumps(out))
        return
    print(f"{a.folds}-fold held-out comparison on {a.manifest} (validator-style, head retrained per fold)")
    print(f"{'hotkey':<10} {'n':>5} {'accuracy':>9} {'MCC':>7} {'reward':>7} {'model ms':>9}  confusion (tp fp tn fn)  stages")
    for h, r in out.items():
        c = r["confusion"]
        print(f"{h:<10} {r['n']:>5} {r['accuracy']:>9.4f} {r['mcc']:>7.4f} {r['reward']:>7.4f} {r['model_ms_per_request']:>9.1f}"
              f"  {c['tp']:>4} {c['fp']:>3} {c['tn']:>4} {c['fn']:>3}         {r['stages']}")


if __name__ == "__main__":
    main()
