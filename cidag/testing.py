"""Helpers for testing a type (built-in or plugin) without a manifest or a run."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from .api import Capabilities, Context
from .settings_schema import validate
from .state import default_state_dir
from .types import load_type


class DictCapabilities(Capabilities):
    """A facade over a plain dict: what a node would see if these capabilities had resolved."""

    def __init__(self, values: Mapping[str, Any] | None = None, provider: str = "test") -> None:
        self._values = dict(values or {})
        self._provider = provider

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def provider(self, name: str) -> str | None:
        return self._provider if name in self._values else None


def make_context(
    kind: str,
    type_ref: str,
    settings: Mapping[str, Any] | None = None,
    *,
    caps: Mapping[str, Any] | None = None,
    root: str | Path = "/",
    state_dir: str | Path | None = None,
    instance_id: str | None = None,
    timeout: float = 30.0,
    name: str = "test",
) -> tuple[Context, Any]:
    """Return (ctx, call) for `type_ref`, with settings validated by the type's schema."""
    info = load_type(kind, type_ref)
    root = Path(root)
    ctx = Context(
        name=name,
        kind=kind,
        settings=validate(info.settings_schema, dict(settings or {})),
        caps=DictCapabilities(caps),
        root=root,
        instance_id=instance_id,
        log=logging.getLogger(f"cidag.{kind}.{name}"),
        deadline=time.monotonic() + timeout,
        cancelled=threading.Event(),
        state_dir=Path(state_dir) if state_dir else default_state_dir(root),
    )
    return ctx, info.call
