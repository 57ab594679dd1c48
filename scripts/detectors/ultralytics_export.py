"""Real Ultralytics exports and their reference decode, for the detector decoders (a manual check
run on the GPU machine, where PyTorch is; not part of `make test`).

Builds YOLOv8n, YOLO11n, YOLOv10n (end-to-end) and RT-DETR-l from their model YAMLs (random
weights; the detection head perturbed so that scores vary), exports each with Ultralytics'
own ONNX exporter at 320x320, and decodes their raw outputs on three fixed noise images with
Ultralytics' own post-processing (non_max_suppression for raw heads, the score cut for
end-to-end and RT-DETR). Writes refs.json, inputs.npy and the ONNX files (under 40 MB) to $OUT
and /tmp/ulout. The Ultralytics wheel and the dependencies the machine lacks travel with it:

    pip download --no-deps --python-version 3.12 --only-binary=:all: -d w ultralytics==8.3.200 \
        ultralytics-thop pyyaml requests urllib3 idna certifi charset-normalizer psutil py-cpuinfo \
        matplotlib contourpy cycler fonttools kiwisolver packaging pyparsing python-dateutil six scipy polars
    (there) pip install --no-index --no-deps --target /tmp/ul w/*.whl
    (there) PYTHONPATH=/tmp/ul python3 ultralytics_export.py

Then `ultralytics_compare.py` runs `cascade infer` on the same models and inputs.
"""
import json, os, sys, time
import numpy as np
os.environ.setdefault("YOLO_OFFLINE", "1")
out = os.environ["OUT"]
from ultralytics import YOLO, RTDETR
from ultralytics.utils import ops
from ultralytics.utils.nms import non_max_suppression
import onnxruntime as ort, torch
S = 320
rng = np.random.RandomState(0)
imgs = [rng.randint(0, 255, (S, S, 3), dtype=np.uint8) for _ in range(3)]
np.save(f"{out}/inputs.npy", np.stack(imgs))
refs = {}
for name, cls, kind in [("yolov8n", YOLO, "raw"), ("yolo11n", YOLO, "raw"), ("yolov10n", YOLO, "e2e"), ("rtdetr-l", RTDETR, "detr")]:
    t = time.time()
    try:
        m = cls(f"{name}.yaml")
        # freshly built heads answer constant scores: perturb the detection head so that the
        # outputs vary (random weights, as the decode test needs)
        torch.manual_seed(0)
        with torch.no_grad():
            for prm in m.model.model[-1].parameters():
                prm.add_(0.3 * torch.randn_like(prm))
        f = m.export(format="onnx", imgsz=S, simplify=False, dynamic=False, opset=18, device="cpu")
    except Exception as e:
        print(name, "export failed:", repr(e)[:300]); continue
    sess = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    per = []
    for im in imgs:
        x = (im.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        raw = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        p = torch.from_numpy(raw)
        if kind == "raw":
            # threshold so that a handful of boxes survive: the 40th best class score
            sc = p[0, 4:, :].max(0).values
            conf = float(sc.sort(descending=True).values[40])
            d = non_max_suppression(p, conf_thres=conf, iou_thres=0.45, max_det=100)[0]
            boxes = d[:, :4].tolist(); scores = d[:, 4].tolist(); cls_ = d[:, 5].tolist()
        elif kind == "e2e":
            conf = float(p[0, :, 4].sort(descending=True).values[20])
            keep = p[0, :, 4] > conf
            d = p[0][keep]
            boxes = d[:, :4].tolist(); scores = d[:, 4].tolist(); cls_ = d[:, 5].tolist()
        else:
            b, s = p[0, :, :4], p[0, :, 4:]
            sc, c = s.max(-1)
            conf = float(sc.sort(descending=True).values[20])
            keep = sc > conf
            xy = ops.xywh2xyxy(b[keep]) * S
            boxes = xy.tolist(); scores = sc[keep].tolist(); cls_ = c[keep].float().tolist()
        per.append({"conf": conf, "boxes": boxes, "scores": scores, "classes": cls_})
    refs[name] = {"file": os.path.basename(f), "kind": kind, "output": list(raw.shape), "names": meta.get("names", "")[:60], "images": per}
    os.makedirs(f"{out}/onnx", exist_ok=True)
    os.makedirs("/tmp/ulout", exist_ok=True)
    import shutil
    shutil.copy(f, f"/tmp/ulout/{os.path.basename(f)}")
    if os.path.getsize(f) < 40 << 20:
        os.replace(f, f"{out}/onnx/{os.path.basename(f)}")
    print(name, "ok", raw.shape, f"{time.time() - t:.1f}s", os.path.getsize(f"{out}/onnx/{os.path.basename(f)}") if os.path.exists(f"{out}/onnx/{os.path.basename(f)}") else "kept on device")
json.dump(refs, open(f"{out}/refs.json", "w"))
json.dump(refs, open("/tmp/ulout/refs.json", "w"))
np.save("/tmp/ulout/inputs.npy", np.stack(imgs))
