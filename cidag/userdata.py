"""Parse user-data and vendor-data the way cloud-init users write it.

A payload (bytes or str; or a mapping {"data"|"content": ..., "encoding": ...}
when a source says how it is encoded) may be:

- `#cloud-config` YAML (safe-loaded; must be a mapping);
- a `#!` script;
- MIME multipart mixing both (`text/cloud-config`, `text/x-shellscript`,
  `text/plain` sniffed by its first line, `application/gzip` parts, parts in
  base64 transfer encoding);
- gzip-compressed (sniffed by its magic bytes), at any level;
- base64, when the source or the settings say so.

Several cloud-config parts merge in order (mappings recursively, later values
win); vendor-data merges under user-data, so user-data wins on conflicts, and
user-data `vendor_data: {enabled: false}` drops vendor-data entirely. A part
that cannot be parsed is reported in `UserData.errors` (one line each) and
the other parts are kept, so bad user-data never stops the boot by itself.
"""
from __future__ import annotations

import base64
import binascii
import copy
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import cloudconfig_keys
from .cloudconfig_keys import section_schemas
from .errors import Diagnostic
from .yamldoc import safe_load as _safe_load

MAX_SIZE = 16 << 20  # decoded bytes kept from one payload: guards against gzip bombs
MAX_PARTS = 1000


@dataclass
class Script:
    """A `#!` part: what scripts-user runs."""

    name: str
    content: bytes
    origin: str = "user-data"

    def as_dict(self) -> dict:
        return {"name": self.name, "content": self.content, "origin": self.origin}


@dataclass
class UserData:
    """What a payload held: merged cloud-config, scripts, and one line per part that failed."""

    cloud_config: dict = field(default_factory=dict)
    scripts: list[Script] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    parts: int = 0  # parts understood (cloud-config or scripts)
    has_cloud_config: bool = False  # at least one cloud-config part parsed


def merge(base: dict, top: dict) -> dict:
    """Return `base` with `top` merged in: mappings recursively, anything else replaced by `top`."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most `limit` bytes; raise ValueError beyond (a gzip bomb stays small)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise ValueError(f"gzip payload larger than {limit} bytes once decompressed")
    return out + d.flush()


def decode_payload(value: Any, encoding: str | None = None, *, limit: int = MAX_SIZE) -> bytes:
    """Return raw bytes for a capability value, base64-decoding when told and gunzipping when sniffed.

    Raises ValueError with a one-line reason.
    """
    if isinstance(value, dict):
        encoding = value.get("encoding", encoding)
        value = value.get("data", value.get("content", b""))
    if value is None:
        return b""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    enc = (encoding or "").lower().replace("-", "")
    if enc in ("b64", "base64", "gz+b64", "gzip+base64", "gz+base64", "gzip+b64"):
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"invalid base64: {exc}") from None
    elif enc not in ("", "none", "text", "plain", "gz", "gzip"):
        raise ValueError(f"unknown encoding {encoding!r}")
    if data[:2] == b"\x1f\x8b":
        try:
            data = _gunzip(data, limit)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"invalid gzip data: {exc}") from None
    if len(data) > limit:
        raise ValueError(f"payload larger than {limit} bytes")
    return data


def parse(value: Any, *, origin: str = "user-data", encoding: str | None = None) -> UserData:
    """Parse one user-data or vendor-data capability value; never raises on bad content."""
    out = UserData()
    if isinstance(value, dict) and not ({"data", "content"} & set(value)):
        # A source (or a static test manifest) gave the cloud-config already parsed.
        out.cloud_config = copy.deepcopy(value)
        out.has_cloud_config = True
        out.parts = 1
        return out
    try:
        data = decode_payload(value, encoding)
    except ValueError as exc:
        out.errors.append(f"{origin}: {exc}")
        return out
    _dispatch(data, out, origin, f"{origin}", depth=0)
    return out


def _first_line(data: bytes) -> bytes:
    return data.lstrip()[:200].split(b"\n", 1)[0].strip()


def _is_mime(data: bytes) -> bool:
    head = data.lstrip()[:1024].lower()
    return head.startswith(b"content-type:") or head.startswith(b"mime-version:")


def _dispatch(data: bytes, out: UserData, origin: str, name: str, depth: int, ctype: str = "") -> None:
    if depth > 5:
        out.errors.append(f"{name}: nested too deep")
        return
    if data[:2] == b"\x1f\x8b":
        try:
            data = _gunzip(data, MAX_SIZE)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            out.errors.append(f"{name}: {exc}")
            return
    if not data.strip():
        return
    first = _first_line(data)
    if ctype in ("", "text/plain") and _is_mime(data):
        _mime(data, out, origin, name, depth)
    elif ctype == "text/cloud-config-archive" or first.startswith(b"#cloud-config-archive"):
        _archive(data, out, origin, name, depth)
    elif ctype == "text/cloud-config" or first.startswith(b"#cloud-config"):
        _cloud_config(data, out, name)
    elif ctype in ("text/x-shellscript", "text/x-shellscript-per-instance") or first.startswith(b"#!"):
        if not first.startswith(b"#!"):
            out.errors.append(f"{name}: a shell script part must start with '#!'")
            return
        out.scripts.append(Script(_script_name(name, len(out.scripts)), data, origin))
        out.parts += 1
    elif first.startswith(b"#include") or ctype == "text/x-include-url":
        out.warnings.append(f"{name}: #include is not supported (cidag fetches nothing from user-data)")
    elif first.startswith(b"#cloud-boothook") or ctype == "text/cloud-boothook":
        out.warnings.append(f"{name}: #cloud-boothook is not supported; ignored")
    elif first.startswith(b"#part-handler") or ctype == "text/part-handler":
        out.warnings.append(f"{name}: part handlers are not supported; ignored")
    else:
        kind = ctype or repr(first[:40].decode("utf-8", "replace"))
        out.warnings.append(f"{name}: unrecognised part {kind}; ignored")


def _archive(data: bytes, out: UserData, origin: str, name: str, depth: int) -> None:
    """`#cloud-config-archive`: a YAML list of parts, each a string or {content, type, filename}."""
    try:
        doc = _safe_load(data)
    except yaml.YAMLError as exc:
        out.errors.append(f"{name}: invalid YAML in #cloud-config-archive: {str(exc).splitlines()[0]}")
        return
    if not isinstance(doc, list):
        out.errors.append(f"{name}: #cloud-config-archive must be a list, got {type(doc).__name__}")
        return
    for i, entry in enumerate(doc[:MAX_PARTS]):
        if isinstance(entry, dict):
            content, ctype = entry.get("content"), str(entry.get("type") or "").lower()
            pname = f"{origin}/{entry.get('filename') or f'part-{i + 1:03d}'}"
        else:
            content, ctype, pname = entry, "", f"{origin}/part-{i + 1:03d}"
        if content is None:
            continue
        payload = content.encode("utf-8") if isinstance(content, str) else str(content).encode("utf-8")
        _dispatch(payload, out, origin, pname, depth + 1, ctype)


def _script_name(name: str, index: int) -> str:
    base = os.path.basename(name)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "part"
    return f"{index:03d}-{safe}"[:100]


def _cloud_config(data: bytes, out: UserData, name: str) -> None:
    from .values import ValueRefused, canonical

    try:
        doc = _safe_load(data)
        # Bounded once here (values.py): a recursive alias, an alias bomb or deep nesting is
        # this part's error, not a crash or gigabytes later on.
        doc = canonical(doc)
    except ValueRefused as exc:
        out.errors.append(f"{name}: #cloud-config refused: {exc}")
        return
    except RecursionError:
        out.errors.append(f"{name}: #cloud-config refused: nested too deep")
        return
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        out.errors.append(f"{name}: invalid YAML in #cloud-config{where}: {problem}")
        return
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        out.errors.append(f"{name}: #cloud-config must be a mapping, got {type(doc).__name__}")
        return
    out.cloud_config = merge(out.cloud_config, {str(k): v for k, v in doc.items()})
    out.has_cloud_config = True
    out.parts += 1


def _mime(data: bytes, out: UserData, origin: str, name: str, depth: int) -> None:
    import email  # here: most user-data is plain #cloud-config, and email costs a boot ~0.3 s under emulation

    msg = email.message_from_bytes(data)
    count = 0
    for part in msg.walk():
        if part.is_multipart():
            continue
        count += 1
        if count > MAX_PARTS:
            out.errors.append(f"{name}: more than {MAX_PARTS} parts; the rest ignored")
            return
        filename = part.get_filename() or f"part-{count:03d}"
        pname = f"{origin}/{filename}"
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception as exc:  # a broken transfer encoding is one bad part, not a bad boot
            out.errors.append(f"{pname}: cannot decode: {exc}")
            continue
        ctype = part.get_content_type().lower()
        if ctype in ("application/gzip", "application/x-gzip") or payload[:2] == b"\x1f\x8b":
            try:
                payload = _gunzip(payload, MAX_SIZE)
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                out.errors.append(f"{pname}: {exc}")
                continue
            ctype = ""
        if ctype.startswith("multipart/"):
            continue
        _dispatch(payload, out, origin, pname, depth + 1, ctype)


def combine(user: UserData | None, vendor: UserData | None) -> UserData:
    """User-data over vendor-data: cloud-config merged (user wins), vendor scripts first."""
    user = user or UserData()
    if vendor is None:
        return user
    vd = user.cloud_config.get("vendor_data")
    if isinstance(vd, dict) and vd.get("enabled") is False:
        return user
    return UserData(
        cloud_config=merge(vendor.cloud_config, user.cloud_config),
        scripts=list(vendor.scripts) + list(user.scripts),
        errors=vendor.errors + user.errors,
        warnings=vendor.warnings + user.warnings,
        parts=vendor.parts + user.parts,
        has_cloud_config=vendor.has_cloud_config or user.has_cloud_config,
    )


# --- validation against the modules' cloud-config schemas (cidag check --user-data) ---


def check_sections(config: dict, keys: dict[str, dict] | None = None) -> list[tuple[tuple, str]]:
    """Validate the sections in `keys` (key -> schema); return (path, message) per error.

    Every error of a section is found, not only the first: the offending
    node is taken out of a copy and the section validated again.
    """
    from .errors import SettingsError
    from .settings_schema import validate

    problems: list[tuple[tuple, str]] = []
    for key, schema in (keys or {}).items():
        if key not in config:
            continue
        section = copy.deepcopy(config[key])
        for _ in range(100):
            try:
                validate(schema, section, (key,))
                break
            except SettingsError as exc:
                problems.append((exc.path, exc.message))
                if not _drop(section, exc.path[1:]):
                    break
    return problems


def unsupported_paths(schema: Any, value: Any, path: tuple = ()):
    """Yield (path, note) for each node of `value` whose schema is marked `{"unsupported": note}`:
    a cloud-init setting cidag accepts but does not apply (reported, never silently dropped)."""
    if not isinstance(schema, dict):
        return
    if "unsupported" in schema:
        yield path, schema["unsupported"]
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, item in value.items():
            if key in props:
                yield from unsupported_paths(props[key], item, path + (key,))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from unsupported_paths(schema["items"], item, path + (i,))


def unsupported_message(path: tuple, note: str) -> str:
    """One line for a cloud-init setting inside a section that cidag does not apply."""
    return f"cloud-config {format_path(path)} is not supported by cidag: ignored" + (f" ({note})" if note else "")


def _drop(tree: Any, path: tuple) -> bool:
    """Remove the mapping key at `path` inside `tree`; False when it is no mapping key (dropping a
    list item would shift the paths of the next errors)."""
    if not path:
        return False
    parent = tree
    for step in path[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(parent, dict) and path[-1] in parent:
        del parent[path[-1]]
        return True
    return False


def _yaml_line(text: str, path: tuple) -> tuple[int, int]:
    """Line and column (1-based) of the node at `path` in a YAML document, best effort."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return 1, 1
    best = node
    for step in path:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(step):
                    nxt, best = v, k
                    break
            if nxt is None:
                break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = best = node.value[step]
        else:
            break
    if best is None:
        return 1, 1
    return best.start_mark.line + 1, best.start_mark.column + 1


def validate_user_data_file(path: str | os.PathLike, *, encoding: str | None = None) -> list[Diagnostic]:
    """Check a user-data file against the built-in modules' cloud-config schemas.

    Errors: unreadable file, parts that cannot be parsed, sections that do not
    match the schema of the module that owns them. Warnings: top-level keys no
    cidag module handles, parts cidag ignores.
    """
    fname = os.fspath(path)
    try:
        with open(fname, "rb") as f:
            raw = f.read(MAX_SIZE + 1)
    except OSError as exc:
        return [Diagnostic(fname, 0, 0, f"cannot read user-data: {exc.strerror or exc}", code="user-data")]
    if len(raw) > MAX_SIZE:
        return [Diagnostic(fname, 0, 0, f"user-data larger than {MAX_SIZE} bytes", code="user-data")]
    diags: list[Diagnostic] = []
    try:
        data = decode_payload(raw, encoding)
    except ValueError as exc:
        return [Diagnostic(fname, 1, 1, str(exc), code="user-data")]
    # Validate each cloud-config part on its own so line numbers point into it.
    docs: list[tuple[str, int]] = []
    collector = UserData()
    _collect_docs(data, docs, collector, fname)
    for msg in collector.errors:
        # A line inside a MIME part is not a line of the file: the message keeps it.
        line = 0 if _is_mime(data) else _line_in(msg)
        diags.append(Diagnostic(fname, line, 1 if line else 0, _strip_origin(msg, fname), code="user-data"))
    for msg in collector.warnings:
        diags.append(Diagnostic(fname, 0, 0, _strip_origin(msg, fname), "warning", code="user-data"))
    schemas = section_schemas()
    for text, offset in docs:
        try:
            doc = _safe_load(text) or {}
        except yaml.YAMLError:
            continue  # reported above
        if not isinstance(doc, dict):
            continue
        for key in doc:
            if str(key) not in schemas:
                line, col = _yaml_line(text, (str(key),)) if offset is not None else (0, 0)
                diags.append(Diagnostic(fname, line + (offset or 0), col, cloudconfig_keys.message(str(key)),
                                        "warning", code="unsupported-key"))
        keys = {k: s for k, (_, s) in schemas.items()}
        for key, schema in keys.items():
            for pth, note in unsupported_paths(schema, doc.get(key), (key,)) if key in doc else ():
                line, col = _yaml_line(text, pth) if offset is not None else (0, 0)
                diags.append(Diagnostic(fname, line + (offset or 0), col, unsupported_message(pth, note),
                                        "warning", code="unsupported-key"))
        for pth, message in check_sections(doc, keys):
            line, col = _yaml_line(text, pth) if offset is not None else (0, 0)
            owner = schemas[str(pth[0])][0]
            where = format_path(pth)
            diags.append(Diagnostic(fname, line + (offset or 0), col,
                                    f"{where}: {message} (section of module type {owner!r})",
                                    code="user-data"))
    return diags


def _strip_origin(msg: str, fname: str) -> str:
    """Messages name their part after the file; the diagnostic already names the file."""
    if msg.startswith(fname + ": "):
        return msg[len(fname) + 2:]
    if msg.startswith(fname + "/"):
        return msg[len(fname) + 1:]  # "part-002: ..." or the part's file name
    return msg


def format_path(path: tuple) -> str:
    """('users', 0, 'shel') -> 'users[0].shel'."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _line_in(msg: str) -> int:
    m = re.search(r"at line (\d+)", msg)
    return int(m.group(1)) if m else 0


def _collect_docs(data: bytes, docs: list, collector: UserData, fname: str) -> None:
    """Gather the cloud-config texts (with their line offset in the file) and parse errors."""
    probe = UserData()
    _dispatch(data, probe, fname, fname, 0)
    collector.errors.extend(probe.errors)
    collector.warnings.extend(probe.warnings)
    if _is_mime(data):
        import email

        msg = email.message_from_bytes(data)
        raw = data.decode("utf-8", "replace")
        for part in msg.walk():
            if part.is_multipart():
                continue
            try:
                payload = part.get_payload(decode=True) or b""
                if payload[:2] == b"\x1f\x8b":
                    payload = _gunzip(payload, MAX_SIZE)
            except Exception:
                continue
            if part.get_content_type() == "text/cloud-config" or _first_line(payload).startswith(b"#cloud-config"):
                text = payload.decode("utf-8", "replace")
                pos = raw.find(text[:200]) if text else -1
                offset = raw.count("\n", 0, pos) if pos >= 0 else 0
                docs.append((text, offset))
    elif _first_line(data).startswith(b"#cloud-config-archive"):
        try:
            entries = _safe_load(data)
        except yaml.YAMLError:
            return  # reported by the probe above
        for entry in entries if isinstance(entries, list) else []:
            content = entry.get("content") if isinstance(entry, dict) else entry
            ctype = str(entry.get("type") or "") if isinstance(entry, dict) else ""
            if isinstance(content, str) and (ctype == "text/cloud-config" or content.startswith("#cloud-config")):
                docs.append((content, None))  # no line of the file: the message names the key
    elif _first_line(data).startswith(b"#cloud-config"):
        docs.append((data.decode("utf-8", "replace"), 0))


def cloud_config_sections(ctx, schemas: dict[str, dict]) -> dict:
    """The `cloud-config` capability a module sees, its own sections checked against `schemas`.

    Raises ValueError naming the first section that does not match, so the
    module owning it fails with that reason and the others go on.
    """
    cc = ctx.caps.get("cloud-config") or {}
    if not isinstance(cc, dict):
        raise ValueError("cloud-config capability is not a mapping")
    problems = check_sections(cc, schemas)
    for key, schema in schemas.items():
        for path, note in unsupported_paths(schema, cc.get(key), (key,)) if key in cc else ():
            ctx.log.warning("%s", unsupported_message(path, note))
    if problems:
        path, message = problems[0]
        where = format_path(path)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"cloud-config {where}: {message}{more}")
    return cc
