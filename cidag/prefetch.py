"""Import the code a boot's run will need in a background thread, while its sources probe.

A run from the compiled-plan cache imports each node's code when the node starts
(plancache.LazyCall). At boot the first nodes are sources that mostly wait (a
config drive's mount, a metadata service), while the modules after them wait
for their imports (yaml and user-data parsing, the user and key modules): under
emulation that is seconds on the login's path. This thread imports them during
those waits. Only cidag's own modules are imported early (a plugin's import
may have side effects; it is imported when its node runs, as before).
"""
from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

from .state import INSTANCES

EVERY_BOOT = ("per-boot", "always")


def modules_to_import(cg: Any, first_boot: bool) -> list[str]:
    """The module names of the run's module nodes, in start order (priority, then name):
    on a later boot only the every-boot ones (markers skip the others)."""
    names: list[str] = []
    specs = sorted((s for s in cg.specs.values() if s.kind == "module"), key=lambda s: (s.priority, s.name))
    for spec in specs:
        module = getattr(spec.call, "module", None)
        if not isinstance(module, str) or not module.startswith("cidag.") or module in names:
            continue
        if first_boot or spec.frequency in EVERY_BOOT:
            names.append(module)
    return names


def start(cg: Any, state_dir: str | Path) -> threading.Thread | None:
    """Start the importing thread (daemon); None when there is nothing to import."""
    first_boot = not (Path(state_dir) / INSTANCES).is_dir()
    names = modules_to_import(cg, first_boot)
    if not names:
        return None
    thread = threading.Thread(target=_import_all, args=(names,), name="cidag-prefetch", daemon=True)
    thread.start()
    return thread


def _import_all(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the node reports its own import error when it runs
            pass
