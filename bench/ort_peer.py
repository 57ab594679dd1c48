"""The peer of `cpu-bench`: one plain fp32 call of a model through onnxruntime's own Python API,
as an operator's script would make it (default session options, `intra_op_num_threads`
threads, batch 1). Reads image paths on stdin, one per line; for each, prepares the input as
the registry's `dino-embed` entry does (short side 224 bilinear, centre 224, ImageNet
mean/std; not timed) and prints the milliseconds of `session.run` alone.

    .venv/bin/python bench/ort_peer.py MODEL.onnx THREADS
"""

import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def prepare(path):
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = 224 / min(w, h)
    nw, nh = max(224, round(w * s)), max(224, round(h * s))
    im = im.resize((nw, nh), Image.BILINEAR)
    x0, y0 = (nw - 224) // 2, (nh - 224) // 2
    a = (np.asarray(im.crop((x0, y0, x0 + 224, y0 + 224)), np.float32) / 255 - MEAN) / STD
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None])


def main():
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(sys.argv[2])
    s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    print("ready", flush=True)
    for line in sys.stdin:
        x = prepare(line.strip())
        t = time.perf_counter()
        s.run(None, {name: x})
        print(f"{(time.perf_counter() - t) * 1e3:.3f}", flush=True)


if __name__ == "__main__":
    main()
