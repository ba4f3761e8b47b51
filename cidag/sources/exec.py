"""A probe program: exit 0 with a JSON object on stdout = available; exit 3 = unavailable."""
from __future__ import annotations

import json

from ..api import Context
from ..errors import DeadlineReached, SourceUnavailable

COMMAND_SCHEMA = {
    "type": ["string", "array"],
    "items": {"type": "string"},
    "minLength": 1,
    "description": "argv list, or a string run by /bin/sh -c",
}
SETTINGS = {
    "type": "object",
    "properties": {"command": COMMAND_SCHEMA},
    "required": ["command"],
}
CAPABILITIES = ("any: the keys of the JSON object the program prints",)
UNAVAILABLE_EXIT = 3


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


def probe(ctx: Context) -> dict | None:
    result = ctx.run(ctx.settings["command"])
    if result.timed_out:
        raise DeadlineReached()  # the engine says "timeout after ...", whoever sees it first
    if result.cancelled:
        raise RuntimeError("killed")
    if result.returncode == UNAVAILABLE_EXIT:
        raise SourceUnavailable(last_line(result.stderr_text()) or "probe exited 3")
    if result.returncode != 0:
        raise RuntimeError(f"probe exited {result.returncode}: {last_line(result.stderr_text())}".rstrip(": "))
    try:
        data = json.loads(result.stdout_text() or "null")
    except ValueError as exc:
        raise RuntimeError(f"probe printed invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RuntimeError("probe must print a JSON object")
    return data
