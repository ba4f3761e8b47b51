"""Validate a type's `settings` against the JSON Schema subset types declare.

Supported keywords: type (one or a list), properties, required,
additionalProperties (bool or schema, default false: unknown keys are errors),
items, enum, minimum, maximum, minLength, pattern, default, description, and
`format: duration` (a number of seconds or '500ms'/'10s'/'2m', normalised to
float seconds), `format: instance-id` and `format: hostname` (values.check_name_value). The same schema is what `cidag schema` publishes, so editors
and `cidag check` agree.
"""
from __future__ import annotations

import difflib
import re
from typing import Any

from .durations import parse_duration
from .errors import SettingsError

_PY_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


# `format: instance-id` / `format: hostname`: the value must be usable as that capability
# (values.check_name_value), so `cidag check` refuses before boot what the run would refuse.
NAME_FORMATS = frozenset({"instance-id", "hostname"})


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _PY_TYPES[name])


def validate(schema: dict | None, value: Any, path: tuple = ()) -> Any:
    """Return `value` with defaults filled and durations in seconds.

    Raises SettingsError with the path of the offending key inside settings.
    """
    if schema is None:
        return value
    if schema.get("format") == "duration":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise SettingsError(str(exc), path) from None
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if isinstance(value, str) and "string" not in names:
            value = _coerce(value, names)
        if not any(_is_type(value, n) for n in names):
            raise SettingsError(
                f"expected {' or '.join(names)}, got {_describe(value)}", path
            )
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(repr(c) for c in schema["enum"])
        raise SettingsError(f"{value!r} is not one of {choices}", path)
    if isinstance(value, dict):
        return _validate_object(schema, value, path)
    if isinstance(value, list) and "items" in schema:
        return [validate(schema["items"], v, path + (i,)) for i, v in enumerate(value)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SettingsError(f"{value} is less than the minimum {schema['minimum']}", path)
        if "maximum" in schema and value > schema["maximum"]:
            raise SettingsError(f"{value} is more than the maximum {schema['maximum']}", path)
    if schema.get("format") in NAME_FORMATS:
        from .values import ValueRefused, check_name_value

        try:
            check_name_value(schema["format"], value)
        except ValueRefused as exc:
            raise SettingsError(f"{schema['format']} {exc}", path) from None
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise SettingsError(f"{value!r} is too short", path)
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SettingsError(f"{value!r} does not match {schema['pattern']!r}", path)
    return value


def _coerce(text: str, names: list[str]) -> Any:
    """A string where a number or boolean is expected (e.g. from `${RETRIES:-5}`)
    becomes one when it reads as one; otherwise it is left for the type error."""
    word = text.strip()
    if "boolean" in names and word.lower() in ("true", "false", "yes", "no", "on", "off"):
        return word.lower() in ("true", "yes", "on")
    if "integer" in names:
        try:
            return int(word)
        except ValueError:
            pass
    if "number" in names:
        try:
            return float(word)
        except ValueError:
            pass
    return text


def _validate_object(schema: dict, value: dict, path: tuple) -> dict:
    props: dict = schema.get("properties", {})
    extra = schema.get("additionalProperties", False if props else True)
    out: dict = {}
    for key, item in value.items():
        if key in props:
            out[key] = validate(props[key], item, path + (key,))
        elif extra is False:
            hint = difflib.get_close_matches(str(key), list(props), n=1)
            tail = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise SettingsError(f"unknown setting {key!r}{tail}", path + (key,))
        elif isinstance(extra, dict):
            out[key] = validate(extra, item, path + (key,))
        else:
            out[key] = item
    for key in schema.get("required", []):
        if key not in value:
            raise SettingsError(f"missing required setting {key!r}", path)
    for key, sub in props.items():
        if key not in out and "default" in sub:
            default = sub["default"]
            out[key] = validate(sub, default, path + (key,)) if default is not None else None
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {dict: "mapping", list: "list", str: "string", int: "integer", float: "number"}.get(
        type(value), type(value).__name__
    )
