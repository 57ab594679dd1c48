"""The peer of `cpu-bench`: one plain fp32 call of a model through onnxruntime's own Python API,
as an operator's script would make it (default session options, `intra_op_num_threads`
threads, batch 1). Reads image paths on stdin, one per line; for each, prepares the input as
the registry's `dino-embed` entry does (short side 224 bilinear, centre 224, ImageNet
mean/std; not timed) and prints the milliseconds of `session.run` alone.

    .venv/bin/python bench/ort_peer.py MODEL.onnx THREADS
"""

import os
import sys
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "models"))
from dinov2_int8 import prepare  # noqa: E402  (the registry's dino-embed preparation)

def main():
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(sys.argv[2])
    s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    print("ready", flush=True)
    for line in sys.stdin:
        x = np.ascontiguousarray(prepare(line.strip())[None])
        t = time.perf_counter()
        s.run(None, {name: x})
        print(f"{(time.perf_counter() - t) * 1e3:.3f}", flush=True)


if __name__ == "__main__":
    main()
