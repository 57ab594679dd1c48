"""OCR and classifier speed against the Python reference, same machine, same models, same run.

- OCR: `cascade infer --model ocr` (the Rust pipeline) vs rapidocr-onnxruntime 1.4.4 (the Python
  reference shipping the same PP-OCRv4 files), on validator-sized 224x224 images and on
  real-size photos, with the reference's own settings on both sides (detector short side 736,
  orientation classifier on). Reports median ms per image and whether the text matches.
- Classifier: `cascade infer --model roadwork` (EfficientNet-Lite0 + head) vs onnxruntime Python
  on the same ONNX file with the same pre-processing (short side 256, centre crop 224).

Needs `make setup`. Creates .cache/bench-venv (rapidocr-onnxruntime and its deps) on first use.
Usage: python bench/ocr_vs_rapidocr.py [--repeat 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("CASCADE_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
VENV = os.path.join(ROOT, ".cache", "bench-venv")
CASCADE = os.path.join(ROOT, "target", "release", "cascade")


def ensure_venv():
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([py, "-m", "pip", "install", "--quiet", "rapidocr-onnxruntime==1.4.4", "onnxruntime==1.31.1", "pillow"])
    return py


WORKER = r'''
import json, sys, time, statistics
import numpy as np
from PIL import Image
from rapidocr_onnxruntime import RapidOCR
import onnxruntime as ort
paths, repeat, eff = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
engine = RapidOCR()
out = {"ocr": {}, "cls": {}}
import cv2
for p in paths["ocr"]:
    times = []
    img = cv2.imread(p)  # decoded once: both sides are timed from pixels to text
    for _ in range(repeat):
        t = time.perf_counter(); res, _ = engine(img); times.append((time.perf_counter() - t) * 1e3)
    out["ocr"][p] = {"ms": statistics.median(times), "text": [r[1] for r in (res or [])]}
sess = ort.InferenceSession(eff, providers=["CPUExecutionProvider"])
for p in paths["cls"]:
    times = []
    src = Image.open(p).convert("RGB")
    for _ in range(repeat):
        t = time.perf_counter()
        im = src
        w, h = im.size; s = 256 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = im.size; l, u = (w - 224) // 2, (h - 224) // 2
        x = (np.asarray(im.crop((l, u, l + 224, u + 224)), dtype=np.float32) / 255 - 0.5) / 0.5
        sess.run(["embedding"], {"input": x.transpose(2, 0, 1)[None]})
        times.append((time.perf_counter() - t) * 1e3)
    out["cls"][p] = {"ms": statistics.median(times)}
print(json.dumps(out))
'''


def cascade_infer(policies, model, paths, repeat):
    p = subprocess.run([CASCADE, "infer", "--policies", policies, "--model", model, "--repeat", str(repeat), *paths],
                       capture_output=True, text=True, check=True)
    return {j["image"]: j for j in map(json.loads, p.stdout.splitlines())}


def squash(lines):
    return "".join("".join(lines).split()).upper()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    py = ensure_venv()
    signs = os.path.join(ROOT, "target", "test-images")
    small = sorted(os.path.join(signs, f) for f in os.listdir(signs))
    dash = os.path.join(SHARED, "data", "roadwork-dev", "dashcam_mi3lab_workzone")
    large = [os.path.join(dash, f) for f in ["charlotte_f0075.jpg", "houston_f0195.jpg", "chicago_f0435.jpg", "detroit_f0435.jpg"]]
    import re
    shipped_short = re.search(r"det_short = (\d+)", open(os.path.join(ROOT, "policies", "models.toml")).read()).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        models = os.path.join(ROOT, "target", "models")
        with open(os.path.join(tmp, "models.toml"), "w") as f:
            f.write(f'''
[[model]]
name = "ocr"
kind = "ocr"
file = "{models}/ocr/ch_PP-OCRv4_det_infer.onnx"
threads = 2
ocr = {{ rec = "{models}/ocr/ch_PP-OCRv4_rec_infer.onnx", cls = "{models}/ocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", det_short = 736, det_max = 100000, box_thresh = 0.5, min_confidence = 0.5 }}

[[model]]
name = "ocr-shipped"
kind = "ocr"
file = "{models}/ocr/ch_PP-OCRv4_det_infer.onnx"
threads = 2
ocr = {{ rec = "{models}/ocr/ch_PP-OCRv4_rec_infer.onnx", cls = "{models}/ocr/ch_ppocr_mobile_v2.0_cls_infer.onnx", det_short = {shipped_short}, box_thresh = 0.5, min_confidence = 0.5 }}

[[model]]
name = "roadwork"
kind = "classifier"
file = "{models}/efficientnet_lite0.onnx"
output = "embedding"
head = "{ROOT}/policies/heads/roadwork-effnet.json"
activation = "sigmoid"
labels = ["other", "roadwork"]
input = {{ width = 224, height = 224, resize = "center_crop", resize_short = 256, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }}
threads = 2
''')
        ours_ocr = cascade_infer(tmp, "ocr", small + large, a.repeat)
        shipped = cascade_infer(tmp, "ocr-shipped", small + large, a.repeat)
        ours_cls = cascade_infer(tmp, "roadwork", small + large, a.repeat)
    ref = json.loads(subprocess.run([py, "-c", WORKER, json.dumps({"ocr": small + large, "cls": small + large}), str(a.repeat),
                                     os.path.join(ROOT, "target", "models", "efficientnet_lite0.onnx")],
                                    capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    for label, mine in [("reference settings (detector short side 736)", ours_ocr), (f"shipped settings (detector short side {shipped_short})", shipped)]:
        print(f"\nOCR, cascade with the {label} vs rapidocr defaults; median of {a.repeat} runs per image (ms)")
        print(f"| {'image':<28} | {'size':>9} | {'cascade':>8} | {'rapidocr':>8} | {'speed-up':>8} | same text | cascade text")
        print(f"|{'-'*30}|{'-'*11}|{'-'*10}|{'-'*10}|{'-'*10}|-----------|-------------")
        groups = {"224x224": [], "photo": []}
        for p in small + large:
            o, r = mine[p], ref["ocr"][p]
            text = [l["text"] for l in o["result"]]
            same = squash(text) == squash(r["text"])
            size = "224x224" if p in small else "photo"
            groups[size].append((o["ms"], r["ms"], same))
            print(f"| {os.path.basename(p):<28} | {size:>9} | {o['ms']:>8.1f} | {r['ms']:>8.1f} | {r['ms'] / o['ms']:>7.2f}x | {'yes' if same else 'NO ':>9} | {' '.join(text)[:40]}"
                  + ("" if same else f"  (rapidocr: {' '.join(r['text'])[:40]})"))
        for g, rows in groups.items():
            ours, theirs = statistics.median(x[0] for x in rows), statistics.median(x[1] for x in rows)
            print(f"OCR {g}: cascade {ours:.1f} ms, rapidocr {theirs:.1f} ms, {theirs / ours:.2f}x; same text on {sum(x[2] for x in rows)}/{len(rows)}")
    ours = statistics.median(ours_cls[p]["ms"] for p in small + large)
    theirs = statistics.median(ref["cls"][p]["ms"] for p in small + large)
    print(f"classifier, pre-processing + inference, decode excluded on both sides: cascade {ours:.1f} ms, onnxruntime-python {theirs:.1f} ms per image")


if __name__ == "__main__":
    main()
