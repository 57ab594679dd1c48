"""Issue 28 part 2: ViT-B/16 fp16 at batch 64 run back to back (200 runs queued, one wait at the
end: the device's sustained rate, as the engine's pipelined worker runs it) against the same run
waited for each time (the median the peers were compared at), for ONNX Runtime's fused, patched,
graphed file and for PyTorch eager / torch.compile; then where ONNX Runtime's run goes, kernel by
kernel (CUPTI through torch.profiler: the profiler sees every kernel in the process).

    PYTHONPATH=/tmp/ortgpu:/tmp/pylib python3 sustained.py WORK/vit16fp.onnx
"""

import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "../../scripts/gpu")]


def say(**row):
    print(json.dumps(row), flush=True)


def timed(run, wait, n=200):
    """(back-to-back ms per run over n queued runs, median ms of n runs each waited for)."""
    for _ in range(10):
        run()
    wait()
    t = time.perf_counter()
    for _ in range(n):
        run()
    wait()
    queued = (time.perf_counter() - t) / n
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        run()
        wait()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return queued * 1e3, ts[n // 2] * 1e3


def main(path):
    import onnxruntime as ort
    from export_vit import reference

    s = ort.InferenceSession(path, providers=[("CUDAExecutionProvider", {"device_id": "0", "enable_cuda_graph": "1"})])
    i, o = s.get_inputs()[0], s.get_outputs()[0]
    x = ort.OrtValue.ortvalue_from_numpy(np.random.default_rng(0).normal(0, 1, (64, 3, 224, 224)).astype(np.float16), "cuda", 0)
    y = ort.OrtValue.ortvalue_from_shape_and_type([64, 1000], np.float16, "cuda", 0)
    b = s.io_binding()
    b.bind_ortvalue_input(i.name, x)
    b.bind_ortvalue_output(o.name, y)
    ro = ort.RunOptions()
    ro.add_run_config_entry("disable_synchronize_execution_providers", "1")
    q, w = timed(lambda: s.run_with_iobinding(b, ro), b.synchronize_outputs)
    say(side="ort", model="vit16fp", cuda_graph=True, batch=64, back_to_back_ms=q, waited_ms=w)

    vit = reference().cuda().half().eval()
    xt = torch.randn(64, 3, 224, 224, device="cuda").half()
    with torch.inference_mode():
        q, w = timed(lambda: vit(xt), torch.cuda.synchronize)
        say(side="torch", model="vit", mode="eager fp16", batch=64, back_to_back_ms=q, waited_ms=w)
        c = torch.compile(vit, dynamic=False)
        c(xt)
        q, w = timed(lambda: c(xt), torch.cuda.synchronize)
        say(side="torch", model="vit", mode="torch.compile default", batch=64, back_to_back_ms=q, waited_ms=w)

    # ONNX Runtime's kernels, 10 graphed runs
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(10):
            s.run_with_iobinding(b)
        torch.cuda.synchronize()
    rows = sorted(((e.key, e.device_time_total, e.count) for e in p.key_averages()), key=lambda r: -r[1])
    tot = sum(t for _, t, _ in rows)
    say(profile="ort kernels", model="vit16fp", batch=64, us_per_run=tot / 10,
        top=[{"kernel": k[:90], "share": round(t / tot, 3), "us_per_run": round(t / 10, 1), "calls_per_run": c / 10} for k, t, c in rows[:14]])


if __name__ == "__main__":
    main(sys.argv[1])
