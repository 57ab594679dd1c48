"""The views this study scores, made with the subnet's own transforms (the carried reference
module `natix/utils/image_transforms.py`, imported, never copied): its level pipelines as the
validator draws them, and the same pieces taken apart (one distortion at a time on the level-0
view, rotation alone, crop size alone, and a factorial of geometry x the five distortions).

Every view ends as the validator sends it: tensor -> PIL -> JPEG (PIL defaults, q75 4:2:0) ->
the decoded 224x224 RGB array. Seeds come from the image and the view's name, so every run draws
the same views.
"""
import contextlib
import hashlib
import io
import itertools
import random

import numpy as np

IT = None  # the reference module, set in each worker by init()

DISTORTIONS = ("CS", "CC", "JPEG", "GNC", "GB")
# what each distortion's levels 1 and 2 mean (the reference's parameter table, for the README)
PARAMS = {"CS": ("chroma x0.4", "chroma x0.3"), "CC": ("values x0.85", "values x0.725"),
          "JPEG": ("down/up /2", "down/up /3"), "GNC": ("colour noise 0.001", "colour noise 0.002"),
          "GB": ("blur 7", "blur 9")}


def init():
    """Per worker: one torch thread, the reference importable (its config module stubbed)."""
    global IT
    import os
    import sys
    import types

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, os.environ.get("X", "/tmp/x"))
    cfg = types.ModuleType("natix.validator.config")
    cfg.TARGET_IMAGE_SIZE = (224, 224)
    sys.modules.setdefault("natix.validator.config", cfg)
    from natix.utils import image_transforms

    IT = image_transforms


def conditions():
    """name -> spec. A spec: geometry ("base" = level 0, "rot", "crop:a-b", "l1" = the level-1
    geometry), forced distortions [(type, level)], or a subnet pipeline ("level:N" / "mix:probs")."""
    c = {"L0": {"geo": "base"}}
    for d in DISTORTIONS:
        for lv in (1, 2):
            c[f"{d}{lv}"] = {"geo": "base", "dist": [(d, lv)]}
    c["rot"] = {"geo": "rot"}
    for a, b in ((0.2, 0.4), (0.4, 0.7), (0.7, 1.0)):
        c[f"crop{int(a * 100)}-{int(b * 100)}"] = {"geo": f"crop:{a}-{b}"}
    c["L1"] = {"pipe": "level:1"}
    for k in "ab":
        c[f"L2{k}"] = {"pipe": "level:2"}
        c[f"L3{k}"] = {"pipe": "level:3"}
    for e in range(3):
        c[f"e{e}"] = {"pipe": "mix:uniform", "tag": f"e{e}"}
    return c


def factorial():
    """Geometry (level 0 / level 1) x each distortion off or at its level-2 strength: 64 cells."""
    c = {}
    for bits in itertools.product((0, 1), repeat=6):
        name = "F" + "".join(map(str, bits))
        dist = [(d, 2) for d, on in zip(DISTORTIONS, bits[1:]) if on]
        c[name] = {"geo": "l1" if bits[0] else "base", "dist": dist}
    return c


def train_views():
    """Training draws: uniform levels (the shipped recipe's), levels weighted toward 2-3, and
    level-3 pipelines with every distortion present (levels 1-2, never 0)."""
    c = {}
    for k in range(6):
        c[f"t{k}"] = {"pipe": "mix:uniform", "tag": f"t{k}"}
        c[f"w{k}"] = {"pipe": "mix:0.1,0.2,0.35,0.35"}
    for k in range(3):
        c[f"h{k}"] = {"pipe": "hard13"}
    return c


def seed_of(rel, name, tag=None):
    # tags t*/e* keep the draws of experiments/gpu-heads (same seeds, same views)
    key = f"exp12|{rel}|{tag}" if tag else f"d30|{rel}|{name}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") & 0x7FFFFFFF


def _tensor(img):
    from torchvision import transforms

    return transforms.ToTensor()(IT.ConvertToRGB()(img))


def _square_resize(t):
    from torchvision import transforms

    m = min(t.shape[1:])
    return transforms.Resize((224, 224))(transforms.CenterCrop(m)(t))


def _rrc(t, scale):
    from torchvision import transforms

    with contextlib.redirect_stdout(io.StringIO()):
        rrc = IT.RandomResizedCropWithParams((224, 224), scale=scale, ratio=(1.0, 1.0))
    out = rrc(t)
    i, j, h, w = rrc.params["crop_params"]
    return out, h * w / float(t.shape[1] * t.shape[2])


def _rot(t):
    from torchvision import transforms

    return IT.RandomRotationWithParams(20, interpolation=transforms.InterpolationMode.BILINEAR)(t)


def make(img, spec):
    """One view: (tensor [3,224,224] in [0,1], meta dict)."""
    meta = {}
    pipe = spec.get("pipe")
    with contextlib.redirect_stdout(io.StringIO()):
        if pipe and pipe.startswith("mix:"):
            probs = {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}
            if pipe != "mix:uniform":
                probs = dict(enumerate(float(v) for v in pipe[4:].split(",")))
            t, level, params = IT.apply_augmentation_by_level(img, (224, 224), level_probs=probs)
            meta["level"] = level
            cp = params.get("RandomResizedCropWithParams", {}).get("crop_params")
            if cp:
                meta["share"] = cp[2] * cp[3] / float(img.size[0] * img.size[1])
            return t, meta
        if pipe and pipe.startswith("level:"):
            level = int(pipe[6:])
            tf = {1: IT.get_random_augmentations, 2: IT.get_random_augmentations_medium,
                  3: IT.get_random_augmentations_hard}[level]((224, 224))
            t = tf(img)
            meta["level"] = level
            cp = tf.params.get("RandomResizedCropWithParams", {}).get("crop_params")
            if cp:
                meta["share"] = cp[2] * cp[3] / float(img.size[0] * img.size[1])
            meta["drawn"] = {d.distortion_type: d.level for d in tf.transforms
                             if isinstance(d, IT.ApplyDeeperForensicsDistortion)}
            return t, meta
        if pipe == "hard13":
            tf = IT.get_random_augmentations_hard((224, 224))
            for d in tf.transforms:
                if isinstance(d, IT.ApplyDeeperForensicsDistortion):
                    d.level_min = 1
            return tf(img), {"level": 3}
    geo = spec["geo"]
    if geo == "base":
        t = IT.get_base_transforms((224, 224))(img)
    elif geo == "rot":
        t = _square_resize(_rot(_tensor(img)))
    elif geo == "l1":
        t, meta["share"] = _rrc(_rot(_tensor(img)), (0.2, 1.0))
    else:
        a, b = (float(v) for v in geo[5:].split("-"))
        t, meta["share"] = _rrc(_tensor(img), (a, b))
    for d, lv in spec.get("dist", []):
        t = IT.ApplyDeeperForensicsDistortion(d)(t, level=lv)
    return t, meta


def as_sent(t):
    """What the validator's prepare_synapse sends, decoded: uint8 [224,224,3] RGB."""
    from PIL import Image
    from torchvision import transforms

    buf = io.BytesIO()
    transforms.ToPILImage()(t.cpu().detach()).save(buf, format="JPEG")
    a = np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert a.shape == (224, 224, 3), a.shape
    return a


def views_of(job):
    """Worker: every named view of one image -> (i, {name: array}, {name: meta}, error)."""
    import torch
    from PIL import Image

    i, path, rel, specs = job
    try:
        img = Image.open(path)
        img.load()
    except Exception as e:  # unreadable: left out and reported
        return i, None, None, repr(e)
    arrs, metas = {}, {}
    for name, spec in specs.items():
        s = seed_of(rel, name, spec.get("tag"))
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
        t, meta = make(img, spec)
        arrs[name] = as_sent(t)
        metas[name] = meta
    return i, arrs, metas, None
