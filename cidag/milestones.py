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

from .state import LAST_RUN, RUNNING, StateDir, default_state_dir, pid_alive, read_json

DONE = "done"
GATE = "milestone:"  # the plan's gate node of a milestone (docs/manifests.md)
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
    paths.append(state_dir / LAST_RUN)
    for path in paths:
        data = read_json(path, RECORD_LIMIT)
        if isinstance(data, dict):
            return data
    return None


def wait_main(milestone: str, state_dir: str, timeout_text: str | None = None, quiet: bool = False) -> int:
    """`cidag wait`, for the click command and the click-free path alike; returns the exit code.
    Raises UsageError for a bad --timeout."""
    from .durations import parse_duration
    from .errors import UsageError

    timeout = None
    if timeout_text is not None:
        try:
            timeout = parse_duration(timeout_text)
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    got = wait(state_dir, milestone, timeout)
    if not quiet:
        print(got.detail, flush=True)
    return got.exit_code


class Reached:
    """The run's side of the milestones: a gate node each in the plan (`overlay`), reached
    once all its modules are final (`check`, after each event), then told to waiters through
    the running file and to systemd (STATUS=, READY=1 for the `ready` one). A milestone the
    run abandoned (interrupt, --fail-fast) is not reached."""

    def __init__(self, members: dict[str, list[str]], ready: str | None, notifier, faults: list[str]) -> None:
        self.members = members  # name -> its modules (modules.yaml `milestones:`)
        self.ready, self.notifier, self.faults = ready, notifier, faults
        self.at: dict[str, float] = {}  # name -> seconds into the run it was reached
        self.state: StateDir | None = None  # where the running file is (None: a dry run)
        self.running_info: dict = {}  # the running file's content

    def overlay(self, overlay) -> None:
        """Add each milestone's gate node and its modules' edges to a plan overlay."""
        for name, members in self.members.items():
            overlay.gates.append(GATE + name)
            overlay.edges.extend((f"module:{m}", GATE + name, "gate") for m in members)

    def pending(self) -> bool:
        return len(self.at) < len(self.members)

    def check(self, plan, at: float) -> None:
        """Note each milestone whose gate `plan` has just passed, `at` seconds into the run."""
        for name in self.members:
            st = plan.nodes[GATE + name]
            if name in self.at or st.status != "done" or st.code:
                continue
            self.at[name] = at
            self.running_info.setdefault("milestones", {})[name] = round(at, 6)
            if self.state is not None:
                try:
                    self.state.update_run(self.running_info)
                except OSError as exc:  # waiters then see it when the run ends: a fault, not a failure
                    self.faults.append(f"milestone {name}: running file not updated ({exc.strerror or exc})")
            if name == self.ready:
                self.notifier.ready(f"{name} reached at {at:.1f}s; provisioning goes on")
            else:
                self.notifier.notify(STATUS=f"{name} reached at {at:.1f}s")

    def summary(self) -> dict:
        """The record's `milestones`: when each was reached (None: not reached) and its modules."""
        return {name: {"reached_s": round(self.at[name], 6) if name in self.at else None, "modules": members}
                for name, members in self.members.items()}


def fast_wait(milestone: str) -> int:
    """`cidag wait MILESTONE` with no options (cidag-done.service): no click on the boot path."""
    import os

    root = os.environ.get("CIDAG_ROOT") or "/"
    return wait_main(milestone, str(default_state_dir(root)))
