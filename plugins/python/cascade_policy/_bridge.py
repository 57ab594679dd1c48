"""The component's exports around the operator's module: `cascade policy build` generates an
entry module that calls `exports(module, role)` and binds the classes componentize-py looks for.

Every exception is turned into the contract's error here, so a Python failure reaches the host
as a value with the exception's text, never as a trap that takes the instance down.
"""

import json
import math
import traceback

from componentize_py_types import Err
from wit_world.imports import types

import cascade_policy as _api

_DEFAULT_SCHEMA = '{"type": "object"}'


def _describe(e: BaseException, module=None) -> str:
    """`ValueError: bad input (router.py:12 in decide)`: the exception and the last line of the
    policy's own file it passed through (else the innermost frame)."""
    where = ""
    frames = traceback.extract_tb(e.__traceback__)
    own = getattr(module, "__file__", None)
    mine = [f for f in frames if own and f.filename == own]
    if frames:
        f = (mine or frames)[-1]
        where = f" ({f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name})"
    text = str(e)
    return f"{type(e).__name__}: {text}{where}" if text else f"{type(e).__name__}{where}"


def _wit_error(e: BaseException, module=None):
    if isinstance(e, _api.HostError):
        return e._to_wit()
    return types.Error_Component(_describe(e, module))


def _score(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} is {v}")
    return v


def _info(module):
    schema = getattr(module, "PARAMS_SCHEMA", None)
    if schema is None:
        schema = _DEFAULT_SCHEMA
    elif not isinstance(schema, str):
        schema = json.dumps(schema)
    name = getattr(module, "NAME", None) or module.__name__.replace("_", "-")
    return types.ComponentInfo(str(name), str(getattr(module, "VERSION", "0.1.0")), schema)


def exports(module, role: str):
    """The classes componentize-py binds to the exported interfaces: `Meta` and the role's."""
    from wit_world import exports as wit

    class Meta(wit.Meta):
        def info(self):
            return _info(module)

        def configure(self, params: str) -> None:
            configure = getattr(module, "configure", None)
            if configure is None:
                return
            try:
                configure(json.loads(params))
            except BaseException as e:  # noqa: BLE001 - every failure is the host's refusal text
                raise Err(_describe(e, module)) from None

    if role == "router":
        from wit_world.exports import router as wit_router

        class Router(wit.Router):
            def decide(self, img, req):
                try:
                    d = module.decide(img, _api.Request(req.hotkey, req.budget_ms))
                    if not isinstance(d, _api.Decision):
                        raise TypeError(f"decide must return a Decision, not {type(d).__name__}")
                    p = _score(d.prediction, "the prediction")
                    if not 0.0 <= p <= 1.0:
                        raise ValueError(f"the prediction {p} is outside [0, 1]")
                    return wit_router.Decision(p, str(d.stage), str(d.reason))
                except BaseException as e:  # noqa: BLE001
                    raise Err(_wit_error(e, module)) from None

        return Meta, Router

    if role == "text-scorer":

        class TextScorer(wit.TextScorer):
            def score_text(self, lines):
                try:
                    s = module.score_text(list(lines))
                    return None if s is None else _score(s, "the text score")
                except BaseException as e:  # noqa: BLE001
                    raise Err(_wit_error(e, module)) from None

        return Meta, TextScorer

    if role == "fuser":

        class Fuser(wit.Fuser):
            def fuse(self, scores):
                try:
                    return _score(module.fuse({s.name: s.score for s in scores}), "the fused score")
                except BaseException as e:  # noqa: BLE001
                    raise Err(_wit_error(e, module)) from None

        return Meta, Fuser

    raise ValueError(f"unknown role {role!r}")
