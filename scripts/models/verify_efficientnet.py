#!/usr/bin/env python3
"""Check an EfficientNet-Lite0 ONNX model on real street images from roadwork-dev.

    python verify_efficientnet.py MODEL.onnx

Needs numpy, Pillow and onnxruntime. Images come from $CASCADE_SHARED/data/roadwork-dev
(CASCADE_SHARED defaults to /work/shared). Each image below was picked (by eye) because it
shows one ImageNet class plainly; the model must rank that class first. The network is
robust enough that a subtle conversion error still gets most of these right (symmetric
padding fails only the dump truck, BGR input only the Denver street), so every one must pass,
and batch 1 and batch N must agree. Exits 1 on any mismatch.
"""
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

# (path inside roadwork-dev, expected top-1, also expected in the top 5)
CASES = [
    ("tracon/val/images/imh_140_00000000.jpg", 919, ()),            # green "Plastics Rd" sign
    ("tracon/train/images/imh_254_00000000.jpg", 919, ()),          # roadside sign board
    ("tracon/val/images/imh_196_00000000.jpg", 867, ()),            # articulated lorry
    ("tracon/train/images/imh_134_00000000.jpg", 867, ()),          # lorry on a highway
    ("dashcam_mi3lab_workzone/indianapolis_f0495.jpg", 920, ()),    # signal gantry
    ("dashcam_mi3lab_workzone/denver_f0135.jpg", 920, (919,)),      # signals + street signs
    ("dashcam_mi3lab_workzone/chicago_f0195.jpg", 569, (867,)),     # dump truck: nearest class
]
# Names of the street-scene classes only (for the printout; the checks use ids).
NAMES = {407: "ambulance", 468: "cab", 517: "crane", 555: "fire engine", 569: "garbage truck",
         627: "limousine", 637: "mailbox", 654: "minibus", 656: "minivan", 660: "mobile home",
         664: "monitor", 675: "moving van", 703: "park bench", 704: "parking meter",
         717: "pickup", 733: "pole", 734: "police van", 751: "racer", 757: "recreational vehicle",
         779: "school bus", 781: "scoreboard", 803: "snowplow", 829: "streetcar",
         864: "tow truck", 867: "trailer truck", 874: "trolleybus", 908: "wing",
         919: "street sign", 920: "traffic light"}


def preprocess(path):
    """Short side to 256 (bilinear), centre crop 224, RGB, (x/255-0.5)/0.5, NCHW."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)
    left, top = (im.width - 224) // 2, (im.height - 224) // 2
    x = np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32)
    return ((x / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    root = os.path.join(os.environ.get("CASCADE_SHARED", "/work/shared"), "data", "roadwork-dev")
    sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    batch = np.concatenate([preprocess(os.path.join(root, p)) for p, _, _ in CASES])
    failures = 0
    singles = []
    for (path, top1, top5), x in zip(CASES, batch):
        logits, emb = sess.run(["logits", "embedding"], {"input": x[None]})
        assert logits.shape == (1, 1000) and emb.shape == (1, 1280), (logits.shape, emb.shape)
        singles.append(logits[0])
        p = np.exp(logits[0] - logits[0].max())
        p /= p.sum()
        best = np.argsort(-p)[:5]
        ok = best[0] == top1 and set(top5) <= set(best)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {path}: expected {top1} {NAMES.get(top1, '')}"
              f"{f' + {list(top5)} in top 5' if top5 else ''}")
        print("       top-5: " + ", ".join(f"{i} {NAMES.get(i, '?')} {p[i]:.2f}" for i in best))
    # The batch dimension is dynamic: one run over all images must match the single runs.
    batched, _ = sess.run(["logits", "embedding"], {"input": batch})
    diff = float(np.abs(batched - np.stack(singles)).max())
    batch_ok = diff < 1e-3
    print(f"{'ok  ' if batch_ok else 'FAIL'} batch of {len(CASES)} vs single runs: max |diff| {diff:.2e}")
    failures += not batch_ok
    print(f"{len(CASES) + 1 - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
