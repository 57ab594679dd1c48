"""The shipped `accuracy` router re-written in Python: ordered classifier stages, each fused by
the hotkey's fuser, with an early exit below `exit_low` or above `exit_high`.

The subset of `cascade-router`'s parameters that `policies/accuracy.toml` uses (classify, flip,
exit_low, exit_high, on_error, min_budget_ms; tie_break), with the same meaning, so the hotkey
file's `[router.params]` carries over unchanged. tests/it/python.rs checks that it answers as the
Rust components do on the dev images.
"""

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


def configure(params):
    global STAGES, TIE
    STAGES = params["stages"]
    if not STAGES:
        raise ValueError("stages: at least one stage is needed")
    for s in STAGES:
        if not s["classify"]:
            raise ValueError(f"stage {s['name']}: nothing to classify")
        if s.get("exit_low", 0.0) > s.get("exit_high", 1.0):
            raise ValueError(f"stage {s['name']}: exit_low is above exit_high")
    TIE = 0.501 if params.get("tie_break") == "up" else 0.499


def _fuse(evidence):
    try:
        return fuse(evidence)
    except HostError as e:
        if e.kind != "unbound-role":
            raise
        return sum(evidence.values()) / len(evidence)  # no fuser bound: the mean


def decide(image, request):
    evidence, notes, flipped = {}, [], None
    last = len(STAGES) - 1
    for i, stage in enumerate(STAGES):
        need = stage.get("min_budget_ms")
        if need is not None and i != last and remaining_ms() < need:
            notes.append(f"{stage['name']} skipped: needs {need} ms")
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
                notes.append(f"classify({model}) skipped: {e}")
        if not evidence:
            if i == last:
                raise HostError("component", "no evidence after the last stage: " + "; ".join(notes))
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
        shown = ", ".join(f"{n}={s:.3f}" for n, s in sorted(evidence.items()))
        p = min(1.0, max(0.0, fused))
        return Decision(TIE if p == 0.5 else p, stage["name"], f"{kind} at {stage['name']}: fused {fused:.3f} from {shown}")
