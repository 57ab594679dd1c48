"""The int8 DINOv2 set-up product (dinov2_int8.py): a quantised file that drifts past the bound is
refused with the bound and the drift named and nothing written; within the bound it is written
with the bytes setup_models.sh pins. Needs `make setup` (the fp32 cut in target/models).

    .venv/bin/python -m unittest discover -s scripts/models -p 'test_*.py'
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FP32 = os.path.join(ROOT, "target", "models", "dinov2_vits14.onnx")
SIGNS = os.path.join(ROOT, "tests", "models", "render_signs.py")


def pinned():
    text = open(os.path.join(HERE, "setup_models.sh")).read()
    return re.search(r"^DINO_INT8_SHA256=([0-9a-f]{64})$", text, re.M).group(1)


@unittest.skipUnless(os.path.exists(FP32), "run make setup first (no fp32 DINOv2 cut)")
class Int8(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.images = tempfile.mkdtemp()
        subprocess.run([sys.executable, SIGNS, cls.images], check=True)

    def run_script(self, out, *extra):
        return subprocess.run([sys.executable, os.path.join(HERE, "dinov2_int8.py"), FP32, out, "--images", self.images, *extra],
                              capture_output=True, text=True)

    def test_a_drift_past_the_bound_is_refused_naming_both_and_nothing_is_written(self):
        with tempfile.TemporaryDirectory() as d:
            r = self.run_script(os.path.join(d, "int8.onnx"), "--bound", "0.00001")
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertRegex(r.stderr, r"the int8 DINOv2 drifts from the fp32 file by 0\.\d{4} on \S+\.jpg \(bound 1e-05\): refused")
            self.assertEqual(os.listdir(d), [], "a refused file must leave nothing behind")

    def test_within_the_bound_the_file_is_the_pinned_one(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "int8.onnx")
            r = self.run_script(out)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertRegex(r.stdout, r"largest score change 0\.0\d{3} .* answers cross 0\.5 \(bound 0\.06\)")
            with open(out, "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), pinned())


if __name__ == "__main__":
    unittest.main()
