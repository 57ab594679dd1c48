"""export_backbone.py on randomly initialised backbones built from their configs (no download):
each family is exported, checked against PyTorch by the script, then loaded by the engine
(`cascade infer --full` through an `hf` registry entry, the engine's own resize and crop) and
compared with PyTorch fed by the checkpoint's own image processor. The shipped DINOv2 cut,
converted to a checkpoint and exported again, reproduces the shipped file.

Run from the repository root after `make setup` and scripts/train_venv.sh:
    .cache/train-venv/bin/python -m unittest discover -s scripts/train -p 'test_*.py'
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
CASCADE = os.path.join(ROOT, "target", "release", "cascade")

import export_backbone  # noqa: E402
from testsupport import quiet  # noqa: E402
from backbones import Embedder, load  # noqa: E402


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_text(path):
    with open(path) as f:
        return f.read()


def images(folder):
    """Scenes with structure at several sizes and aspect ratios (a resize and crop matter)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(26)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate([(320, 200), (90, 160), (224, 224), (641, 359)]):
        base = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        d = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
            d.rectangle([x0, y0, x0 + int(rng.integers(5, w // 3 + 6)), y0 + int(rng.integers(5, h // 3 + 6))],
                        fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        p = os.path.join(folder, f"scene{i}.png")
        img.save(p)
        paths.append(p)
    return paths


def families():
    """model_type -> (config, image processor): small random backbones as the Hub ships them."""
    import transformers as t

    vit = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    imagenet = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return {
        # DINOv2: short side 64, centre 56, bicubic (its processor's defaults, scaled down)
        "dinov2": (t.Dinov2Config(image_size=56, patch_size=14, **vit),
                   t.BitImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}, **imagenet)),
        "vit": (t.ViTConfig(image_size=32, patch_size=8, **vit), t.ViTImageProcessorPil(size={"height": 32, "width": 32})),
        "clip_vision_model": (t.CLIPVisionConfig(image_size=32, patch_size=8, **vit),
                              t.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})),
        "siglip_vision_model": (t.SiglipVisionConfig(image_size=32, patch_size=8, **vit),
                                t.SiglipImageProcessorPil(size={"height": 32, "width": 32})),
        # ConvNeXt below 384: short side to 64 / 0.875 = 73, centre 64
        "convnext": (t.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
                     t.ConvNextImageProcessorPil(size={"shortest_edge": 64}, crop_pct=0.875, **imagenet)),
    }


FEATURES = {"dinov2": "cls,mean,mid:2", "vit": "cls,mean", "clip_vision_model": "cls,mean,mid:1",
            "siglip_vision_model": "pool,mean", "convnext": "pool,mid:2"}


class ExportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import torch
        from transformers import AutoModel

        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        cls.images = images(os.path.join(cls.dir, "images"))
        cls.src = {}
        torch.manual_seed(26)
        for name, (config, processor) in families().items():
            folder = os.path.join(cls.dir, "hub", name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                AutoModel.from_config(config).save_pretrained(folder)
                processor.save_pretrained(folder)
            cls.src[name] = folder

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def export(self, name, out, *extra):
        return quiet(export_backbone.main, [self.src[name], out, "--images", os.path.join(self.dir, "images"), *extra])

    def engine(self, registry, model):
        out = subprocess.run([CASCADE, "infer", "--policies", registry, "--model", model, "--full", *self.images],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        return np.array([json.loads(line)["result"]["values"] for line in out.stdout.splitlines()])

    def torch_embedding(self, name, features):
        import torch
        from PIL import Image
        from transformers import AutoImageProcessor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, config, arch = load(self.src[name])
            processor = AutoImageProcessor.from_pretrained(self.src[name])
        x = processor(images=[Image.open(p).convert("RGB") for p in self.images], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return Embedder(model, config, arch, features.split(",")).eval()(x).numpy()

    def test_every_family_exports_and_the_engine_reads_it_as_pytorch_does(self):
        registry = os.path.join(self.dir, "registry")
        os.makedirs(registry, exist_ok=True)
        entries = []
        for name in families():
            out = os.path.join(self.dir, "out", name)
            rc, text, err = self.export(name, out, "--features", FEATURES[name])
            self.assertEqual(rc, 0, f"{name}: {text}{err}")
            self.assertIn("ONNX Runtime vs PyTorch on 4 images: max difference", text)
            record = read_json(os.path.join(out, "cascade-export.json"))
            self.assertEqual(record["features"], FEATURES[name].split(","))
            self.assertLessEqual(record["check"]["max_difference"], 1e-3)
            for f in ("model.onnx", "config.json", "preprocessor_config.json", "registry.toml"):
                self.assertTrue(os.path.exists(os.path.join(out, f)), f)
            entries.append(read_text(os.path.join(out, "registry.toml")))
        with open(os.path.join(registry, "models.toml"), "w") as f:
            f.write("\n".join(entries))
        for name in families():
            got = self.engine(registry, name)
            want = self.torch_embedding(name, FEATURES[name])
            self.assertEqual(got.shape, want.shape, name)
            self.assertEqual(want.shape[1], read_json(os.path.join(self.dir, "out", name, "cascade-export.json"))["dim"])
            # the engine resizes with its own filters (PIL's, re-implemented): a fraction of an
            # 8-bit level per pixel, which a random backbone passes on, not more
            rel = np.abs(got - want).max() / max(1.0, np.abs(want).max())
            print(f"{name}: engine vs PyTorch, largest difference {rel:.2e} of the output scale", file=sys.stderr)
            self.assertLess(rel, 0.02, f"{name}: engine vs PyTorch {rel:.3g}")
            for g, w in zip(got, want):
                self.assertGreater(np.corrcoef(g, w)[0, 1], 0.999, name)

    def test_fused_and_fp16_exports_pass_their_check(self):
        out = os.path.join(self.dir, "fused")
        rc, text, err = self.export("dinov2", out, "--fuse", "--fp16")
        self.assertEqual(rc, 0, text + err)
        self.assertIn("fused:", text)
        record = read_json(os.path.join(out, "cascade-export.json"))
        self.assertTrue(record["fp16"] and record["fused"])
        self.assertLessEqual(record["check"]["max_difference"], 5e-2)
        # DINOv2 rewritten for the fusion: one Attention kernel per block, and the position
        # embeddings fixed for the size (no Resize left to run on the CPU)
        import onnx

        ops = [n.op_type for n in onnx.load(os.path.join(out, "model.onnx")).graph.node]
        self.assertEqual(ops.count("Attention"), 3, sorted(set(ops)))
        self.assertNotIn("Resize", ops)
        # and the same function: in fp32 the fused export is within the fp32 bound of PyTorch
        out32 = os.path.join(self.dir, "fused32")
        rc, text, err = self.export("dinov2", out32, "--fuse")
        self.assertEqual(rc, 0, text + err)
        self.assertLessEqual(read_json(os.path.join(out32, "cascade-export.json"))["check"]["max_difference"], 1e-3)
        # the patch Conv as a MatMul: no Conv left, and still within the fp32 bound of PyTorch
        outmm = os.path.join(self.dir, "patchmm")
        rc, text, err = self.export("dinov2", outmm, "--fuse", "--patch-matmul")
        self.assertEqual(rc, 0, text + err)
        self.assertIn("as a MatMul", text)
        record = read_json(os.path.join(outmm, "cascade-export.json"))
        self.assertTrue(record["patch_matmul"])
        self.assertLessEqual(record["check"]["max_difference"], 1e-3)
        ops = [n.op_type for n in onnx.load(os.path.join(outmm, "model.onnx")).graph.node]
        self.assertNotIn("Conv", ops)

    def test_the_fused_gelu_rewrite_passes_its_check_and_the_engine_runs_it(self):
        import onnx

        out = os.path.join(self.dir, "gemmgelu")
        rc, text, err = self.export("dinov2", out, "--fuse", "--patch-matmul", "--gemm-gelu")
        self.assertEqual(rc, 0, text + err)
        self.assertIn("3 MatMul -> GELU pairs as cascade.MatMulBiasGelu", text)
        record = read_json(os.path.join(out, "cascade-export.json"))
        self.assertTrue(record["gemm_gelu"])
        self.assertLessEqual(record["check"]["max_difference"], 1e-3)
        nodes = onnx.load(os.path.join(out, "model.onnx")).graph.node
        self.assertEqual(sum(n.domain == "cascade" for n in nodes), 3)
        self.assertFalse(any(n.op_type in ("BiasGelu", "FastGelu") for n in nodes))
        self.assertFalse(os.path.exists(os.path.join(out, "model.onnx.twin.onnx")), "the check's twin is not shipped")
        # the engine opens it (its CPU kernel) and embeds as PyTorch does
        registry = os.path.join(self.dir, "registry-gemmgelu")
        os.makedirs(registry, exist_ok=True)
        with open(os.path.join(registry, "models.toml"), "w") as f:
            f.write(read_text(os.path.join(out, "registry.toml")))
        got = self.engine(registry, "gemmgelu")
        want = self.torch_embedding("dinov2", ",".join(record["features"]))
        rel = np.abs(got - want).max() / max(1.0, np.abs(want).max())
        self.assertLess(rel, 0.02, f"engine vs PyTorch {rel:.3g}")
        # without --fuse there is no pair to rewrite: refused with the reason
        rc, text, err = self.export("dinov2", os.path.join(self.dir, "gemmgelu-unfused"), "--gemm-gelu")
        self.assertEqual(rc, 2, text + err)
        self.assertIn("--gemm-gelu: no MatMul -> BiasGelu/FastGelu pair", err)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "gemmgelu-unfused")))

    def test_refusals_leave_nothing_behind(self):
        from transformers import BertConfig

        bert = os.path.join(self.dir, "bert")
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(bert)
        out = os.path.join(self.dir, "refused")
        rc, _, err = quiet(export_backbone.main, [bert, out])
        self.assertEqual(rc, 2)
        self.assertIn("model_type 'bert' is not a vision backbone this export knows. Supported: clip, clip_vision_model, "
                      "convnext, convnextv2, dinov2, dinov2_with_registers, dinov3_convnext, dinov3_vit, siglip, "
                      "siglip_vision_model, vit", err)
        # an export whose ONNX output differs from PyTorch beyond the bound
        rc, text, err = self.export("vit", out, "--bound", "0")
        self.assertEqual(rc, 2, text)
        self.assertRegex(err, r"the export differs from PyTorch by [0-9.e-]+ \(bound 0\): refused, .* untouched")
        self.assertFalse(os.path.exists(out))
        self.assertEqual([f for f in os.listdir(self.dir) if f.startswith(".export-")], [], "no temporary folder left")
        rc, _, err = self.export("vit", out, "--features", "cls,mid:9")
        self.assertEqual(rc, 2)
        self.assertIn("[export] error: feature 'mid:9': vit has blocks 1..3\n", err)
        rc, _, err = self.export("convnext", out, "--features", "cls")
        self.assertIn("feature 'cls' is not one a convnext gives", err)
        # an existing folder is replaced only when asked
        os.makedirs(out)
        rc, _, err = self.export("vit", out)
        self.assertEqual(rc, 2)
        self.assertIn("exists: pass --force to replace it", err)
        rc, text, err = self.export("vit", out, "--force")
        self.assertEqual(rc, 0, err)
        self.assertTrue(os.path.exists(os.path.join(out, "model.onnx")))


class ShippedDinov2Test(unittest.TestCase):
    def test_the_shipped_cut_converts_and_exports_back_to_the_same_embedding(self):
        import onnxruntime as ort

        shipped = os.path.join(ROOT, "target", "models", "dinov2_vits14.onnx")
        self.assertTrue(os.path.exists(shipped), "make setup builds the shipped DINOv2 cut first")
        with tempfile.TemporaryDirectory() as d:
            hf, out = os.path.join(d, "hf"), os.path.join(d, "out")
            conv = subprocess.run([sys.executable, os.path.join(HERE, "dinov2_from_onnx.py"), shipped, hf],
                                  capture_output=True, text=True, timeout=300)
            self.assertEqual(conv.returncode, 0, conv.stderr)
            img = images(os.path.join(d, "images"))
            rc, text, err = quiet(export_backbone.main, [hf, out, "--features", "cls,mean,mid:8", "--images", *img])
            self.assertEqual(rc, 0, text + err)
            x = np.random.default_rng(8).standard_normal((2, 3, 224, 224)).astype(np.float32)
            a = ort.InferenceSession(shipped, providers=["CPUExecutionProvider"])
            b = ort.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
            ya = a.run(None, {a.get_inputs()[0].name: x})[0]
            yb = b.run(None, {"pixel_values": x})[0]
            self.assertEqual(ya.shape, (2, 1152))
            self.assertLess(np.abs(ya - yb).max(), 1e-4)


if __name__ == "__main__":
    unittest.main()
