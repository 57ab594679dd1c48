"""A fuser in Python: a weighted mean of the named scores (names without a weight are ignored).

Build: `cascade policy build plugins/python/template/fuser.py`; bind it with
`[fuser] component = "py-template-fuser@^0"` and `params.weights = { roadwork = 1.0 }`.
"""

NAME = "py-template-fuser"
VERSION = "0.1.0"
PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["weights"],
    "properties": {"weights": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}}},
}

WEIGHTS = {}


def configure(params):
    global WEIGHTS
    WEIGHTS = params["weights"]
    if not any(w > 0 for w in WEIGHTS.values()):
        raise ValueError("weights: at least one weight must be positive")


def fuse(scores):
    num = sum(WEIGHTS[n] * s for n, s in scores.items() if n in WEIGHTS)
    den = sum(WEIGHTS[n] for n in scores if n in WEIGHTS)
    if den == 0:
        raise ValueError(f"no weighted score among {sorted(scores)}")
    return min(1.0, max(0.0, num / den))
