"""Issue 28 part 2, first look: which levers take ONNX Runtime's CUDA provider past
`torch.compile` for ViT-B/16 fp16 and the shipped DINOv2 classifier (GPU machine, one run).

    PYTHONPATH=/tmp/ortgpu:/tmp/pylib python3 explore.py models WORK     (exports, CPU)
    PYTHONPATH=/tmp/ortgpu:/tmp/pylib python3 explore.py ort WORK        (ONNX Runtime timings)
    PYTHONPATH=/tmp/ortgpu:/tmp/pylib python3 explore.py torch WORK      (PyTorch peers)
    PYTHONPATH=/tmp/ortgpu:/tmp/pylib python3 explore.py torchhost WORK  (the same, from host images to host answers)
    PYTHONPATH=/tmp/ortgpu:/tmp/pylib python3 explore.py sweep WORK      (provider options, fused graphs)
    PYTHONPATH=/tmp/ortgpu:/tmp/pylib python3 explore.py profile WORK    (where the time goes)

Every timing but torchhost's: device-resident inputs and outputs (ONNX Runtime through
IoBinding), 10 warm-up calls, then the median of 50 calls each waited for, at batch 1, 8 and 64.
Prints JSON lines.
The models carry random ViT weights (timing only) and the shipped DINOv2 weights (WORK/dinov2.onnx,
converted to a Hugging Face checkpoint for the PyTorch side by scripts/train/dinov2_from_onnx.py).
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(ROOT, "scripts"), os.path.join(ROOT, "scripts/gpu"), os.path.join(ROOT, "scripts/train")]
BATCHES = [int(b) for b in os.environ.get("BATCHES", "1,8,64").split(",")]
FEATURES = ["cls", "mean", "mid:8"]


def say(**row):
    print(json.dumps(row), flush=True)


def models(work):
    import torch
    import fp16
    from export_vit import export as export_vit
    import backbones
    import export_backbone as eb

    export_vit(f"{work}/vit.onnx")
    fp16.convert(f"{work}/vit.onnx", f"{work}/vit16.onnx")
    fp16.convert(f"{work}/vit.onnx", f"{work}/vit16f.onnx", "vit", 12, 768)
    # the shipped DINOv2 cut: as shipped (fp16, plain and through the optimiser) and re-exported
    # from its checkpoint with eager attention, the graph the optimiser's ViT fusion knows
    fp16.convert(f"{work}/dinov2.onnx", f"{work}/dino16.onnx")
    fp16.convert(f"{work}/dinov2.onnx", f"{work}/dino16o.onnx", "vit", 6, 384)
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/train/dinov2_from_onnx.py"), f"{work}/dinov2.onnx", f"{work}/dinohf"], check=True)
    model, config, arch = backbones.load(f"{work}/dinohf", eager=True)
    emb = backbones.Embedder(model, config, arch, FEATURES).eval()
    eb.export(emb, (224, 224), f"{work}/dinoe.onnx", 17)
    eb.fuse(f"{work}/dinoe.onnx", arch, config)
    eb.to_fp16(f"{work}/dinoe.onnx")
    os.replace(f"{work}/dinoe.onnx", f"{work}/dino16f.onnx")
    # the re-export agrees with the shipped file (fp16 CPU run vs fp32 shipped, random input)
    import onnxruntime as ort

    x = np.random.default_rng(0).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    a = ort.InferenceSession(f"{work}/dinov2.onnx", providers=["CPUExecutionProvider"])
    ya = a.run(None, {a.get_inputs()[0].name: x})[0]
    for name in ("dino16", "dino16o", "dino16f"):
        try:
            b = ort.InferenceSession(f"{work}/{name}.onnx", providers=["CUDAExecutionProvider"])
            yb = b.run(None, {b.get_inputs()[0].name: x.astype(np.float16)})[0].astype(np.float32)
            say(check=name, shape=list(yb.shape), max_abs_diff=float(np.abs(ya - yb).max()), max_abs=float(np.abs(ya).max()))
        except Exception as e:  # noqa: BLE001
            say(check=name, error=str(e)[:300])
    for name in ("vit16", "vit16f", "dino16", "dino16o", "dino16f"):
        import onnx

        ops = {}
        for n in onnx.load(f"{work}/{name}.onnx").graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        say(model=name, ops={k: v for k, v in sorted(ops.items()) if k in ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "MatMul", "Softmax")})


def vit(work):
    """ViT-B/16 only: the fused fp16 graph (the DINOv2 one comes from export_backbone.py --fuse --fp16)."""
    import fp16
    from export_vit import export as export_vit

    export_vit(f"{work}/vit.onnx")
    fp16.convert(f"{work}/vit.onnx", f"{work}/vit16f.onnx", "vit", 12, 768)


def ort_time(path, batch, graph, n=50, extra=None):
    import onnxruntime as ort

    opts = {"device_id": "0", **(extra or {})}
    if graph:
        opts["enable_cuda_graph"] = "1"
    so = ort.SessionOptions()
    s = ort.InferenceSession(path, so, providers=[("CUDAExecutionProvider", opts)])
    i, o = s.get_inputs()[0], s.get_outputs()[0]
    dt = np.float16 if "float16" in i.type else np.float32
    x = np.random.default_rng(0).normal(0, 1, (batch, 3, 224, 224)).astype(dt)
    probe = s.run(None, {i.name: x})[0] if not graph else None
    if graph:
        s0 = ort.InferenceSession(path, so, providers=[("CUDAExecutionProvider", {k: v for k, v in opts.items() if k != "enable_cuda_graph"})])
        probe = s0.run(None, {i.name: x})[0]
        del s0
    xv = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    yv = ort.OrtValue.ortvalue_from_shape_and_type(list(probe.shape), probe.dtype, "cuda", 0)
    b = s.io_binding()
    b.bind_ortvalue_input(i.name, xv)
    b.bind_ortvalue_output(o.name, yv)
    for _ in range(10):
        s.run_with_iobinding(b)
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        s.run_with_iobinding(b)
        ts.append(time.perf_counter() - t)
    ts.sort()
    out = yv.numpy().astype(np.float32)
    return ts[len(ts) // 2], float(np.abs(out - probe.astype(np.float32)).max())


def ort_all(work):
    for name in ("vit16", "vit16f", "dino16", "dino16o", "dino16f"):
        for graph in (False, True):
            for bsz in BATCHES:
                try:
                    t, d = ort_time(f"{work}/{name}.onnx", bsz, graph)
                    say(side="ort", model=name, cuda_graph=graph, batch=bsz, ms=t * 1e3, images_per_s=bsz / t, graph_vs_plain=d)
                except Exception as e:  # noqa: BLE001
                    say(side="ort", model=name, cuda_graph=graph, batch=bsz, error=str(e)[:300])


# provider options tried for the fused fp16 graphs (ONNX Runtime 1.31 CUDA provider): the
# convolution search, NHWC layout, and which attention kernels `sdpa_kernel` allows
# (1 flash, 2 memory-efficient, 4 TensorRT fused, 8 cuDNN flash)
SWEEP = {
    "default": {},
    "conv exhaustive": {"cudnn_conv_algo_search": "EXHAUSTIVE"},
    "conv heuristic (engine default)": {"cudnn_conv_algo_search": "HEURISTIC"},
    "nhwc": {"prefer_nhwc": "1"},
    "sdpa flash": {"sdpa_kernel": "1"},
    "sdpa efficient": {"sdpa_kernel": "2"},
    "sdpa trt fused": {"sdpa_kernel": "4"},
    "sdpa cudnn flash": {"sdpa_kernel": "8"},
}


def patch(work):
    """The fused graphs with their patch Conv as a MatMul (patch_matmul.py): *p.onnx."""
    import onnx
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../scripts/train"))
    from patch_matmul import rewrite

    for name in os.environ.get("MODELS", "vit16f,dino16f2").split(","):
        model, shape = rewrite(onnx.load(f"{work}/{name}.onnx"), 224, 224)
        onnx.save(model, f"{work}/{name}p.onnx")
        say(model=f"{name}p", patch_conv_as_matmul=list(shape))


def sweep(work):
    only = [o for o in os.environ.get("SWEEP_OPTIONS", "").split(",") if o]
    # CUDA graphs are tried with these option sets only (each session costs seconds)
    graphed = os.environ.get("SWEEP_GRAPH_OPTIONS", "default,nhwc,conv exhaustive").split(",")
    for name in os.environ.get("MODELS", "vit16f,dino16f2").split(","):
        for label, extra in SWEEP.items():
            if only and label not in only:
                continue
            for graph in (False, True) if label in graphed else (False,):
                for bsz in BATCHES:
                    try:
                        t, d = ort_time(f"{work}/{name}.onnx", bsz, graph, extra=extra)
                        say(side="ort", model=name, options=label, cuda_graph=graph, batch=bsz, ms=t * 1e3, images_per_s=bsz / t)
                    except Exception as e:  # noqa: BLE001
                        say(side="ort", model=name, options=label, cuda_graph=graph, batch=bsz, error=str(e)[:200])


def torch_peers(work):
    import torch
    import torchvision
    from cuda_timing import median_s
    from export_vit import reference
    import backbones

    torch.backends.cuda.matmul.allow_tf32 = True
    modes = os.environ.get("MODES", "default").split(",")

    peers = os.environ.get("PEERS", "vit,dino").split(",")
    nets = [("vit", reference().cuda().half())] if "vit" in peers else []
    if "dino" in peers:
        model, config, arch = backbones.load(os.environ.get("DINO_HF", f"{work}/dinohf"))  # SDPA attention: PyTorch's best
        emb = backbones.Embedder(model, config, arch, FEATURES)
        head = torch.nn.Linear(emb_dim(), 1)
        nets.append(("dino", torch.nn.Sequential(emb, head).eval().cuda().half()))
    for name, net in nets:
        for bsz in BATCHES:
            x = torch.randn(bsz, 3, 224, 224, device="cuda").half()
            t = median_s(net, x)
            say(side="torch", model=name, mode="eager fp16", batch=bsz, ms=t * 1e3, images_per_s=bsz / t)
            for mode in modes:
                torch._dynamo.reset()
                c = torch.compile(net, dynamic=False) if mode == "default" else torch.compile(net, mode=mode, dynamic=False)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    c(x)
                torch.cuda.synchronize()
                t = median_s(c, x)
                say(side="torch", model=name, mode=f"torch.compile {mode}", batch=bsz, ms=t * 1e3, images_per_s=bsz / t,
                    compile_s=time.perf_counter() - t0)


def torch_from_host(work):
    """The PyTorch peers on the engine's own task: `batch` separate decoded 224² RGB images in host
    memory (uint8, HWC) to answers in host memory. Each call stacks the images into pinned memory
    (np.stack into a pinned tensor: the engine's staging copy), uploads them, and runs one
    compiled function of normalisation, the network and the answer (ViT: softmax and top five;
    DINOv2 classifier: sigmoid), then copies the answer back; the median of 50 calls after 10,
    each ended by its copy back. `torch.compile` sees the whole function, so its normalisation
    and answer are fused too. The images are random (timing only), distinct per slot."""
    import torch
    from export_vit import reference
    import backbones

    peers = os.environ.get("PEERS", "vit,dino").split(",")
    nets = [("vit", reference().cuda().half(), "top5")] if "vit" in peers else []
    if "dino" in peers:
        model, config, arch = backbones.load(os.environ.get("DINO_HF", f"{work}/dinohf"))
        emb = backbones.Embedder(model, config, arch, FEATURES)
        head = torch.nn.Linear(emb_dim(), 1)
        nets.append(("dino", torch.nn.Sequential(emb, head).eval().cuda().half(), "sigmoid"))
    mean = torch.tensor([0.485, 0.456, 0.406], device="cuda").view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device="cuda").view(1, 3, 1, 1) * 255
    rng = np.random.default_rng(0)
    for name, net, answer in nets:

        def task(x, net=net, answer=answer):
            x = ((x.permute(0, 3, 1, 2).float() - mean) / std).half()
            y = net(x).float()
            if answer == "sigmoid":
                return torch.sigmoid(y)
            p = torch.softmax(y, -1)
            return torch.topk(p, 5, -1)

        for bsz in BATCHES:
            images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(bsz)]
            pinned = torch.empty((bsz, 224, 224, 3), dtype=torch.uint8).pin_memory()
            staged = pinned.numpy()
            torch._dynamo.reset()
            for mode, fn in (("eager fp16", task), ("torch.compile default", torch.compile(task, dynamic=False))):

                def call(fn=fn):
                    np.stack(images, out=staged)
                    y = fn(pinned.cuda(non_blocking=True))
                    return [t.cpu() for t in y] if isinstance(y, tuple) else y.cpu()

                with torch.inference_mode():
                    for _ in range(10):
                        call()
                    ts = []
                    for _ in range(50):
                        t = time.perf_counter()
                        call()
                        ts.append(time.perf_counter() - t)
                ts.sort()
                t = ts[len(ts) // 2]
                say(side="torch from host", model=name, mode=mode, batch=bsz, ms=t * 1e3, images_per_s=bsz / t)


def emb_dim():
    return 384 * len(FEATURES)


def profile(work):
    """Kernel time by kind at batch 64: torch.compile (torch.profiler) and ONNX Runtime's fused
    fp16 graphs (its own profiler, node level)."""
    import onnxruntime as ort

    for name in os.environ.get("MODELS", "vit16f,dino16f2").split(","):
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = f"{work}/prof-{name}"
        s = ort.InferenceSession(f"{work}/{name}.onnx", so, providers=[("CUDAExecutionProvider", {"device_id": "0"})])
        i = s.get_inputs()[0]
        x = np.random.default_rng(0).normal(0, 1, (64, 3, 224, 224)).astype(np.float16)
        for _ in range(15):
            s.run(None, {i.name: x})
        f = s.end_profiling()
        by = {}
        for ev in json.load(open(f)):
            if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
                op = ev.get("args", {}).get("op_name", "?")
                by[op] = by.get(op, 0) + ev["dur"]
        tot = sum(by.values())
        say(profile="ort", model=name, batch=64, us_per_run=tot / 15, share={k: round(v / tot, 3) for k, v in sorted(by.items(), key=lambda kv: -kv[1])[:10]})
    import torch
    from torch.profiler import ProfilerActivity, profile as tprof
    from export_vit import reference

    vit = torch.compile(reference().cuda().half(), dynamic=False)
    x = torch.randn(64, 3, 224, 224, device="cuda").half()
    with torch.inference_mode():
        for _ in range(5):
            vit(x)
        torch.cuda.synchronize()
        with tprof(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(10):
                vit(x)
            torch.cuda.synchronize()
    rows = sorted(((e.key, e.device_time_total) for e in p.key_averages()), key=lambda r: -r[1])
    tot = sum(t for _, t in rows)
    say(profile="torch.compile", model="vit", batch=64, us_per_run=tot / 10, top={k[:60]: round(t / tot, 3) for k, t in rows[:10]})


if __name__ == "__main__":
    step, work = sys.argv[1], sys.argv[2]
    {"models": models, "vit": vit, "patch": patch, "ort": ort_all, "sweep": sweep, "torch": torch_peers, "torchhost": torch_from_host, "profile": profile}[step](work)
