"""Find the code behind a manifest `type`: a built-in name, `package.module:attr`, or an entry point.

Only the types a manifest names are imported (start-up runs on every boot).
"""
from __future__ import annotations

import importlib
import inspect
import types as pytypes
from dataclasses import dataclass
from typing import Any, Callable

from .api import ALWAYS_SECRET

ENTRY_POINT_GROUPS = {"source": "cidag.sources", "module": "cidag.modules"}
ENTRY_NAMES = {"source": "probe", "module": "run"}


class TypeLoadError(Exception):
    """The type cannot be found or imported; the message says which and why."""


@dataclass(frozen=True)
class TypeInfo:
    """A loaded type: the callable cidag invokes and what it declares."""

    kind: str
    ref: str
    call: Callable[[Any], dict | None]
    settings_schema: dict | None
    secrets: frozenset[str]
    capabilities: tuple[str, ...]
    doc: str


def builtin_types(kind: str) -> dict[str, str]:
    """Names of the built-in types of `kind` mapped to their modules (not imported)."""
    if kind == "source":
        from .sources import BUILTIN_SOURCES

        return BUILTIN_SOURCES
    from .modules import BUILTIN_MODULES

    return BUILTIN_MODULES


_cache: dict[tuple[str, str], TypeInfo] = {}


def load_type(kind: str, ref: str) -> TypeInfo:
    """Return the TypeInfo for `ref`; raise TypeLoadError with a one-line reason."""
    key = (kind, ref)
    if key not in _cache:
        _cache[key] = _inspect(kind, ref, _find(kind, ref))
    return _cache[key]


def _find(kind: str, ref: str) -> Any:
    builtins = builtin_types(kind)
    if ref in builtins:
        return _import_attr(builtins[ref], ref)
    if ":" in ref:
        return _import_attr(ref, ref)
    from importlib.metadata import entry_points

    group = ENTRY_POINT_GROUPS[kind]
    for ep in entry_points(group=group):
        if ep.name == ref:
            try:
                return ep.load()
            except Exception as exc:  # a broken plugin is reported, not raised through
                raise TypeLoadError(f"entry point {ref!r} in {group} failed to load: {exc}") from exc
    import difflib

    hint = difflib.get_close_matches(ref, list(builtins), n=1)
    tail = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise TypeLoadError(
        f"unknown {kind} type {ref!r}{tail}: not built in, not 'package.module:attr', "
        f"no entry point in {group}"
    )


def _import_attr(target: str, ref: str) -> Any:
    modname, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(modname)
    except ImportError as exc:
        raise TypeLoadError(f"type {ref!r}: cannot import {modname!r}: {exc}") from exc
    except Exception as exc:
        raise TypeLoadError(f"type {ref!r}: importing {modname!r} failed: {exc}") from exc
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TypeLoadError(f"type {ref!r}: {modname!r} has no attribute {attr!r}") from None
    return obj


def _inspect(kind: str, ref: str, obj: Any) -> TypeInfo:
    entry = ENTRY_NAMES[kind]
    meta = obj
    if isinstance(obj, pytypes.ModuleType):
        call = getattr(obj, entry, None)
    elif inspect.isclass(obj):
        try:
            instance = obj()
        except Exception as exc:
            raise TypeLoadError(f"type {ref!r}: {obj.__name__}() failed: {exc}") from exc
        call = getattr(instance, entry, None)
    else:
        call = obj
    if not callable(call):
        raise TypeLoadError(f"type {ref!r} is not callable and has no {entry}() function")
    schema = getattr(meta, "SETTINGS", None)
    if schema is not None and not isinstance(schema, dict):
        raise TypeLoadError(f"type {ref!r}: SETTINGS must be a JSON Schema mapping")
    secrets = frozenset(getattr(meta, "SECRETS", ()) or ()) | ALWAYS_SECRET
    caps = tuple(getattr(meta, "CAPABILITIES", ()) or ())
    doc = inspect.getdoc(meta) or inspect.getdoc(call) or ""
    return TypeInfo(kind, ref, call, schema, secrets, caps, doc.splitlines()[0] if doc else "")
