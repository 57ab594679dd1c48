"""One retrain, end to end: data -> a new roadwork model -> evaluation -> tuned thresholds -> a
hotkey file with the new policy as a canary candidate -> a report to read before letting it run.

    .venv/bin/python scripts/train/retrain.py --policies policies --hotkey speed \\
        --manifest ../shared/data/roadwork-dev/manifest.csv [--manifest ...] [--logged hard/labelled.csv] \\
        --eval-manifest held-out.csv --work retrain/ [--dataset data/validator [--dataset-from SHARDS]] \\
        [--finetune "--unfreeze 4 --epochs 6"] [--backbone dino-embed] [--model roadwork] [--levels 0-3]

Steps (each prints what it did; any failure stops the run and names the step):
1. data: `--dataset OUT` runs `scripts/data/validator_dataset.py` into OUT (downloading the
   validators' dataset, or extracting `--dataset-from` shards) unless OUT/manifest.csv exists,
   and trains on it too; `--logged` adds labelled logged challenges (`cascade log export`,
   labels filled in), used as read. An evaluation manifest that shares images with the
   training data (by content) is refused with the count.
2. train: a new head on the registry's `--backbone` (`cascade train-head`, the shipped recipe:
   levels 0-3, 3 views, Platt step, L2 0.2), or with `--finetune ARGS` a fine-tuned backbone and
   head (`scripts/train/finetune.py` in the training venv), as a new registry model
   `<model>-next` beside the live one.
3. candidate: the hotkey's own policy on `<model>-next` (`WORK/candidate/`, checked with
   `cascade check`), its exit thresholds and weights tuned leave-one-source-out on the training
   data (`cascade tune`, frontier SVG).
4. evaluate: the live hotkey and the tuned candidate on the evaluation manifest through `cascade
   eval --levels` (the validators' draws, the same seed for both): per level, per group, the
   confusion, each image's score.
5. write: `WORK/policies/` = the live registry plus `<model>-next`, and the live hotkey file
   with `[candidate]` (the tuned policy) and a canary `[rollout]` that holds at its last step
   until a labelled replay (`cascade replay --labels --json > replay.json`) shows the candidate
   at least as good (`evidence`); `cascade check` must accept the folder. Copy its two files
   into the live policies folder to start the canary (a live reload).
6. report: `WORK/report.html` (per-level MCC with intervals for both arms, per-group accuracy,
   reliability diagrams, confusion matrices, the frontier) and `WORK/report.json`.

The candidate answers uncalibrated scores: a hotkey calibration records the heads it was
fitted on, and the new head has none yet; fit one with `cascade calibrate` on the canary's
labelled answers before promoting (README, "Under the validators' distortions").
"""

import argparse
import html
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import manifests  # noqa: E402


class RetrainError(Exception):
    pass


def say(msg):
    print(f"[retrain] {msg}", flush=True)


def step(n, title):
    print(f"\n== {n}. {title}", flush=True)


def run(cmd, what, capture=True):
    r = subprocess.run([str(c) for c in cmd], capture_output=capture, text=True)
    if r.returncode != 0:
        tail = ((r.stderr or "") + (r.stdout or "")).strip()[-1500:]
        raise RetrainError(f"{what} failed (exit {r.returncode}): {tail}")
    return r.stdout or ""


# ---------------------------------------------------------------- data


# ---------------------------------------------------------------- registry and hotkey edits


def absolute_paths(text, base):
    """A registry's relative file paths made absolute (it is copied to another folder)."""
    def fix(m):
        key, val = m.group(1), m.group(2)
        return f'{key} = "{val if os.path.isabs(val) else os.path.normpath(os.path.join(base, val))}"'
    return re.sub(r'^(file|hf|head|labels_file)\s*=\s*"([^"]+)"', fix, text, flags=re.M)


def inline_paths(text, base):
    """Inline-table paths (`ocr = { rec = "..." }`) made absolute too."""
    def fix(m):
        key, val = m.group(1), m.group(2)
        return f'{key} = "{val if os.path.isabs(val) else os.path.normpath(os.path.join(base, val))}"'
    return re.sub(r'\b(rec|cls)\s*=\s*"([^"]+)"', fix, text)


def model_block(text, name):
    m = re.search(r'\[\[model\]\]\s*\nname\s*=\s*"' + re.escape(name) + r'"\n.*?(?=\n\[\[model\]\]|\Z)', text, re.S)
    if not m:
        raise RetrainError(f"the registry has no model {name!r}")
    return m.group(0)


def rename_models(hotkey_text, old, new):
    """The hotkey's policy on `new` instead of `old`: classify lists and fuser weight keys."""
    t = hotkey_text.replace(f'"{old}"', f'"{new}"').replace(f'"{old}:', f'"{new}:')
    t = re.sub(r'(?<=[{,\s])' + re.escape(old) + r'(?=\s*=)', f'"{new}"', t)
    return t


def drop_table(text, name):
    """`text` without the table `[name]` (and its sub-tables): from its header to the next
    header that is not one of its own."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        head = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?", line)
        if head:
            key = head.group(1)
            skipping = key == name or key.startswith(name + ".")
        if not skipping:
            out.append(line)
    return "".join(out)


def inline(v):
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {inline(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(inline(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


# ---------------------------------------------------------------- report


def mcc_of(rows):
    tp = sum(1 for r in rows if r["label"] == 1 and r["prediction"] > 0.5)
    tn = sum(1 for r in rows if r["label"] == 0 and r["prediction"] <= 0.5)
    fp = sum(1 for r in rows if r["label"] == 0 and r["prediction"] > 0.5)
    fn = sum(1 for r in rows if r["label"] == 1 and r["prediction"] <= 0.5)
    d = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / d if d else 0.0, {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


def read_rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def svg_levels(evals):
    """Per-level MCC with 95 % intervals, one colour per arm."""
    levels = sorted({lv for e in evals.values() for lv in e["per_level"]})
    w, h, pad = 120 + 90 * len(levels), 220, 30
    colours = {"live": "#888", "candidate": "#d2691e"}
    y = lambda v: h - pad - (v + 1) / 2 * (h - 2 * pad)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<line x1="40" y1="{y(0)}" x2="{w - 10}" y2="{y(0)}" stroke="#ccc"/>',
           f'<text x="5" y="{y(1) + 4}">1</text><text x="5" y="{y(0) + 4}">0</text><text x="5" y="{y(-1) + 4}">-1</text>']
    for i, lv in enumerate(levels):
        x0 = 60 + 90 * i
        out.append(f'<text x="{x0 + 10}" y="{h - 8}">level {lv}</text>')
        for j, (arm, e) in enumerate(evals.items()):
            g = e["per_level"].get(lv)
            if not g:
                continue
            x = x0 + 10 + 25 * j
            m = g["mcc"]
            out.append(f'<rect class="bar {arm}" x="{x}" y="{min(y(m), y(0))}" width="20" height="{abs(y(m) - y(0))}" '
                       f'fill="{colours[arm]}"><title>{arm} level {lv}: MCC {m:.3f}</title></rect>')
            ci = g.get("ci95", {}).get("mcc") if isinstance(g.get("ci95"), dict) else None
            if ci:
                out.append(f'<line x1="{x + 10}" y1="{y(ci[0])}" x2="{x + 10}" y2="{y(ci[1])}" stroke="#000"/>')
    out.append(f'<text x="{w - 150}" y="14" fill="#888">live</text><text x="{w - 110}" y="14" fill="#d2691e">candidate</text>')
    out.append("</svg>")
    return "\n".join(out)


def svg_reliability(rows, arm, bins=10):
    """Observed share of roadwork against the mean score, per score decile."""
    s, pad = 220, 30
    pts = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = [r for r in rows if lo <= r["prediction"] < hi or (b == bins - 1 and r["prediction"] == 1.0)]
        if sel:
            pts.append((sum(r["prediction"] for r in sel) / len(sel), sum(r["label"] for r in sel) / len(sel), len(sel)))
    xy = lambda px, py: (pad + px * (s - 2 * pad), s - pad - py * (s - 2 * pad))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="reliability {arm}" width="{s}" height="{s}" '
           'font-family="sans-serif" font-size="11">',
           f'<line x1="{pad}" y1="{s - pad}" x2="{s - pad}" y2="{pad}" stroke="#ccc"/>',
           f'<text x="{pad}" y="14">{arm}: share of roadwork by score</text>']
    for px, py, n in pts:
        cx, cy = xy(px, py)
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{2 + min(8, math.sqrt(n))}" fill="#d2691e" fill-opacity="0.6">'
                   f'<title>score {px:.2f}: {py:.2f} roadwork of {n}</title></circle>')
    out.append("</svg>")
    return "\n".join(out)


def confusion_table(c, arm):
    return (f'<table class="confusion {arm}"><tr><th>{arm}</th><th>answered roadwork</th><th>answered none</th></tr>'
            f'<tr><th>roadwork</th><td>{c["tp"]}</td><td>{c["fn"]}</td></tr>'
            f'<tr><th>none</th><td>{c["fp"]}</td><td>{c["tn"]}</td></tr></table>')


def fmt(v):
    return "— (one class)" if v is None else f"{v:.3f}"


def write_report(work, evals, rows, tune_text, frontier):
    groups = sorted({r["source"] for rs in rows.values() for r in rs})
    def group_mcc(rs):
        # a group of one class has no MCC (its accuracy says how it went)
        return mcc_of(rs)[0] if len({r["label"] for r in rs}) == 2 else None

    per_group = {arm: {g: group_mcc([r for r in rs if r["source"] == g]) for g in groups} for arm, rs in rows.items()}
    acc = lambda rs: sum((r["prediction"] > 0.5) == (r["label"] == 1) for r in rs) / max(1, len(rs))
    report = {
        arm: {"mcc": e["mcc"], "ci95": e.get("ci95"), "accuracy": e["accuracy"], "confusion": e["confusion"],
              "per_level": {lv: {"n": g["n"], "mcc": g["mcc"], "ci95": g.get("ci95")} for lv, g in e["per_level"].items()},
              "per_group": {g: {"n": sum(1 for r in rows[arm] if r["source"] == g),
                                "accuracy": acc([r for r in rows[arm] if r["source"] == g]),
                                "mcc": per_group[arm][g]} for g in groups},
              "model_ms_per_request": e["model_ms_per_request"]}
        for arm, e in evals.items()
    }
    with open(os.path.join(work, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>cascade retrain report</title>",
         "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}</style></head><body>",
         "<h1>Retrain report</h1>",
         "<p>Both arms answered the evaluation images through <code>cascade eval</code> with the validators' "
         "augmentation levels drawn per image (same seed). Read the per-level figures and their intervals: a "
         "candidate that is not better outside the intervals is not evidence. The canary promotes only on a "
         "labelled replay of real traffic (<code>evidence</code>).</p>",
         "<h2>MCC per level (95 % intervals)</h2>", svg_levels(evals),
         "<table><tr><th>arm</th><th>MCC</th><th>accuracy</th><th>model ms / request</th></tr>"]
    for arm, e in evals.items():
        h.append(f"<tr><th>{arm}</th><td>{e['mcc']:.3f}</td><td>{e['accuracy']:.3f}</td>"
                 f"<td>{e['model_ms_per_request']:.1f}</td></tr>")
    h.append("</table><h2>Per group</h2><table><tr><th>group</th>" +
             "".join(f"<th>{arm} accuracy</th><th>{arm} MCC</th>" for arm in evals) + "</tr>")
    for g in groups:
        h.append(f"<tr><th>{html.escape(g)}</th>" + "".join(
            f"<td>{report[arm]['per_group'][g]['accuracy']:.3f}</td><td>{fmt(report[arm]['per_group'][g]['mcc'])}</td>"
            for arm in evals) + "</tr>")
    h.append("</table><h2>Reliability</h2>" + "".join(svg_reliability(rows[arm], arm) for arm in evals))
    h.append("<h2>Confusion</h2>" + "".join(confusion_table(e["confusion"], arm) for arm, e in evals.items()))
    h.append("<h2>Cost and accuracy of the candidate's settings</h2>")
    if frontier and os.path.exists(frontier):
        with open(frontier) as f:
            h.append(f.read())
    h.append(f"<pre>{html.escape(tune_text[-4000:])}</pre></body></html>")
    with open(os.path.join(work, "report.html"), "w") as f:
        f.write("\n".join(h))
    return report


# ---------------------------------------------------------------- the run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", required=True, help="the live policies folder (hotkey files, models.toml)")
    p.add_argument("--hotkey", required=True)
    p.add_argument("--manifest", action="append", default=[], help="training manifests (repeat)")
    p.add_argument("--logged", action="append", default=[], help="labelled exports of logged challenges")
    p.add_argument("--eval-manifest", required=True, help="held-out images to compare the arms on")
    p.add_argument("--work", required=True, help="output folder (replaced)")
    p.add_argument("--dataset", help="the validators' dataset folder (scripts/data/validator_dataset.py --out)")
    p.add_argument("--dataset-from", help="extract shards already on disk into --dataset")
    p.add_argument("--dataset-args", default="", help="more arguments for validator_dataset.py")
    p.add_argument("--model", default="roadwork", help="the registry classifier to retrain")
    p.add_argument("--backbone", default="dino-embed", help="the embedder the head is trained on")
    p.add_argument("--train-args", default="--levels 0-3 --views 3 --calibrate --l2 0.2", help="train-head arguments")
    p.add_argument("--finetune", help="fine-tune instead (arguments for scripts/train/finetune.py)")
    p.add_argument("--finetune-backbone", default=os.path.join(ROOT, "target", "models", "dinov2_vits14_hf"))
    p.add_argument("--levels", default="0-3")
    p.add_argument("--seed", type=int, default=72)
    p.add_argument("--space", help="tune's space file")
    p.add_argument("--max-ms", help="tune's model-time limit per request")
    p.add_argument("--components", help="components folder (cascade's --components)")
    p.add_argument("--cascade", default=os.path.join(ROOT, "target", "release", "cascade"))
    a = p.parse_args(argv)
    try:
        retrain(a)
        return 0
    except (RetrainError, manifests.ManifestError) as e:
        print(f"[retrain] error: {e}", file=sys.stderr)
        return 2


def retrain(a):
    C = a.cascade
    comps = ["--components", a.components] if a.components else []
    pol = os.path.abspath(a.policies)
    hk_file = os.path.join(pol, f"{a.hotkey}.toml")
    if not os.path.exists(hk_file):
        raise RetrainError(f"{hk_file} does not exist")
    registry = open(os.path.join(pol, "models.toml")).read()
    model_block(registry, a.model)
    work = os.path.abspath(a.work)
    if os.path.exists(work):
        shutil.rmtree(work)
    for d in ("candidate", "policies", "eval"):
        os.makedirs(os.path.join(work, d))
    nxt = f"{a.model}-next"

    step(1, "data")
    train = list(a.manifest)
    if a.dataset:
        if not os.path.exists(os.path.join(a.dataset, "manifest.csv")):
            cmd = [os.path.join(ROOT, ".venv", "bin", "python"), os.path.join(ROOT, "scripts", "data", "validator_dataset.py"),
                   "--out", a.dataset] + (["--from", a.dataset_from] if a.dataset_from else []) + shlex.split(a.dataset_args)
            out = run(cmd, "the validators' dataset").strip()
            say(out.splitlines()[-1] if out else "dataset extracted")
        train.append(os.path.join(a.dataset, "manifest.csv"))
    train += a.logged
    if not train:
        raise RetrainError("no training data: pass --manifest, --dataset or --logged")
    manifests.refuse_shared([p for m in train for p in manifests.paths(m) if os.path.exists(p)],
                            [p for p in manifests.paths(a.eval_manifest) if os.path.exists(p)], "the training data")
    say(f"training on {', '.join(train)}; evaluating on {a.eval_manifest}")

    step(2, "train")
    cand = os.path.join(work, "candidate")
    reg = inline_paths(absolute_paths(registry, pol), pol)
    if a.finetune:
        ft = os.path.join(work, "finetuned")
        py = os.path.join(ROOT, ".cache", "train-venv", "bin", "python")
        cmd = [py, os.path.join(HERE, "finetune.py"), "--backbone", a.finetune_backbone, "--out", ft,
               "--levels", a.levels, "--seed", str(a.seed), "--cascade", C] + shlex.split(a.finetune)
        for m in train:
            cmd += ["--manifest", m]
        print(run(cmd, "fine-tuning"))
        block = open(os.path.join(ft, "models.toml")).read()
        block = block.replace('name = "roadwork-ft"', f'name = "{nxt}"')
        block = inline_paths(absolute_paths(block, ft), ft)
    else:
        head = os.path.join(work, "policies", f"{nxt}.head.json")
        cmd = [C, "train-head", "--policies", pol, "--backbone", a.backbone, "--out", head, "--seed", str(a.seed)]
        cmd += shlex.split(a.train_args)
        for m in train:
            cmd += ["--manifest", m]
        out = run(cmd, "train-head")
        say(out.strip().splitlines()[-1] if out.strip() else "head trained")
        block = model_block(reg, a.model).replace(f'name = "{a.model}"', f'name = "{nxt}"', 1)
        block = re.sub(r'^head\s*=\s*"[^"]+"', f'head = "{head}"', block, flags=re.M)
    reg_next = reg.rstrip() + "\n\n" + block.strip() + "\n"
    with open(os.path.join(cand, "models.toml"), "w") as f:
        f.write(reg_next)

    step(3, "candidate policy, tuned")
    live_text = open(hk_file).read()
    cand_text = rename_models(live_text, a.model, nxt)
    # the calibration records the live heads; the candidate has none yet (see the docstring)
    cand_text = re.sub(r'^calibration\s*=.*\n', "", cand_text, flags=re.M)
    for table in ("log", "candidate", "rollout"):
        cand_text = drop_table(cand_text, table)
    parsed = tomllib.loads(cand_text)
    if f'"{a.model}"' in json.dumps(parsed):
        raise RetrainError(f"the candidate policy still names {a.model!r} after renaming: {a.hotkey}.toml is not one this tool edits")
    with open(os.path.join(cand, f"{a.hotkey}.toml"), "w") as f:
        f.write(cand_text)
    run([C, "check", "--policies", cand] + comps, "check of the candidate policy")
    tuned = os.path.join(work, "tuned.toml")
    frontier = os.path.join(work, "frontier.svg")
    cmd = [C, "tune", "--policies", cand, "--hotkey", a.hotkey, "--levels", a.levels, "--seed", str(a.seed),
           "--out", tuned, "--svg", frontier] + comps
    cmd += (["--space", a.space] if a.space else []) + (["--max-ms", a.max_ms] if a.max_ms else [])
    for m in train:
        cmd += ["--manifest", m]
    tune_text = run(cmd, "tune")
    print(tune_text.strip()[-1200:])
    with open(tuned, "rb") as f:
        candidate = tomllib.load(f).get("candidate")
    if not candidate:
        raise RetrainError(f"tune wrote no [candidate] into {tuned}")

    step(4, "evaluate the live hotkey and the candidate")
    ev = os.path.join(work, "eval")
    with open(os.path.join(ev, "models.toml"), "w") as f:
        f.write(reg_next)
    lines = [f"name = {json.dumps(a.hotkey)}"] + [
        f"{k} = {inline(v)}" for k, v in parsed.items() if not isinstance(v, dict) and k != "name"]
    roles = {k: v for k, v in parsed.items() if isinstance(v, dict)}
    roles.update(candidate)
    for role, cfg in roles.items():
        lines += [f"[{role}]"] + [f"{k} = {inline(v)}" for k, v in cfg.items()]
    with open(os.path.join(ev, f"{a.hotkey}.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    evals, rows = {}, {}
    for arm, folder in (("live", pol), ("candidate", ev)):
        rpath = os.path.join(work, f"{arm}.rows.jsonl")
        out = run([C, "eval", "--policies", folder, "--hotkey", a.hotkey, "--manifest", a.eval_manifest, "--levels",
                   a.levels, "--seed", str(a.seed), "--json", "--rows", rpath] + comps, f"eval of the {arm} arm")
        evals[arm] = json.loads(out.strip().splitlines()[-1])
        rows[arm] = read_rows(rpath)
        e = evals[arm]
        say(f"{arm}: MCC {e['mcc']:.3f}, accuracy {e['accuracy']:.3f} on {e['n']} images; per level " +
            ", ".join(f"{lv} {g['mcc']:.3f}" for lv, g in sorted(e["per_level"].items())))

    step(5, "the hotkey file with the candidate as a canary")
    live_pol = os.path.join(work, "policies")
    with open(os.path.join(live_pol, "models.toml"), "w") as f:
        f.write(reg_next)
    text = drop_table(drop_table(live_text, "candidate"), "rollout").rstrip() + "\n"
    text += "\n# written by scripts/train/retrain.py: the retrained policy as a canary candidate\n[candidate]\n"
    text += "".join(f"{role} = {inline(cfg)}\n" for role, cfg in candidate.items())
    text += ('[rollout]\nmode = "canary"\nsteps = [5, 25, 50]\nmin_requests = 50\nmin_step_s = 600\n'
             'evidence = { report = "replay.json", min_mcc_gain = 0.0, min_labelled = 50 }\n')
    hk_out = os.path.join(live_pol, f"{a.hotkey}.toml")
    with open(hk_out, "w") as f:
        f.write(text)
    # the live calibration (a relative path) beside the hotkey file, as in the live folder
    for line in re.findall(r'^calibration\s*=\s*"([^"]+)"', text, flags=re.M):
        src = os.path.join(pol, line)
        if os.path.exists(src):
            os.makedirs(os.path.dirname(os.path.join(live_pol, line)), exist_ok=True)
            shutil.copy(src, os.path.join(live_pol, line))
    run([C, "check", "--policies", live_pol] + comps, "check of the written policies")
    say(f"wrote {hk_out} and {os.path.join(live_pol, 'models.toml')}: copy both into {pol} to start the canary")

    step(6, "report")
    write_report(work, evals, rows, tune_text, frontier)
    say(f"wrote {os.path.join(work, 'report.html')} and report.json")


if __name__ == "__main__":
    sys.exit(main())
