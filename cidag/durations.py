"""Durations as manifests write them: numbers of seconds or `500ms`, `10s`, `2m`, `1h30m`."""
from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_SECONDS = 30 * 86400.0  # longer than any boot; beyond, timers overflow (threading, select)
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Return seconds for `value`; raise ValueError quoting it if it is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"duration too large (at most {MAX_SECONDS / 86400:g} days)") from None
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 64:
            raise ValueError(f"not a duration: {text[:20]!r}... (too long)")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"not a duration: {value!r} (use seconds or e.g. '500ms', '10s', '2m')"
                ) from None
    else:
        raise ValueError(f"not a duration: {value!r}")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"duration must be a finite number >= 0: {value!r}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"duration too large (at most {MAX_SECONDS / 86400:g} days)")
    return seconds
