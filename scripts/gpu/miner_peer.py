"""The Python pipeline a miner runs today, as the end-to-end peer of `gpu-bench e2e`: JPEG bytes
→ PIL decode + torchvision Resize/CenterCrop on CPU worker processes → batched PyTorch fp16
on the GPU → score. The peer gets the strongest reasonable form of that pipeline: a process
pool sized by --workers, 8-bit arrays (not float tensors) crossing the process boundary, the
ToTensor/Normalize arithmetic done on the GPU, dynamic batches (--max-batch, --max-delay-ms)
padded to powers of two, each of those shapes run once before timing (PyTorch builds cuDNN
plans per new input shape, which costs seconds if it happens under load), and each shape's
forward captured as a CUDA graph (--no-graphs runs it eagerly), and for the conv net channels-last
tensors with cuDNN autotuning (--layout nchw: PyTorch's defaults, which measured ~700 images/s
for this fp16 EfficientNet on an H200, GPU-bound). The graphs matter for the
roadwork model: its eager forward is ~130 small PyTorch calls, and that Python dispatch holds
the GIL long enough to starve the threads that hand results back from the pool (the
`multiprocessing` result handler), which shows as seconds-long stalls and a throughput ceiling
far below what the GPU or the pool can do.

Models, the same as cascade's:
- `roadwork`: EfficientNet-Lite0 built in PyTorch from cascade's own ONNX file (a small
  interpreter of its Conv/Clip/Add/pool/Gemm graph, so the weights are the same) plus the
  trained head from policies/heads/roadwork-effnet.json; Resize(256) + CenterCrop(224), mean = std = 0.5.
- `vit`: torchvision ViT-B/16 with random weights from seed 0 (export_vit.reference: the weights
  scripts/gpu/run.sh exports to ONNX for cascade); Resize(224) + CenterCrop(224), ImageNet mean/std.

Load: closed loop with --concurrency requests in flight, or open loop at --rate requests/s
(latency from each request's scheduled time). Prints one JSON line like gpu-bench's. With
--scores it prints each image's score instead (to check it computes what cascade computes).
"""

import argparse
import io
import json
import multiprocessing as mp
import os
import queue
import sys
import threading
import time

import numpy as np
from PIL import Image

SIZE = {"roadwork": (256, 224), "vit": (224, 224)}
_resize = None


def _init(model):
    global _resize
    import torchvision.transforms as T

    short, crop = SIZE[model]
    _resize = T.Compose([T.Resize(short), T.CenterCrop(crop)])


def prep(jpeg):
    im = Image.open(io.BytesIO(jpeg)).convert("RGB")
    return np.asarray(_resize(im)).tobytes()


def onnx_module(path):
    """EfficientNet-Lite0 from cascade's ONNX: returns f(x) -> embedding (N, 1280)."""
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper

    g = onnx.load(path).graph
    w = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in g.initializer}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(v, requires_grad=False) for k, v in w.items()})
            # scalars (Clip bounds) as Python numbers: reading them from the device would sync,
            # which a CUDA graph capture refuses
            self.scalars = {k: float(v) for k, v in w.items() if v.numel() == 1}

        def forward(self, x):
            env = {"input": x}
            get = lambda n: env[n] if n in env else self.p[n.replace(".", "_")]
            for n in g.node:
                a = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
                i = [get(v) for v in n.input]
                if n.op_type == "Conv":
                    t, l, b, r = a.get("pads", [0, 0, 0, 0])
                    y = F.pad(i[0], (l, r, t, b)) if (t, l) != (b, r) else i[0]
                    pad = 0 if (t, l) != (b, r) else (t, l)
                    y = F.conv2d(y, i[1], i[2] if len(i) > 2 else None, stride=a.get("strides", [1, 1]), padding=pad, groups=a.get("group", 1))
                elif n.op_type == "Clip":
                    y = torch.clamp(i[0], self.scalars[n.input[1]], self.scalars[n.input[2]])
                elif n.op_type == "Add":
                    y = i[0] + i[1]
                elif n.op_type == "GlobalAveragePool":
                    y = i[0].mean(dim=(2, 3), keepdim=True)
                elif n.op_type == "Flatten":
                    y = i[0].flatten(1)
                elif n.op_type == "Gemm":
                    y = F.linear(i[0], i[1] if a.get("transB", 0) else i[1].t(), i[2])
                else:
                    raise SystemExit(f"unsupported op {n.op_type}")
                env[n.output[0]] = y
            return env["embedding"]

    return Net()


def build(model, onnx_path, head_path, layout):
    import torch

    if model == "vit":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from export_vit import reference  # the weights cascade's ONNX export has

        net = reference()
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        score = lambda y: torch.softmax(y.float(), 1).max(1).values
    else:
        net = onnx_module(onnx_path).eval()
        mean, std = [0.5] * 3, [0.5] * 3
        head = json.load(open(head_path))
        layers = [(torch.tensor(l["weights"]).cuda(), torch.tensor(l["bias"]).cuda(), l["relu"]) for l in head["layers"]]

        def score(y):
            y = y.float()
            for W, b, relu in layers:
                y = y @ W.t() + b
                y = torch.relu(y) if relu else y
            return torch.sigmoid(y[:, -1]) if y.shape[1] == 1 else torch.softmax(y, 1)[:, -1]

    net = net.cuda().half()
    if layout == "nhwc":
        # what a tuned PyTorch deployment does for a conv net in fp16: channels-last tensors
        # (tensor-core convolutions) and cuDNN autotuning per shape (done in the warm-up)
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    m = torch.tensor(mean, device="cuda").view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device="cuda").view(1, 3, 1, 1) * 255

    def run(u8):  # (N, H, W, 3) uint8 on the GPU
        x = ((u8.permute(0, 3, 1, 2).float() - m) / s).half()
        x = x.contiguous(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)
        return score(net(x))

    return run


def graphed(run, shapes, crop):
    """`run` captured as one CUDA graph per batch shape: a batch is a copy into the shape's
    static input and one replay, so the Python side costs the same for any model."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture: cuDNN plans, the allocator
        for rows in shapes:
            for _ in range(3):
                run(torch.zeros(rows, crop, crop, 3, dtype=torch.uint8, device="cuda"))
    torch.cuda.current_stream().wait_stream(side)
    static = {}
    for rows in shapes:
        x = torch.zeros(rows, crop, crop, 3, dtype=torch.uint8, device="cuda")
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            y = run(x)
        static[rows] = (g, x, y)

    def replay(u8):
        g, x, y = static[u8.shape[0]]
        x.copy_(u8, non_blocking=True)
        g.replay()
        return y  # read (.cpu()) before the next replay of this shape

    return replay


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=SIZE, default="roadwork")
    ap.add_argument("--onnx")
    ap.add_argument("--head")
    ap.add_argument("--jpegs", required=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-delay-ms", type=float, default=3)
    ap.add_argument("--scores", action="store_true")
    ap.add_argument("--no-graphs", action="store_true", help="run the forward eagerly instead of as CUDA graphs")
    ap.add_argument("--layout", choices=["nhwc", "nchw"], default="nhwc", help="nhwc: channels-last and cuDNN autotuning (default); nchw: PyTorch's defaults")
    ap.add_argument("--prep-only", action="store_true", help="time only the CPU stage (decode + resize + crop in the pool): a ceiling on the pipeline's images/s")
    a = ap.parse_args()
    names = sorted(f for f in os.listdir(a.jpegs) if f.endswith(".jpg"))
    jpegs = [open(os.path.join(a.jpegs, f), "rb").read() for f in names]
    # the pool forks before CUDA is initialised in this process
    pool = mp.get_context("fork").Pool(a.workers, initializer=_init, initargs=(a.model,))
    import torch

    run = build(a.model, a.onnx, a.head, a.layout)
    crop = SIZE[a.model][1]
    shapes = [1 << k for k in range(16) if 1 << k < a.max_batch] + [a.max_batch]
    with torch.inference_mode():
        if a.no_graphs:
            for rows in shapes:
                run(torch.zeros(rows, crop, crop, 3, dtype=torch.uint8, device="cuda"))
        else:
            run = graphed(run, shapes, crop)
        torch.cuda.synchronize()
    if a.scores:
        _init(a.model)
        with torch.inference_mode():
            u8 = np.stack([np.frombuffer(prep(j), np.uint8).reshape(crop, crop, 3) for j in jpegs])
            out = {}
            for k in range(0, len(jpegs), a.max_batch):  # the warmed (and captured) shapes only
                chunk = u8[k : k + a.max_batch]
                rows = next(r for r in shapes if r >= len(chunk))
                pad = np.zeros((rows, crop, crop, 3), np.uint8)
                pad[: len(chunk)] = chunk
                out.update({n: float(v) for n, v in zip(names[k : k + len(chunk)], run(torch.from_numpy(pad).cuda()).cpu())})
            print(json.dumps(out))
        return

    # the workers import torchvision and start up before anything is timed
    pool.map(prep, jpegs * 2, chunksize=1)
    if a.prep_only:
        work = jpegs * max(1, int(2000 * a.seconds / len(jpegs)))
        t = time.perf_counter()
        n = sum(1 for _ in pool.imap_unordered(prep, work, chunksize=16))
        elapsed = time.perf_counter() - t
        print(json.dumps({"side": f"python-miner CPU stage only (PIL+torchvision x{a.workers}, chunks of 16)", "model": a.model, "mode": "closed", "concurrency": len(work), "rate": None, "n": n, "errors": 0, "rps": n / elapsed, "p50_ms": float("nan"), "p99_ms": float("nan")}))
        pool.terminate()
        return
    batch_q = queue.Queue()
    lat, errors, stop = [], [0], threading.Event()
    counter, generation = [0], [0]

    def issue(due):
        j = jpegs[counter[0] % len(jpegs)]
        counter[0] += 1
        gen = generation[0]
        pool.apply_async(prep, (j,), callback=lambda arr: batch_q.put((arr, due, gen)), error_callback=lambda e: errors.__setitem__(0, errors[0] + 1))

    def batcher(record):
        with torch.inference_mode():
            while not stop.is_set():
                try:
                    first = batch_q.get(timeout=0.1)
                except queue.Empty:
                    continue
                items, until = [first], time.perf_counter() + a.max_delay_ms / 1e3
                while len(items) < a.max_batch:
                    try:
                        items.append(batch_q.get(timeout=max(0.0, until - time.perf_counter())))
                    except queue.Empty:
                        break
                items = [it for it in items if it[2] == generation[0]]  # requests of an earlier phase are dropped
                if not items:
                    continue
                rows = next(r for r in shapes if r >= len(items))
                arr = np.zeros((rows, crop, crop, 3), np.uint8)
                for k, (b, _, _) in enumerate(items):
                    arr[k] = np.frombuffer(b, np.uint8).reshape(crop, crop, 3)
                run(torch.from_numpy(arr).pin_memory().cuda(non_blocking=True)).cpu()
                now = time.perf_counter()
                for _, due, _ in items:
                    if record[0]:
                        lat.append((now - due) * 1e3)
                    if a.rate is None and not stop.is_set():
                        issue(time.perf_counter())  # closed loop: the finished request's slot goes again

    def phase(seconds, record):
        generation[0] += 1
        lat.clear()
        rec = [record]
        stop.clear()
        t = threading.Thread(target=batcher, args=(rec,), daemon=True)
        t.start()
        start = time.perf_counter()
        if a.rate is None:
            for _ in range(a.concurrency):
                issue(time.perf_counter())
            time.sleep(seconds)
        else:
            for i in range(int(a.rate * seconds)):
                due = start + i / a.rate
                d = due - time.perf_counter()
                if d > 0:
                    time.sleep(d)
                issue(due)
            time.sleep(0.5)  # let the last ones finish
        elapsed = time.perf_counter() - start
        stop.set()
        t.join()
        while not batch_q.empty():
            batch_q.get()
        return elapsed

    phase(3, False)  # warm-up: cuDNN, the allocator, the pool's processes
    elapsed = phase(a.seconds, True)
    lat.sort()
    pct = lambda q: lat[min(int(len(lat) * q), len(lat) - 1)] if lat else float("nan")
    n = len(lat)
    print(json.dumps({"side": f"python-miner (PIL+torchvision x{a.workers}, torch fp16 {a.layout}{', eager' if a.no_graphs else ', CUDA graphs'})", "model": a.model, "mode": "open" if a.rate else "closed", "concurrency": a.concurrency, "rate": a.rate, "n": n, "errors": errors[0], "rps": n / elapsed, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}))
    sys.stdout.flush()
    pool.terminate()


if __name__ == "__main__":
    main()
