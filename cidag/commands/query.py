"""`cidag query [CAPABILITY]`: the metadata the last run resolved, each capability with its provider.

Reading it is instancequery.py's; this prints it.
"""
from __future__ import annotations

import json
from typing import Any

import click

from ..instancequery import NOT_KEPT, SECRET, TABLE_VALUE_W, WITHHELD, NotResolved, read_instance_data
from .common import state_options, state_path


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
