"""A make-like recipe: capabilities arrive as CIDAG_CAP_<NAME>; exit 0 = ok; a JSON object on stdout gives `provides`."""
from __future__ import annotations

import json

from ..api import Context
from ..errors import DeadlineReached
from ..sources.exec import COMMAND_SCHEMA, last_line

SETTINGS = {
    "type": "object",
    "properties": {"command": COMMAND_SCHEMA},
    "required": ["command"],
}


def run(ctx: Context) -> dict | None:
    result = ctx.run(ctx.settings["command"], cwd=ctx.root)
    out = result.stdout_text()
    if out.strip():
        ctx.output.append(out)
    if result.stderr:
        ctx.output.append(result.stderr_text())
    if result.timed_out:
        raise DeadlineReached()  # the engine says "timeout after ...", whoever sees it first
    if result.cancelled:
        raise RuntimeError("killed")
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {last_line(result.stderr_text())}".rstrip(": "))
    text = out.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    return None
