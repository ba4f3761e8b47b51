"""One run's files in the state dir: the running file while it runs, then its instance
data and its record (runs/NAME, last-run.json, and --record FILE). Every way out of a
run leaves them true (docs/state-and-record.md)."""
from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from .options import StateError
from .state import RUNS, LastRunNotUpdated, StateDir, process_identity, write_json


def utc(ts: float) -> str:
    """A wall-clock time as the record writes it."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RunFiles:
    """`begin()` before the first node starts, `write_instance_data()` and `write_record()`
    once the run ends, `end()` on every way out."""

    def __init__(self, state: StateDir, wall0: float) -> None:
        self.state = state
        self.started_at = utc(wall0)
        self.name = f"{datetime.fromtimestamp(wall0, timezone.utc):%Y%m%dT%H%M%S.%fZ}-{os.getpid()}.json"
        # What `status` and `wait` read while the run goes on (milestones.py adds to it).
        self.running = {"pid": os.getpid(), "started_at": self.started_at, "record": str(state.path / RUNS / self.name),
                        **process_identity(), "milestones": {}}
        self.recorded = False

    def begin(self) -> None:
        """The running file, and room set aside for the record should the run fill the disk."""
        self.state.begin_run(self.running)
        self.state.reserve()

    def write_instance_data(self, public: dict, sensitive: dict, faults: list[str]) -> None:
        try:
            self.state.write_instance_data(public, sensitive)
        except OSError as exc:  # e.g. a full disk: the record says so
            faults.append(f"instance data not written ({exc.strerror or exc})")

    def write_record(self, record: dict, *, secret: bool, copy_to: str | os.PathLike | None = None) -> Path:
        """Write the record (0600 when the run handled secrets); its path. A last-run.json
        that cannot be replaced is one warning (the record is kept); a record that cannot
        be written at all is a StateError with the run's own exit code."""
        mode = 0o600 if secret else 0o644
        try:
            path = self.state.write_record(record, self.name, mode=mode)
        except LastRunNotUpdated as exc:  # the work and its record are kept: one line, go on
            logging.getLogger("cidag").warning("%s", exc.strerror)
            path = exc.path
        except OSError as exc:
            raise StateError(f"state dir {self.state.path}: the run ended {record['result']} but its record "
                             f"could not be written ({exc.strerror or exc})",
                             exit_code=record["exit_code"] or 1) from None
        self.recorded = True
        if copy_to:
            write_json(copy_to, record, mode=mode)
        return path

    def end(self) -> None:
        """Remove the running file, once the record is written: without its record the
        running file stays, and `status` says a run ended without writing its record, not
        that the previous run was the last."""
        if self.recorded:
            self.state.end_run()
