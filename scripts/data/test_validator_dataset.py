"""Tests of validator_dataset.py: offline, a few seconds.

Run from the repo root:
    .venv/bin/python -m unittest discover -s scripts/data -p 'test_*.py'

The extraction is checked against the validator's own code (the subnet's reference copy under
$CASCADE_SHARED/reference/streetvision-subnet, default ../shared): its extract_images_from_parquet
runs on the same shards, and its ImageCache.sample decides which of its files it would serve. The
download is checked against a stand-in for the Hugging Face Hub on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib
import importlib.util
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import types
import unittest
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import validator_dataset as vd  # noqa: E402

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "fedcba9876543210fedcba9876543210fedcba98"
REPO = "test-org/roadwork"
TEST_TIMEOUT_S = 60


class TestTimeout(BaseException):
    """Raised by the per-test alarm; a BaseException so that no retry loop swallows it."""


class Bounded(unittest.TestCase):
    def setUp(self):
        def on_alarm(signum, frame):
            raise TestTimeout(f"{self.id()} ran past {TEST_TIMEOUT_S}s")

        self._old_alarm = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(TEST_TIMEOUT_S)
        self.tmp = Path(tempfile.mkdtemp(prefix="validator-dataset-test-"))

    def tearDown(self):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self._old_alarm)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_main(self, *argv) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = vd.main([str(a) for a in argv])
        return rc, err.getvalue()


# ---------------------------------------------------------------------------------------------
# Test shards in the validator's schema


def noisy(w=32, h=24, seed=0) -> Image.Image:
    rnd = random.Random(seed)
    return Image.frombytes("RGB", (w, h), bytes(rnd.randrange(256) for _ in range(w * h * 3)))


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png(seed):
    return encoded(noisy(seed=seed), "PNG")


def jpeg(seed):
    return encoded(noisy(seed=seed), "JPEG", quality=93)


def webp(seed):
    return encoded(noisy(seed=seed), "WEBP")


def mpo(seed):
    return encoded(noisy(seed=seed), "MPO", save_all=True, append_images=[noisy(seed=seed + 100)])


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

# Shard A: HF `Image` feature values ({"bytes", "path"}), a location column.
# (image bytes, label, scene_description, location, expected outcome)
ROWS_A = [
    (png(0), 1, "cones on the right", "Berlin", 1),
    (jpeg(1), 0, None, "Berlin", 0),
    (jpeg(2), 0, "workers ahead", "München Süd", vd.R_ZERO_SCENE),
    (png(3), 1, None, "Paris", vd.R_ONE_NO_SCENE),
    (b"definitely not an image", 0, None, "Paris", vd.R_NOT_IMAGE),
    (png(5), 2, "x", "Paris", vd.R_LABEL),
    (jpeg(6), 1, "", "Paris", vd.R_ONE_NO_SCENE),
    (webp(7), 0, None, "Paris", vd.r_format("webp")),
    (mpo(8), 0, None, "Paris", vd.r_format("mpo")),
    (jpeg(9)[: len(jpeg(9)) * 2 // 3], 0, None, "Paris", vd.R_NOT_IMAGE),  # opens, does not decode
    (jpeg(10), 0, None, None, 0),
    (png(11), 1, 'a, "quoted"\nscene', "../etc", 1),
]
# Shard B: base64 text in the image column, no location column.
ROWS_B = [
    (base64.b64encode(jpeg(20)).decode(), 0, None, None, 0),
    (base64.b64encode(png(21)).decode(), 1, "roadworks", None, 1),
    ("!!!! not base64 !!!!", 1, "x", None, vd.R_NOT_IMAGE),
]
NAME_A = "data/train-00000-of-00002.parquet"
NAME_B = "data/train-00001-of-00002.parquet"


def table_a() -> pa.Table:
    return pa.table(
        {
            "image": pa.array([{"bytes": r[0], "path": f"img{i}.x"} for i, r in enumerate(ROWS_A)], IMAGE_STRUCT),
            "label": pa.array([r[1] for r in ROWS_A], pa.int64()),
            "scene_description": pa.array([r[2] for r in ROWS_A], pa.string()),
            "location": pa.array([r[3] for r in ROWS_A], pa.string()),
            "id": pa.array(range(len(ROWS_A)), pa.int64()),
        }
    )


def table_b() -> pa.Table:
    return pa.table(
        {
            "image": pa.array([r[0] for r in ROWS_B], pa.string()),
            "label": pa.array([r[1] for r in ROWS_B], pa.int64()),
            "scene_description": pa.array([r[2] for r in ROWS_B], pa.string()),
        }
    )


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_good_shards(root: Path) -> dict[str, Path]:
    out = {}
    for name, t in ((NAME_A, table_a()), (NAME_B, table_b())):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(parquet_bytes(t))
        out[name] = p
    return out


def write_bad_shards(root: Path) -> dict[str, str]:
    """The shards to be refused and a phrase their refusal must contain."""
    no_label = pa.table(
        {"image": pa.array([{"bytes": png(30), "path": None}], IMAGE_STRUCT), "scene_description": ["x"]}
    )
    pq.write_table(no_label, root / "no_label.parquet")
    no_image = pa.table({"label": [1], "scene_description": ["x"]})
    pq.write_table(no_image, root / "no_image.parquet")
    good = parquet_bytes(table_a())
    (root / "truncated.parquet").write_bytes(good[: len(good) // 2])
    (root / "not_parquet.parquet").write_bytes(b"<html>rate limited</html>\n")
    return {
        "no_label.parquet": "no `label` column",
        "no_image.parquet": "no image column",
        "truncated.parquet": "truncated",
        "not_parquet.parquet": "not a parquet file",
    }


def read_manifest(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# The real peer: the validator's extraction and sampler


def reference_root() -> Path:
    shared = os.environ.get("CASCADE_SHARED")
    base = Path(shared) if shared else REPO_ROOT.parent / "shared"
    root = base / "reference" / "streetvision-subnet"
    if not (root / "natix" / "validator" / "cache" / "extract.py").is_file():
        raise AssertionError(
            f"the validator's reference code is not at {root} (set CASCADE_SHARED to the folder holding "
            "reference/streetvision-subnet); these tests need it and do not skip"
        )
    return root


def load_reference():
    """(extract_images_from_parquet, ImageCache) from the validator's code.

    extract.py needs only pyarrow, pandas and PIL, but `natix.validator.cache/__init__.py` imports
    base_cache, which imports bittensor (and download.py, requests): extract.py is loaded by file
    path. The sampler (image_cache.ImageCache.sample) is imported through its package with
    stand-ins for `bittensor` (its logging only) and, when absent, `requests` (imported, unused by
    sample), removed from sys.modules again afterwards."""
    root = reference_root()
    spec = importlib.util.spec_from_file_location(
        "reference_validator_extract", root / "natix" / "validator" / "cache" / "extract.py"
    )
    extract = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extract)
    assert "bittensor" not in sys.modules or hasattr(sys.modules["bittensor"], "_cascade_stub")

    stubs = {}
    if importlib.util.find_spec("bittensor") is None:
        bt = types.ModuleType("bittensor")
        bt._cascade_stub = True
        bt.logging = types.SimpleNamespace(**{k: (lambda *a, **k: None) for k in ("info", "warning", "error", "debug")})
        stubs["bittensor"] = bt
    if importlib.util.find_spec("requests") is None:
        rq = types.ModuleType("requests")
        rq_exc = types.ModuleType("requests.exceptions")
        rq_exc.RequestException = type("RequestException", (Exception,), {})
        rq.exceptions = rq_exc
        stubs["requests"] = rq
        stubs["requests.exceptions"] = rq_exc
    before = set(sys.modules)
    sys.modules.update(stubs)
    sys.path.insert(0, str(root))
    try:
        image_cache = importlib.import_module("natix.validator.cache.image_cache")
    finally:
        sys.path.remove(str(root))
        for name in set(sys.modules) - before:
            if name.split(".")[0] in ("natix", "bittensor", "requests"):
                del sys.modules[name]
        for name in stubs:
            sys.modules.pop(name, None)
    return extract.extract_images_from_parquet, image_cache.ImageCache


REF_EXTRACT, REF_IMAGE_CACHE = load_reference()


def reference_served(shard: Path, work: Path, num_images: int, seed: int | None) -> dict[str, tuple[int, bytes]]:
    """Run the validator's extraction on `shard`, then ask its sampler, file by file, whether it
    would serve each file as label 0 or 1. {file name: (label, bytes)} of the served ones."""
    ref_dir = work / "ref"
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its per-row "Failed to extract" warnings
        REF_EXTRACT(shard, ref_dir, num_images, seed=seed)
    served = {}
    for f in sorted(ref_dir.iterdir()):
        if f.suffix == ".json":
            continue
        one = work / "one" / f.stem
        one.mkdir(parents=True)
        shutil.copy(f, one / f.name)
        shutil.copy(f.with_suffix(".json"), one / (f.stem + ".json"))
        cache = REF_IMAGE_CACHE(cache_dir=one)
        labels = []
        for label in (0, 1):
            challenge = cache.sample(np.int64(label))
            if challenge is not None:
                challenge["image"].close()
                labels.append(label)
        assert len(labels) <= 1, (f, labels)
        if labels:
            served[f.name] = (labels[0], f.read_bytes())
    return served


# ---------------------------------------------------------------------------------------------
# Extraction


class Extraction(Bounded):
    def setUp(self):
        super().setUp()
        self.shards = self.tmp / "shards"
        self.good = write_good_shards(self.shards)
        self.bad = write_bad_shards(self.shards)
        self.out = self.tmp / "out"

    def test_counts_reasons_manifest_and_groups(self):
        rc, err = self.run_main("--out", self.out, "--from", self.shards)
        self.assertEqual(rc, 0, err)
        report = json.loads((self.out / "report.json").read_text())

        expect_kept = [o for *_, o in ROWS_A + ROWS_B if o in (0, 1)]
        self.assertEqual(report["kept"], len(expect_kept))
        self.assertEqual(report["labels"], {"0": expect_kept.count(0), "1": expect_kept.count(1)})
        dropped = {}
        for *_, o in ROWS_A + ROWS_B:
            if o not in (0, 1):
                dropped[o] = dropped.get(o, 0) + 1
        self.assertEqual(report["dropped"], dropped)
        self.assertEqual(
            dropped,
            {
                vd.R_ZERO_SCENE: 1,
                vd.R_ONE_NO_SCENE: 2,
                vd.R_NOT_IMAGE: 3,
                vd.R_LABEL: 1,
                "format webp never served": 1,
                "format mpo never served": 1,
            },
        )
        self.assertEqual(report["bad_label_values"], {"2": 1})
        self.assertEqual(report["group_column"], "location")

        by_name = {s["name"]: s for s in report["shards"]}
        self.assertEqual(set(by_name), {NAME_A, NAME_B, *self.bad})
        for name, phrase in self.bad.items():
            self.assertIn(phrase, by_name[name]["refused"], name)
            self.assertIn(f"refused {name}: ", err)
        self.assertEqual(by_name[NAME_A]["rows"], len(ROWS_A))
        self.assertEqual(by_name[NAME_A]["kept_by_label"], {"0": 2, "1": 2})
        self.assertEqual(by_name[NAME_B]["kept_by_label"], {"0": 1, "1": 1})
        self.assertIn("group_fallback", by_name[NAME_B])

        rows = read_manifest(self.out / "manifest.csv")
        self.assertEqual(
            list(rows[0]),
            ["path", "label", "source", "challenge", "shard", "index", "format", "width", "height"]
            + ["scene_description", "location", "id"],
        )
        got = {(r["path"], r["label"], r["source"], r["shard"], r["index"]) for r in rows}
        a, b = "train-00000-of-00002", "train-00001-of-00002"
        self.assertEqual(
            got,
            {
                (f"Berlin/{a}__image_0.png", "1", "Berlin", NAME_A, "0"),
                (f"Berlin/{a}__image_1.jpeg", "0", "Berlin", NAME_A, "1"),
                (f"unknown/{a}__image_10.jpeg", "0", "unknown", NAME_A, "10"),
                (f"etc/{a}__image_11.png", "1", "etc", NAME_A, "11"),
                (f"{b}/{b}__image_0.jpeg", "0", b, NAME_B, "0"),
                (f"{b}/{b}__image_1.png", "1", b, NAME_B, "1"),
            },
        )
        for r in rows:
            self.assertEqual(r["challenge"], "0")
            self.assertEqual(r["path"].split("/")[0], r["source"])  # what manifest.rs groups on
            self.assertTrue((self.out / r["path"]).is_file(), r["path"])
            with Image.open(self.out / r["path"]) as im:
                self.assertEqual(im.size, (32, 24))
                self.assertEqual((r["width"], r["height"]), ("32", "24"))
        scenes = {r["index"]: r["scene_description"] for r in rows if r["shard"] == NAME_A}
        self.assertEqual(scenes["11"], 'a, "quoted"\nscene')
        self.assertEqual(scenes["1"], "")
        self.assertEqual({r["id"] for r in rows if r["shard"] == NAME_A}, {"0", "1", "10", "11"})
        # Only the images of kept rows were written; nothing half-written left behind.
        images = sorted(p.relative_to(self.out).as_posix() for p in self.out.rglob("*") if p.is_file())
        self.assertEqual(images, sorted([r["path"] for r in rows] + ["manifest.csv", "report.json"]))
        self.assertIn("label 1 without a scene_description: 2", err)

    def test_images_are_the_validators_bytes(self):
        """The validator's own extraction + sampler on the same shards: same files, same bytes,
        same labels, and nothing it serves is missing here."""
        rc, err = self.run_main("--out", self.out, "--from", self.shards, "--group-column", "shard")
        self.assertEqual(rc, 0, err)
        ours = {Path(r["path"]).name: (int(r["label"]), (self.out / r["path"]).read_bytes()) for r in read_manifest(self.out / "manifest.csv")}
        theirs = {}
        for i, path in enumerate(self.good.values()):
            theirs.update(reference_served(path, self.tmp / f"ref{i}", num_images=10_000, seed=None))
        self.assertEqual(sorted(ours), sorted(theirs))
        for name in ours:
            self.assertEqual(ours[name][0], theirs[name][0], name)
            self.assertEqual(ours[name][1], theirs[name][1], f"{name}: bytes differ from the validator's")
        # The JPEG really is re-encoded (what validators send), not the parquet's bytes.
        self.assertNotEqual(ours["train-00000-of-00002__image_1.jpeg"][1], ROWS_A[1][0])

    def test_per_shard_sample_matches_validator(self):
        only_a = self.tmp / "only_a"
        only_a.mkdir()
        shutil.copy(self.good[NAME_A], only_a / "train-00000-of-00002.parquet")
        for n, seed in ((5, 3), (7, 11)):
            out = self.tmp / f"out{n}"
            rc, err = self.run_main("--out", out, "--from", only_a, "--per-shard", n, "--seed", seed)
            self.assertEqual(rc, 0, err)
            ours = {Path(r["path"]).name: (int(r["label"]), (out / r["path"]).read_bytes()) for r in read_manifest(out / "manifest.csv")}
            theirs = reference_served(only_a / "train-00000-of-00002.parquet", self.tmp / f"ref{n}", n, seed)
            self.assertEqual(ours, theirs)
            report = json.loads((out / "report.json").read_text())
            self.assertEqual(report["shards"][0]["considered"], n)

    def test_parallel_jobs_give_the_same_manifest(self):
        rc1, err1 = self.run_main("--out", self.tmp / "o1", "--from", self.shards)
        rc2, err2 = self.run_main("--out", self.tmp / "o2", "--from", self.shards, "--jobs", "2")
        self.assertEqual((rc1, rc2), (0, 0), err1 + err2)
        self.assertEqual((self.tmp / "o1/manifest.csv").read_bytes(), (self.tmp / "o2/manifest.csv").read_bytes())

    def test_shard_draw_as_the_validator(self):
        names = sorted(p.relative_to(self.shards).as_posix() for p in self.shards.rglob("*.parquet"))
        draws = np.random.RandomState(5).choice(names, 4)
        expect = list(dict.fromkeys(str(d) for d in draws))
        rc, err = self.run_main("--out", self.out, "--from", self.shards, "--shards", "4", "--seed", "5")
        report = json.loads((self.out / "report.json").read_text()) if rc == 0 else None
        if rc == 0:
            self.assertEqual([s["name"] for s in report["shards"]], expect)
            self.assertEqual(report["selection"], {"draws": 4, "distinct": len(expect)})
        else:  # the draw held no usable shard
            self.assertTrue(not set(expect) & {NAME_A, NAME_B}, err)

    def test_empty_result_writes_nothing(self):
        only_bad = self.tmp / "only_bad"
        only_bad.mkdir()
        t = pa.table(
            {
                "image": pa.array([{"bytes": png(40), "path": None}, {"bytes": b"nope", "path": None}], IMAGE_STRUCT),
                "label": [1, 0],
                "scene_description": pa.array([None, None], pa.string()),
            }
        )
        pq.write_table(t, only_bad / "x.parquet")
        shutil.copy(self.shards / "truncated.parquet", only_bad)
        rc, err = self.run_main("--out", self.out, "--from", only_bad)
        self.assertEqual(rc, 1)
        self.assertIn("error: no usable rows", err)
        self.assertNotIn("Traceback", err)
        self.assertEqual([p for p in self.out.rglob("*") if p.is_file()], [])

    def test_group_column_explicit_and_missing(self):
        rc, err = self.run_main("--out", self.out, "--from", self.shards, "--group-column", "nope")
        self.assertEqual(rc, 2)
        self.assertIn("--group-column nope", err)
        rc, err = self.run_main("--out", self.out, "--from", self.shards, "--group-column", "shard")
        self.assertEqual(rc, 0, err)
        self.assertIsNone(json.loads((self.out / "report.json").read_text())["group_column"])
        for r in read_manifest(self.out / "manifest.csv"):
            self.assertEqual(r["source"], Path(r["shard"]).stem)

    def test_rules(self):
        self.assertEqual(vd.served_rule(0, None), (0, None))
        self.assertEqual(vd.served_rule(0, ""), (0, None))
        self.assertEqual(vd.served_rule(1, "x"), (1, None))
        self.assertEqual(vd.served_rule(True, "x"), (1, None))
        self.assertEqual(vd.served_rule(1.0, "x"), (1, None))
        self.assertEqual(vd.served_rule("1", "x"), (None, vd.R_LABEL))
        self.assertEqual(vd.served_rule(None, None), (None, vd.R_LABEL))
        self.assertEqual(vd.served_rule(float("nan"), None), (None, vd.R_LABEL))
        self.assertEqual(vd.as_stored(float("nan")) != vd.as_stored(float("nan")), True)  # NaN survives, truthy
        self.assertEqual(vd.as_stored(np.int64(3)), "3")  # JSON cannot hold it: kept as str
        self.assertEqual(vd.sanitise_group(".."), "unknown")
        self.assertEqual(vd.sanitise_group("São Paulo/Zone 1"), "S_o_Paulo_Zone_1")
        self.assertEqual(vd.sanitise_group("shards"), "shards_group")

    def test_cli_errors_have_no_traceback(self):
        cmd = [sys.executable, str(HERE / "validator_dataset.py")]
        p = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0)
        self.assertIn("--max-gb", p.stdout)
        p = subprocess.run(cmd + ["--out", str(self.out), "--from", str(self.tmp / "missing")], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("error: --from", p.stderr)
        self.assertNotIn("Traceback", p.stderr)


# ---------------------------------------------------------------------------------------------
# Download, against a stand-in for the Hugging Face Hub


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """What huggingface_hub 2.4.0 asks of the Hub for dataset_info, list_repo_tree and
    hf_hub_download (plain HTTP, no Xet):

      GET  /api/datasets/{repo}/revision/{rev}     -> {"id", "sha", "siblings"}
      GET  /api/datasets/{repo}/tree/{rev}?recursive=...  -> [{"type", "path", "size", "oid", "lfs"}]
      HEAD /datasets/{repo}/resolve/{rev}/{file}   -> X-Repo-Commit, ETag, X-Linked-Etag, X-Linked-Size
      GET  /datasets/{repo}/resolve/{rev}/{file}   -> the bytes; Range: bytes=N- -> 206 + Content-Range
    Unknown revisions answer 404 with X-Error-Code: RevisionNotFound, like the Hub."""

    def __init__(self, files: dict[str, bytes], sha: str = SHA):
        self.files = files
        self.sha = sha
        self.log: list[tuple[str, str, str | None]] = []
        self.wrong_bytes: set[str] = set()
        self.drop_first_get: set[str] = set()
        self._gets: dict[str, int] = {}
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 20

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def revisions(self):
        return {"main": self.sha, self.sha: self.sha}

    def send(self, h, status, body=b"", headers=(), head=False):
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def send_json(self, h, obj, head=False):
        self.send(h, 200, json.dumps(obj).encode(), [("Content-Type", "application/json")], head)

    def not_found(self, h, code="EntryNotFound", head=False):
        self.send(h, 404, b'{"error": "not found"}', [("X-Error-Code", code), ("Content-Type", "application/json")], head)

    def handle(self, h, head):
        url = urlsplit(h.path)
        path = unquote(url.path)
        with self._lock:
            self.log.append((h.command, h.path, h.headers.get("Range")))
        api = f"/api/datasets/{REPO}/"
        resolve = f"/datasets/{REPO}/resolve/"
        if path.startswith(api + "revision/"):
            rev = path[len(api + "revision/") :]
            if rev not in self.revisions():
                return self.not_found(h, "RevisionNotFound", head)
            siblings = [{"rfilename": p} for p in sorted(self.files)]
            return self.send_json(h, {"id": REPO, "sha": self.sha, "siblings": siblings, "private": False}, head)
        if path.startswith(api + "tree/"):
            rev = path[len(api + "tree/") :]
            if rev not in self.revisions():
                return self.not_found(h, "RevisionNotFound", head)
            entries, folders = [], set()
            for p in sorted(self.files):
                data = self.files[p]
                if "/" in p:
                    folders.add(p.rsplit("/", 1)[0])
                e = {"type": "file", "path": p, "size": len(data), "oid": git_blob_id(data)}
                if p.endswith(".parquet"):  # LFS, as on the Hub
                    e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries.append(e)
            entries = [{"type": "directory", "path": f, "oid": "0" * 40, "size": 0} for f in sorted(folders)] + entries
            return self.send_json(h, entries, head)
        if path.startswith(resolve):
            rev, _, file = path[len(resolve) :].partition("/")
            if rev not in self.revisions():
                return self.not_found(h, "RevisionNotFound", head)
            if file not in self.files:
                return self.not_found(h, "EntryNotFound", head)
            data = self.files[file]
            if file in self.wrong_bytes:  # same size, one byte off inside the file
                mid = len(data) // 2
                data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
            sha256 = hashlib.sha256(self.files[file]).hexdigest()
            common = [
                ("X-Repo-Commit", self.sha),
                ("ETag", f'"{git_blob_id(self.files[file])}"'),
                ("X-Linked-Etag", f'"{sha256}"'),
                ("X-Linked-Size", str(len(data))),
                ("Accept-Ranges", "bytes"),
                ("Content-Type", "application/octet-stream"),
            ]
            if head:
                return self.send(h, 200, data, common, head=True)
            rng = h.headers.get("Range")
            if rng:
                start = int(rng.split("=", 1)[1].split("-", 1)[0])
                body = data[start:]
                return self.send(h, 206, body, common + [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")])
            with self._lock:
                n = self._gets[file] = self._gets.get(file, 0) + 1
            if file in self.drop_first_get and n == 1:
                h.send_response(200)
                for k, v in common:
                    h.send_header(k, v)
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data[: len(data) // 2])
                h.wfile.flush()
                h.close_connection = True
                with contextlib.suppress(OSError):
                    h.connection.shutdown(socket.SHUT_RDWR)
                return
            return self.send(h, 200, data, common)
        return self.not_found(h, "RepoNotFound", head)


class Download(Bounded):
    def setUp(self):
        super().setUp()
        self.files = {
            NAME_A: parquet_bytes(table_a()),
            NAME_B: parquet_bytes(table_b()),
            "README.md": b"# roadwork\n",
            ".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n",
        }
        self.hub = FakeHub(self.files)
        self._env = {k: os.environ.get(k) for k in ("HF_ENDPOINT", "HF_HUB_DISABLE_TELEMETRY")}
        os.environ["HF_ENDPOINT"] = self.hub.url
        os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
        self.out = self.tmp / "out"

    def tearDown(self):
        self.hub.close()
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        super().tearDown()

    def download(self, *extra):
        return self.run_main("--out", self.out, "--repo", REPO, "--quiet", "--retry-wait", "0", *extra)

    def resolve_requests(self, method="GET"):
        return [(p, r) for m, p, r in self.hub.log if m == method and "/resolve/" in p]

    def assert_shards_on_disk(self):
        for name in (NAME_A, NAME_B):
            self.assertEqual((self.out / "shards" / name).read_bytes(), self.files[name], name)
        leftovers = [p for p in self.out.rglob("*.incomplete")]
        self.assertEqual(leftovers, [])

    def test_download_verify_extract(self):
        rc, err = self.download()
        self.assertEqual(rc, 0, err)
        self.assert_shards_on_disk()
        report = json.loads((self.out / "report.json").read_text())
        self.assertEqual(report["revision_sha"], SHA)
        self.assertEqual(report["revision"], "main")
        self.assertEqual(report["endpoint"], self.hub.url)
        self.assertEqual([s["name"] for s in report["shards"]], [NAME_A, NAME_B])
        self.assertEqual(report["shards"][0]["sha256"], hashlib.sha256(self.files[NAME_A]).hexdigest())
        self.assertEqual(report["kept"], 6)
        self.assertEqual(len(read_manifest(self.out / "manifest.csv")), 6)
        # Resolved once, then everything fetched at the commit, never at "main".
        self.assertTrue(any(p.startswith(f"/api/datasets/{REPO}/revision/main") for _, p, _ in self.hub.log))
        self.assertTrue(any(p.startswith(f"/api/datasets/{REPO}/tree/{SHA}") for _, p, _ in self.hub.log))
        for p, _ in self.resolve_requests("GET") + self.resolve_requests("HEAD"):
            self.assertIn(f"/resolve/{SHA}/", p)
        self.assertFalse(any("README" in p for p, _ in self.resolve_requests()))
        # A second run downloads nothing and gives the same manifest.
        first = (self.out / "manifest.csv").read_bytes()
        n = len(self.resolve_requests())
        rc, err = self.download()
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(self.resolve_requests()), n)
        self.assertEqual((self.out / "manifest.csv").read_bytes(), first)
        # --from the downloaded shards extracts the same rows.
        rc, err = self.run_main("--out", self.tmp / "again", "--from", self.out / "shards")
        self.assertEqual(rc, 0, err)
        self.assertEqual((self.tmp / "again" / "manifest.csv").read_bytes(), first)

    def test_connection_dropped_half_way_resumes(self):
        """Small file: huggingface_hub reads in 10 MB chunks, so a drop before the first full chunk
        leaves nothing to resume from and it GETs the file again."""
        self.hub.drop_first_get = {NAME_A}
        rc, err = self.download()
        self.assertEqual(rc, 0, err)
        self.assert_shards_on_disk()
        gets_a = [r for p, r in self.resolve_requests("GET") if p.endswith(NAME_A)]
        self.assertEqual(len(gets_a), 2, gets_a)
        self.assertEqual(json.loads((self.out / "report.json").read_text())["kept"], 6)

    def test_connection_dropped_half_way_resumes_with_range(self):
        """A shard past one 10 MB chunk: the download resumes where the drop left it (Range)."""
        rnd = random.Random(7)
        padded = table_a().append_column("padding", pa.array([rnd.randbytes(2_000_000) for _ in ROWS_A], pa.binary()))
        self.hub.files[NAME_A] = self.files[NAME_A] = parquet_bytes(padded)
        self.assertGreater(len(self.files[NAME_A]), 20_000_000)
        self.hub.drop_first_get = {NAME_A}
        rc, err = self.download()
        self.assertEqual(rc, 0, err)
        self.assert_shards_on_disk()
        gets_a = [r for p, r in self.resolve_requests("GET") if p.endswith(NAME_A)]
        self.assertEqual(len(gets_a), 2, gets_a)
        self.assertIsNone(gets_a[0])
        self.assertRegex(gets_a[1] or "", r"^bytes=[1-9][0-9]*-$")  # resumed, not restarted
        self.assertEqual(json.loads((self.out / "report.json").read_text())["kept"], 6)

    def test_wrong_bytes_are_refused_and_deleted(self):
        self.hub.wrong_bytes = {NAME_B}
        rc, err = self.download()
        self.assertEqual(rc, 1)
        self.assertIn("sha256 mismatch", err)
        self.assertIn(hashlib.sha256(self.files[NAME_B]).hexdigest(), err)
        self.assertNotIn("Traceback", err)
        self.assertFalse((self.out / "shards" / NAME_B).exists())
        self.assertFalse((self.out / "shards/.cache/huggingface/download" / (NAME_B + ".metadata")).exists())
        self.assertEqual((self.out / "shards" / NAME_A).read_bytes(), self.files[NAME_A])
        self.assertFalse((self.out / "manifest.csv").exists())
        # Fixed upstream: the next run fetches it again and completes.
        self.hub.wrong_bytes = set()
        rc, err = self.download()
        self.assertEqual(rc, 0, err)
        self.assert_shards_on_disk()

    def test_selection_above_cap_is_refused(self):
        total = len(self.files[NAME_A]) + len(self.files[NAME_B])
        rc, err = self.download("--max-gb", "0.000001")
        self.assertEqual(rc, 2)
        self.assertIn(f"({total} bytes)", err)
        self.assertIn("--max-gb 1e-06", err)
        self.assertEqual(self.resolve_requests(), [])
        self.assertFalse((self.out / "manifest.csv").exists())

    def test_pinned_revision_reaches_the_server(self):
        rc, err = self.download("--revision", SHA, "--shards", "1", "--seed", "0")
        self.assertEqual(rc, 0, err)
        paths = [p for _, p, _ in self.hub.log]
        self.assertIn(f"/api/datasets/{REPO}/revision/{SHA}", [urlsplit(p).path for p in paths])
        self.assertFalse(any("/main" in p for p in paths), paths)
        picked = str(np.random.RandomState(0).choice([NAME_A, NAME_B], 1)[0])
        got = [p for p, _ in self.resolve_requests("GET")]
        self.assertEqual(got, [f"/datasets/{REPO}/resolve/{SHA}/{picked}"])
        report = json.loads((self.out / "report.json").read_text())
        self.assertEqual((report["revision"], report["revision_sha"]), (SHA, SHA))
        # An unknown revision is refused.
        rc, err = self.download("--revision", OTHER_SHA)
        self.assertEqual(rc, 2)
        self.assertIn("revision not found", err)

    def test_unreachable_hub_fails_cleanly(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed once the block ends: connections are refused
        os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
        rc, err = self.download("--retries", "2")
        self.assertEqual(rc, 1)
        self.assertIn(f"at http://127.0.0.1:{port}", err)
        self.assertIn("attempt 1/2, retrying", err)
        self.assertNotIn("Traceback", err)

    def test_verify_git_blob_of_small_files(self):
        p = self.tmp / "f.parquet"
        p.write_bytes(self.files[NAME_B])
        ok = vd.Remote(path="f.parquet", size=len(self.files[NAME_B]), sha256=None, blob_id=git_blob_id(self.files[NAME_B]))
        self.assertIsNone(vd.verify_download(p, ok))
        bad = vd.Remote(path="f.parquet", size=ok.size, sha256=None, blob_id="0" * 40)
        self.assertIn("git blob id mismatch", vd.verify_download(p, bad))
        short = vd.Remote(path="f.parquet", size=ok.size + 1, sha256="0" * 64, blob_id=None)
        self.assertIn("the hub lists", vd.verify_download(p, short))


if __name__ == "__main__":
    unittest.main()
