"""Export a Hugging Face vision backbone to a folder the engines load as an embedder.

    .cache/train-venv/bin/python scripts/train/export_backbone.py SRC OUT [--features cls,mean,mid:8]
        [--revision REV] [--fp16] [--fuse] [--patch-matmul] [--gemm-gelu] [--images PATH ...] [--bound 1e-3]
        [--name NAME] [--force]

SRC is a Hub id (facebook/dinov2-base, openai/clip-vit-base-patch16, google/siglip-base-patch16-224,
facebook/convnext-tiny-224, facebook/dinov3-vits16-pretrain-lvd1689m, google/vit-base-patch16-224)
or a local folder with config.json, the weights and preprocessor_config.json. OUT gets:

- model.onnx: input `pixel_values` [N, 3, H, W] at the processor's size, output `embedding`
  [N, D] (the features named, `backbones.py` says what each is), dynamic batch;
- config.json and preprocessor_config.json as transformers writes them: the engines read the
  input preparation (size, crop, mean/std, resize filter) from the latter (`hf = "OUT"`);
- cascade-export.json: source, revision, architecture, features, dimension, the check's figures;
- registry.toml: the `[[model]]` entry to paste into models.toml.

`--fuse` runs ONNX Runtime's transformer optimiser (fused attention, LayerNorm, GELU) where the
family has one; `--patch-matmul` turns the patch embedding's Conv into one MatMul (GEMM kernels
instead of cuDNN's convolutions on CUDA: patch_matmul.py); `--fp16` converts weights and
activations to float16 (for CUDA); `--gemm-gelu` (after `--fuse`) writes each MLP's MatMul and
GELU as the engine's `cascade.MatMulBiasGelu` (one cuBLASLt product with the bias and GELU in its
epilogue on CUDA: gemm_gelu.py), a model only the engine opens: the check below then runs its
twin in stock ONNX Runtime nodes with the same arithmetic. The exported
model is then run by ONNX Runtime on real images prepared by the checkpoint's own image
processor and compared with PyTorch: the largest difference (relative to the largest output,
at least 1) is printed, and an export beyond `--bound` (default 1e-3 fp32, 5e-2 fp16) is refused.
Everything is written to a temporary folder beside OUT and renamed into place only after the
check: a refused export leaves nothing where the server would load it.
"""

import argparse
import copy
import glob
import json
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from backbones import BackboneError, Embedder, fusable, input_size, load, parse_features  # noqa: E402
from hf_export import image_files  # noqa: E402  (backbones put scripts/models on the path)
from staging import staged  # noqa: E402


def default_images(limit=8):
    shared = os.environ.get("CASCADE_SHARED") or os.path.join(os.path.dirname(ROOT), "shared")
    files = sorted(glob.glob(os.path.join(shared, "data", "roadwork-more", "*", "*.jpg")))
    # spread over the sources rather than the first folder's frames
    return files[:: max(1, len(files) // limit)][:limit]


def processor_of(src, revision):
    from transformers import AutoImageProcessor

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoImageProcessor.from_pretrained(src, revision=revision)
    except (OSError, ValueError, ImportError) as e:
        raise BackboneError(f"{src}: no usable preprocessor_config.json ({e})") from None


def export(embedder, size, path, opset):
    import torch

    x = torch.zeros(2, 3, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            embedder, (x,), path, input_names=["pixel_values"], output_names=["embedding"],
            dynamic_axes={"pixel_values": {0: "N"}, "embedding": {0: "N"}}, opset_version=opset, dynamo=False,
        )


def fuse(path, arch, config):
    if not arch.fusion:
        print(f"[export] {arch.name}: ONNX Runtime has no transformer fusion for this family; left as exported")
        return False
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(path, model_type=arch.fusion, num_heads=int(config.num_attention_heads),
                         hidden_size=int(config.hidden_size), opt_level=0)
    fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    print(f"[export] fused: {fused}")
    opt.save_model_to_file(path)
    return True


def patch_matmul(path, size):
    import onnx
    from patch_matmul import rewrite

    try:
        model, shape = rewrite(onnx.load(path), size[0], size[1])
    except ValueError as e:
        raise BackboneError(f"--patch-matmul: {e}") from None
    onnx.save(model, path)
    print(f"[export] patch Conv {list(shape)} as a MatMul")


def gemm_gelu(path):
    """Rewrites `path` in place; returns the path of its stock-node twin for the check."""
    import onnx
    from gemm_gelu import expand, rewrite
    model, n = rewrite(onnx.load(path))
    if not n:
        raise BackboneError("--gemm-gelu: no MatMul -> BiasGelu/FastGelu pair (it needs --fuse on a family ONNX Runtime fuses)")
    onnx.save(model, path)
    twin = path + ".twin.onnx"
    onnx.save(expand(model)[0], twin)
    print(f"[export] {n} MatMul -> GELU pairs as cascade.MatMulBiasGelu")
    return twin


def to_fp16(path):
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(path), keep_io_types=False), path)


def compare(embedder, processor, path, images, fp16):
    """Largest |onnx - torch| / max(1, max |torch|) over the images, and that scale."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from PIL import Image

    if not images:
        raise BackboneError("no images to check the export on: pass --images")
    pics = []
    for f in images:
        try:
            pics.append(Image.open(f).convert("RGB"))
        except OSError as e:
            raise BackboneError(f"check image {f}: {e}") from None
    x = processor(images=pics, return_tensors="pt")["pixel_values"].float()
    with torch.no_grad():
        ref = embedder(x).numpy().astype(np.float64)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    s = ort.InferenceSession(path, providers=providers)
    feed = x.numpy().astype(np.float16 if fp16 else np.float32)
    got = s.run(["embedding"], {s.get_inputs()[0].name: feed})[0].astype(np.float64)
    if got.shape != ref.shape:
        raise BackboneError(f"the ONNX output has shape {got.shape}, PyTorch {ref.shape}")
    scale = max(1.0, float(np.abs(ref).max()))
    return float(np.abs(got - ref).max()) / scale, scale, len(pics)


def registry_entry(name, out, dim):
    return (f'[[model]]\nname = "{name}"\nkind = "embedder"\nhf = "{out}"\noutput = "embedding"   # {dim}-d\n'
            "threads = 2\nmax_batch = 8\nmax_delay_us = 1000\n")


def run(a):
    import torch
    import transformers

    out = os.path.abspath(a.out)
    if os.path.exists(out) and not a.force:
        raise BackboneError(f"{out} exists: pass --force to replace it")
    model, config, arch = load(a.src, a.revision, eager=a.fuse)
    features = parse_features(a.features, arch, config)
    processor = processor_of(a.src, a.revision)
    pre = processor.to_dict()
    size = input_size(pre)
    embedder = Embedder(model, config, arch, features).eval()
    with torch.no_grad():
        dim = int(embedder(torch.zeros(1, 3, *size)).shape[1])
    with staged(out, ".export-") as tmp:
        onnx_path = os.path.join(tmp, "model.onnx")
        print(f"[export] {a.src}: {arch.name}, input {size[0]}x{size[1]}, features {','.join(features)} -> {dim}-d")
        exported = embedder
        if a.fuse:
            # the graph the fusion knows, on a copy: the check below compares with the original
            twin = copy.deepcopy(model)
            if fusable(twin, arch, config, size):
                exported = Embedder(twin, config, arch, features).eval()
        export(exported, size, onnx_path, a.opset)
        fused = fuse(onnx_path, arch, config) if a.fuse else False
        if a.patch_matmul:
            patch_matmul(onnx_path, size)
        if a.fp16:
            to_fp16(onnx_path)
        checked = gemm_gelu(onnx_path) if a.gemm_gelu else onnx_path
        bound = a.bound if a.bound is not None else (5e-2 if a.fp16 else 1e-3)
        images = image_files(a.images) if a.images else default_images()
        diff, scale, n = compare(embedder, processor, checked, images, a.fp16)
        if checked != onnx_path:
            os.remove(checked)
        print(f"[export] ONNX Runtime vs PyTorch on {n} images: max difference {diff:.2e} of the output scale "
              f"{scale:.3g} (bound {bound:g})")
        if not diff <= bound:
            raise BackboneError(f"the export differs from PyTorch by {diff:.3g} (bound {bound:g}): refused, {out} untouched")
        config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        record = {
            "format": "cascade-export/1", "source": a.src, "revision": a.revision, "model_type": arch.name,
            "features": features, "dim": dim, "input": list(size), "fp16": a.fp16, "fused": fused,
            "patch_matmul": a.patch_matmul, "gemm_gelu": a.gemm_gelu,
            "check": {"images": n, "max_difference": diff, "scale": scale, "bound": bound},
            "torch": torch.__version__, "transformers": transformers.__version__,
        }
        with open(os.path.join(tmp, "cascade-export.json"), "w") as f:
            json.dump(record, f, indent=2)
        name = a.name or os.path.basename(out.rstrip("/"))
        entry = registry_entry(name, out, dim)
        with open(os.path.join(tmp, "registry.toml"), "w") as f:
            f.write(entry)
    print(f"[export] wrote {out}; registry entry:\n{entry}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="Hub id or local folder of a vision backbone")
    p.add_argument("out", help="folder to write (replaced only with --force)")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    p.add_argument("--features", help="comma-separated: cls, pool, mean, mid:K (default: the family's)")
    p.add_argument("--fp16", action="store_true", help="float16 weights and activations (CUDA)")
    p.add_argument("--fuse", action="store_true", help="ONNX Runtime's transformer fusion")
    p.add_argument("--patch-matmul", action="store_true",
                   help="the patch embedding's Conv as one MatMul (GEMM kernels on CUDA; patch_matmul.py)")
    p.add_argument("--gemm-gelu", action="store_true",
                   help="MLP MatMul + GELU as the engine's cascade.MatMulBiasGelu (cuBLASLt epilogue on CUDA; gemm_gelu.py)")
    p.add_argument("--images", nargs="+", help="images (files or folders) for the PyTorch check")
    p.add_argument("--bound", type=float, help="largest relative difference accepted")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--name", help="registry name (default: OUT's folder name)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    a = p.parse_args(argv)
    try:
        return run(a)
    except BackboneError as e:
        print(f"[export] error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
