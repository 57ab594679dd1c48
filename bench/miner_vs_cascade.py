"""The Python miner as operators run it today against cascade, same machine, same images,
same signed requests.

- Python miner: a real `bt.Axon` (bittensor 9.12.2) whose forward runs the `accuracy` policy's
  logic in Python: EfficientNet-Lite0 + the trained head with onnxruntime Python, the mirrored
  second look, then rapidocr (same PP-OCR models, its default settings) with the same keywords
  and the same weighted fusion, read from policies/accuracy.toml.
- cascade: `cascade serve` with the shipped policies (accuracy hotkey), the same wallet.
- Load: validator-style 224x224 JPEGs (centre crop, quality 75) of the dev images, signed per
  request exactly as the dendrite signs them, at concurrency 1, 8 and 32.

Needs `make setup` and `scripts/bt_venv.sh`; installs onnxruntime, rapidocr and pillow into
.cache/bt-venv on first use. Usage: .cache/bt-venv/bin/python bench/miner_vs_cascade.py [--seconds 15]
"""

import argparse
import asyncio
import base64
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from typing import List, Union

import aiohttp
import numpy as np
import pydantic

import bittensor as bt
import bittensor.utils.networking as networking

networking.get_external_ip = lambda: "127.0.0.1"
import bittensor.core.dendrite as dendrite_mod  # noqa: E402

if hasattr(dendrite_mod, "get_external_ip"):
    dendrite_mod.get_external_ip = lambda: "127.0.0.1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("CASCADE_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))


class ImageSynapse(bt.Synapse):
    testnet_label: int = -1
    image: str = pydantic.Field(default="", frozen=False)
    prediction: Union[float, List[float]] = pydantic.Field(default=-1.0, frozen=False)

    def deserialize(self):
        return self.prediction


# ---------------------------------------------------------------- the Python miner's policy

class PythonPolicy:
    def __init__(self):
        import onnxruntime as ort
        from PIL import Image
        from rapidocr_onnxruntime import RapidOCR

        self.Image = Image
        self.sess = ort.InferenceSession(os.path.join(ROOT, "target/models/efficientnet_lite0.onnx"), providers=["CPUExecutionProvider"])
        head = json.load(open(os.path.join(ROOT, "policies/heads/roadwork-effnet.json")))
        self.layers = [(np.array(l["weights"], dtype=np.float32), np.array(l["bias"], dtype=np.float32), l["relu"]) for l in head["layers"]]
        self.ocr = RapidOCR()
        cfg = tomllib.load(open(os.path.join(ROOT, "policies/accuracy.toml"), "rb"))
        self.stages = cfg["router"]["params"]["stages"]
        kw = cfg["text_scorer"]["params"]
        self.pos = sorted(((self.norm(k), v) for k, v in kw["positive"].items()), key=lambda x: -len(x[0]))
        self.neg = sorted(((self.norm(k), v) for k, v in kw.get("negative", {}).items()), key=lambda x: -len(x[0]))
        self.min_conf, self.gain = kw.get("min_confidence", 0.5), kw.get("gain", 2.0)
        self.weights = cfg["fuser"]["params"]["weights"]

    @staticmethod
    def norm(s):
        return "".join(c for c in s.lower() if c.isalnum())

    def classify(self, im):
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), self.Image.BILINEAR)
        w, h = im.size
        l, u = (w - 224) // 2, (h - 224) // 2
        x = (np.asarray(im.crop((l, u, l + 224, u + 224)), dtype=np.float32) / 255 - 0.5) / 0.5
        v = self.sess.run(["embedding"], {"input": x.transpose(2, 0, 1)[None]})[0][0]
        for W, b, relu in self.layers:
            v = W @ v + b
            if relu:
                v = np.maximum(v, 0)
        return float(1 / (1 + np.exp(-v[0])))

    def text_score(self, im):
        res, _ = self.ocr(np.asarray(im)[:, :, ::-1])
        text = self.norm(" ".join(r[1] for r in (res or []) if r[2] >= self.min_conf))
        t = list(text)
        found = {"pos": 0.0, "neg": 0.0}
        for phrases, key in ((self.neg, "neg"), (self.pos, "pos")):
            for p, w in phrases:
                hit, i = False, 0
                while i + len(p) <= len(t):
                    if "".join(c or "\0" for c in t[i:i + len(p)]) == p:
                        t[i:i + len(p)] = [None] * len(p)
                        hit, i = True, i + len(p)
                    else:
                        i += 1
                if hit:
                    found[key] += w
        if not found["pos"] and not found["neg"]:
            return None
        return float(1 / (1 + np.exp(-self.gain * (found["pos"] - found["neg"]))))

    def fuse(self, ev):
        num = sum(self.weights[k] * v for k, v in ev.items() if k in self.weights)
        den = sum(self.weights[k] for k in ev if k in self.weights)
        return num / den

    def decide(self, b64):
        im = self.Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
        ev = {}
        for st in self.stages:
            flip = st.get("flip", False)
            img = im.transpose(self.Image.FLIP_LEFT_RIGHT) if flip else im
            suffix = ":flip" if flip else ""
            for m in st.get("classify", []):
                ev[m + suffix] = self.classify(img)
            if "read_text" in st:
                s = self.text_score(img)
                if s is not None:
                    ev["text" + suffix] = s
            fused = self.fuse(ev)
            lo, hi = st.get("exit_low"), st.get("exit_high")
            if (lo is not None and fused <= lo) or (hi is not None and fused >= hi):
                return fused
        p = self.fuse(ev)
        return 0.499 if p == 0.5 else p


def start_python_miner(wallet, port):
    policy = PythonPolicy()
    lock = threading.Lock()

    def forward(synapse: ImageSynapse) -> ImageSynapse:
        synapse.prediction = policy.decide(synapse.image)
        synapse.image = ""
        return synapse

    axon = bt.Axon(wallet=wallet, port=port, ip="127.0.0.1", external_ip="127.0.0.1")
    axon.attach(forward_fn=forward)
    axon.start()
    return axon, lock


# ------------------------------------------------------------------------------- the load

def validator_images(n=48):
    from PIL import Image
    rows = [l.split(",")[0] for l in open(os.path.join(SHARED, "data/roadwork-dev/manifest.csv")).read().splitlines()[1:]]
    rows = rows[:: max(1, len(rows) // n)][:n]
    out = []
    for r in rows:
        im = Image.open(os.path.join(SHARED, "data/roadwork-dev", r)).convert("RGB")
        s = min(im.size)
        l, u = (im.size[0] - s) // 2, (im.size[1] - s) // 2
        im = im.crop((l, u, l + s, u + s)).resize((224, 224), Image.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=75)
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


class Signer:
    """Signs requests the way the dendrite does (same message, key and headers), but from
    templates the SDK built once, so that the load generator's own CPU stays small on a
    2-core machine shared with the server under test."""

    def __init__(self, validator, target_info, images):
        den = bt.Dendrite(wallet=validator)
        self.kp, self.uuid = validator.hotkey, den.uuid
        self.templates = []
        for img in images:
            syn = den.preprocess_synapse_for_request(target_info, ImageSynapse(image=img), 9.0)
            headers = {k: str(v) for k, v in syn.to_headers().items()}
            headers["Content-Type"] = "application/json"
            body = json.dumps(syn.model_dump())
            self.templates.append((headers, body, str(syn.dendrite.nonce), syn.dendrite.signature))
        self.prefix = f"{syn.dendrite.hotkey}.{syn.axon.hotkey}"
        self.body_hash = syn.body_hash
        self.last = 0

    def request(self, i, uuid):
        headers, body, old_nonce, old_sig = self.templates[i % len(self.templates)]
        nonce = max(time.time_ns(), self.last + 1)
        self.last = nonce
        sig = "0x" + self.kp.sign(f"{nonce}.{self.prefix}.{uuid}.{self.body_hash}").hex()
        h = dict(headers)
        h["bt_header_dendrite_nonce"], h["bt_header_dendrite_signature"], h["bt_header_dendrite_uuid"] = str(nonce), sig, uuid
        b = body.replace(old_nonce, str(nonce)).replace(old_sig, sig).replace(self.uuid, uuid)
        return h, b.encode()


async def load(signer, port, concurrency, seconds):
    lat, errors = [], 0
    stop = time.time() + seconds

    async def worker(k):
        nonlocal errors
        uuid = f"{signer.uuid[:-4]}{k:04d}"
        async with aiohttp.ClientSession() as s:
            i = k
            while time.time() < stop:
                headers, body = signer.request(i, uuid)
                t = time.perf_counter()
                try:
                    async with s.post(f"http://127.0.0.1:{port}/ImageSynapse", headers=headers, data=body, timeout=aiohttp.ClientTimeout(total=9)) as r:
                        out = await r.json()
                        ok = r.status == 200 and 0 <= out.get("prediction", -1) <= 1
                except Exception:
                    ok = False
                if ok:
                    lat.append((time.perf_counter() - t) * 1e3)
                else:
                    errors += 1
                i += concurrency

    t0 = time.time()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    took = time.time() - t0
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(round((len(lat) - 1) * p)))] if lat else float("nan")
    return {"rps": len(lat) / took, "p50": pct(0.5), "p99": pct(0.99), "ok": len(lat), "errors": errors}


def cascade_policies(tmp, miner_ss58, validator_ss58):
    d = os.path.join(tmp, "policies")
    shutil.copytree(os.path.join(ROOT, "policies"), d)
    reg = open(os.path.join(d, "models.toml")).read().replace('"../', '"' + ROOT + "/")
    open(os.path.join(d, "models.toml"), "w").write(reg)
    acc = open(os.path.join(d, "accuracy.toml")).read()
    acc = acc.replace('name = "accuracy"', f'name = "accuracy"\nss58 = "{miner_ss58}"', 1)
    acc += f'\n[axon]\nallow = ["{validator_ss58}"]\n'
    open(os.path.join(d, "accuracy.toml"), "w").write(acc)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--concurrency", default="1,8,32")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    miner = bt.Wallet(name="miner", hotkey="default", path=tmp)
    miner.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False, suppress=True)
    validator = bt.Wallet(name="validator", hotkey="default", path=tmp)
    validator.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False, suppress=True)
    images = validator_images()
    levels = [int(c) for c in a.concurrency.split(",")]
    results = {}

    py_port = 18301
    axon, _ = start_python_miner(miner, py_port)
    time.sleep(2)
    info = bt.AxonInfo(version=0, ip="127.0.0.1", port=py_port, ip_type=4, hotkey=miner.hotkey.ss58_address, coldkey=miner.coldkeypub.ss58_address)
    signer = Signer(validator, info, images)
    asyncio.run(load(signer, py_port, 2, 3))  # warm-up
    for c in levels:
        results[("python", c)] = asyncio.run(load(signer, py_port, c, a.seconds))
        print("python", c, results[("python", c)], file=sys.stderr)
    axon.stop()

    pol = cascade_policies(tmp, miner.hotkey.ss58_address, validator.hotkey.ss58_address)
    cport = 18302
    proc = subprocess.Popen([os.path.join(ROOT, "target/release/cascade"), "serve", "--listen", f"127.0.0.1:{cport}", "--policies", pol, "--no-watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
    proc.stdout.readline()
    info = bt.AxonInfo(version=0, ip="127.0.0.1", port=cport, ip_type=4, hotkey=miner.hotkey.ss58_address, coldkey=miner.coldkeypub.ss58_address)
    signer = Signer(validator, info, images)
    asyncio.run(load(signer, cport, 2, 3))
    for c in levels:
        results[("cascade", c)] = asyncio.run(load(signer, cport, c, a.seconds))
        print("cascade", c, results[("cascade", c)], file=sys.stderr)
    proc.kill()

    print(f"\naccuracy policy over /ImageSynapse, {len(images)} validator-style images, {a.seconds:.0f} s per level, same machine\n")
    print("| concurrency | server  | req/s  | p50 ms  | p99 ms  | errors |")
    print("|-------------|---------|--------|---------|---------|--------|")
    for c in levels:
        for srv in ("python", "cascade"):
            r = results[(srv, c)]
            print(f"| {c:>11} | {srv:<7} | {r['rps']:>6.1f} | {r['p50']:>7.1f} | {r['p99']:>7.1f} | {r['errors']:>6} |")
    for c in levels:
        p, q = results[("python", c)], results[("cascade", c)]
        print(f"concurrency {c}: cascade/python throughput {q['rps'] / p['rps']:.2f}x, p99 {q['p99'] / p['p99']:.2f} of python's")


if __name__ == "__main__":
    main()
