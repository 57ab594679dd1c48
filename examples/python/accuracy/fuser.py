"""The shipped `weighted` fuser re-written in Python: the weighted mean of the named scores, raised
by any `boost` scores (1 - (1 - mean) * prod(1 - w * s)); names with neither are ignored, or an
error with `unknown = "error"`.
"""

from cascade_policy import HostError

NAME = "py-weighted"
VERSION = "0.1.0"
PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["weights"],
    "properties": {
        "weights": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
        "boost": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
        "unknown": {"type": "string", "enum": ["ignore", "error"]},
    },
}

WEIGHTS, BOOST, STRICT = {}, {}, False


def configure(params):
    global WEIGHTS, BOOST, STRICT
    WEIGHTS, BOOST = params["weights"], params.get("boost", {})
    STRICT = params.get("unknown") == "error"
    if all(w == 0 for w in WEIGHTS.values()):
        raise ValueError("weights: at least one weight must be positive")
    both = sorted(set(WEIGHTS) & set(BOOST))
    if both:
        raise ValueError(f"{both[0]!r} is both weighted and a boost; name it once")


def fuse(scores):
    num = den = 0.0
    unboosted = 1.0
    for name, s in scores.items():
        if name in WEIGHTS:
            num += WEIGHTS[name] * s
            den += WEIGHTS[name]
        elif name in BOOST:
            unboosted *= 1.0 - BOOST[name] * min(1.0, max(0.0, s))
        elif STRICT:
            raise HostError("invalid-argument", f"no weight for score {name!r}")
    if den == 0:
        raise HostError("invalid-argument", f"no weighted score among {sorted(scores)}")
    mean = min(1.0, max(0.0, num / den))
    return 1.0 - (1.0 - mean) * unboosted
