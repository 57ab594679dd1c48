"""The CPU default's DINOv2: the shipped fp32 cut (dinov2_vits14.py) quantised to int8 by ONNX
Runtime's own quantiser, then checked against the fp32 file on real images before it is used.

    python dinov2_int8.py FP32.onnx OUT.onnx [--head HEAD.json] [--images PATH ...] [--bound 0.06]

Dynamic quantisation (ONNX Runtime's `quantize_dynamic`): every MatMul's weights int8, per
output channel, activations quantised at run time from their own range; LayerNorm, softmax, GELU
and the embedding's heads stay float (experiments/cpu-int8/README.md has the measurements:
0.57x the fp32 call on 2 cores, static QDQ and the fused graph did not do better). The result is
deterministic for a given onnxruntime/onnx pair (scripts/requirements.txt pins both), so
setup_models.sh pins its bytes.

The check: both files embed the images (prepared as the registry's `dino-embed` prepares them:
short side 224 bilinear, centre 224, ImageNet mean/std) and the shipped head turns each embedding
into a score; the largest score change must stay within --bound, or the script exits 1 naming
the bound, the drift and the image, and OUT is not written. Images: --images (files or
folders), else the rendered test images and, when ../shared is beside the repository, 64
street-level frames from its data sets.
"""

import argparse
import glob
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("CASCADE_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_export import image_files  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def quantise(src, dst):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # shape inference leaves some MatMul outputs of this graph untyped: they are float
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def default_images(work):
    files = sorted(glob.glob(os.path.join(ROOT, "target", "test-images", "*.jpg")))
    if not files:  # a fresh machine: the test suite's rendered road signs
        sys.path.insert(0, os.path.join(ROOT, "tests", "models"))
        from render_signs import SIGNS, render

        for name, (lines, colour) in SIGNS.items():
            files.append(os.path.join(work, name + ".jpg"))
            render(lines, colour).save(files[-1], quality=75)
    street = sorted(glob.glob(os.path.join(SHARED, "data", "roadwork-more", "*", "*.jpg")))
    street += sorted(glob.glob(os.path.join(SHARED, "data", "roadwork-dev", "dashcam_*", "*.jpg")))
    return files + street[:: max(1, len(street) // 64)][:64]


def prepare(path):
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = 224 / min(w, h)
    nw, nh = max(224, round(w * s)), max(224, round(h * s))
    im = im.resize((nw, nh), Image.BILINEAR)
    x0, y0 = (nw - 224) // 2, (nh - 224) // 2
    a = (np.asarray(im.crop((x0, y0, x0 + 224, y0 + 224)), np.float32) / 255 - MEAN) / STD
    return a.transpose(2, 0, 1)


def scores(path, x, head):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    emb = np.concatenate([s.run(None, {name: x[i:i + 8]})[0] for i in range(0, len(x), 8)]).astype(np.float64)
    if head.get("mean"):
        emb = (emb - np.array(head["mean"])) / np.array(head["std"])
    for layer in head["layers"]:
        emb = emb @ np.array(layer["weights"]).T + np.array(layer["bias"])
        if layer.get("relu"):
            emb = np.maximum(emb, 0)
    return 1 / (1 + np.exp(-emb[:, -1]))


def check(fp32, int8, head_path, images, bound):
    """(largest score change, its image, answers crossing 0.5); raises SystemExit beyond bound."""
    if not images:
        raise SystemExit("no check images: pass --images (or render target/test-images first)")
    head = json.load(open(head_path))
    x = np.stack([prepare(f) for f in images])
    a, b = scores(fp32, x, head), scores(int8, x, head)
    d = np.abs(a - b)
    worst = int(d.argmax())
    crossed = int(((a > 0.5) != (b > 0.5)).sum())
    print(f"[int8] check on {len(images)} images: largest score change {d[worst]:.4f} "
          f"({os.path.basename(images[worst])}), mean {d.mean():.4f}, {crossed} answers cross 0.5 (bound {bound:g})")
    if not d[worst] <= bound:
        raise SystemExit(f"the int8 DINOv2 drifts from the fp32 file by {d[worst]:.4f} on {images[worst]} "
                         f"(bound {bound:g}): refused; the fp32 file stays the only DINOv2")
    return float(d[worst]), images[worst], crossed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--head", default=os.path.join(ROOT, "policies", "heads", "roadwork.json"))
    ap.add_argument("--images", nargs="*")
    ap.add_argument("--bound", type=float, default=0.06, help="largest head-score change allowed (default 0.06)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.out))) as work:
        images = image_files(a.images) if a.images else default_images(work)
        tmp = os.path.join(work, "int8.onnx")
        quantise(a.src, tmp)
        check(a.src, tmp, a.head, images, a.bound)
        os.replace(tmp, a.out)
    print(f"[int8] wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
