"""Whether cidag is turned off on this machine (cloud-init's cloud-init.disabled and cloud-init=disabled)."""
from __future__ import annotations

from pathlib import Path

DISABLE_FILE = "etc/cidag/cidag.disabled"
# Written by cidag-generator on a boot where /etc/cidag/cidag.detect (or cidag=detect) is set
# and no source can apply: cidag's units are masked for this boot (docs/systemd.md).
GENERATOR_FILE = "run/cidag/generator-disabled"


def disabled_reason(root: str | Path = "/", cmdline: str | Path = "/proc/cmdline") -> str | None:
    """Why cidag is disabled, or None when it may run."""
    marker = Path(root) / DISABLE_FILE
    if marker.exists():
        return f"{marker} exists"
    try:
        words = Path(cmdline).read_text().split()
    except OSError:
        words = []
    if "cidag=disabled" in words:
        return "kernel command line has cidag=disabled"
    generator = Path(root) / GENERATOR_FILE
    if generator.is_file():
        try:
            return generator.read_text(errors="replace")[:400].strip() or f"{generator} exists"
        except OSError:
            return f"{generator} exists"
    return None
