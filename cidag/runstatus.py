"""What a state directory says about the last run (`cidag status`): running, done (with its
record's summary), killed, disabled or never run, and the exit code each means.

Exit codes (docs/analyze.md): those of `cidag run` for a finished run (0 ok or
degraded, 1 failed, 130 interrupted), 0 when cidag is disabled, 3 when no run
was ever recorded, 130 when a run died without writing its record (a stale
running.json), 124 when --wait reached --timeout.
"""
from __future__ import annotations

import time
from pathlib import Path

from .state import EXIT_CODES, LAST_RUN, RUNNING, pid_alive, read_json

EXIT_NOT_RUN = 3  # as LSB `status` does for "not running"
EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_KILLED = 130  # a run that died without its record counts as interrupted
RESULT_EXIT = EXIT_CODES  # a finished run's status exits as the run did
POLL_S = 0.1
CMDLINE = "/proc/cmdline"  # tests point this elsewhere


def _read_json(path: Path) -> dict | None:
    data = read_json(path)  # non-blocking, bounded, never raises
    return data if isinstance(data, dict) else None


def current_status(state_dir: str | Path, root: str | Path = "/", cmdline: str | Path | None = None) -> dict:
    """What the state dir says now: {"status": disabled|running|done|killed|not-run, "exit_code", ...}.

    Raises UsageError if the last record exists but cannot be read.
    """
    from .disabled import disabled_reason

    state_dir = Path(state_dir)
    out: dict = {"state_dir": str(state_dir)}
    reason = disabled_reason(root, cmdline or CMDLINE)
    if reason:
        out.update(status="disabled", reason=reason, exit_code=0)
        return out
    running_path = state_dir / RUNNING
    # A directory, FIFO or device there is no run's: a run could not write it (and says so
    # in its record's faults), so it tells of no run, killed or alive.
    odd = running_path.exists() and not running_path.is_file()
    running = _read_json(running_path) if not odd and (running_path.exists() or running_path.is_symlink()) else None
    if running is not None and pid_alive(running.get("pid"), running.get("started_at"),
                                         running.get("start_ticks"), running.get("boot_id")):
        out.update(status="running", pid=running.get("pid"), started_at=running.get("started_at"),
                   exit_code=None, milestones=running.get("milestones") or {})
        return out
    record_path = state_dir / LAST_RUN
    if running is not None and isinstance(running.get("record"), str) and Path(running["record"]).exists():
        record_path = Path(running["record"])  # the run ended between our two reads
    elif running is not None or (running_path.exists() and not odd):
        out.update(status="killed", exit_code=EXIT_KILLED,
                   reason=f"run pid {(running or {}).get('pid', '?')} started "
                          f"{(running or {}).get('started_at', '?')} ended without writing its record")
        if not record_path.exists():
            return out
        previous = _load_record(record_path)
        out["previous"] = _summary(previous, record_path)
        return out
    if not record_path.exists():
        out.update(status="not-run", exit_code=EXIT_NOT_RUN, reason=f"no run recorded in {state_dir}; use --root or --state-dir")
        return out
    record = _load_record(record_path)
    out.update(status="done", **_summary(record, record_path))
    out["exit_code"] = _exit_code(record)
    out["_record"] = record
    return out


def _load_record(path: Path) -> dict:
    from .analysis import load_record

    return load_record(path)


def _exit_code(record: dict) -> int:
    code = record.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    return RESULT_EXIT.get(record.get("result", ""), 1)


def _summary(record: dict, path: Path) -> dict:
    from .analysis import count_statuses

    nodes = record.get("nodes", [])
    return {
        "result": record.get("result"),
        "record": str(path),
        "started_at": record.get("started_at"),
        "makespan_s": record.get("makespan_s"),
        "critical_path_s": record.get("critical_path_s"),
        "instance_id": record.get("instance_id"),
        "counts": count_statuses(nodes),
        "milestones": {name: m.get("reached_s") for name, m in (record.get("milestones") or {}).items()
                       if isinstance(m, dict)},
    }


def wait_for_run(state_dir: str | Path, root: str | Path = "/", timeout: float | None = None,
                 cmdline: str | Path | None = None) -> dict:
    """Poll until no run is in progress, or until `timeout` seconds (monotonic) pass.

    Returns current_status(); on timeout its "status" is "running" and
    "timed_out" is True.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        st = current_status(state_dir, root, cmdline)
        if st["status"] != "running":
            return st
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            st.update(timed_out=True, exit_code=EXIT_TIMEOUT)
            return st
        time.sleep(POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - now)))


def _node_rows(record: dict, long: bool) -> list[dict]:
    from .analysis import duration

    rows = []
    for n in record.get("nodes", []):
        if not long and n.get("status") in ("ok", "available"):
            continue
        rows.append({"id": n["id"], "kind": n.get("kind"), "status": n.get("status"),
                     "start_s": n.get("start_s"), "duration_s": duration(n) if n.get("start_s") is not None else None,
                     "reason": n.get("reason") or ""})
    return rows


def status_report(state_dir: str | Path, root: str | Path = "/", *, wait: bool = False,
                  timeout: float | None = None, long: bool = False, cmdline: str | Path | None = None) -> dict:
    """What `cidag status` shows: current_status() (after the run in progress when `wait`),
    with the nodes that did not end ok (every node, capabilities and critical path when
    `long`). Raises UsageError if the last record cannot be read."""
    st = wait_for_run(state_dir, root, timeout, cmdline) if wait else current_status(state_dir, root, cmdline)
    record = st.pop("_record", None)
    if record is not None:
        st["nodes"] = _node_rows(record, long)
        if long:
            st["capabilities"] = {name: {k: v for k, v in (cap or {}).items() if k in ("status", "provider", "settled_s")}
                                  for name, cap in (record.get("capabilities") or {}).items()}
            st["critical_path"] = record.get("critical_path")
    return st
