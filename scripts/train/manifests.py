"""The project's labelled manifests as the training tools read them (the same columns
`offline/src/manifest.rs` reads: `path` relative to the manifest, `label` 0 or 1, the first folder
of the path or the first word of `source` as the group, `challenge`, `level`, `original`), and the
check that an evaluation set shares no image with the training data. No PyTorch: `retrain.py`
runs in `.venv`."""

import csv
import hashlib
import os


class ManifestError(Exception):
    """A manifest that cannot be used: the message says which and why."""


def _records(path):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            yield from enumerate(csv.DictReader(f), start=2)
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} does not exist") from None


def resolve(base, p):
    return p if os.path.isabs(p) else os.path.join(base, p)


def paths(path):
    """Every row's image file, as written (labelled or not)."""
    base = os.path.dirname(os.path.abspath(path))
    return [resolve(base, r.get("path", "")) for _, r in _records(path)]


def read(path):
    """The labelled rows: path, label, group, challenge, level, original, scene (its
    `scene_description`); a row without a 0/1 label, or a manifest without rows, is refused."""
    base = os.path.dirname(os.path.abspath(path))
    rows = []
    for n, r in _records(path):
        if "path" not in r or "label" not in r:
            raise ManifestError(f"{path}: needs path and label columns")
        if r["label"] not in ("0", "1"):
            raise ManifestError(f"{path}:{n}: label {r['label']!r} is not 0 or 1")
        p = resolve(base, r["path"])
        parts = r["path"].split("/")
        group = parts[0] if len(parts) > 1 and not os.path.isabs(r["path"]) else (r.get("source") or "-").split(" ")[0]
        rows.append({"path": p, "label": int(r["label"]), "group": group, "challenge": r.get("challenge") == "1",
                     "level": r.get("level") or "", "original": r.get("original") or p,
                     "scene": (r.get("scene_description") or "").strip()})
    if not rows:
        raise ManifestError(f"{path}: no rows")
    return rows


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def refuse_shared(train_files, eval_files, training="the training manifests"):
    """Refuses an evaluation set that shares images (by content) with the training files."""
    seen = {sha256(p) for p in train_files}
    shared = sum(1 for p in eval_files if sha256(p) in seen)
    if shared:
        raise ManifestError(f"the evaluation manifest shares {shared} of its {len(eval_files)} images with {training} "
                            "(by content): refused")
