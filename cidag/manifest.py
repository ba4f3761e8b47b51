"""Load sources.yaml and modules.yaml into specs, reporting every problem with file:line:col.

Only validation lives here: the graph is built by compiler.py.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .durations import parse_duration
from .errors import Diagnostic, ManifestError, SettingsError
from .document import Document

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
MAX_NAME = 200  # names of sources, modules, capabilities, milestones
ENV_RE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")
# Variables cidag sets for commands at run time; ${...} of these is left to the command's shell.
RUNTIME_VARS = frozenset({"CIDAG_ROOT", "CIDAG_INSTANCE_ID", "CIDAG_NODE", "CIDAG_STATE_DIR"})
SELECT_MODES = ("preferred", "first")
FREQUENCIES = ("per-instance", "per-boot", "once")
DEFAULT_SOURCE_TIMEOUT = 30.0
DEFAULT_MODULE_TIMEOUT = 600.0
DEFAULT_PRIORITY = 50
MANIFEST_NAMES = ("sources.yaml", "modules.yaml")
PACKAGED_DEFAULTS = Path(__file__).resolve().parent / "defaults"

SOURCE_KEYS = ("name", "type", "capabilities", "timeout", "needs", "secrets", "settings")
MODULE_KEYS = ("name", "type", "needs", "wants", "provides", "depends_on", "after",
               "priority", "frequency", "timeout", "secrets", "settings")


@dataclass(kw_only=True)
class _NodeSpec:
    """What sources and modules share: where they were written, their secrets, their code."""

    name: str
    type: str
    timeout: float
    needs: list[str]
    settings: dict
    index: int
    doc: Document = field(repr=False)
    path: tuple = ()
    secrets: frozenset = frozenset()
    call: Any = field(default=None, repr=False)

    kind = ""

    @property
    def node_id(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(kw_only=True)
class SourceSpec(_NodeSpec):
    """One entry of sources.yaml; `index` is its preference rank (0 = most preferred)."""

    capabilities: list[str]

    kind = "source"


@dataclass(kw_only=True)
class ModuleSpec(_NodeSpec):
    """One entry of modules.yaml."""

    wants: list[str]
    provides: list[str]
    depends_on: list[str]
    after: list[str]
    priority: int
    frequency: str

    kind = "module"


@dataclass
class Manifests:
    """Both manifests, validated; `warnings` are findings that do not stop a run."""

    select: str
    sources: list[SourceSpec]
    modules: list[ModuleSpec]
    sources_file: str
    modules_file: str
    warnings: list[Diagnostic] = field(default_factory=list)
    # milestone name -> module names (modules.yaml `milestones:`); `done` is implicit
    milestones: dict[str, list[str]] = field(default_factory=dict)

    def secrets(self) -> frozenset[str]:
        """Every capability some type in the run marks secret."""
        out: frozenset[str] = frozenset()
        for spec in [*self.sources, *self.modules]:
            out |= spec.secrets
        return out


def find_manifests(
    sources: str | None = None,
    modules: str | None = None,
    config_dir: str | None = None,
) -> tuple[str, str]:
    """Paths of (sources.yaml, modules.yaml): explicit paths win, then the first of
    --config-dir, $CIDAG_CONFIG_DIR, /etc/cidag and the packaged defaults holding each file.
    """
    dirs = [d for d in (config_dir, os.environ.get("CIDAG_CONFIG_DIR"), "/etc/cidag") if d]
    dirs.append(str(PACKAGED_DEFAULTS))
    found = []
    for given, fname in zip((sources, modules), MANIFEST_NAMES):
        if given:
            found.append(given)
            continue
        for d in dirs:
            candidate = os.path.join(d, fname)
            if os.path.isfile(candidate):
                found.append(candidate)
                break
        else:
            from .errors import UsageError

            raise UsageError(f"no {fname} found in {', '.join(dirs)}")
    return found[0], found[1]


def expand_env(doc: Document, env: dict[str, str] | None = None) -> list[Diagnostic]:
    """Replace ${VAR} and ${VAR:-default} in every string value ($$ is a literal $)."""
    if not doc.dollar:
        return []
    env = os.environ if env is None else env
    errors: list[Diagnostic] = []
    # Aliases share one value: expand it once (by identity), so the result shares it too
    # and an aliased string is not copied once per alias. Depth is bounded by yamldoc.
    memo: dict[int, Any] = {}

    def sub(value: Any, path: tuple) -> Any:
        if type(value) is str and "$" not in value:
            return value
        if isinstance(value, (str, dict, list)):
            key = id(value)
            if key not in memo:
                memo[key] = (value, expand(value, path))  # keep `value` alive: ids stay unique
            return memo[key][1]
        return value

    def expand(value: Any, path: tuple) -> Any:
        if isinstance(value, str) and "$" in value:
            def repl(m: re.Match) -> str:
                if m.group(0) == "$$":
                    return "$"
                var, default = m.group(1), m.group(2)
                if var in RUNTIME_VARS or var.startswith("CIDAG_CAP_"):
                    return m.group(0)  # set by cidag for the command when it runs: leave for its shell
                if var in env and (env[var] != "" or default is None):
                    return env[var]
                if default is not None:
                    return default
                errors.append(doc.diag(path, f"environment variable {var} is not set (write ${{{var}:-default}} for a default)", code="unset-variable"))
                return ""
            return ENV_RE.sub(repl, value)
        if isinstance(value, dict):
            return {k: sub(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, path + (i,)) for i, v in enumerate(value)]
        return value

    doc.data = sub(doc.data, ())
    return errors


class _Checker:
    """Collects diagnostics while reading one document."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.diags: list[Diagnostic] = []

    def error(self, path: tuple, message: str, key: bool = False, code: str = "") -> None:
        self.diags.append(self.doc.diag(path, message, key=key, code=code))

    def warn(self, path: tuple, message: str, code: str = "") -> None:
        self.diags.append(self.doc.diag(path, message, severity="warning", code=code))

    def mapping(self, value: Any, path: tuple, what: str) -> dict | None:
        if not isinstance(value, dict):
            self.error(path, f"{what} must be a mapping, not {_kind(value)}", code="wrong-type")
            return None
        return value

    def keys(self, entry: dict, path: tuple, allowed: tuple, required: tuple) -> None:
        suggested = set()
        for key in entry:
            if not isinstance(key, str) or key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                tail = f" (did you mean {hint[0]!r}?)" if hint else ""
                suggested.update(hint)
                self.error(path + (key,), f"unknown key {_short(key)}{tail}", key=True, code="unknown-key")
        for key in required:
            if key not in entry and key not in suggested:  # a misspelling is reported once
                self.error(path, f"missing required key {key!r}", code="missing-key")

    def name(self, value: Any, path: tuple, what: str) -> str | None:
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.error(path, f"invalid {what} {_short(value)}: use lower case letters, digits, '.', '_' and '-', starting with a letter or digit", code="bad-name")
            return None
        if len(value) > MAX_NAME:
            # A module's name is its marker's file name (NAME.json, at most 255 bytes): one
            # limit for check and run, so a name that passes check never fails at run time.
            self.error(path, f"{what} {_short(value)} is {len(value)} characters long; at most {MAX_NAME}", code="bad-name")
            return None
        return value

    def names(self, entry: dict, key: str, path: tuple, what: str = "capability name") -> list[str]:
        value = entry.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path + (key,), f"{key} must be a list of names, not {_kind(value)}", code="wrong-type")
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            name = self.name(item, path + (key, i), what)
            if name is None:
                continue
            if name in out:
                self.error(path + (key, i), f"{name!r} is listed twice in {key}", code="duplicate")
                continue
            out.append(name)
        return out

    def duration(self, entry: dict, key: str, path: tuple, default: float) -> float:
        if key not in entry:
            return default
        try:
            seconds = parse_duration(entry[key])
        except ValueError as exc:
            self.error(path + (key,), str(exc), code="bad-duration")
            return default
        if seconds == 0:
            self.error(path + (key,), f"{key} must be more than 0", code="bad-duration")
            return default
        return seconds

    def header(self, data: Any, list_key: str) -> list | None:
        top = self.mapping(data, (), "a manifest")
        if top is None:
            return None
        allowed = ("version", "select", "sources") if list_key == "sources" else ("version", "modules", "milestones")
        self.keys(top, (), allowed, ("version", list_key))
        if "version" in top and top["version"] != 1:
            self.error(("version",), f"unsupported version {_short(top['version'])} (this cidag reads version 1)", code="bad-version")
        items = top.get(list_key, [])
        if items is None:
            return []
        if not isinstance(items, list):
            self.error((list_key,), f"{list_key} must be a list, not {_kind(items)}", code="wrong-type")
            return None
        return items


MAX_PRIORITY = 10**9


def _short(value: Any) -> str:
    """A value quoted in one short line (a manifest value may be huge or deeply nested)."""
    try:
        text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge number"
    except (ValueError, RecursionError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


_TYPE_TOOLS: tuple | None = None


def _type_tools() -> tuple:
    """(validate, TypeLoadError, load_type), imported on first use: a run from the compiled-plan
    cache never needs them, and an import statement per module costs (10,000 of them)."""
    global _TYPE_TOOLS
    if _TYPE_TOOLS is None:
        from .settings_schema import validate
        from .types import TypeLoadError, load_type

        _TYPE_TOOLS = (validate, TypeLoadError, load_type)
    return _TYPE_TOOLS


def _load_type(chk: _Checker, kind: str, entry: dict, path: tuple, spec: Any) -> None:
    """Resolve the type and validate settings with its schema (errors point into settings)."""
    validate, TypeLoadError, load_type = _type_tools()
    type_ref = entry.get("type")
    if not isinstance(type_ref, str) or not type_ref:
        chk.error(path + ("type",), "type must be a non-empty string", code="wrong-type")
        return
    try:
        info = load_type(kind, type_ref)
    except TypeLoadError as exc:
        chk.error(path + ("type",), str(exc), code="unknown-type")
        return
    settings = entry.get("settings", {})
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        chk.error(path + ("settings",), f"settings must be a mapping, not {_kind(settings)}", code="wrong-type")
        return
    try:
        spec.settings = validate(info.settings_schema, settings)
    except SettingsError as exc:
        sub = path + ("settings",) + tuple(exc.path)
        key = bool(exc.path) and exc.message.startswith("unknown setting")
        chk.error(sub, f"{type_ref}: settings: {exc.message}", key=key, code="bad-setting")
        return
    # `secrets:` on the node adds to what its type declares (an exec recipe has no SECRETS).
    own = chk.names(entry, "secrets", path)
    offered = spec.capabilities if kind == "source" else spec.provides
    for i, cap in enumerate(own):
        if cap not in offered:
            what = "capabilities" if kind == "source" else "provides"
            chk.error(path + ("secrets", i), f"secret {cap!r} is not in this {kind}'s {what}")
    spec.secrets = info.secrets | frozenset(own)
    spec.call = info.call


def parse_sources(doc: Document) -> tuple[str, list[SourceSpec], list[Diagnostic]]:
    """Validate a sources.yaml document; returns (select, specs, diagnostics)."""
    chk = _Checker(doc)
    items = chk.header(doc.data, "sources")
    select = "preferred"
    if isinstance(doc.data, dict) and "select" in doc.data:
        if doc.data["select"] in SELECT_MODES:
            select = doc.data["select"]
        else:
            chk.error(("select",), f"select must be one of {', '.join(SELECT_MODES)}, not {_short(doc.data['select'])}", code="bad-value")
    specs: list[SourceSpec] = []
    for i, entry in enumerate(items or []):
        path = ("sources", i)
        if chk.mapping(entry, path, "a source") is None:
            continue
        chk.keys(entry, path, SOURCE_KEYS, ("name", "type", "capabilities"))
        name = chk.name(entry.get("name"), path + ("name",), "source name") if "name" in entry else None
        spec = SourceSpec(
            name=name or f"#{i}",
            type=str(entry.get("type", "")),
            capabilities=chk.names(entry, "capabilities", path),
            timeout=chk.duration(entry, "timeout", path, DEFAULT_SOURCE_TIMEOUT),
            needs=chk.names(entry, "needs", path),
            settings={},
            index=i,
            doc=doc,
            path=path,
        )
        if "capabilities" in entry and entry["capabilities"] == []:
            chk.warn(path + ("capabilities",), f"source {spec.name!r} declares no capabilities; it can serve nothing", code="no-capabilities")
        _load_type(chk, "source", entry, path, spec)
        specs.append(spec)
    return select, specs, chk.diags


def parse_modules(doc: Document) -> tuple[list[ModuleSpec], list[Diagnostic]]:
    """Validate a modules.yaml document; returns (specs, diagnostics)."""
    chk = _Checker(doc)
    items = chk.header(doc.data, "modules")
    specs: list[ModuleSpec] = []
    for i, entry in enumerate(items or []):
        path = ("modules", i)
        if chk.mapping(entry, path, "a module") is None:
            continue
        chk.keys(entry, path, MODULE_KEYS, ("name", "type"))
        name = chk.name(entry.get("name"), path + ("name",), "module name") if "name" in entry else None
        priority = entry.get("priority", DEFAULT_PRIORITY)
        if isinstance(priority, bool) or not isinstance(priority, int):
            chk.error(path + ("priority",), f"priority must be an integer, not {_short(priority)}", code="wrong-type")
            priority = DEFAULT_PRIORITY
        elif abs(priority) > MAX_PRIORITY:
            chk.error(path + ("priority",), f"priority must be between {-MAX_PRIORITY} and {MAX_PRIORITY}", code="bad-value")
            priority = DEFAULT_PRIORITY
        frequency = entry.get("frequency", "per-instance")
        if frequency not in FREQUENCIES:
            chk.error(path + ("frequency",), f"frequency must be one of {', '.join(FREQUENCIES)}, not {_short(frequency)}", code="bad-value")
            frequency = "per-instance"
        spec = ModuleSpec(
            name=name or f"#{i}",
            type=str(entry.get("type", "")),
            needs=chk.names(entry, "needs", path),
            wants=chk.names(entry, "wants", path),
            provides=chk.names(entry, "provides", path),
            depends_on=chk.names(entry, "depends_on", path, "module name"),
            after=chk.names(entry, "after", path, "module name"),
            priority=priority,
            frequency=frequency,
            timeout=chk.duration(entry, "timeout", path, DEFAULT_MODULE_TIMEOUT),
            settings={},
            index=i,
            doc=doc,
            path=path,
        )
        for cap in set(spec.needs) & set(spec.wants):
            chk.error(path + ("wants", spec.wants.index(cap)), f"{cap!r} is in both needs and wants", code="needs-and-wants")
        _load_type(chk, "module", entry, path, spec)
        specs.append(spec)
    return specs, chk.diags


DONE = "done"  # the implicit milestone: the run has ended


def parse_milestones(doc: Document, modules: list[ModuleSpec]) -> tuple[dict[str, list[str]], list[Diagnostic]]:
    """Validate modules.yaml's `milestones:` (name -> module names); returns (milestones, diagnostics).

    A milestone is reached once each of its modules has ended or will not run; see
    docs/manifests.md. `done` is reserved: it is reached when the run ends.
    """
    chk = _Checker(doc)
    data = doc.data.get("milestones") if isinstance(doc.data, dict) else None
    if data is None:
        return {}, []
    top = chk.mapping(data, ("milestones",), "milestones")
    if top is None:
        return {}, chk.diags
    known = {m.name for m in modules}
    out: dict[str, list[str]] = {}
    for name, members in top.items():
        path = ("milestones", name)
        if chk.name(name, path, "milestone name") is None:
            continue
        if name == DONE:
            chk.error(path, f"milestone {DONE!r} is built in (reached when the run ends); use another name",
                      key=True, code="reserved-name")
            continue
        entry = chk.names(top, name, ("milestones",), "module name")
        for member in entry:
            if member not in known:
                hint = difflib.get_close_matches(member, known, n=1)
                tail = f" (did you mean {hint[0]!r}?)" if hint else ""
                chk.error(path + (members.index(member),),
                          f"milestone {name}: {member!r} is not a module{tail}", code="unknown-module")
        out[name] = [m for m in entry if m in known]
    return out, chk.diags


def detect_kind(doc: Document) -> str | None:
    """'sources' or 'modules' from the top-level key, for `cidag check FILE...`."""
    if isinstance(doc.data, dict):
        if "sources" in doc.data:
            return "sources"
        if "modules" in doc.data:
            return "modules"
    return None


def load_manifests(sources_path: str, modules_path: str,
                   env: dict[str, str] | None = None) -> Manifests:
    """Read, expand and validate both files; raise ManifestError listing every error."""
    diags: list[Diagnostic] = []
    from .yamldoc import load_file  # the parser (and yaml) only when manifests are read

    docs: list[Document | None] = []
    for p in (sources_path, modules_path):
        try:
            doc = load_file(p)
        except ManifestError as exc:
            diags.extend(exc.diagnostics)
            docs.append(None)
            continue
        diags.extend(expand_env(doc, env))
        docs.append(doc)
    select, sources, modules = "preferred", [], []
    if docs[0] is not None:
        select, sources, d = parse_sources(docs[0])
        diags.extend(d)
    milestones: dict[str, list[str]] = {}
    if docs[1] is not None:
        modules, d = parse_modules(docs[1])
        diags.extend(d)
        milestones, d = parse_milestones(docs[1], modules)
        diags.extend(d)
    diags.extend(_check_unique(sources, modules))
    errors = [d for d in diags if d.severity == "error"]
    if errors:
        raise ManifestError(errors + [d for d in diags if d.severity != "error"])
    return Manifests(select, sources, modules, sources_path, modules_path,
                     warnings=[d for d in diags if d.severity != "error"], milestones=milestones)


def _check_unique(sources: list[SourceSpec], modules: list[ModuleSpec]) -> list[Diagnostic]:
    seen: dict[str, SourceSpec | ModuleSpec] = {}
    out = []
    for spec in [*sources, *modules]:
        if spec.name.startswith("#"):
            continue
        if spec.name in seen:
            first = seen[spec.name]
            line, _ = first.doc.where(first.path + ("name",))
            out.append(spec.doc.diag(
                spec.path + ("name",),
                f"duplicate name {spec.name!r} (already a {first.kind} at {os.path.basename(first.doc.file)}:{line}); names are unique across sources and modules",
                code="duplicate"))
        else:
            seen[spec.name] = spec
    return out
