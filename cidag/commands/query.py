"""`cidag query [CAPABILITY]`: the metadata the last run resolved, each capability with its provider.

Reads STATE_DIR/instance-data.json (0644, secrets replaced by "<secret>"), or
with --secrets instance-data-sensitive.json (0600: root only).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import state_options, state_path

from ..errors import CidagError, UsageError

PUBLIC = "instance-data.json"
SENSITIVE = "instance-data-sensitive.json"
SECRET = "<secret>"
TABLE_VALUE_W = 72
WITHHELD = "secret values are only in the root-only instance-data-sensitive.json (--secrets); passwords not even there"
# What the sensitive file itself withholds: the engine never writes passwords at rest (issue 4).
NOT_KEPT = ("not kept: cidag writes no password to its state directory, not even to the root-only "
            "instance-data-sensitive.json; it is only used during the run")


class NotResolved(CidagError):
    """The asked capability did not resolve in the last run (exit 1, like a failed lookup)."""

    exit_code = 1


def read_instance_data(state_dir: str | Path, secrets: bool = False) -> dict:
    """The instance data file as a dict; raise UsageError with one line if it cannot be read."""
    path = Path(state_dir) / (SENSITIVE if secrets else PUBLIC)
    from ..state import MAX_STATE_FILE, read_bytes

    try:
        text = read_bytes(path, MAX_STATE_FILE * 16).decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no resolved metadata (has cidag run? use --root or --state-dir)") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied: only root may read secrets (--secrets)"
                         if secrets else f"{path}: permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: invalid JSON ({exc})") from None
    except RecursionError:
        raise UsageError(f"{path}: invalid JSON (nested too deep)") from None
    if not isinstance(data, dict) or not isinstance(data.get("capabilities", {}), dict):
        raise UsageError(f"{path}: not instance data (expected {{\"instance_id\", \"capabilities\"}})")
    data.setdefault("capabilities", {})
    return data


def _show(value: Any) -> str:
    """A value as a script wants it: strings raw, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True)


def _cell(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) or "\n" in value else value
    return text if len(text) <= TABLE_VALUE_W else text[: TABLE_VALUE_W - 1] + "…"


@click.command()
@click.argument("capability", required=False)
@state_options("Target root whose state directory is read.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--secrets", is_flag=True, help="Show secret values (reads the 0600 file: root only).")
def query(capability: str | None, state_dir: str | None, root: str, fmt: str, secrets: bool) -> None:
    """The metadata the last run resolved: every capability with its provider, or one value."""
    state = state_path(state_dir, root)
    data = read_instance_data(state, secrets)
    caps: dict = data["capabilities"]
    withheld = any(isinstance(c, dict) and c.get("value") == SECRET for c in caps.values())
    if capability is not None:
        entry = caps.get(capability)
        if not isinstance(entry, dict):
            known = ", ".join(sorted(caps)) or "none"
            raise NotResolved(f"capability {capability!r} was not resolved by the last run (resolved: {known})")
        if secrets and entry.get("value") == SECRET:
            raise NotResolved(f"{capability}: {NOT_KEPT}")
        if fmt == "json":
            click.echo(json.dumps({"name": capability, "provider": entry.get("provider"),
                                   "value": entry.get("value")}, indent=2))
        else:
            click.echo(_show(entry.get("value")))
        if entry.get("value") == SECRET:
            click.echo(f"cidag: {capability} withheld: {WITHHELD}", err=True)
        return
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(f"instance-id: {data.get('instance_id')}")
        width = max([len(n) for n in caps] + [4])
        cells = {name: _cell((caps[name] or {}).get("value") if isinstance(caps[name], dict) else None)
                 for name in caps}
        if secrets:  # what even the sensitive file withholds is not a secret to ask root for
            cells = {name: "<not kept>" if cell == SECRET else cell for name, cell in cells.items()}
        vwidth = max([len(c) for c in cells.values()] + [4])
        for name in sorted(caps):
            entry = caps[name] if isinstance(caps[name], dict) else {}
            click.echo(f"  {name:<{width}}  {cells[name]:<{vwidth}}  {entry.get('provider')}")
    if withheld:
        names = ", ".join(sorted(n for n, c in caps.items() if isinstance(c, dict) and c.get("value") == SECRET))
        click.echo(f"cidag: {names}: {NOT_KEPT if secrets else 'withheld: ' + WITHHELD}", err=True)
