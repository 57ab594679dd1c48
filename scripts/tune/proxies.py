"""How the shipped hotkeys behave on cheap proxies for what we cannot test offline.

Half of the real challenges are SDXL-generated images (text-to-image, or image-to-image at
strength 0.7 from a real image of the same label); none are available here. These proxies are
not SDXL images and say nothing about accuracy on them; they only show how far the answers
move under the kinds of change generation brings: heavy blur (soft, detail-poor renders),
colour shifts (SDXL's saturated, graded palettes), and small crops upscaled to 224 (detail
invented by upsampling).

For every street-level image (level-0 challenge: centre square, 224×224, JPEG 75) it writes the
original and each proxy, runs `cascade eval --rows` for each hotkey on them (images as read: no
further augmentation), and prints per proxy: accuracy and MCC against the labels, how many
answers change side of 0.5 against the original, and the mean absolute change of the score.
The shipped head was trained on these images: only the changes mean anything, not the accuracy.

Usage: .venv/bin/python scripts/tune/proxies.py [--hotkeys speed,accuracy] [--limit N] [--cascade PATH]
"""

import argparse
import csv
import json
import os
import random
import subprocess
import sys

from PIL import Image, ImageEnhance, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grouped_cv import CASCADE, COMPONENTS, ORT, ROOT, figures, load_rows  # noqa: E402


def level0(img):
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img.resize((224, 224), Image.BILINEAR)


def proxies(img, rng):
    out = {"original": img}
    out["blur"] = img.filter(ImageFilter.GaussianBlur(4))
    # graded, saturated palette: more saturation, a warm cast, more contrast
    warm = ImageEnhance.Color(img).enhance(1.8)
    r, g, b = warm.split()
    warm = Image.merge("RGB", (r.point(lambda v: min(255, int(v * 1.12 + 8))), g, b.point(lambda v: int(v * 0.85))))
    out["colour"] = ImageEnhance.Contrast(warm).enhance(1.3)
    # a cool, desaturated grade
    cool = ImageEnhance.Color(img).enhance(0.5)
    r, g, b = cool.split()
    out["cool"] = Image.merge("RGB", (r.point(lambda v: int(v * 0.85)), g, b.point(lambda v: min(255, int(v * 1.15 + 10)))))
    # a small crop (a quarter of the side, somewhere in the lower two thirds) upscaled
    s = 224 // 3
    x, y = rng.randrange(0, 224 - s), rng.randrange(224 // 3, 224 - s)
    out["small-crop"] = img.crop((x, y, x + s, y + s)).resize((224, 224), Image.BICUBIC)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hotkeys", default="speed,accuracy")
    ap.add_argument("--limit", type=int, default=0, help="at most this many images per source (0: all)")
    ap.add_argument("--cascade", default=CASCADE)
    ap.add_argument("--components", default=COMPONENTS)
    ap.add_argument("--policies", default=os.path.join(ROOT, "policies"))
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "proxies"))
    ap.add_argument("--json")
    a = ap.parse_args()
    rng = random.Random(5)
    rows = [r for r in load_rows() if r["street"]]
    if a.limit:
        kept, seen = [], {}
        for r in rows:
            if seen.get(r["source"], 0) < a.limit:
                kept.append(r)
                seen[r["source"]] = seen.get(r["source"], 0) + 1
        rows = kept
    manifests = {}
    for r in rows:
        img = level0(Image.open(r["path"]).convert("RGB"))
        for kind, p in proxies(img, rng).items():
            d = os.path.join(a.work, kind, r["source"])
            os.makedirs(d, exist_ok=True)
            f = os.path.join(d, os.path.basename(r["path"]).rsplit(".", 1)[0] + ".jpg")
            p.save(f, quality=75)
            manifests.setdefault(kind, []).append((f, r["label"], r["source"]))
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", ORT)
    results = {}
    for kind, items in manifests.items():
        m = os.path.join(a.work, f"{kind}.csv")
        with open(m, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "source"])
            w.writerows(items)
        for h in a.hotkeys.split(","):
            out = os.path.join(a.work, f"{kind}-{h}.jsonl")
            p = subprocess.run([a.cascade, "eval", "--policies", a.policies, "--components", a.components, "--hotkey", h,
                                "--manifest", m, "--json", "--rows", out], capture_output=True, text=True, env=env)
            if p.returncode != 0:
                sys.exit(p.stderr[-3000:])
            results[(kind, h)] = {os.path.basename(os.path.dirname(json.loads(l)["path"])) + "/" +
                                  os.path.basename(json.loads(l)["path"]): json.loads(l) for l in open(out)}
    print(f"{len(rows)} street-level images, level-0 challenges; proxies are not SDXL images (README: nothing was measured on SDXL-generated images)")
    print(f"{'proxy':<12} {'hotkey':<9} {'accuracy':>8} {'MCC':>6} {'flips':>6} {'mean |Δ|':>9} {'share ≥0.5':>10}")
    table = {}
    for (kind, h), res in sorted(results.items()):
        base = results[("original", h)]
        f = figures([(r["prediction"], r["label"] == 1) for r in res.values()])
        flips = sum((r["prediction"] > 0.5) != (base[k]["prediction"] > 0.5) for k, r in res.items() if k in base)
        delta = sum(abs(r["prediction"] - base[k]["prediction"]) for k, r in res.items() if k in base) / max(1, len(res))
        pos = sum(r["prediction"] > 0.5 for r in res.values()) / max(1, len(res))
        table[f"{kind}/{h}"] = {"accuracy": f["accuracy"], "mcc": f["mcc"], "flips": flips, "mean_abs_delta": delta,
                                "positive_share": pos, "n": f["n"]}
        print(f"{kind:<12} {h:<9} {f['accuracy']:>8.3f} {f['mcc']:>6.3f} {flips:>6} {delta:>9.3f} {pos:>10.2f}")
    if a.json:
        json.dump(table, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
