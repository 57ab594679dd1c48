"""A text scorer in Python: OCR lines to evidence of roadwork, None when the text says nothing.

Build: `cascade policy build plugins/python/template/text_scorer.py`; bind it with
`[text_scorer] component = "py-template-text-scorer@^0"` and `params = { words = [...] }`.
"""

NAME = "py-template-text-scorer"
VERSION = "0.1.0"
PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "words": {"type": "array", "items": {"type": "string"}},
        "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

WORDS = ["road work", "roadwork", "work zone", "detour", "road closed", "men at work"]
MIN_CONFIDENCE = 0.5


def configure(params):
    global WORDS, MIN_CONFIDENCE
    WORDS = [w.lower() for w in params.get("words", WORDS)]
    MIN_CONFIDENCE = params.get("min_confidence", MIN_CONFIDENCE)


def score_text(lines):
    text = " ".join(line.text.lower() for line in lines if line.confidence >= MIN_CONFIDENCE)
    if not text.strip():
        return None
    hits = [w for w in WORDS if w in text]
    return 0.95 if hits else None
