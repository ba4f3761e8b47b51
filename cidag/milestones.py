"""Waiting for a milestone of the run in progress (`cidag wait`), without click or networkx.

A milestone (modules.yaml `milestones:`) is reached once each of its modules has
ended or will not run; `done` is reached when the run ends. The run writes the
milestones it reached into its running file (state.py) as they pass and into
its record at the end, so a waiter reads only those two files: a unit ordered
after `cidag.service` (docs/systemd.md) starts this once the run has begun.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .state import RUNNING, StateDir, pid_alive, read_json

DONE = "done"
POLL_S = 0.05  # a waiter holds sshd back: answer within a twentieth of a second
RECORD_LIMIT = 256 << 20  # a record of a 20,000-node run is a few tens of MiB
EXIT_REACHED, EXIT_NOT_REACHED, EXIT_TIMEOUT = 0, 1, 124


@dataclass
class Waited:
    """How a wait ended: `reached` (with `at_s` into the run), `not-reached` (the run ended
    without it), `no-run` (nothing recorded) or `timeout`; `detail` is one line for people."""

    outcome: str
    detail: str
    at_s: float | None = None

    @property
    def exit_code(self) -> int:
        return {"reached": EXIT_REACHED, "no-run": EXIT_REACHED, "timeout": EXIT_TIMEOUT}.get(
            self.outcome, EXIT_NOT_REACHED)


def check(state_dir: str | Path, name: str) -> Waited | None:
    """The milestone's state now, or None while a run is in progress and has not reached it."""
    state = StateDir(state_dir)
    running = state.read_running()
    if running is not None and pid_alive(running.get("pid"), running.get("started_at"),
                                         running.get("start_ticks"), running.get("boot_id")):
        at = (running.get("milestones") or {}).get(name)
        if name != DONE and isinstance(at, (int, float)):
            return Waited("reached", f"{name}: reached at {at:.2f}s (run pid {running['pid']} goes on)", at)
        return None
    record = _last_record(state.path, running)
    if record is None:
        if (state.path / RUNNING).exists():
            return Waited("not-reached", f"{name}: the run ended without writing its record")
        return Waited("no-run", f"{name}: no run recorded in {state.path}; nothing to wait for")
    result = record.get("result", "?")
    if name == DONE:
        return Waited("reached", f"{DONE}: the run ended ({result})", record.get("makespan_s"))
    entry = (record.get("milestones") or {}).get(name)
    if not isinstance(entry, dict):
        return Waited("not-reached", f"{name}: the last run ({result}) has no milestone {name!r}")
    at = entry.get("reached_s")
    if isinstance(at, (int, float)):
        return Waited("reached", f"{name}: reached at {at:.2f}s (the run ended: {result})", at)
    return Waited("not-reached", f"{name}: not reached, the run ended {result}")


def wait(state_dir: str | Path, name: str, timeout: float | None = None, poll: float = POLL_S) -> Waited:
    """Block until `check` has an answer, or `timeout` seconds (monotonic) pass."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        got = check(state_dir, name)
        if got is not None:
            return got
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return Waited("timeout", f"{name}: not reached within {timeout:g}s; the run goes on")
        time.sleep(poll if deadline is None else min(poll, max(0.0, deadline - now)))


def _last_record(state_dir: Path, running: dict | None) -> dict | None:
    # The run may have ended between our reads: its own record first, then last-run.json.
    paths = []
    if running is not None and isinstance(running.get("record"), str):
        paths.append(Path(running["record"]))
    paths.append(state_dir / "last-run.json")
    for path in paths:
        data = read_json(path, RECORD_LIMIT)
        if isinstance(data, dict):
            return data
    return None
