"""PyTorch peers on the GPU machine: exports ViT-B/16 (torchvision, random weights: timing only)
to ONNX for cascade (export_vit.py), and times it in PyTorch eager fp32/fp16 and torch.compile fp16 on
device-resident inputs at batch 1, 8, 64. Prints JSON lines."""

import json
import sys

import torch
import torchvision

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from cuda_timing import median_s  # noqa: E402
from export_vit import export, reference  # noqa: E402

export(sys.argv[1])
m = reference().cuda()


def timeit(fn, x):
    return median_s(fn, x, warm=5, n=30)


half = torchvision.models.vit_b_16(weights=None).eval().cuda().half()
half.load_state_dict(m.state_dict())
compiled = torch.compile(half)
for b in (1, 8, 64):
    x32 = torch.randn(b, 3, 224, 224, device="cuda")
    x16 = x32.half()
    for name, fn, x in (("torch eager fp32", m, x32), ("torch eager fp16", half, x16), ("torch.compile fp16", compiled, x16)):
        t = timeit(fn, x)
        print(json.dumps({"peer": name, "batch": b, "ms": t * 1e3, "images_per_s": b / t}))
        sys.stdout.flush()
