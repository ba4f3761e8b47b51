"""What a node's answer means: the status, reason and capability values a source's probe
or a module's run gives, from the runner's event (runner.py). Pure: no state, no I/O."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .manifest import ModuleSpec, SourceSpec
from .values import ValueRefused, canonical_capability

Outcome = tuple[str, str, dict | None]  # (status, reason, values)


def judge(spec: SourceSpec | ModuleSpec, how: str, result: Any, reason: str,
          unprovided: Mapping[str, str] = {}) -> Outcome:
    """The outcome of `spec`'s answer: `how` is returned / unavailable / raised, `result`
    what it returned, `reason` the runner's one line. A source gives the capabilities it
    declared (None or absent: not given); a module its `provides` (absent: True; None: not
    provided, `unprovided` saying why). A value that cannot be made canonical fails the node."""
    if spec.kind == "source":
        if how == "unavailable" or (how == "returned" and result is None):
            return "unavailable", reason or "probe found nothing", None
        if how == "raised":
            return "failed", reason, None
        if not isinstance(result, dict):
            return "failed", f"probe returned {type(result).__name__}, not a mapping", None
        values, bad = _canonical({c: result[c] for c in spec.capabilities if c in result and result[c] is not None})
        return ("failed", bad, None) if bad else ("available", "", values)
    if how in ("raised", "unavailable"):
        return "failed", reason, None
    if result is not None and not isinstance(result, dict):
        return "failed", f"run returned {type(result).__name__}, not a mapping or None", None
    if not spec.provides:  # most modules: nothing to check or make canonical
        return "ok", "", {}
    result = result or {}
    values, bad = _canonical({c: result.get(c, True) for c in spec.provides if result.get(c, True) is not None})
    if bad:
        return "failed", bad, None
    # Why a declared capability was not provided: the reason of what is skipped for want of it.
    why = "; ".join(w for c, w in unprovided.items() if c in spec.provides and c not in values)
    return "ok", why, values


def _canonical(values: dict) -> tuple[dict, str]:
    """Values made canonical (values.py), or the failure of the first that cannot be."""
    out = {}
    for cap, value in values.items():
        try:
            out[cap] = canonical_capability(cap, value)
        except ValueRefused as exc:
            return {}, f"capability {cap}: {exc}"
        except RecursionError:
            return {}, f"capability {cap}: value nested too deep"
    return out, ""
