"""Timing on the GPU machine, shared by the PyTorch peers (torch_peer.py) and the transformer
experiments (experiments/cuda-transformers/explore.py): warm-up calls, then the median of `n`
calls, each waited for with `torch.cuda.synchronize()`, under `torch.inference_mode()`."""

import time

import torch


def median_s(fn, x, warm=10, n=50):
    """The median wall time of `fn(x)` in seconds."""
    with torch.inference_mode():
        for _ in range(warm):
            fn(x)
        torch.cuda.synchronize()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn(x)
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]
