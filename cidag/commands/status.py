"""`cidag status [--wait [--timeout D]] [--long] [--format text|json]`: the last run's outcome, per node.

The work is runstatus.py's; this prints it. Exit codes: runstatus.py (docs/analyze.md);
2 is a usage error or an unreadable record.
"""
from __future__ import annotations

import json

import click

from ..errors import UsageError
from ..runstatus import current_status, status_report, wait_for_run  # noqa: F401 - re-exported (tests)
from ..state import PROC, pid_alive  # noqa: F401 - re-exported (tests)
from .common import state_options, state_path


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
    st = status_report(state_path(state_dir, root), root, wait=wait, timeout=timeout, long=long_)
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
