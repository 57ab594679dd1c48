"""A router in Python: classify once, look again at the mirror image when unsure.

Build: `cascade policy build plugins/python/template/router.py` (writes
target/components/template-router.wasm unless -o says otherwise); bind it in a hotkey file:

    [router]
    component = "py-template-router@^0"
    params = { model = "roadwork", unsure = [0.25, 0.75] }
"""

from cascade_policy import Decision, classify, fuse, HostError

NAME = "py-template-router"
VERSION = "0.1.0"
PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model"],
    "properties": {
        "model": {"type": "string"},
        "unsure": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number", "minimum": 0, "maximum": 1}},
    },
}

MODEL = "roadwork"
LOW, HIGH = 0.25, 0.75


def configure(params):
    """Called once per instance with the hotkey's parameters, already checked against the schema."""
    global MODEL, LOW, HIGH
    MODEL = params["model"]
    if "unsure" in params:
        LOW, HIGH = params["unsure"]
        if not LOW <= HIGH:
            raise ValueError(f"unsure: {LOW} is above {HIGH}")


def decide(image, request):
    first = classify(MODEL, image).score
    if first <= LOW or first >= HIGH:
        return Decision(first, "classifier", f"{MODEL}={first:.3f}")
    second = classify(MODEL, image.flip_horizontal()).score
    scores = {MODEL: first, f"{MODEL}:flip": second}
    try:
        p = fuse(scores)
    except HostError as e:
        if e.kind != "unbound-role":
            raise
        p = (first + second) / 2  # no fuser bound for this hotkey: the mean
    return Decision(p, "classifier-flip", f"{MODEL}={first:.3f} flip={second:.3f}")
