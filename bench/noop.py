"""Plugin types used by the generated benchmark manifests (plain functions, spec §2.1)."""
from __future__ import annotations


def run(ctx):
    """A module that does nothing: the benchmark measures the engine around it."""


def probe(ctx):
    """A source that answers at once with `settings.data` (or nothing)."""
    return dict(ctx.settings.get("data") or {}) if ctx.settings else {}


def work(ctx):
    """A module that takes `settings.seconds` (default 0), then ends ok.

    Stands in for a config module whose duration is known, so makespans can be
    compared with the critical path without process start-up noise.
    """
    seconds = float((ctx.settings or {}).get("seconds", 0))
    if seconds > 0:
        ctx.cancelled.wait(seconds)
