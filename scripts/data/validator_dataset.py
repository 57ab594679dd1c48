#!/usr/bin/env python3
"""The subnet validators' real-image dataset, extracted the way a validator's cache extracts it.

Validators of subnet 72 draw their real challenges from the Hugging Face dataset
`natix-network-org/roadwork` (parquet shards). Their cache (natix/validator/cache/ in the subnet's
code: extract.py, image_cache.py, base_cache.py, util.py) does, per shard:

  * read the whole shard with pyarrow and turn it into a pandas frame; optionally keep
    `df.sample(n=min(N, len(df)), random_state=seed)` of its rows;
  * take as image column the first column whose lower-cased name contains "image"; a dict value
    gives its first key whose lower-cased name contains "bytes" or "image"; open the bytes with
    PIL, and when that fails base64-decode them and open again;
  * save the image with `img.save(path)` as `<shard stem>__image_<index>.<format>` (format =
    `img.format.lower()`, "png" when unknown) -- a re-encode: a JPEG becomes a JPEG at PIL's
    default quality, which is what miners are then sent -- and the other columns as metadata
    (a value JSON cannot hold is kept as its `str`);
  * serve, when a challenge of label L is asked for, only files named .jpg/.jpeg/.png whose
    metadata `label` equals L, never a label-0 row that has a truthy `scene_description`, never a
    label-1 row without one.

This command does the same, keeps only the rows a validator can actually serve, and writes them
as a manifest the project's offline commands read (path,label,source,challenge,...). Rows that are
never served are dropped and counted by reason. See --help.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

DEFAULT_REPO = "natix-network-org/roadwork"
# The suffixes the validator's image cache lists when it picks a challenge (image_cache.py passes
# them to BaseCache as file_extensions; _get_cached_files filters on them).
SERVED_SUFFIXES = (".jpg", ".jpeg", ".png")
# Columns that name where an image comes from, tried in this order when --group-column is auto.
GROUP_CANDIDATES = ("location", "city", "country", "region", "source", "dataset")
# Manifest columns this command writes itself; a data column of the same name is written as meta_<name>.
BASE_COLUMNS = ("path", "label", "source", "challenge", "shard", "index", "format", "width", "height")
RESERVED = set(BASE_COLUMNS) | {"level", "original", "group"}
# Folder names an image group may not take (the downloaded shards live in OUT/shards).
RESERVED_GROUPS = {"shards"}
GIB = 1024**3

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

# Reasons a row is dropped (report keys).
R_NOT_IMAGE = "not an image"
R_LABEL = "label not 0 or 1"
R_ZERO_SCENE = "label 0 with a scene_description"
R_ONE_NO_SCENE = "label 1 without a scene_description"


def r_format(fmt: str) -> str:
    return f"format {fmt} never served"


class DatasetError(Exception):
    """An expected failure: reported as one message and an exit code, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAIL):
        super().__init__(message)
        self.code = code


def die(message: str, code: int = EXIT_FAIL) -> None:
    raise DatasetError(message, code)


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Values as the validator stores and reads them


def as_stored(value: Any) -> Any:
    """A metadata value as it comes back from the validator's per-image JSON: kept when JSON can
    write it, else its `str`; then written and read again (NaN stays NaN, tuples become lists)."""
    try:
        text = json.dumps(value)
    except (TypeError, OverflowError, ValueError):
        text = json.dumps(str(value))
    return json.loads(text)


def served_rule(label: Any, scene: Any) -> tuple[int | None, str | None]:
    """The label a row is served under by the validator's sampler, or the reason it never is.

    The sampler is asked for label 0 or 1 and skips a file when its metadata has a truthy
    scene_description and label == 0, or no truthy scene_description and label == 1, or a label
    other than the one asked for. Python equality: True counts as 1, 1.0 as 1, "1" as neither."""
    if label == 0:
        return (None, R_ZERO_SCENE) if scene else (0, None)
    if label == 1:
        return (1, None) if scene else (None, R_ONE_NO_SCENE)
    return None, R_LABEL


def open_image(value: Any):
    """PIL image from a cell of the image column, as the validator opens it, or None."""
    from PIL import Image

    data = value
    if isinstance(data, dict):
        key = next((k for k in data if "bytes" in k.lower() or "image" in k.lower()), None)
        if key is None:
            return None
        data = data[key]
    try:
        return Image.open(io.BytesIO(data))
    except Exception:
        pass
    try:
        return Image.open(io.BytesIO(base64.b64decode(data)))
    except Exception:
        return None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitise_group(value: Any) -> str:
    """A folder name from a location/source value: letters, digits, '.', '_', '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    name = _UNSAFE.sub("_", str(value).strip()).strip("._-")[:64]
    if not name:
        return "unknown"
    if name.lower() in RESERVED_GROUPS:
        name += "_group"
    return name


def csv_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# ---------------------------------------------------------------------------------------------
# Shards on disk


def check_parquet(path: Path) -> str | None:
    """Why `path` is not a complete parquet file (the validator's is_parquet_complete reads the
    footer), or None."""
    import pyarrow.parquet as pq

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
    except OSError as e:
        return f"cannot be read: {e}"
    if head != b"PAR1":
        return f"not a parquet file (starts with {head!r}, not b'PAR1'; {size} bytes)"
    if size < 12 or tail != b"PAR1":
        return f"truncated: no parquet footer at the end ({size} bytes; an interrupted download?)"
    try:
        with open(path, "rb") as f:
            pq.read_metadata(f)
    except Exception as e:
        return f"unreadable parquet footer: {e}"
    return None


def find_image_column(columns: Iterable[str]) -> str | None:
    return next((c for c in columns if "image" in c.lower()), None)


def keepable_columns(schema) -> list[str]:
    """Metadata columns worth a manifest column: scalar text, numbers, booleans, dates."""
    import pyarrow.types as pt

    out = []
    for f in schema:
        t = f.type
        if pt.is_dictionary(t):
            t = t.value_type
        if (
            pt.is_string(t)
            or pt.is_large_string(t)
            or pt.is_integer(t)
            or pt.is_floating(t)
            or pt.is_boolean(t)
            or pt.is_temporal(t)
            or pt.is_decimal(t)
        ):
            out.append(f.name)
    return out


@dataclass
class Shard:
    path: Path  # on disk
    name: str  # as reported: the repo path, or the path relative to --from
    refused: str | None = None
    columns: list[str] = field(default_factory=list)
    keep_columns: list[str] = field(default_factory=list)
    size: int = 0
    sha256: str | None = None

    @property
    def stem(self) -> str:
        return self.path.stem


def inspect_shard(shard: Shard) -> None:
    """Refuse a shard the validator could not use, with the reason; else note its columns."""
    import pyarrow.parquet as pq

    shard.size = shard.path.stat().st_size
    why = check_parquet(shard.path)
    if why:
        shard.refused = why
        return
    schema = pq.read_schema(shard.path)
    index_cols = set()
    meta = schema.pandas_metadata or {}
    for c in meta.get("index_columns", []) or []:
        if isinstance(c, str):
            index_cols.add(c)
    shard.columns = [n for n in schema.names if n not in index_cols]
    if "label" not in shard.columns:
        shard.refused = f"no `label` column (columns: {', '.join(shard.columns)})"
        return
    image_col = find_image_column(shard.columns)
    if image_col is None:
        shard.refused = f"no image column (no column name contains 'image'; columns: {', '.join(shard.columns)})"
        return
    shard.keep_columns = [c for c in keepable_columns(schema) if c in shard.columns and c not in (image_col, "label")]


# ---------------------------------------------------------------------------------------------
# Extraction


@dataclass
class ShardResult:
    name: str
    rows: int = 0
    considered: int = 0
    kept: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    bad_labels: Counter = field(default_factory=Counter)
    group_column: str | None = None
    image_column: str | None = None
    refused: str | None = None


def extract_shard(
    shard: Shard,
    out: Path,
    group_column: str | None,
    per_shard: int | None,
    seed: int,
) -> ShardResult:
    """Extract one shard: save the images a validator can serve, return their manifest rows."""
    import pyarrow.parquet as pq

    res = ShardResult(name=shard.name)
    try:
        frame = pq.read_table(shard.path).to_pandas()
    except Exception as e:  # a corrupt page past a valid footer
        res.refused = f"cannot be read: {e}"
        return res
    res.rows = len(frame)
    image_col = find_image_column(frame.columns)
    if image_col is None or "label" not in frame.columns:
        res.refused = "no image or `label` column once read"
        return res
    res.image_column = image_col
    if group_column is not None and group_column not in frame.columns:
        group_column = None
    res.group_column = group_column
    if per_shard is not None:
        frame = frame.sample(n=min(per_shard, len(frame)), random_state=seed)
    meta_cols = [c for c in frame.columns if c != image_col]
    keep = [c for c in shard.keep_columns if c in meta_cols]

    for idx, row in frame.iterrows():
        res.considered += 1
        img = open_image(row[image_col])
        if img is None:
            res.dropped[R_NOT_IMAGE] += 1
            continue
        fmt = img.format.lower() if img.format else "png"
        if "." + fmt not in SERVED_SUFFIXES:
            res.dropped[r_format(fmt)] += 1
            continue
        label_raw = as_stored(row["label"])
        scene = as_stored(row["scene_description"]) if "scene_description" in meta_cols else None
        label, why = served_rule(label_raw, scene)
        if label is None:
            res.dropped[why] += 1
            if why == R_LABEL:
                res.bad_labels[json.dumps(label_raw)] += 1
            continue
        group = sanitise_group(row[group_column]) if group_column else shard.stem
        rel = f"{group}/{shard.stem}__image_{idx}.{fmt}"
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            img.save(dest)
            width, height = img.size
        except Exception:  # bytes that open but do not decode (truncated data, say)
            dest.unlink(missing_ok=True)
            res.dropped[R_NOT_IMAGE] += 1
            continue
        finally:
            img.close()
        rec = {
            "path": rel,
            "label": label,
            "source": group,
            "challenge": 0,
            "shard": shard.name,
            "index": str(idx),
            "format": fmt,
            "width": width,
            "height": height,
        }
        for c in keep:
            rec[("meta_" + c) if c in RESERVED else c] = csv_value(as_stored(row[c]))
        res.kept.append(rec)
    return res


def _extract_job(job: tuple) -> ShardResult:
    return extract_shard(*job)


# ---------------------------------------------------------------------------------------------
# Download


def _hub():
    try:
        import huggingface_hub
        import huggingface_hub.errors
    except ImportError:
        die("huggingface_hub is not installed: .venv/bin/pip install -r scripts/requirements.txt")
    return huggingface_hub


def _retriable(e: BaseException) -> bool:
    hub = _hub()
    errors = hub.errors
    if isinstance(
        e,
        (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.RemoteEntryNotFoundError),
    ):
        return False
    if isinstance(e, errors.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        return status is None or status in (408, 429) or status >= 500
    if isinstance(e, (OSError, TimeoutError, ConnectionError)):
        return True
    # the HTTP client's own transport errors (httpx2 for huggingface_hub 2.x, httpx before)
    return any(c.__name__ in ("TransportError", "HTTPError", "RequestError") for c in type(e).__mro__)


def with_retries(what: str, fn, retries: int, wait: float):
    hub = _hub()
    for attempt in range(1, retries + 1):
        try:
            return fn()
        except hub.errors.RepositoryNotFoundError as e:
            die(f"{what}: repository not found or not accessible ({e.__class__.__name__})")
        except hub.errors.RevisionNotFoundError:
            die(f"{what}: revision not found", EXIT_USAGE)
        except Exception as e:
            if not _retriable(e) or attempt == retries:
                die(f"{what}: {e.__class__.__name__}: {e}".strip())
            say(f"{what}: {e.__class__.__name__}: {e} -- attempt {attempt}/{retries}, retrying")
            time.sleep(wait * attempt)


@dataclass
class Remote:
    path: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob id (sha1) of small non-LFS files


def git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_download(path: Path, remote: Remote) -> str | None:
    """Why the file on disk is not the hub's file, or None."""
    size = path.stat().st_size
    if size != remote.size:
        return f"size {size} bytes, the hub lists {remote.size}"
    if remote.sha256:
        got = sha256_of(path)
        if got != remote.sha256:
            return f"sha256 mismatch: got {got}, the hub's LFS metadata says {remote.sha256}"
    elif remote.blob_id:
        got = git_blob_sha1(path)
        if got != remote.blob_id:
            return f"git blob id mismatch: got {got}, the hub says {remote.blob_id}"
    return None


def forget_download(local_dir: Path, remote: Remote) -> None:
    """Delete a bad download and huggingface_hub's note of it, so the next run fetches it anew."""
    (local_dir / remote.path).unlink(missing_ok=True)
    (local_dir / ".cache" / "huggingface" / "download" / (remote.path + ".metadata")).unlink(missing_ok=True)


def resolve_remote(args, endpoint: str | None) -> tuple[str, list[Remote]]:
    hub = _hub()
    api = hub.HfApi(endpoint=endpoint)
    what = f"{args.repo}@{args.revision} at {api.endpoint}"
    info = with_retries(
        f"resolving {what}",
        lambda: api.dataset_info(args.repo, revision=args.revision),
        args.retries,
        args.retry_wait,
    )
    sha = getattr(info, "sha", None)
    if not sha or not re.fullmatch(r"[0-9a-f]{40}", sha):
        die(f"resolving {what}: the hub answered no commit sha ({sha!r})")
    entries = with_retries(
        f"listing {args.repo}@{sha}",
        lambda: list(api.list_repo_tree(args.repo, repo_type="dataset", revision=sha, recursive=True)),
        args.retries,
        args.retry_wait,
    )
    remotes = []
    for e in entries:
        if isinstance(e, hub.hf_api.RepoFile) and e.path.endswith(".parquet"):
            lfs = getattr(e, "lfs", None)
            remotes.append(
                Remote(
                    path=e.path,
                    size=int(lfs.size if lfs is not None else e.size),
                    sha256=lfs.sha256 if lfs is not None else None,
                    blob_id=getattr(e, "blob_id", None),
                )
            )
    return sha, remotes


def download(args, endpoint: str | None, sha: str, remotes: list[Remote], local_dir: Path) -> list[Path]:
    hub = _hub()
    if args.quiet:
        hub.utils.disable_progress_bars()
    paths, failures = [], []
    for n, remote in enumerate(remotes, 1):
        say(f"[{n}/{len(remotes)}] {remote.path} ({remote.size / 1e6:.1f} MB)")

        def fetch(remote=remote):
            got = hub.hf_hub_download(
                args.repo,
                remote.path,
                repo_type="dataset",
                revision=sha,
                local_dir=local_dir,
                endpoint=endpoint,
            )
            return Path(got)

        try:
            path = with_retries(f"downloading {remote.path}", fetch, args.retries, args.retry_wait)
        except DatasetError as e:
            failures.append(str(e))
            continue
        why = verify_download(path, remote)
        if why is None:
            why = check_parquet(path)
        if why is not None:
            forget_download(local_dir, remote)
            failures.append(f"{remote.path}: {why} -- deleted; run the command again to download it anew")
            continue
        paths.append(path)
    if failures:
        die("download failed:\n  " + "\n  ".join(failures))
    return paths


def choose(names: list[str], count: int | None, seed: int) -> tuple[list[str], int]:
    """All names, or `count` draws as the validator draws shards (np.random.choice, with
    replacement), seeded; duplicates collapse (the validator downloads a repeated file over itself)."""
    if count is None:
        return list(names), len(names)
    import numpy as np

    draws = np.random.RandomState(seed).choice(np.array(names, dtype=object), count)
    seen, out = set(), []
    for d in draws:
        if d not in seen:
            seen.add(d)
            out.append(str(d))
    return out, count


# ---------------------------------------------------------------------------------------------
# Outputs


def write_atomically(path: Path, write) -> Path:
    """Write via `write(file)` to a temporary name next to `path`; return that name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_manifest(f, rows: list[dict], columns: list[str]) -> None:
    w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n", extrasaction="raise", restval="")
    w.writeheader()
    w.writerows(rows)


def versions() -> dict:
    out = {}
    for mod in ("pandas", "pyarrow", "PIL", "numpy", "huggingface_hub"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


def summary_lines(report: dict) -> list[str]:
    lines = []
    src = report["repo"] and f"{report['repo']} @ {report['revision_sha']}" or report["from"]
    lines.append(f"validator dataset: {src}")
    used = [s for s in report["shards"] if not s.get("refused")]
    refused = [s for s in report["shards"] if s.get("refused")]
    lines.append(f"shards: {len(used)} extracted, {len(refused)} refused")
    for s in report["shards"]:
        if s.get("refused"):
            lines.append(f"  {s['name']}: REFUSED: {s['refused']}")
        else:
            lab = ", ".join(f"label {k}: {v}" for k, v in sorted(s["kept_by_label"].items()))
            drop = sum(s["dropped"].values())
            lines.append(f"  {s['name']}: {s['considered']} of {s['rows']} rows -> {s['kept']} kept ({lab or 'none'}), {drop} dropped")
    labels = ", ".join(f"label {k}: {v}" for k, v in sorted(report["labels"].items()))
    lines.append(f"kept {report['kept']} images ({labels or 'none'})")
    if report["dropped"]:
        lines.append(f"dropped {sum(report['dropped'].values())} rows:")
        for reason, n in sorted(report["dropped"].items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {reason}: {n}")
    g = report["group_column"]
    lines.append(f"groups: {'column ' + repr(g) if g else 'shard stem'} ({len(report['groups'])} groups)")
    return lines


# ---------------------------------------------------------------------------------------------
# Command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="validator_dataset.py",
        description=(
            "Download the subnet validators' Hugging Face dataset (parquet shards) and extract it "
            "exactly as a validator's cache does: same image column and decoding, images re-encoded "
            "by PIL as the validator saves and sends them, and only the rows the validator's "
            "sampler can serve (label 0 without a scene_description, label 1 with one; the rest "
            "are dropped and counted). Writes OUT/<group>/<shard>__image_<index>.<ext>, "
            "OUT/manifest.csv (path,label,source,challenge,... for the project's offline commands) "
            "and OUT/report.json. HF_ENDPOINT is honoured."
        ),
        epilog=(
            "examples:\n"
            "  %(prog)s --out data/validator                      # every shard, every row\n"
            "  %(prog)s --out data/validator --shards 5 --seed 1  # 5 shards drawn as a validator draws\n"
            "  %(prog)s --out data/validator --from data/validator/shards  # re-extract, no download\n"
            "exit codes: 0 done; 1 failed (download, hash mismatch, nothing usable); 2 refused "
            "(bad arguments, selection above --max-gb, unknown revision)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (shards go to OUT/shards)")
    p.add_argument("--repo", default=DEFAULT_REPO, help=f"Hugging Face dataset repo (default {DEFAULT_REPO})")
    p.add_argument("--revision", default="main", help="branch, tag or commit sha; resolved to a commit sha first (default main)")
    p.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="draw N shards as the validator does (numpy choice with replacement, seeded by --seed; "
        "repeats collapse); default: every shard",
    )
    p.add_argument(
        "--max-gb",
        type=float,
        default=20.0,
        help="refuse (exit 2) a selection of shards larger than this many GiB (default 20)",
    )
    p.add_argument(
        "--per-shard",
        type=int,
        metavar="N",
        help="keep df.sample(n=min(N, rows), random_state=SEED) of each shard, as the validator's "
        "extraction does; default: every row",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --shards and --per-shard (default 0)")
    p.add_argument(
        "--group-column",
        default="auto",
        metavar="COL",
        help="column whose (sanitised) value names an image's folder, the group the project "
        f"balances and folds on; 'auto' = the first of {', '.join(GROUP_CANDIDATES)} present, "
        "else the shard stem (the default); 'shard' = always the shard stem",
    )
    p.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        metavar="SHARD_DIR",
        help="skip the download; extract the *.parquet files under this folder",
    )
    p.add_argument("--jobs", type=int, default=1, help="shards extracted in parallel processes (default 1)")
    p.add_argument("--retries", type=int, default=4, help="attempts per hub request on connection errors (default 4)")
    p.add_argument("--retry-wait", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    for name in ("shards", "per_shard"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.max_gb <= 0:
        p.error("--max-gb must be positive")
    if a.jobs < 1 or a.retries < 1:
        p.error("--jobs and --retries must be at least 1")
    return a


def local_shards(root: Path) -> list[Shard]:
    if not root.is_dir():
        die(f"--from {root}: not a folder", EXIT_USAGE)
    files = sorted(
        p
        for p in root.rglob("*.parquet")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    return [Shard(path=p, name=p.relative_to(root).as_posix()) for p in files]


def run(args: argparse.Namespace) -> dict:
    out: Path = args.out
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    sha = None
    selection: dict = {}
    if args.from_dir is not None:
        shards = local_shards(args.from_dir)
        if not shards:
            die(f"--from {args.from_dir}: no *.parquet files")
        chosen, draws = choose([s.name for s in shards], args.shards, args.seed)
        by_name = {s.name: s for s in shards}
        shards = [by_name[n] for n in chosen]
        selection = {"draws": draws, "distinct": len(shards)}
    else:
        sha, remotes = resolve_remote(args, endpoint)
        if not remotes:
            die(f"{args.repo}@{sha}: no *.parquet files in the repo")
        chosen, draws = choose([r.path for r in remotes], args.shards, args.seed)
        by_path = {r.path: r for r in remotes}
        remotes = [by_path[n] for n in chosen]
        total = sum(r.size for r in remotes)
        selection = {"draws": draws, "distinct": len(remotes), "bytes": total, "available": len(by_path)}
        if total > args.max_gb * GIB:
            die(
                f"the selection is {len(remotes)} shards, {total / GIB:.2f} GiB ({total} bytes), "
                f"above --max-gb {args.max_gb:g} GiB; raise --max-gb or take fewer with --shards N",
                EXIT_USAGE,
            )
        say(f"{args.repo} @ {sha}: {len(remotes)} of {len(by_path)} shards, {total / GIB:.2f} GiB")
        local_dir = out / "shards"
        local_dir.mkdir(parents=True, exist_ok=True)
        paths = download(args, endpoint, sha, remotes, local_dir)
        shards = [
            Shard(path=p, name=r.path, sha256=r.sha256) for p, r in zip(paths, remotes)
        ]

    # Inspect every shard; refuse the unusable ones (and a second shard of the same stem: the
    # validator names files after the stem, one would overwrite the other).
    stems: dict[str, str] = {}
    for s in shards:
        inspect_shard(s)
        if s.refused is None:
            if s.stem in stems:
                s.refused = f"same file stem as {stems[s.stem]} (its image names would collide)"
            else:
                stems[s.stem] = s.name
    for s in shards:
        if s.refused:
            say(f"refused {s.name}: {s.refused}")
    usable = [s for s in shards if s.refused is None]

    # The grouping column.
    group_column = None
    if args.group_column == "auto":
        names = [c for s in usable for c in s.columns]
        for cand in GROUP_CANDIDATES:
            group_column = next((c for c in names if c.lower() == cand), None)
            if group_column is not None:
                break
    elif args.group_column != "shard":
        group_column = args.group_column
        if usable and not any(group_column in s.columns for s in usable):
            die(f"--group-column {group_column}: no shard has that column", EXIT_USAGE)

    out.mkdir(parents=True, exist_ok=True)
    jobs = [(s, out, group_column, args.per_shard, args.seed) for s in usable]
    if args.jobs > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(args.jobs, len(jobs))) as ex:
            results = list(ex.map(_extract_job, jobs))
    else:
        results = []
        for j in jobs:
            say(f"extracting {j[0].name}")
            results.append(_extract_job(j))
    by_name = {r.name: r for r in results}

    rows: list[dict] = []
    meta_columns: list[str] = []
    labels: Counter = Counter()
    dropped: Counter = Counter()
    bad_labels: Counter = Counter()
    groups: Counter = Counter()
    shard_reports = []
    for s in shards:
        r = by_name.get(s.name)
        entry: dict = {"name": s.name, "bytes": s.size}
        if s.sha256:
            entry["sha256"] = s.sha256
        if r is not None and r.refused:
            s.refused = r.refused
            say(f"refused {s.name}: {r.refused}")
        if s.refused or r is None:
            entry["refused"] = s.refused
            shard_reports.append(entry)
            continue
        kept_by_label = Counter(rec["label"] for rec in r.kept)
        entry.update(
            rows=r.rows,
            considered=r.considered,
            kept=len(r.kept),
            kept_by_label={str(k): v for k, v in sorted(kept_by_label.items())},
            dropped=dict(r.dropped),
            image_column=r.image_column,
            group_column=r.group_column,
        )
        if group_column and r.group_column is None:
            entry["group_fallback"] = f"no `{group_column}` column: grouped by shard stem"
        shard_reports.append(entry)
        for rec in r.kept:
            for k in rec:
                if k not in BASE_COLUMNS and k not in meta_columns:
                    meta_columns.append(k)
            groups[rec["source"]] += 1
        rows.extend(r.kept)
        labels.update(kept_by_label)
        dropped.update(r.dropped)
        bad_labels.update(r.bad_labels)

    report = {
        "repo": None if args.from_dir is not None else args.repo,
        "revision": None if args.from_dir is not None else args.revision,
        "revision_sha": sha,
        "endpoint": None if args.from_dir is not None else (endpoint or "https://huggingface.co"),
        "from": str(args.from_dir) if args.from_dir is not None else None,
        "selection": selection,
        "per_shard": args.per_shard,
        "seed": args.seed,
        "group_column": group_column,
        "groups": dict(sorted(groups.items())),
        "kept": len(rows),
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "dropped": dict(sorted(dropped.items())),
        "bad_label_values": dict(bad_labels),
        "shards": shard_reports,
        "versions": versions(),
    }
    for line in summary_lines(report):
        say(line)
    if not rows:
        die(f"no usable rows: nothing a validator would serve (no manifest written in {out})")

    manifest = out / "manifest.csv"
    columns = list(BASE_COLUMNS) + meta_columns
    temps: list[Path] = []
    try:
        temps.append(write_atomically(manifest, lambda f: write_manifest(f, rows, columns)))
        temps.append(
            write_atomically(out / "report.json", lambda f: json.dump(report, f, indent=2, ensure_ascii=False))
        )
        os.replace(temps[1], out / "report.json")
        os.replace(temps[0], manifest)  # last: the manifest appears only once everything is in place
    finally:
        for t in temps:
            t.unlink(missing_ok=True)
    say(f"manifest: {manifest} ({len(rows)} rows); report: {out / 'report.json'}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except DatasetError as e:
        say(f"error: {e}")
        return e.code
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
