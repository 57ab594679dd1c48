"""The shipped `accuracy` router re-written in Python: ordered classifier stages, each fused by
the hotkey's fuser, with an early exit below `exit_low` or above `exit_high`.

The subset of `cascade-router`'s parameters that `policies/accuracy.toml` uses (classify, flip,
exit_low, exit_high, on_error, min_budget_ms; tie_break), with the same meaning, so the hotkey
file's `[router.params]` carries over unchanged. tests/it/python.rs checks that it answers as the
Rust components do on the dev images.
"""

import math
import struct

from cascade_policy import Decision, HostError, classify, fuse, remaining_ms

NAME = "py-accuracy-router"
VERSION = "0.1.0"
PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["stages"],
    "properties": {
        "tie_break": {"type": "string", "enum": ["up", "down"]},
        "stages": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "classify"],
                "properties": {
                    "name": {"type": "string"},
                    "classify": {"type": "array", "items": {"type": "string"}},
                    "flip": {"type": "boolean"},
                    "exit_low": {"type": "number", "minimum": 0, "maximum": 1},
                    "exit_high": {"type": "number", "minimum": 0, "maximum": 1},
                    "on_error": {"type": "string", "enum": ["skip", "fail"]},
                    "min_budget_ms": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}

STAGES = []
TIE = 0.499


def _f32(x):
    """The value as the Rust router holds it (a 32-bit float), so thresholds compare alike."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _fixed3(v):
    """Three decimals, half away from zero, as the Rust router writes them (not Python's
    half-to-even)."""
    m = math.floor(abs(v) * 1000 + 0.5)
    return f"{'-' if v < 0 and m else ''}{m // 1000}.{m % 1000:03d}"


def configure(params):
    global STAGES, TIE
    STAGES = [dict(s) for s in params["stages"]]
    if not STAGES:
        raise ValueError("stages: at least one stage is needed")
    for i, s in enumerate(STAGES):
        if not s["classify"]:
            raise ValueError(f"stages[{i}] ({s['name']}): nothing to classify")
        for k in ("exit_low", "exit_high"):
            if k in s:
                s[k] = _f32(s[k])
        if "exit_low" in s and "exit_high" in s and s["exit_low"] >= s["exit_high"]:
            raise ValueError(f"stages[{i}] ({s['name']}): exit_low {s['exit_low']} must be below exit_high {s['exit_high']}")
    TIE = 0.501 if params.get("tie_break") == "up" else 0.499


def _fuse(evidence):
    try:
        return fuse(evidence)
    except HostError as e:
        if e.kind != "unbound-role":
            raise
        return _f32(_f32(sum(evidence.values())) / len(evidence))  # no fuser bound: the mean


def decide(image, request):
    evidence, notes, flipped = {}, [], None
    last = len(STAGES) - 1
    for i, stage in enumerate(STAGES):
        need = stage.get("min_budget_ms")
        if need is not None:
            left = remaining_ms()
            if left < need and i != last:
                notes.append(f"{stage['name']} skipped: {left} ms left, needs {need}")
                continue
        target = image
        if stage.get("flip"):
            flipped = flipped or image.flip_horizontal()
            target = flipped
        suffix = ":flip" if stage.get("flip") else ""
        for model in stage["classify"]:
            try:
                evidence[model + suffix] = classify(model, target).score
            except HostError as e:
                if stage.get("on_error", "skip") == "fail":
                    raise
                notes.append(f"classify({model}) skipped: {e.message or e.kind}")
        if not evidence:
            if i == last:
                why = "; ".join(notes) or "no primitive produced a score"
                raise HostError("component", f"no evidence after the last stage: {why}")
            continue
        fused = _fuse(dict(sorted(evidence.items())))
        if i == last:
            kind = "final"
        elif "exit_low" in stage and fused <= stage["exit_low"]:
            kind = "exit-low"
        elif "exit_high" in stage and fused >= stage["exit_high"]:
            kind = "exit-high"
        else:
            continue
        shown = ", ".join(f"{n}={_fixed3(s)}" for n, s in sorted(evidence.items()))
        reason = f"{kind} at {stage['name']}: fused {_fixed3(fused)} from {shown}"
        if notes:
            reason += f" [{'; '.join(notes)}]"
        p = min(1.0, max(0.0, fused))
        return Decision(TIE if p == 0.5 else p, stage["name"], reason)
