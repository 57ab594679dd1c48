"""Compares `cascade infer` on the Ultralytics exports with their reference decode
(ultralytics_export.py): each reference box (clipped to the image, as Ultralytics does when it
maps boxes back) is matched to a cascade box of the same score (1e-4) and IoU > 0.999.

    python3 ultralytics_compare.py REPO_ROOT    # reads refs.json, inputs.npy and the ONNX files in /tmp/ucmp
"""
import json, os, subprocess, sys
import numpy as np
from PIL import Image
root = sys.argv[1]; d = "/tmp/ucmp"
refs = json.load(open(f"{d}/refs.json")); imgs = np.load(f"{d}/inputs.npy")
for i, im in enumerate(imgs):
    Image.fromarray(im).save(f"{d}/in{i}.png")
env = dict(os.environ, ORT_DYLIB_PATH=f"{root}/target/ort/libonnxruntime.so")
def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0])); iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    u = (a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - ix*iy
    return ix*iy/u if u > 0 else 0
summary = []
for name, r in refs.items():
    if not os.path.exists(f"{d}/{r['file']}"):
        continue
    fmt = {"raw": "yolov8", "e2e": "yolo_end2end", "detr": "detr"}[r["kind"]]
    os.makedirs(f"{d}/{name}", exist_ok=True)
    open(f"{d}/{name}/models.toml", "w").write(f'[[model]]\nname = "m"\nfile = "{d}/{r["file"]}"\nkind = "detector"\ninput = {{ width = 320, height = 320 }}\ndetector = {{ format = "{fmt}", nms_iou = 0.45, max_detections = 100 }}\n')
    matched = total = ours_total = 0
    for i, ref in enumerate(r["images"]):
        conf = float(np.nextafter(np.float32(ref["conf"]), np.float32(1)))
        o = subprocess.run([f"{root}/target/release/cascade", "infer", "--model", "m", "--min-confidence", repr(conf), "--policies", f"{d}/{name}", f"{d}/in{i}.png"], capture_output=True, text=True, env=env)
        if o.returncode:
            print(name, "infer failed:", o.stderr[-300:]); break
        got = json.loads(o.stdout)["result"]
        total += len(ref["boxes"]); ours_total += len(got)
        used = set()
        for b, s, c in zip(ref["boxes"], ref["scores"], ref["classes"]):
            # Ultralytics clips boxes to the image when it maps them back (scale_boxes); so does cascade
            b = [min(max(v, 0.0), 320.0) for v in b]
            for j, g in enumerate(got):
                if j not in used and abs(g["confidence"] - s) < 1e-4 and iou(g["box"], b) > 0.999:
                    used.add(j); matched += 1; break
    summary.append(f"{name} ({fmt}, output {r['output']}): {matched} of {total} reference boxes matched (cascade found {ours_total})")
print("\n".join(summary))
