"""The plugin API: what a source probe or a module run receives, and how a type declares itself.

The smallest plugin is a plain function::

    def probe(ctx) -> dict | None: ...   # a source: capability values; None = unavailable
    def run(ctx) -> dict | None: ...     # a module: values of its `provides`, or None

A type may be a function, a class (instantiated once with no arguments, its
`probe`/`run` method called), or a Python module holding `probe`/`run`. Any of
them may carry these attributes, read by `cidag check` and `cidag schema`:

- `SETTINGS`: the JSON Schema (subset, see settings_schema.py) of its settings;
- `SECRETS`: capabilities whose values must never reach logs or records;
- `CAPABILITIES`: the capabilities a source type can export (documentation).

`declare()` sets them on a function.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, MutableMapping, Sequence

from .errors import SourceUnavailable  # noqa: F401  (re-exported for plugins)

# Capabilities secret whatever the type says.
ALWAYS_SECRET = frozenset({"admin-password"})


def default_is_secret(name: str) -> bool:
    """The part of the secret policy that needs no manifest (values.SecretPolicy adds the types')."""
    return name in ALWAYS_SECRET or "password" in name


def declare(
    *,
    settings: dict | None = None,
    secrets: Iterable[str] = (),
    capabilities: Iterable[str] = (),
) -> Callable[[Callable], Callable]:
    """Attach SETTINGS / SECRETS / CAPABILITIES to a plugin function."""

    def wrap(func: Callable) -> Callable:
        func.SETTINGS = settings  # type: ignore[attr-defined]
        func.SECRETS = frozenset(secrets)  # type: ignore[attr-defined]
        func.CAPABILITIES = tuple(capabilities)  # type: ignore[attr-defined]
        return func

    return wrap


class Capabilities(Mapping[str, Any]):
    """Read-only view a node has of the capabilities it declared (the facade's interface)."""

    def provider(self, name: str) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Context:
    """Everything a probe or run gets. `deadline` is on `clock` (the monotonic clock in a real run)."""

    name: str
    kind: str  # "source" | "module"
    settings: dict
    caps: Capabilities
    root: Path
    instance_id: str | None
    log: logging.Logger
    deadline: float
    cancelled: threading.Event  # or runner.CancelEvent: the same interface (set, is_set, wait)
    state_dir: Path
    env: MutableMapping[str, str] = field(default_factory=dict)  # extra env for commands (CIDAG_*)
    output: list[str] = field(default_factory=list)  # text kept in the run record (capped)
    counters: dict[str, float] = field(default_factory=dict)  # e.g. HTTP requests, retries: in the record
    run_started: float | None = None  # monotonic time the run started
    run_result: Callable[[], str] | None = None  # the run's result so far: ok / degraded / failed
    is_secret: Callable[[str], bool] = field(default=lambda name: default_is_secret(name))  # the run's policy
    commands: dict | None = None  # the run's live commands (pid -> Popen), killed when it ends
    unprovided: dict[str, str] = field(default_factory=dict)  # capability -> why this module ended ok without it
    faults: list[str] = field(default_factory=list)  # items that failed while the rest was done
    clock: Callable[[], float] = time.monotonic  # the clock `deadline` is on: the runner's

    def fault(self, message: str) -> None:
        """One item of the node's work failed (a user, a file) and the rest goes on (make -k
        inside a module, as cloud-init warns per user): logged as an error, kept in the
        record's `faults`, and the run's result is `degraded`. Raise instead when nothing
        the node was asked for can be done."""
        self.log.error("%s", message)
        self.faults.append(message)

    def remaining(self) -> float:
        """Seconds left before the node's deadline (never negative), on the run's own clock."""
        return max(0.0, self.deadline - self.clock())

    def run(
        self,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        cwd: str | Path | None = None,
    ):
        """Run a command in its own process group, killed at the deadline or on cancel.

        Returns a process.CommandResult; raises OSError if it cannot start.
        """
        import os

        from .process import run_command

        full_env = dict(os.environ)
        full_env.update(self.env)
        if env:
            full_env.update(env)
        return run_command(
            command,
            env=full_env,
            cwd=cwd,
            input=input,
            deadline=self.deadline,
            cancelled=self.cancelled,
            registry=self.commands,
        )
