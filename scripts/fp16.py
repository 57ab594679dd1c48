"""Converts an fp32 ONNX model to fp16 for cascade's CUDA engines: weights, activations, the
image input and the outputs all become float16 (cascade reads the input's type at load, writes
fp16 inputs straight from its GPU pre-processing kernel, and reads fp16 outputs back as f32).

    python scripts/fp16.py IN.onnx OUT.onnx
    python scripts/fp16.py IN.onnx OUT.onnx --transformer vit --heads 12 --hidden 768

--transformer first runs ONNX Runtime's transformer optimiser (fused attention, LayerNorm and
GELU kernels; for ViT/BERT-style graphs), which is where most of a transformer's fp16 speed on
CUDA comes from. Ops that must stay fp32 for range (e.g. Resize, TopK) are kept fp32 inside the
graph by the converter's defaults. Uses only `onnx` and `onnxruntime` (the CPU wheel is enough).
Prints the largest output difference against the fp32 model on random inputs (CPU), so a
conversion that broke the numbers is seen at once.
"""

import argparse
import sys

import numpy as np
import onnx


def convert(src, dst, transformer=None, heads=0, hidden=0):
    if transformer:
        from onnxruntime.transformers.optimizer import optimize_model

        opt = optimize_model(src, model_type=transformer, num_heads=heads, hidden_size=hidden, opt_level=0, use_gpu=True)
        fused = opt.get_fused_operator_statistics()
        print("fused:", {k: v for k, v in fused.items() if v}, file=sys.stderr)
        opt.convert_float_to_float16(keep_io_types=False)
        model = opt.model
    else:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(src), keep_io_types=False)
    onnx.save(model, dst)


def check(src, dst, batch=2):
    import onnxruntime as ort

    a = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    i = a.get_inputs()[0]
    shape = [batch if not isinstance(d, int) or d <= 0 else d for d in i.shape]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    ya = a.run(None, {i.name: x})
    yb = b.run(None, {b.get_inputs()[0].name: x.astype(np.float16)})
    for o, p, q in zip(a.get_outputs(), ya, yb):
        print(f"{o.name}: {q.dtype}, max |fp32 - fp16| = {np.abs(p - q.astype(np.float32)).max():.3g} (max |fp32| = {np.abs(p).max():.3g})", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--transformer", help="ONNX Runtime transformer optimiser model type (vit, bert, ...)")
    ap.add_argument("--heads", type=int, default=0, help="attention heads (with --transformer)")
    ap.add_argument("--hidden", type=int, default=0, help="hidden size (with --transformer)")
    ap.add_argument("--no-check", action="store_true", help="skip the CPU comparison against the fp32 model")
    a = ap.parse_args()
    convert(a.src, a.dst, a.transformer, a.heads, a.hidden)
    if not a.no_check:
        # in a child process: ONNX Runtime's CPU kernels crash on some fp16 graphs (seen with
        # ViT), and that says nothing about the CUDA provider the model is converted for
        import multiprocessing as mp

        p = mp.get_context("spawn").Process(target=check, args=(a.src, a.dst))
        p.start()
        p.join()
        if p.exitcode:
            print(f"CPU check failed (exit {p.exitcode}); {a.dst} was written unchecked", file=sys.stderr)


if __name__ == "__main__":
    main()
