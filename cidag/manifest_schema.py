"""JSON Schema (draft 2020-12) of the manifests (`cidag schema`).

The top level is written by hand from SPEC §2; each built-in type's `settings`
come from the type itself (`SETTINGS`, see settings_schema.py), so a type added
to cidag.sources / cidag.modules appears here without touching this file.
"""
from __future__ import annotations

from typing import Any

from .errors import UsageError

DRAFT = "https://json-schema.org/draft/2020-12/schema"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h))+)\s*$"
# `${VAR}` / `${VAR:-default}`: substituted when the manifest loads, so any scalar may be written so.
ENV_REF = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
           "description": "${VAR} or ${VAR:-default}, from the environment"}
# Keywords of the settings subset that mean the same in JSON Schema.
_COPIED = ("type", "required", "enum", "minimum", "maximum", "minLength", "pattern", "default",
           "description", "title", "examples", "const", "maxLength", "minItems", "maxItems")


def duration_schema(description: str = "", positive: bool = False) -> dict:
    """A duration as manifests write it: seconds, or a string like '500ms', '10s', '2m'."""
    number: dict = {"type": "number"}
    number["exclusiveMinimum" if positive else "minimum"] = 0
    out: dict = {"anyOf": [number, {"type": "string", "pattern": DURATION_PATTERN}, ENV_REF]}
    if description:
        out["description"] = description
    return out


def settings_to_json_schema(schema: dict | None) -> dict:
    """Turn a type's settings schema (cidag's subset) into standard JSON Schema."""
    if schema is None:
        return {"type": "object", "description": "settings of this type (not declared by the type)"}
    if schema.get("format") == "duration":
        out = duration_schema(schema.get("description", ""))
        if "default" in schema:
            out["default"] = schema["default"]
        return out
    out = {k: schema[k] for k in _COPIED if k in schema}
    props = schema.get("properties")
    if props is not None:
        out["properties"] = {k: settings_to_json_schema(v) for k, v in props.items()}
    # cidag's subset refuses unknown keys when properties are declared; JSON Schema allows them unless told.
    extra = schema.get("additionalProperties", False if props else True)
    out["additionalProperties"] = settings_to_json_schema(extra) if isinstance(extra, dict) else extra
    if "items" in schema:
        out["items"] = settings_to_json_schema(schema["items"])
    if out.get("additionalProperties") is True and "properties" not in out and out.get("type") not in (None, "object"):
        del out["additionalProperties"]  # meaningless on a non-object
    return with_env_ref(out)


def with_env_ref(schema: dict) -> dict:
    """Let a non-string scalar, an enum or a patterned string also be written as ${VAR}."""
    types = schema.get("type")
    names = [types] if isinstance(types, str) else list(types or [])
    scalar = bool(set(names) & {"number", "integer", "boolean", "null"}) and "string" not in names
    if not (scalar or "enum" in schema or "const" in schema or "pattern" in schema):
        return schema
    doc = {k: schema[k] for k in ("description", "default") if k in schema}
    rest = {k: v for k, v in schema.items() if k not in doc}
    return {**doc, "anyOf": [rest, ENV_REF]}


def _names(description: str) -> dict:
    return {"type": "array", "items": {"type": "string", "pattern": NAME_PATTERN},
            "uniqueItems": True, "description": description}


def _type_settings(kind: str) -> tuple[list[str], dict[str, dict]]:
    """Built-in type names of `kind` and the JSON Schema of each one's settings."""
    from .types import TypeLoadError, builtin_types, load_type

    names = sorted(builtin_types(kind))
    defs: dict[str, dict] = {}
    for name in names:
        try:
            info = load_type(kind, name)
        except TypeLoadError:
            continue  # a built-in that cannot load here (missing optional dependency): settings unchecked
        sub = settings_to_json_schema(info.settings_schema)
        if info.doc:
            sub.setdefault("description", info.doc)
        defs[f"{kind}-{name}-settings"] = sub
    return names, defs


def _entry(kind: str, names: list[str], props: dict, required: list[str]) -> dict:
    type_schema = {
        "description": "a built-in type, 'package.module:attr', or an entry point in "
                       f"cidag.{kind}s",
        "anyOf": [{"enum": names}, {"type": "string", "minLength": 1}],
    }
    props = {"name": {"type": "string", "pattern": NAME_PATTERN,
                      "description": "unique across sources and modules"},
             "type": type_schema, **props,
             "settings": {"type": "object", "description": "passed to the type, validated by it"}}
    rules = [
        {"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
         "then": {"properties": {"settings": {"$ref": f"#/$defs/{kind}-{name}-settings"}}}}
        for name in names
    ]
    entry: dict = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
    if rules:
        entry["allOf"] = rules
    return entry


def sources_manifest(names: list[str]) -> dict:
    """The hand-written schema of sources.yaml (SPEC §2)."""
    entry = _entry("source", names, {
        "capabilities": _names("capabilities this source exports"),
        "timeout": duration_schema("probe deadline; past it the source is failed", positive=True),
        "needs": _names("capabilities that must be resolved before the probe starts"),
        "secrets": _names("capabilities of this source whose values are secret (added to its type's)"),
    }, ["name", "type", "capabilities"])
    return {
        "type": "object",
        "title": "cidag sources.yaml",
        "properties": {
            "version": {"const": 1},
            "select": with_env_ref({"enum": ["preferred", "first"], "default": "preferred",
                                    "description": "preferred: most preferred provider that succeeded "
                                                   "(deterministic); first: fastest provider that succeeded"}),
            "sources": {"type": "array", "items": {"$ref": "#/$defs/source"},
                        "description": "list order is preference order (first = most preferred)"},
        },
        "required": ["version", "sources"],
        "additionalProperties": False,
    }, entry


def modules_manifest(names: list[str]) -> dict:
    """The hand-written schema of modules.yaml (SPEC §2)."""
    entry = _entry("module", names, {
        "needs": _names("hard: skipped if any is unavailable"),
        "wants": _names("soft: waited for until resolved or known unavailable"),
        "provides": _names("capabilities this module provides when it ends ok"),
        "depends_on": _names("modules to run after; skipped if one fails or is skipped"),
        "after": _names("soft ordering: run after these if they are in the run"),
        "priority": with_env_ref({"type": "integer", "default": 50,
                                  "description": "lower starts first among ready nodes"}),
        "frequency": with_env_ref({"enum": ["per-instance", "per-boot", "once"], "default": "per-instance"}),
        "timeout": duration_schema("past it the module is failed and its processes killed", positive=True),
        "secrets": _names("provided capabilities whose values are secret (added to its type's)"),
    }, ["name", "type"])
    return {
        "type": "object",
        "title": "cidag modules.yaml",
        "properties": {
            "version": {"const": 1},
            "modules": {"type": "array", "items": {"$ref": "#/$defs/module"}},
            "milestones": {
                "type": "object", "description": "points of the run units wait for: name -> modules "
                                                 "(reached once each has ended or will not run; `done` is built in)",
                "propertyNames": {"pattern": NAME_PATTERN, "not": {"const": "done"}},
                "additionalProperties": _names("modules of this milestone")},
        },
        "required": ["version", "modules"],
        "additionalProperties": False,
    }, entry


def manifest_schema(kind: str = "both") -> dict:
    """The JSON Schema of sources.yaml ('sources'), modules.yaml ('modules') or either ('both')."""
    if kind not in ("sources", "modules", "both"):
        raise UsageError(f"--kind must be sources, modules or both, not {kind!r}")
    defs: dict[str, Any] = {}
    tops = {}
    if kind in ("sources", "both"):
        names, settings = _type_settings("source")
        tops["sources"], defs["source"] = sources_manifest(names)
        defs.update(settings)
    if kind in ("modules", "both"):
        names, settings = _type_settings("module")
        tops["modules"], defs["module"] = modules_manifest(names)
        defs.update(settings)
    if kind != "both":
        top = tops[kind]
        return {"$schema": DRAFT, **top, "$defs": defs}
    defs["sources-manifest"] = tops["sources"]
    defs["modules-manifest"] = tops["modules"]
    return {
        "$schema": DRAFT,
        "title": "cidag manifest (sources.yaml or modules.yaml)",
        "oneOf": [{"$ref": "#/$defs/sources-manifest"}, {"$ref": "#/$defs/modules-manifest"}],
        "$defs": defs,
    }
