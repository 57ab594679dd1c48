"""The engines' reading of a preprocessor_config.json (engines/src/spec/hf.rs) and their one-line
description of it (engines/src/head.rs `describe_input`), which a head records as its backbone's
input: the engine refuses a head whose record differs from the model it is attached to, so a
test loads every head this writes through the real binary."""

import numpy as np

PIL_FILTERS = ["nearest", "lanczos", "bilinear", "bicubic", "box", "hamming"]


def _size(v):
    if isinstance(v, int):
        return ("one", v, v)
    if "height" in v and "width" in v:
        return ("hw", int(v["height"]), int(v["width"]))
    if "shortest_edge" in v:
        return ("short", int(v["shortest_edge"]), int(v["shortest_edge"]))
    raise ValueError(f"size {v!r}")


def engine_input(pre):
    """dict(width, height, resize, short, scale, mean, std, resample, floor) as hf.rs computes it."""
    inp = {"color": "rgb", "floor": True, "short": None}
    inp["scale"] = float(np.float32(pre.get("rescale_factor", 1 / 255))) if pre.get("do_rescale", True) else 1.0
    r = pre.get("resample")
    inp["resample"] = "bilinear" if r is None else PIL_FILTERS[int(r)]
    if pre.get("do_normalize", True):
        three = lambda v, d: [float(x) for x in (v if isinstance(v, list) else [v] * 3)] if v is not None else d
        inp["mean"] = three(pre.get("image_mean"), [0.5] * 3)
        inp["std"] = three(pre.get("image_std"), [0.5] * 3)
    else:
        inp["mean"], inp["std"] = [0.0] * 3, [1.0] * 3
    size = _size(pre["size"]) if pre.get("size") is not None else None
    crop = _size(pre["crop_size"]) if pre.get("do_center_crop") and pre.get("crop_size") is not None else None
    pct = pre.get("crop_pct")
    if crop is None:
        kind, h, w = size
        if kind == "short" and pct is not None and h < 384:
            inp.update(width=h, height=h, resize="centercrop", short=int(np.float32(h) / np.float32(pct)))
        else:
            inp.update(width=w, height=h, resize="stretch")
    else:
        _, h, w = crop
        inp.update(width=w, height=h, resize="centercrop")
        if size is not None:
            inp["short"] = size[1]
    return inp


def _f32(x, debug):
    """Rust's shortest round-trip f32 text: Display, or Debug (which keeps a `.0`)."""
    s = np.format_float_positional(np.float32(x), unique=True, trim="-")
    return s + ".0" if debug and "." not in s else s


def describe(inp):
    short = f" short {inp['short']}" if inp["short"] is not None else ""
    filt = "" if inp["resample"] == "bilinear" else f" resample {inp['resample']}"
    if inp["floor"]:
        filt += " floor"
    vec = lambda v: "[" + ", ".join(_f32(x, True) for x in v) + "]"
    return (f"{inp['width']}x{inp['height']} {inp['resize']}{short} {inp['color']} scale {_f32(inp['scale'], False)} "
            f"mean {vec(inp['mean'])} std {vec(inp['std'])}{filt}").lower()
