"""cascade:policy for Python: what a policy written in Python calls and returns.

A policy is one Python file (plus any helper modules beside it) that defines one of

    decide(image, request) -> Decision          # a router
    score_text(lines) -> float | None           # a text scorer
    fuse(scores: dict[str, float]) -> float     # a fuser

and optionally `configure(params: dict)`, `NAME`, `VERSION` and `PARAMS_SCHEMA` (a dict, the
JSON Schema subset the host checks parameters against). `cascade policy build FILE` turns it into
a component (componentize-py); the host loads it like any Rust one.

The host's primitives (routers only) run models on the request's image; every result is memoised
per request, so asking twice costs once. A primitive that fails raises `HostError` (its `kind`
is the contract's error case: "unknown-model", "engine", "deadline-exceeded", ...). An exception
that leaves `decide`, `score_text` or `fuse` becomes the contract's `component` error with the
exception's type, message and line: the host counts it and answers the hotkey's fallback; the
instance keeps serving.
"""

from dataclasses import dataclass
from typing import Optional

try:  # the router world imports the primitives and roles; the other worlds do not
    from wit_world.imports import primitives as _primitives
    from wit_world.imports import roles as _roles
except ImportError:  # pragma: no cover - depends on the world being built
    _primitives = _roles = None

from componentize_py_types import Err as _Err
from wit_world.imports import types as _types

# The contract's records, as the host fills them in (fields in snake_case). `Answer` is since 1.2.0:
# None in a policy built against an older contract.
Bbox = _types.Bbox
TextLine = _types.TextLine
Detection = _types.Detection
Classification = _types.Classification
LabelScore = _types.LabelScore
Answer = getattr(_types, "Answer", None)
Image = _types.Image

__all__ = [
    "Answer", "Bbox", "Classification", "Decision", "Detection", "HostError", "Image", "LabelScore",
    "Request", "TextLine", "ask", "ask_score", "classify", "detect", "embed", "fuse", "read_text",
    "remaining_ms", "run_all", "score_text",
]


@dataclass
class Decision:
    """A router's answer: P(roadwork) in [0, 1], the stage that produced it and why."""

    prediction: float
    stage: str
    reason: str = ""


@dataclass
class Request:
    """What the host says about the request: its hotkey and the milliseconds left of its budget."""

    hotkey: str
    budget_ms: int


# the contract's error cases, by the names the host reports them under
_KINDS = {
    _types.Error_UnknownModel: "unknown-model",
    _types.Error_WrongKind: "wrong-kind",
    _types.Error_Engine: "engine",
    _types.Error_DeadlineExceeded: "deadline-exceeded",
    _types.Error_InvalidArgument: "invalid-argument",
    _types.Error_UnboundRole: "unbound-role",
    _types.Error_Component: "component",
}
_CLASSES = {v: k for k, v in _KINDS.items()}


class HostError(Exception):
    """A primitive or role the host ran failed. `kind` is the contract's case, `message` its text.

    Raise one yourself to answer a specific case (`HostError("invalid-argument", "...")`); left
    uncaught it reaches the host as that same case.
    """

    def __init__(self, kind: str, message: str = ""):
        if kind not in _CLASSES:
            raise ValueError(f"unknown error kind {kind!r}; one of {sorted(_CLASSES)}")
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message

    @classmethod
    def _from_wit(cls, e) -> "HostError":
        return cls(_KINDS.get(type(e), "component"), getattr(e, "value", "") or "")

    def _to_wit(self):
        c = _CLASSES[self.kind]
        return c() if c is _types.Error_DeadlineExceeded else c(self.message)


def _host(f, *args):
    try:
        return f(*args)
    except _Err as e:
        raise HostError._from_wit(e.value) from None


def _need(module, what):
    if module is None:
        raise HostError("invalid-argument", f"{what} is for routers only")
    return module


def classify(model: str, image: Image) -> Classification:
    """The model's classification of the image: `.score` is P(its positive labels), `.top` the
    labels with their probabilities."""
    return _host(_need(_primitives, "classify").classify, model, image)


def detect(model: str, image: Image, min_confidence: float = 0.25, classes=()) -> list:
    """Detections at or above `min_confidence`, of the named classes only when `classes` is given."""
    p = _need(_primitives, "detect")
    if classes:
        return _host(p.detect_classes, model, image, float(min_confidence), list(classes))
    return _host(p.detect, model, image, float(min_confidence))


def read_text(model: str, image: Image) -> list:
    """The text lines an OCR model reads (`.text`, `.confidence`, `.region`)."""
    return _host(_need(_primitives, "read_text").read_text, model, image)


def embed(model: str, image: Image) -> list:
    """The embedding of the image (a list of floats)."""
    return _host(_need(_primitives, "embed").embed, model, image)


def ask(model: str, image: Image, prompt: str) -> str:
    """A vision-language model's answer to a question about the image."""
    return _host(_need(_primitives, "ask").ask, model, image, prompt)


def ask_score(model: str, image: Image, prompt: str) -> Answer:
    """`ask` with P(yes) for a yes/no question (`.p_yes`, None when the answer is neither)."""
    return _host(_need(_primitives, "ask_score").ask_score, model, image, prompt)


def remaining_ms() -> int:
    """Milliseconds left of the request's time budget."""
    return _need(_primitives, "remaining_ms").remaining_ms()


def run_all(image: Image, calls: list) -> list:
    """Several primitives on one image, run concurrently by the host. Each call is a tuple:
    ("classify", model), ("detect", model, min_confidence), ("read_text", model),
    ("embed", model) or ("ask", model, prompt). Results come in call order: the value, or the
    `HostError` of a call that failed (returned, not raised)."""
    p = _need(_primitives, "run_all")
    wit = []
    for c in calls:
        kind, model, *rest = c
        if kind == "classify":
            wit.append(p.Call_Classify(model))
        elif kind == "detect":
            wit.append(p.Call_Detect((model, float(rest[0]) if rest else 0.25)))
        elif kind == "read_text":
            wit.append(p.Call_ReadText(model))
        elif kind == "embed":
            wit.append(p.Call_Embed(model))
        elif kind == "ask":
            wit.append(p.Call_Ask((model, rest[0])))
        else:
            raise HostError("invalid-argument", f"run_all: unknown call {kind!r}")
    out = []
    for r in p.run_all(image, wit):
        if isinstance(r, _Err):
            out.append(HostError._from_wit(r.value))
        else:
            out.append(r.value.value)
    return out


def score_text(lines: list) -> Optional[float]:
    """The hotkey's text scorer over OCR lines; None when the text carries no evidence."""
    return _host(_need(_roles, "score_text").score_text, list(lines))


def fuse(scores: dict) -> float:
    """The hotkey's fuser over named scores ({"roadwork": 0.8, ...})."""
    named = [_types.NamedScore(str(k), float(v)) for k, v in scores.items()]
    return _host(_need(_roles, "fuse").fuse, named)
