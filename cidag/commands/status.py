"""`cidag status [--wait [--timeout D]] [--long] [--format text|json]`: the last run's outcome, per node.

Exit codes (docs/analyze.md): those of `cidag run` for a finished run (0 ok or
degraded, 1 failed, 130 interrupted), 0 when cidag is disabled, 3 when no run
was ever recorded, 130 when a run died without writing its record (a stale
running.json), 124 when --wait reached --timeout. 2 is a usage error or an
unreadable record.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from .common import state_options, state_path

from ..errors import UsageError
from ..state import PROC, pid_alive, read_json  # noqa: F401 - PROC, pid_alive: re-exported (tests)

EXIT_NOT_RUN = 3  # as LSB `status` does for "not running"
EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_KILLED = 130  # a run that died without its record counts as interrupted
RESULT_EXIT = {"ok": 0, "degraded": 0, "failed": 1, "interrupted": 130}
POLL_S = 0.1
CMDLINE = "/proc/cmdline"  # tests point this elsewhere


def _read_json(path: Path) -> dict | None:
    data = read_json(path)  # non-blocking, bounded, never raises
    return data if isinstance(data, dict) else None


def current_status(state_dir: str | Path, root: str | Path = "/", cmdline: str | Path | None = None) -> dict:
    """What the state dir says now: {"status": disabled|running|done|killed|not-run, "exit_code", ...}.

    Raises UsageError if the last record exists but cannot be read.
    """
    from ..disabled import disabled_reason

    state_dir = Path(state_dir)
    out: dict = {"state_dir": str(state_dir)}
    reason = disabled_reason(root, cmdline or CMDLINE)
    if reason:
        out.update(status="disabled", reason=reason, exit_code=0)
        return out
    running_path = state_dir / "running.json"
    # A directory, FIFO or device there is no run's: a run could not write it (and says so
    # in its record's faults), so it tells of no run, killed or alive.
    odd = running_path.exists() and not running_path.is_file()
    running = _read_json(running_path) if not odd and (running_path.exists() or running_path.is_symlink()) else None
    if running is not None and pid_alive(running.get("pid"), running.get("started_at"),
                                         running.get("start_ticks"), running.get("boot_id")):
        out.update(status="running", pid=running.get("pid"), started_at=running.get("started_at"),
                   exit_code=None, milestones=running.get("milestones") or {})
        return out
    record_path = state_dir / "last-run.json"
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
    from ..analysis import load_record

    return load_record(path)


def _exit_code(record: dict) -> int:
    code = record.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    return RESULT_EXIT.get(record.get("result", ""), 1)


def _summary(record: dict, path: Path) -> dict:
    from ..analysis import count_statuses

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
    from ..analysis import duration

    rows = []
    for n in record.get("nodes", []):
        if not long and n.get("status") in ("ok", "available"):
            continue
        rows.append({"id": n["id"], "kind": n.get("kind"), "status": n.get("status"),
                     "start_s": n.get("start_s"), "duration_s": duration(n) if n.get("start_s") is not None else None,
                     "reason": n.get("reason") or ""})
    return rows


@click.command()
@state_options("Target root: where etc/cidag/cidag.disabled is looked for.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--wait", is_flag=True, help="Block until a run in progress ends; exit as that run did.")
@click.option("--timeout", "timeout_text", metavar="DURATION", default=None,
              help="With --wait: give up after this long (e.g. 90s, 5m) and exit 124.")
@click.option("--long", "long_", is_flag=True, help="Every node and capability, not only those that did not end ok.")
@click.pass_context
def status(ctx: click.Context, state_dir: str | None, root: str, fmt: str, wait: bool,
           timeout_text: str | None, long_: bool) -> None:
    """The last run's outcome, per node; --wait blocks until a run in progress ends."""
    from ..durations import parse_duration

    timeout = None
    if timeout_text is not None:
        if not wait:
            raise UsageError("--timeout only makes sense with --wait")
        try:
            timeout = parse_duration(timeout_text)
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    state = state_path(state_dir, root)
    st = wait_for_run(state, root, timeout) if wait else current_status(state, root)
    record = st.pop("_record", None)
    if record is not None:
        st["nodes"] = _node_rows(record, long_)
        if long_:
            st["capabilities"] = {name: {k: v for k, v in (cap or {}).items() if k in ("status", "provider", "settled_s")}
                                  for name, cap in (record.get("capabilities") or {}).items()}
            st["critical_path"] = record.get("critical_path")
    if fmt == "json":
        click.echo(json.dumps(st, indent=2))
    else:
        _print_text(st, long_)
    ctx.exit(st["exit_code"] or 0)  # a run in progress (no --wait) is not an error


def _print_text(st: dict, long_: bool) -> None:
    status_ = st["status"]
    if status_ == "running":
        line = f"status: running (pid {st.get('pid')}, started {st.get('started_at')})"
        if st.get("timed_out"):
            line += "; --timeout reached, still running"
        click.echo(line)
        if st.get("milestones"):
            click.echo("milestones: " + ", ".join(f"{n} reached at {t:.2f}s" for n, t in st["milestones"].items()))
        return
    if status_ in ("disabled", "not-run", "killed"):
        click.echo(f"status: {status_.replace('-', ' ')} ({st['reason']})")
        prev = st.get("previous")
        if prev:
            click.echo(f"previous run: {prev['result']} at {prev['started_at']} ({prev['record']})")
        return
    click.echo("status: done")
    click.echo(f"result: {st['result']} (exit {st['exit_code']})")
    makespan = st.get("makespan_s")
    extra = f", makespan {makespan:.2f}s" if isinstance(makespan, (int, float)) else ""
    iid = st.get("instance_id")
    click.echo(f"started: {st.get('started_at')}{extra}, {'instance ' + iid if iid else 'no instance-id'}")
    click.echo("nodes: " + ", ".join(f"{n} {s}" for s, n in st["counts"].items()))
    if st.get("milestones"):
        click.echo("milestones: " + ", ".join(f"{n} {t:.2f}s" if isinstance(t, (int, float)) else f"{n} not reached"
                                            for n, t in st["milestones"].items()))
    rows = st.get("nodes", [])
    if rows:
        width = max(len(r["id"]) for r in rows)
        for r in rows:
            when = f"@{r['start_s']:.2f}s +{r['duration_s']:.2f}s" if r["start_s"] is not None else "not started"
            tail = f"  {r['reason']}" if r["reason"] else ""
            click.echo(f"  {r['id']:<{width}}  {str(r['status'] or '-'):<11}  {when:<18}{tail}".rstrip())
    if long_ and st.get("capabilities"):
        click.echo("capabilities:")
        for name, cap in sorted(st["capabilities"].items()):
            who = f" from {cap['provider']}" if cap.get("provider") else ""
            click.echo(f"  {name}: {cap.get('status')}{who}")
    click.echo(f"record: {st['record']}")
