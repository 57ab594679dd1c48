"""Grouped, validator-faithful evaluation of the shipped hotkeys on street-level sources.

Folds never put frames of one video, one city or one source on both sides:

- `source`: leave one source out (a source = the folder an image sits in; each folder of
  ../shared/data/roadwork-dev and roadwork-more is one public data set, see their manifests'
  `source` column);
- `city`: leave one city out (the Mi3-Lab dash-cam frames split by the city their video was
  shot in, read from the file name; every other source is one city or one web collection, as
  its manifest `note` says, so there it equals `source`);
- `random`: stratified random k-fold over images, printed beside the grouped figures so the
  gap between them is visible.

For every fold the roadwork head is retrained on the training side only (`cascade train-head`,
with the shipped recipe unless --train-args says otherwise; embeddings come from the on-disk
cache), the registry's `roadwork` classifier is pointed at that head and its backbone, and
`cascade eval --levels 0-3 --seed N --rows` runs each hotkey on the held-out side: every test
image is turned into what a validator sends (one of the subnet's four augmentation levels drawn
per image) and answered through the same load and decision path as `serve`. The web cone
photos (tracon) are always on the training side in the grouped schemes: they are not street
scenes. Folds whose training and test rows were seen before are reused from --work.

Prints, per scheme: pooled figures per hotkey on the street-level test images, per source and
per level, fold-to-fold spread (per-fold accuracy, and a bootstrap over folds of the MCC
difference between the first two hotkeys). `--probe` also evaluates a probe hotkey that runs
every stage with no early exit and keeps the evidence of each image (for the replay study
experiments/exit-replay/tune_policies.py).

Usage: .venv/bin/python scripts/tune/grouped_cv.py [--schemes source,city,random] [--backbone dino-embed]
       [--seeds 1] [--hotkeys speed,accuracy] [--probe] [--policies DIR] [--train-args "..."]
       [--cascade PATH] [--components DIR] [--work DIR] [--json FILE] [--oof FILE.csv] [--set hotkey:key.path=value ...]
       [--serve-file ONNX]   (heads trained on the backbone, the classifier served from another file: a quantised copy)

The classifier runs the backbone's own file unless --serve-file names another: the shipped
`roadwork` runs the int8 copy of dino-embed's file, so evaluating it as shipped takes
`--serve-file target/models/dinov2_vits14_int8.onnx`.
"""

import argparse
import csv
import hashlib
import json
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
CASCADE = os.path.join(ROOT, "target", "release", "cascade")
COMPONENTS = os.path.join(ROOT, "target", "components")
ORT = os.path.join(ROOT, "target", "ort", "libonnxruntime.so")
MANIFESTS = [os.path.join(DATA, "roadwork-dev", "manifest.csv"), os.path.join(DATA, "roadwork-more", "manifest.csv")]

# The shipped recipe (README, "The roadwork head"): what each fold's head is trained with.
RECIPE = "--levels 0-3 --views 3 --seed 72 --cv source --calibrate --l2 0.2"

# Where each source was filmed or collected (manifest `note` columns and SOURCES.txt).
CITY = {
    "tracon": "web-cone-photos",
    "udacity_carnd_mit": "us-freeway",
    "gtsdb_germany": "de-bochum",
    "camvid_uk": "uk-cambridge",
    "cityscapes_pix2pix": "de-ch-cityscapes",
    "kagan94_web_weather": "web-weather",
    "bdd100k_yolop": "us-new-york",
    "pranav_au_night": "au-night",
}
NOT_STREET = {"tracon"}


def city_of(source, rel):
    """The city a frame was shot in: the Mi3-Lab dash-cam frames by their video's file name,
    every other source as CITY names it."""
    if source == "dashcam_mi3lab_workzone":
        return "us-" + os.path.basename(rel).split("_f")[0]
    return CITY.get(source, source)


def load_rows():
    rows = []
    for m in MANIFESTS:
        base = os.path.dirname(m)
        for r in csv.DictReader(open(m, newline="")):
            rel = r["path"].strip()
            source = rel.split("/")[0]
            city = city_of(source, rel)
            rows.append({"path": os.path.join(base, rel), "rel": rel, "label": r["label"].strip(), "source": source,
                         "city": city, "street": source not in NOT_STREET})
    return rows


def folds_for(rows, scheme, k, seed):
    """[(fold name, train indices, test indices)]."""
    if scheme in ("source", "city"):
        key = scheme
        groups = sorted({r[key] for r in rows if r["street"]})
        out = []
        for g in groups:
            test = [i for i, r in enumerate(rows) if r[key] == g]
            train = [i for i, r in enumerate(rows) if r[key] != g]
            out.append((g, train, test))
        return out
    rng = random.Random(seed)
    fold = {}
    for label in ("1", "0"):
        idx = [i for i, r in enumerate(rows) if r["label"] == label]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold[i] = j % k
    return [(f"fold{f}", [i for i in fold if fold[i] != f], [i for i in fold if fold[i] == f]) for f in range(k)]


def write_manifest(path, rows, idx):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "source"])
        for i in idx:
            r = rows[i]
            w.writerow([r["path"], r["label"], r["source"]])


def digest(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def run(args):
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", ORT)
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{p.stdout}\n{p.stderr[-4000:]}")
    return p.stdout, p.stderr


def toml_override(key, value):
    table, _, leaf = key.rpartition(".")
    return f"[{table}]\n{leaf} = {value}\n" if table else f"{leaf} = {value}\n"


def probe_toml(accuracy_text):
    """A hotkey that runs every stage of `accuracy` (no early exit, no detector) and fuses
    nothing away: its answer's reason lists all the evidence of the image."""
    ts = accuracy_text[accuracy_text.index("[text_scorer]"):accuracy_text.index("[fuser]")]
    return f"""name = "probe"
budget_ms = 60000
[limits]
call_ms = 60000
[router]
component = "cascade-router@^1"
[[router.params.stages]]
name = "classifier"
classify = ["roadwork"]
on_error = "fail"
[[router.params.stages]]
name = "classifier-flip"
classify = ["roadwork"]
flip = true
on_error = "fail"
[[router.params.stages]]
name = "evidence"
classify = ["roadwork"]
zoom = {{ grid = 2, overlap = 0.125, reduce = "max" }}
read_text = "ocr"
on_error = "fail"
{ts}
[fuser]
component = "weighted@^1"
params.weights = {{ roadwork = 1.0, "roadwork:flip" = 1.0, "roadwork:zoom" = 1.0, text = 1.0 }}
"""


def without_calibration(text):
    """A hotkey file's text without its `calibration` line: fold copies answer raw fused scores
    (what `cascade calibrate` fits), and a calibration names the shipped head, not a fold's."""
    return re.sub(r'^calibration\s*=.*$', "", text, flags=re.M)


def policies_for(src, dst, head, backbone, overrides, probe, serve_file=None):
    """A copy of `src` whose registry is absolute, whose `roadwork` classifier runs `backbone`
    (its file and input; `serve_file` instead of the file when given) with `head`, plus the probe
    hotkey when asked."""
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for name in os.listdir(src):
        p = os.path.join(src, name)
        if name.endswith(".toml") or name.endswith(".txt"):
            shutil.copyfile(p, os.path.join(dst, name))
        if name.endswith(".toml") and name != "models.toml":
            open(os.path.join(dst, name), "w").write(without_calibration(open(p).read()))
    reg_path = os.path.join(src, "models.toml")
    reg = tomllib.load(open(reg_path, "rb"))
    emb = next(m for m in reg["model"] if m["name"] == backbone)
    srcdir = os.path.abspath(src)
    text = open(reg_path).read()
    # the roadwork block: from its [[model]] to the next
    start = text.index('name = "roadwork"')
    start = text.rindex("[[model]]", 0, start)
    end = text.find("[[model]]", start + 1)
    end = len(text) if end < 0 else end
    block = text[start:end]
    served = os.path.abspath(serve_file) if serve_file else os.path.normpath(os.path.join(srcdir, emb["file"]))
    block = re.sub(r'^file = .*$', "file = " + json.dumps(served), block, flags=re.M)
    block = re.sub(r'^head = .*$', "head = " + json.dumps(os.path.abspath(head)), block, flags=re.M)
    inp = ", ".join(f"{k} = {json.dumps(v)}" for k, v in emb["input"].items())
    block = re.sub(r'^input = .*$', "input = { " + inp + " }", block, flags=re.M)
    text = text[:start] + block + text[end:]
    # every other relative file made absolute
    text = re.sub(r'^(\w+) = "(\.\./[^"]*)"', lambda m: f'{m.group(1)} = {json.dumps(os.path.normpath(os.path.join(srcdir, m.group(2))))}', text, flags=re.M)
    text = re.sub(r'(rec|cls) = "(\.\./[^"]*)"', lambda m: f'{m.group(1)} = {json.dumps(os.path.normpath(os.path.join(srcdir, m.group(2))))}', text)
    text = text.replace('labels_file = "coco_labels.txt"', "labels_file = " + json.dumps(os.path.join(srcdir, "coco_labels.txt")))
    open(os.path.join(dst, "models.toml"), "w").write(text)
    for hotkey, key, value in overrides:
        path = os.path.join(dst, hotkey + ".toml")
        with open(path, "a") as f:
            f.write("\n# override from grouped_cv.py\n" + toml_override(key, value))
    if probe:
        # every stage of the evidence design (the former `accuracy`, examples/hotkeys/evidence.toml)
        with open(os.path.join(ROOT, "examples", "hotkeys", "evidence.toml")) as f:
            open(os.path.join(dst, "probe.toml"), "w").write(probe_toml(without_calibration(f.read())))
    return dst


def mcc_of(c):
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    d = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / d if d else 0.0


def confusion(items):
    c = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for p, y in items:
        hit = p is not None and p > 0.5
        if y:
            c["tp" if hit else "fn"] += 1
        else:
            c["fp" if hit else "tn"] += 1
    return c


def figures(items):
    c = confusion(items)
    n = sum(c.values())
    acc = (c["tp"] + c["tn"]) / n if n else 0.0
    m = mcc_of(c)
    return {"n": n, "accuracy": acc, "mcc": m, "reward": (0.5 * max(m, 0) + 0.5 * acc) ** 3, "confusion": c}


def parse_evidence(reason):
    m = re.search(r"fused (-?[\d.]+) from (.*?)(?: \[|$)", reason or "")
    if not m:
        return {}
    ev = {}
    for part in m.group(2).split(", "):
        name, _, val = part.rpartition("=")
        try:
            ev[name] = float(val)
        except ValueError:
            pass
    return ev


def evaluate(a, rows, scheme, backbone, seed, hotkeys, overrides):
    """Per hotkey: the eval rows of every test image of every fold (with its fold)."""
    folds = folds_for(rows, scheme, a.folds, a.fold_seed)
    work = os.path.join(a.work, backbone)
    os.makedirs(work, exist_ok=True)
    out = {h: [] for h in hotkeys}
    policy_hash = digest(*[without_calibration(open(os.path.join(a.policies, f)).read())
                           for f in sorted(os.listdir(a.policies)) if f.endswith(".toml")], repr(overrides), repr(a.probe_version),
                         *([open(a.serve_file, "rb").read()] if a.serve_file else []))
    # the backbone's bytes key its heads: another file under the same registry name is another backbone
    reg = tomllib.load(open(os.path.join(a.policies, "models.toml"), "rb"))
    emb_file = os.path.join(a.policies, next(m for m in reg["model"] if m["name"] == backbone)["file"])
    with open(emb_file, "rb") as f:
        backbone_bytes = hashlib.sha256(f.read()).hexdigest()
    for name, train, test in folds:
        if a.only_folds and name not in a.only_folds.split(","):
            continue
        test = [i for i in test if rows[i]["street"] or a.test_all]
        if not test:
            continue
        tkey = digest(*sorted(rows[i]["path"] + rows[i]["label"] for i in train), a.train_args, backbone, backbone_bytes)
        d = os.path.join(work, "heads", tkey)
        os.makedirs(d, exist_ok=True)
        head = os.path.join(d, "head.json")
        if not os.path.exists(head):
            write_manifest(os.path.join(d, "train.csv"), rows, train)
            t0 = time.time()
            run([a.cascade, "train-head", "--policies", a.policies, "--backbone", backbone, "--manifest",
                 os.path.join(d, "train.csv"), "--out", head + ".tmp"] + shlex.split(a.train_args))
            os.replace(head + ".tmp", head)
            print(f"  [{scheme} {name}] head trained in {time.time() - t0:.0f} s", file=sys.stderr)
        ekey = digest(tkey, *sorted(rows[i]["path"] for i in test), str(seed), policy_hash,
                      open(head, "rb").read())
        e = os.path.join(work, "evals", ekey)
        os.makedirs(e, exist_ok=True)
        pol = None
        for h in hotkeys:
            done = os.path.join(e, f"{h}.jsonl")
            if not os.path.exists(done):
                if pol is None:
                    write_manifest(os.path.join(e, "test.csv"), rows, test)
                    pol = policies_for(a.policies, os.path.join(e, "policies"), head, backbone, overrides, "probe" in hotkeys,
                                       a.serve_file)
                t0 = time.time()
                run([a.cascade, "eval", "--policies", pol, "--components", a.components, "--hotkey", h,
                     "--manifest", os.path.join(e, "test.csv"), "--levels", "0-3", "--seed", str(seed), "--json",
                     "--rows", done + ".tmp"])
                os.replace(done + ".tmp", done)
                print(f"  [{scheme} {name}] {h}: {len(test)} images in {time.time() - t0:.0f} s", file=sys.stderr)
            by_path = {rows[i]["path"]: rows[i] for i in test}
            for line in open(done):
                r = json.loads(line)
                src = by_path.get(r["path"])
                if src is None:
                    continue
                r.update({"fold": name, "source": src["source"], "city": src["city"], "street": src["street"],
                          "rel": src["rel"]})
                out[h].append(r)
    return out


def spread(results, hotkeys, boot=2000, seed=1):
    """Per-fold accuracy of each hotkey, and a bootstrap over folds of the pooled-MCC
    difference between the first two hotkeys."""
    folds = sorted({r["fold"] for r in results[hotkeys[0]]})
    per = {h: {f: [(r["prediction"], r["label"] == 1) for r in results[h] if r["fold"] == f] for f in folds}
           for h in hotkeys}
    fold_acc = {h: {f: figures(per[h][f])["accuracy"] for f in folds} for h in hotkeys}
    out = {"fold_accuracy": fold_acc}
    if len(hotkeys) >= 2:
        a, b = hotkeys[0], hotkeys[1]
        diffs = [fold_acc[b][f] - fold_acc[a][f] for f in folds]
        mean = sum(diffs) / len(diffs)
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1))
        rng = random.Random(seed)
        boots = []
        for _ in range(boot):
            pick = [rng.choice(folds) for _ in folds]
            ia = [x for f in pick for x in per[a][f]]
            ib = [x for f in pick for x in per[b][f]]
            boots.append(figures(ib)["mcc"] - figures(ia)["mcc"])
        boots.sort()
        out["paired"] = {"hotkeys": [a, b], "fold_accuracy_diff_mean": mean, "fold_accuracy_diff_sd": sd,
                         "mcc_diff": figures([x for f in folds for x in per[b][f]])["mcc"]
                         - figures([x for f in folds for x in per[a][f]])["mcc"],
                         "mcc_diff_90": [boots[int(0.05 * boot)], boots[int(0.95 * boot) - 1]]}
    return out


def report(scheme, backbone, seed, results, hotkeys):
    print(f"\n== {scheme}: backbone {backbone}, eval seed {seed}, levels 0-3 drawn per image ==")
    print(f"{'hotkey':<10} {'n':>5} {'accuracy':>9} {'MCC':>7} {'reward':>7} {'model ms':>9}  tp fp tn fn")
    summary = {}
    for h in hotkeys:
        rs = [r for r in results[h] if r["street"]]
        f = figures([(r["prediction"], r["label"] == 1) for r in rs])
        ms = sum(r["model_ms"] for r in rs) / max(1, len(rs))
        c = f["confusion"]
        print(f"{h:<10} {f['n']:>5} {f['accuracy']:>9.3f} {f['mcc']:>7.3f} {f['reward']:>7.3f} {ms:>9.1f}  "
              f"{c['tp']} {c['fp']} {c['tn']} {c['fn']}")
        summary[h] = dict(f, model_ms=ms)
        if any(not r["street"] for r in results[h]):
            fa = figures([(r["prediction"], r["label"] == 1) for r in results[h]])
            print(f"{'':<10} all images incl. web cone photos: n {fa['n']} accuracy {fa['accuracy']:.3f} MCC {fa['mcc']:.3f}")
            summary[h]["all"] = fa
    print("per source (street-level; accuracy, and MCC where the source has both classes):")
    sources = sorted({r["source"] for r in results[hotkeys[0]]})
    print(f"  {'source':<26} {'n':>4} {'pos':>4}  " + "  ".join(f"{h:>16}" for h in hotkeys))
    per_source = {}
    for s in sources:
        cells = []
        for h in hotkeys:
            rs = [r for r in results[h] if r["source"] == s]
            f = figures([(r["prediction"], r["label"] == 1) for r in rs])
            both = 0 < f["confusion"]["tp"] + f["confusion"]["fn"] < f["n"]
            cells.append(f"{f['accuracy']:.3f}" + (f" / {f['mcc']:+.2f}" if both else "        "))
            per_source.setdefault(s, {})[h] = f
        rs0 = [r for r in results[hotkeys[0]] if r["source"] == s]
        print(f"  {s:<26} {len(rs0):>4} {sum(r['label'] for r in rs0):>4}  " + "  ".join(f"{c:>16}" for c in cells))
    print("per level (street-level):")
    per_level = {}
    for lv in range(4):
        cells = []
        for h in hotkeys:
            rs = [r for r in results[h] if r["street"] and r["level"] == lv]
            f = figures([(r["prediction"], r["label"] == 1) for r in rs])
            per_level.setdefault(lv, {})[h] = f
            cells.append(f"n {f['n']:>3} acc {f['accuracy']:.3f} MCC {f['mcc']:.3f}")
        print(f"  level {lv}  " + "   ".join(f"{h}: {c}" for h, c in zip(hotkeys, cells)))
    sp = spread({h: [r for r in results[h] if r["street"]] for h in hotkeys}, hotkeys)
    if "paired" in sp:
        p = sp["paired"]
        print(f"{p['hotkeys'][1]} − {p['hotkeys'][0]}: MCC {p['mcc_diff']:+.3f} (90% over folds, bootstrap: "
              f"{p['mcc_diff_90'][0]:+.3f} … {p['mcc_diff_90'][1]:+.3f}); per-fold accuracy difference "
              f"{p['fold_accuracy_diff_mean']:+.3f} ± {p['fold_accuracy_diff_sd']:.3f} (sd)")
    return {"summary": summary, "per_source": per_source, "per_level": per_level, "spread": sp}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--schemes", default="source,city,random")
    ap.add_argument("--backbone", default="dino-embed")
    ap.add_argument("--serve-file", help="the ONNX file the roadwork classifier runs at eval (default: the backbone's own); "
                    "heads are still trained on the backbone's features: e.g. target/models/dinov2_vits14_int8.onnx")
    ap.add_argument("--seeds", default="1", help="eval seeds (augmentation draws of the test images)")
    ap.add_argument("--hotkeys", default="speed,accuracy")
    ap.add_argument("--probe", action="store_true", help="also run the probe hotkey (all evidence, no exits)")
    ap.add_argument("--policies", default=os.path.join(ROOT, "policies"))
    ap.add_argument("--train-args", default=RECIPE)
    ap.add_argument("--folds", type=int, default=5, help="folds of the random scheme")
    ap.add_argument("--fold-seed", type=int, default=7)
    ap.add_argument("--test-all", action="store_true", help="also test the web cone photos where a fold holds them out")
    ap.add_argument("--only-folds", help="comma-separated fold names (a quick look)")
    ap.add_argument("--set", action="append", default=[], help="hotkey:table.key=value")
    ap.add_argument("--cascade", default=CASCADE)
    ap.add_argument("--components", default=COMPONENTS)
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "grouped"))
    ap.add_argument("--json", help="write every table and row here")
    ap.add_argument("--oof", help="write every held-out answer as CSV (hotkey, scheme, seed, fold, source, city, "
                                  "path, level, label, prediction) for `cascade calibrate --scores`")
    a = ap.parse_args()
    a.policies = os.path.abspath(a.policies)
    a.probe_version = 1
    overrides = []
    for s in a.set:
        m = re.fullmatch(r"([\w-]+):([\w.\-\"]+)=(.+)", s)
        if not m:
            sys.exit(f"--set {s!r}: expected hotkey:key.path=value")
        overrides.append(m.groups())
    rows = load_rows()
    hotkeys = [h for h in a.hotkeys.split(",") if h]
    if a.probe:
        hotkeys.append("probe")
    everything = {}
    for seed in [int(s) for s in a.seeds.split(",")]:
        for scheme in a.schemes.split(","):
            res = evaluate(a, rows, scheme, a.backbone, seed, hotkeys, overrides)
            shown = [h for h in hotkeys if h != "probe"] or hotkeys
            tables = report(scheme, a.backbone, seed, res, shown)
            everything[f"{scheme}/seed{seed}"] = {"tables": tables, "rows": res}
    if a.json:
        json.dump(everything, open(a.json, "w"))
    if a.oof:
        write_oof(a.oof, everything)


def write_oof(path, everything):
    """The held-out street-level answers of every scheme and seed, one CSV row each."""
    cols = ["hotkey", "scheme", "seed", "fold", "source", "city", "path", "level", "label", "prediction"]
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for key, v in everything.items():
            scheme, seed = key.split("/seed")
            for hotkey, items in v["rows"].items():
                for r in items:
                    if r.get("street"):
                        w.writerow([hotkey, scheme, seed, r["fold"], r["source"], r["city"], r["rel"], r.get("level", ""),
                                    r["label"], r["prediction"]])
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
