"""Write files into the target root (cloud-init's write_files and write_files_deferred).

Capabilities: wants `cloud-config`. Cloud-config key: `write_files` (entries
with `path`, `content`, `encoding` (text, b64/base64, gzip/gz, gz+b64),
`permissions`, `owner`, `append`, `defer`). Settings `files` adds entries of
the same shape; `deferred: true` makes this node write only the `defer: true`
entries (run it after the users exist), `false` only the others.

Every path is confined to ROOT (`..`, symlinks out of the root refused); owners
are looked up in ROOT/etc/passwd and group, not the host's. One bad entry
fails the module after the other entries are written.
"""
from __future__ import annotations

import base64
import binascii

from .. import paths, userdata
from ..api import Context
from . import _accounts as acc

ENTRY = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "minLength": 1},
        "content": {"description": "text, or bytes from YAML !!binary"},
        "source": {"type": "object"},
        "encoding": {"enum": ["text", "b64", "base64", "gz", "gzip", "gz+b64", "gzip+base64",
                              "gz+base64", "gzip+b64"]},
        "permissions": {"type": ["string", "integer"]},
        "owner": {"type": "string"},
        "append": {"type": "boolean"},
        "defer": {"type": "boolean"},
    },
    "required": ["path"],
}
CLOUD_CONFIG = {"write_files": {"type": "array", "items": ENTRY}}
SETTINGS = {
    "type": "object",
    "properties": {
        "files": {"type": "array", "items": ENTRY, "default": []},
        "deferred": {"type": "boolean", "default": False,
                     "description": "write only the entries with defer: true (else only the others)"},
        "max_size": {"type": "integer", "minimum": 0, "default": 16 << 20,
                     "description": "largest decoded content, in bytes"},
    },
}


def decode(content, encoding: str | None, limit: int) -> bytes:
    """Bytes to write for `content` in `encoding`; raise ValueError with the reason."""
    enc = (encoding or "text").lower()
    if content is None:
        content = ""
    if not isinstance(content, (str, bytes)):
        raise ValueError(f"content must be text, got {type(content).__name__}")
    data = content.encode("utf-8") if isinstance(content, str) else content
    if "b64" in enc or "base64" in enc:
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"invalid base64 content: {exc}") from None
    if enc.startswith("gz"):
        try:
            data = userdata._gunzip(data, limit)
        except Exception as exc:
            raise ValueError(f"invalid gzip content: {exc}") from None
    if len(data) > limit:
        raise ValueError(f"content larger than {limit} bytes")
    return data


def parse_mode(value) -> int:
    """File mode from '0644', '644', '0o644' or an int (YAML reads 0644 as 420)."""
    if value is None:
        return 0o644
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        text = str(value).strip().lower().replace("0o", "0")
        try:
            mode = int(text, 8)
        except ValueError:
            raise ValueError(f"permissions {value!r} is not an octal mode") from None
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"permissions {value!r} out of range")
    return mode


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    deferred = bool(ctx.settings.get("deferred"))
    entries = list(ctx.settings.get("files") or []) + list(cc.get("write_files") or [])
    entries = [e for e in entries if bool(e.get("defer", False)) == deferred]
    if not entries:
        ctx.log.info("no %sfiles to write", "deferred " if deferred else "")
        return None
    db = acc.Database(ctx.root)
    failed = []
    for e in entries:
        try:
            where = write_entry(ctx, db, e)
        except (ValueError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            ctx.log.error("%s: %s", e.get("path"), reason)
            failed.append(f"{e.get('path')}: {reason}")
            continue
        ctx.log.info("wrote %s", where)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(entries)} file(s) not written: {failed[0]}")
    return None


def write_entry(ctx: Context, db: acc.Database, e: dict) -> str:
    """Write one write_files entry; return its path in the root."""
    if e.get("source"):
        raise ValueError("'source' (fetching a URL) is not supported; give 'content'")
    mode = parse_mode(e.get("permissions"))
    owner = e.get("owner")
    uid, gid = acc.resolve_owner(db, owner) if owner else (0, 0)
    data = decode(e.get("content"), e.get("encoding"), ctx.settings.get("max_size", 16 << 20))
    path = e["path"]
    if not str(path).startswith("/"):
        raise ValueError("path must be absolute")
    paths.write_file(ctx.root, path, data, mode=mode, uid=uid, gid=gid, append=bool(e.get("append")))
    return path
