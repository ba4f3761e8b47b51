"""Inline metadata (cloud-init's fallback "None" source); `delay` simulates probe latency."""
from __future__ import annotations

from ..api import Context

SETTINGS = {
    "type": "object",
    "properties": {
        "data": {"type": "object", "default": {}, "additionalProperties": True,
                 "description": "capability name -> value",
                 # Checked as the run would check them (docs/sources.md, values that become names).
                 "properties": {"instance-id": {"type": ["string", "integer"], "format": "instance-id"},
                                "hostname": {"type": "string", "format": "hostname"}}},
        "delay": {"format": "duration", "default": 0,
                  "description": "seconds the probe takes"},
        "available": {"type": "boolean", "default": True,
                      "description": "false: the probe reports unavailable"},
    },
}
CAPABILITIES = ("any: the keys of settings.data",)


def probe(ctx: Context) -> dict | None:
    if ctx.settings["delay"] and ctx.cancelled.wait(ctx.settings["delay"]):
        raise RuntimeError("cancelled")
    if not ctx.settings["available"]:
        return None
    return dict(ctx.settings["data"])
