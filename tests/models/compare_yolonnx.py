"""Decode agreement with a reference implementation (a manual check, not part of `make test`):
yolonnx 0.6.2's Ultralytics output parsers (OneToManyParser for YOLOv8/YOLO11 raw heads,
OneToOneParser for end-to-end exports) on the raw ONNX Runtime outputs of the layout fixtures
(tests/models/layout_detectors.py), against cascade's decoded boxes (`cascade infer`), compared
at yolonnx's integer box precision.

    python3 -m venv /tmp/yv && /tmp/yv/bin/pip install yolonnx==0.6.2 onnxruntime==1.31.1 pillow
    /tmp/yv/bin/python tests/models/compare_yolonnx.py "$PWD" "$PWD/target/test-models"
"""
import json, subprocess, sys, os
import numpy as np, onnxruntime as ort
from PIL import Image
from yolonnx.services.detector import OneToManyParser, OneToOneParser
from yolonnx.model import ImgTensor, Size

root, models = sys.argv[1], sys.argv[2]
class Opt:
    conf_threshold = 0.5; iou_threshold = 0.45; shape = (64, 64); nms = False; end2end = False
    names = {0: "cone", 1: "worker", 2: "car"}
agree = total = 0
for rgb in [(240, 120, 20), (40, 200, 60), (30, 60, 200), (150, 140, 135)]:
    img = Image.new("RGB", (64, 64), rgb)
    path = f"/tmp/yref/{'_'.join(map(str, rgb))}.png"; img.save(path)
    x = (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
    for fmt, file, parser in [("yolov8", "det_yolov8.onnx", OneToManyParser()), ("yolo_end2end", "det_e2e.onnx", OneToOneParser())]:
        s = ort.InferenceSession(f"{models}/{file}")
        out = s.run(None, {"input": x})
        res = out[0]
        ref = parser(res if fmt == "yolov8" else res, ImgTensor(scale=Size(1.0, 1.0), data=x), Opt())
        ref = sorted((r.name, round(r.score, 4), (int(r.x), int(r.y), int(r.width), int(r.height))) for r in ref)
        env = dict(os.environ, ORT_DYLIB_PATH=f"{root}/target/ort/libonnxruntime.so")
        reg = f"/tmp/yref/{fmt}"; os.makedirs(reg, exist_ok=True)
        open(f"{reg}/models.toml", "w").write(f'[[model]]\nname = "d"\nfile = "{models}/{file}"\nkind = "detector"\ninput = {{ width = 64, height = 64 }}\ndetector = {{ format = "{fmt}", nms_iou = 0.45 }}\n')
        o = subprocess.run([f"{root}/target/release/cascade", "infer", "--model", "d", "--min-confidence", "0.5", "--policies", reg, path], capture_output=True, text=True, env=env)
        got = json.loads(o.stdout)["result"]
        mine = sorted((d["label"], round(d["confidence"], 4), tuple(int(v) for v in (d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]))) for d in got)
        total += 1; agree += mine == ref
        print(fmt, rgb, "agree" if mine == ref else f"DIFFER\n  ref {ref}\n  got {mine}")
print(f"{agree} of {total} image×layout pairs decode identically to yolonnx")
