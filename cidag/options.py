"""What a run is asked to do and what it gives back (`cidag run`'s options, the engine's result)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CidagError
from .state import default_state_dir

GRACE_S = 2.0  # SIGTERM -> SIGKILL for commands of interrupted nodes


class StateError(CidagError):
    """The run ended but its state could not be written (a full or broken state dir)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InternalError(CidagError):
    """cidag itself failed during a run; the record (written) says so."""

    exit_code = 70


@dataclass
class RunOptions:
    """What `cidag run` was asked to do; every field has the CLI's default."""

    root: Path = Path("/")
    state_dir: Path | None = None  # default: ROOT/var/lib/cidag
    jobs: int = 4
    select: str | None = None  # None: the manifest's
    strategy: str = "one-step"
    only: tuple[str, ...] = ()
    force: tuple[str, ...] = ()
    force_all: bool = False
    fail_fast: bool = False
    dry_run: bool = False
    record_path: Path | None = None
    handle_signals: bool = True
    observer: Any = None  # has node_started(id) / node_ended(id, status, seconds)
    runner: Any = None  # a runner (runner.py); default: a ThreadRunner
    grace: float = GRACE_S
    # The milestone whose reach tells systemd the service is ready (sd_notify READY=1);
    # None: $CIDAG_READY_MILESTONE, else the run's end (docs/systemd.md).
    ready_milestone: str | None = None

    def resolved_state_dir(self) -> Path:
        """--state-dir, else ROOT/var/lib/cidag."""
        return Path(self.state_dir) if self.state_dir else default_state_dir(self.root)


@dataclass
class RunResult:
    """A finished run: its record, exit code, and for --dry-run the start order."""

    record: dict
    exit_code: int
    record_path: Path | None = None
    start_order: list[str] = field(default_factory=list)
