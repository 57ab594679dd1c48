#!/usr/bin/env python3
"""Record what subnet 72's validator augmentation really does, as a fixture for the Rust port.

For a dozen images of the shared data sets and each augmentation level 0-3 (fixed seeds), this
runs the reference `apply_augmentation_by_level` (from ../shared/reference/streetvision-subnet,
imported, not copied), then what `natix.protocol.prepare_synapse` does with the result
(`ToPILImage`, JPEG at PIL's defaults), decodes that JPEG and records the draws and pixel
statistics. No image goes into the fixture: file names relative to the shared data folder, the
params the reference drew, and statistics. `offline/src/augment/` replays each case
through the port and compares (`cargo test --release -p cascade-offline --lib augment`).

Needs torch, torchvision, opencv-python-headless, numpy and pillow, in a throw-away venv:

    python3 -m venv /tmp/ref-venv
    /tmp/ref-venv/bin/pip install torch torchvision opencv-python-headless numpy pillow
    /tmp/ref-venv/bin/python scripts/tune/augment_reference.py

Options: --shared DIR (default ../shared beside the repository), --out FILE (default
tests/fixtures/augment_reference.json).
"""

import argparse
import contextlib
import io
import json
import os
import random
import sys
import types

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Twelve images of different sizes and shapes (landscape, portrait, square, smaller than 256,
# night), relative to the shared data folder.
IMAGES = [
    "roadwork-more/gtsdb_germany/gtsdb_00029.jpg",
    "roadwork-more/camvid_uk/0001TP_006690.jpg",
    "roadwork-more/pranav_au_night/video_1032_1.jpg",
    "roadwork-more/kagan94_web_weather/rainy_roads__3753996800_c200b8ec23_b.jpg",
    "roadwork-more/bdd100k_yolop/0ace96c3-48481887.jpg",
    "roadwork-more/cityscapes_pix2pix/train_354.jpg",
    "roadwork-dev/tracon/train/images/cone_1.jpg",
    "roadwork-dev/tracon/train/images/cone_101.jpg",
    "roadwork-dev/tracon/train/images/cone_102.jpg",
    "roadwork-dev/tracon/train/images/cone_18.jpg",
    "roadwork-dev/dashcam_mi3lab_workzone/boston_f0135.jpg",
    "roadwork-dev/udacity_carnd_mit/Advanced-Lane-Lines__straight_lines2.jpg",
]

# A pixel whose brightest channel is at most this is "near black" (rotation corners after JPEG).
NEAR_BLACK = 16
# Luma means over a GRID×GRID layout: a coarse fingerprint of where things are (rotation
# direction, crop position), which whole-image statistics cannot see.
GRID = 3
SEED_BASE = 1000


def import_reference(shared):
    sys.path.insert(0, os.path.join(shared, "reference", "streetvision-subnet"))
    # The reference copy leaves out natix/validator/config.py; the subnet's value is 224x224
    # (docs/protocol.md), and nothing else of it is used here.
    cfg = types.ModuleType("natix.validator.config")
    cfg.TARGET_IMAGE_SIZE = (224, 224)
    sys.modules.setdefault("natix.validator.config", cfg)
    from natix.utils import image_transforms

    return image_transforms


def capture_composes(it):
    """Wrap the reference's transform builders so the pipeline built for a call can be read
    afterwards: the distortions' strengths are never recorded in `tforms.params` (every
    distortion shares one class name and none has a `params` attribute)."""
    built = []
    for name in ["get_base_transforms", "get_random_augmentations", "get_random_augmentations_medium",
                 "get_random_augmentations_hard"]:
        original = getattr(it, name)

        def wrapper(*args, _original=original, **kwargs):
            t = _original(*args, **kwargs)
            built.append(t)
            return t

        setattr(it, name, wrapper)
    return built


def as_sent(tensor):
    """What `prepare_synapse` sends, decoded again: ToPILImage, JPEG at PIL's defaults."""
    buf = io.BytesIO()
    transforms.ToPILImage()(tensor.cpu().detach()).save(buf, format="JPEG")
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def stats(arr, level0):
    a = arr.astype(np.float64)
    h, w, _ = a.shape
    luma = a @ np.array([0.299, 0.587, 0.114])
    grid = [round(float(luma[h * r // GRID:h * (r + 1) // GRID, w * c // GRID:w * (c + 1) // GRID].mean()), 1)
            for r in range(GRID) for c in range(GRID)]
    return {
        "mean": [round(float(v), 2) for v in a.mean(axis=(0, 1))],
        "std": [round(float(v), 2) for v in a.std(axis=(0, 1))],
        "mad_level0": round(float(np.abs(a - level0).mean()), 2),
        "near_black": round(float((arr.max(axis=2) <= NEAR_BLACK).mean()), 5),
        "grid_luma": grid,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "augment_reference.json"))
    a = ap.parse_args()

    it = import_reference(a.shared)
    built = capture_composes(it)
    data = os.path.join(a.shared, "data")
    cases = []
    coverage = {}
    for n, rel in enumerate(IMAGES):
        img = Image.open(os.path.join(data, rel))
        level0 = None
        entry = {"image": rel, "size": list(img.size), "levels": []}
        cases.append(entry)
        for level in range(4):
            seed = SEED_BASE + 10 * n + level
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            built.clear()
            probs = {level: 1.0}  # the reference's own level choice, forced
            with contextlib.redirect_stdout(sys.stderr):  # RandomResizedCropWithParams prints
                out, got, params = it.apply_augmentation_by_level(img, (224, 224), None, level_probs=probs)
            assert got == level and len(built) == 1
            arr = as_sent(out)
            if level == 0:
                level0 = arr.astype(np.float64)
            case = {"level": level, "seed": seed}
            rot = params.get("RandomRotationWithParams")
            crop = params.get("RandomResizedCropWithParams")
            if rot is not None:
                case["angle"] = round(float(rot["angle"]), 6)
                case["crop"] = [int(v) for v in crop["crop_params"]]  # (top, left, height, width)
                # the flips' params are recorded empty, and empty means "don't flip": never flipped
                flips = [params["RandomHorizontalFlipWithParams"], params["RandomVerticalFlipWithParams"]]
                assert flips == [{}, {}], flips
            dist = {t.distortion_type: int(t.level) for t in built[0].transforms
                    if isinstance(t, it.ApplyDeeperForensicsDistortion)}
            if dist:
                case["distortions"] = dist
                for k, v in dist.items():
                    coverage[(level, k, v)] = coverage.get((level, k, v), 0) + 1
            case["stats"] = stats(arr, level0)
            entry["levels"].append(case)
            print(f"{rel} level {level}: {case.get('angle', '')} {case.get('crop', '')} {dist or ''}", file=sys.stderr)

    fixture = {
        "about": "scripts/tune/augment_reference.py: the subnet's apply_augmentation_by_level, ToPILImage, "
                 "JPEG at PIL defaults, decoded; statistics of the decoded 224x224 image",
        "reference": "natixnetwork/streetvision-subnet@28a1755 (shared/reference/streetvision-subnet)",
        "versions": {
            "torch": torch.__version__, "torchvision": __import__("torchvision").__version__,
            "opencv": __import__("cv2").__version__, "numpy": np.__version__,
            "pillow": Image.__version__, "python": sys.version.split()[0],
        },
        "flips": "recorded as {} in every level 1-3 case (asserted): never applied",
        "near_black_max": NEAR_BLACK,
        "grid": GRID,
        "images": cases,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        # one case a line: small, and diffs stay readable
        f.write("{\n")
        for k, v in fixture.items():
            if k != "images":
                f.write(f"  {json.dumps(k)}: {json.dumps(v)},\n")
        f.write('  "images": [\n')
        f.write(",\n".join(
            "    {" + f'"image":{json.dumps(c["image"])},"size":{json.dumps(c["size"])},"levels":[\n      '
            + ",\n      ".join(json.dumps(x, separators=(",", ":")) for x in c["levels"]) + "]}"
            for c in cases))
        f.write("\n  ]\n}\n")
    print(f"wrote {a.out}: {4 * len(cases)} cases, {os.path.getsize(a.out)} bytes", file=sys.stderr)
    for (level, k, v), count in sorted(coverage.items()):
        print(f"  level {level} {k}={v}: {count}", file=sys.stderr)


if __name__ == "__main__":
    main()
