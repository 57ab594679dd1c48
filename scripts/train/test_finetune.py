"""finetune.py on a small randomly initialised DINOv2 and a drawn data set (orange cones on
street-like scenes or none, four groups), on the CPU: training with a held-out group and early
stopping, export checked through the engine, resume, refusals, leave-one-source-out, and two
processes under torchrun (DDP over gloo).

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

import finetune  # noqa: E402
from testsupport import quiet  # noqa: E402

GROUPS = ["tracon", "g1", "g2", "g3"]


def scenes(root, per_group=10):
    """Street-like frames (sky, road, noise), half with orange cones; a manifest of them."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(72)
    rows = ["path,label"]
    for g in GROUPS:
        os.makedirs(os.path.join(root, g), exist_ok=True)
        for i in range(per_group):
            w, h = 160, 120
            img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(90, 160, 3)))
            d = ImageDraw.Draw(img)
            d.rectangle([0, h // 2, w, h], fill=tuple(int(v) for v in rng.integers(40, 90, 3)))
            label = i % 2
            if label:
                for _ in range(int(rng.integers(2, 4))):
                    x, y = int(rng.integers(10, w - 20)), int(rng.integers(h // 2, h - 25))
                    d.polygon([(x, y + 24), (x + 16, y + 24), (x + 8, y)], fill=(250, 110, 20))
            px = np.asarray(img).astype(np.int16) + rng.integers(-12, 12, (h, w, 3))
            Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(os.path.join(root, g, f"{i:03d}.jpg"))
            rows.append(f"{g}/{i:03d}.jpg,{label}")
    with open(os.path.join(root, "manifest.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    return os.path.join(root, "manifest.csv")


def backbone(folder, seed=26, layers=3):
    import torch
    import transformers as t

    torch.manual_seed(seed)
    config = t.Dinov2Config(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
                            image_size=56, patch_size=14)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.Dinov2Model(config).save_pretrained(folder)
        t.BitImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56},
                               image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


class FinetuneTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        cls.manifest = scenes(os.path.join(cls.dir, "data"))
        cls.backbone = backbone(os.path.join(cls.dir, "dino"))
        # the views once, as a machine without the binary would receive them
        cls.views = os.path.join(cls.dir, "views")
        finetune.render_views([cls.manifest], cls.views, 2, "0-3", 72, finetune.os.path.join(ROOT, "target/release/cascade"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def args(self, *extra):
        return ["--backbone", self.backbone, "--manifest", self.manifest, "--batch", "8", "--features", "cls,mean,mid:2",
                "--views-from", self.views, *extra]

    def test_train_with_a_held_out_group_export_and_resume(self):
        out, ck = os.path.join(self.dir, "out"), os.path.join(self.dir, "ck")
        rc, text, err = quiet(finetune.main, self.args("--out", out, "--unfreeze", "1", "--epochs", "2",
                                                       "--holdout", "g3", "--checkpoint", ck, "--patience", "5"))
        self.assertEqual(rc, 0, text + err)
        self.assertIn("head fitted on frozen 96-d features of 60 views of 30 images", text)
        epochs = [json.loads(line.split("] ", 1)[1]) for line in text.splitlines() if '"epoch"' in line]
        self.assertEqual([e["epoch"] for e in epochs], [1, 2])
        self.assertTrue(all("val_loss" in e and "val_mcc" in e for e in epochs), epochs)
        self.assertRegex(text, r"engine \(cascade infer\) vs PyTorch on 10 held-out views: largest score difference")
        for f in ("backbone/model.onnx", "backbone/preprocessor_config.json", "head.json", "models.toml"):
            self.assertTrue(os.path.exists(os.path.join(out, f)), f)
        with open(os.path.join(out, "head.json")) as f:
            head = json.load(f)
        self.assertEqual((head["input_dim"], head["backbone"]["dim"]), (96, 96))
        self.assertEqual(head["backbone"]["input"], "56x56 centercrop short 64 rgb scale 0.003921569 mean [0.485, 0.456, "
                                                    "0.406] std [0.229, 0.224, 0.225] resample bicubic floor")
        # the engine loads the registry as written (the export's check ran it; here `check` too)
        r = subprocess.run([os.path.join(ROOT, "target/release/cascade"), "infer", "--policies", out, "--model",
                            "roadwork-ft", os.path.join(self.dir, "data", "g3", "001.jpg")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreaterEqual(json.loads(r.stdout)["result"]["score"], 0.0)
        # resume: a third epoch only
        rc, text, err = quiet(finetune.main, self.args("--out", out, "--unfreeze", "1", "--epochs", "3",
                                                       "--holdout", "g3", "--checkpoint", ck, "--resume", "--patience", "5"))
        self.assertEqual(rc, 0, text + err)
        self.assertIn("resumed from", text)
        self.assertEqual([json.loads(line.split("] ", 1)[1])["epoch"] for line in text.splitlines() if '"epoch"' in line], [3])
        # a checkpoint of another feature set (or backbone) is refused
        rc, text, err = quiet(finetune.main, ["--backbone", self.backbone, "--manifest", self.manifest, "--batch", "8",
                                              "--features", "cls,mean", "--views-from", self.views, "--out", out,
                                              "--unfreeze", "1", "--epochs", "4", "--checkpoint", ck, "--resume"])
        self.assertEqual(rc, 2)
        self.assertRegex(err, r"checkpoint .*last.pt was trained as .*'features': \['cls', 'mean', 'mid:2'\].*, not .*: refused")

    def test_leave_one_source_out_reports_pooled_and_per_level(self):
        report = os.path.join(self.dir, "cv.json")
        oof = os.path.join(self.dir, "oof.csv")
        rc, text, err = quiet(finetune.main, self.args("--cv", "source", "--unfreeze", "0", "--json", report, "--oof", oof))
        self.assertEqual(rc, 0, text + err)
        with open(report) as f:
            r = json.load(f)
        self.assertEqual([f["group"] for f in r["folds"]], ["g1", "g2", "g3"], "tracon always trains")
        self.assertEqual(r["pooled"]["n"], 30)
        self.assertEqual(sum(v["n"] for v in r["levels"].values()), 30)
        lo, hi = r["pooled"]["mcc_ci"]
        self.assertLessEqual(lo, r["pooled"]["mcc"])
        self.assertLessEqual(r["pooled"]["mcc"], hi)
        with open(oof) as f:
            self.assertEqual(len(f.read().splitlines()), 31)

    def test_bad_input_is_refused_with_the_reason(self):
        bad = os.path.join(self.dir, "bad.csv")
        with open(bad, "w") as f:
            f.write("path,label\ng1/000.jpg,2\n")
        rc, _, err = quiet(finetune.main, ["--backbone", self.backbone, "--manifest", bad, "--cv", "source"])
        self.assertEqual(rc, 2)
        self.assertIn("bad.csv:2: label '2' is not 0 or 1", err)
        # an evaluation manifest that shares images with training (by content, whatever the path)
        shared = os.path.join(self.dir, "data", "eval.csv")
        with open(shared, "w") as f:
            f.write("path,label\ng1/000.jpg,0\n./g2/001.jpg,1\n")
        rc, _, err = quiet(finetune.main, self.args("--out", os.path.join(self.dir, "x"), "--eval-manifest", shared))
        self.assertEqual(rc, 2)
        self.assertIn("the evaluation manifest shares 2 of its 2 images with the training manifests (by content): refused", err)
        rc, _, err = quiet(finetune.main, self.args("--out", os.path.join(self.dir, "x"), "--holdout", "nowhere"))
        self.assertIn("--holdout names groups the manifests do not have: ['nowhere']", err)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "x")), "nothing written for a refused run")

    def test_two_processes_under_torchrun(self):
        out = os.path.join(self.dir, "ddp")
        torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
        r = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", os.path.join(HERE, "finetune.py"),
                            *self.args("--out", out, "--unfreeze", "1", "--epochs", "1", "--device", "cpu")],
                           capture_output=True, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr[-3000:])
        self.assertIn("epochs on 2 processes (cpu)", r.stdout)
        self.assertEqual(r.stdout.count('"epoch": 1'), 1, "rank 0 alone reports")
        self.assertTrue(os.path.exists(os.path.join(out, "head.json")))


if __name__ == "__main__":
    unittest.main()
