"""`py-misbehave`: a Python router for the host's tests only. It classifies once, then misbehaves
as its parameters say when the score is above `above`: raises, loops forever, allocates without
bound, opens a file, sleeps or prints; `fail_configure` makes configure raise.
"""

import time

from cascade_policy import Decision, classify

NAME = "py-misbehave"
VERSION = "0.1.0"
PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model"],
    "properties": {
        "model": {"type": "string"},
        "mode": {"type": "string", "enum": ["none", "raise", "loop", "grow", "open", "sleep", "print"]},
        "above": {"type": "number"},
        "fail_configure": {"type": "boolean"},
    },
}

P = {}


def configure(params):
    global P
    if params.get("fail_configure"):
        raise RuntimeError("configure refuses on purpose")
    P = params


def decide(image, request):
    score = classify(P["model"], image).score
    mode = P.get("mode", "none") if score > P.get("above", 0.0) else "none"
    if mode == "raise":
        raise ValueError(f"score {score:.3f} is too high for this policy")
    if mode == "loop":
        n = 0
        while True:
            n += 1
    if mode == "grow":
        hog = []
        while True:
            hog.append([0] * (32 << 20))  # 256 MB of pointers in one allocation
    if mode == "open":
        with open("/etc/hostname") as f:
            return Decision(0.9, "open", f.read())
    if mode == "sleep":
        print("about to sleep")
        time.sleep(5)
    if mode == "print":
        print("x" * 10_000)
    return Decision(0.499 if score == 0.5 else score, "classify", f"{P['model']}={score:.3f}")
