"""`cidag analyze blame|critical-chain|plot|trace [RECORD]`: read a run record, explain the boot.

`blame` and `trace` also take many records (a fleet's boots): percentiles per
node, one trace with a process per run.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

import click

from .common import state_options, state_path, write_output

from ..errors import UsageError


def record_options(func: Callable, many: bool = False) -> Callable:
    """RECORD argument (RECORD... when `many`), --state-dir and --root (as `status` and
    `query`), shared by every subcommand; the command gets the state dir they name."""
    command = func

    @functools.wraps(command)
    def with_state(*args, state_dir: str | None, root: str, **kwargs):
        return command(*args, state_dir=str(state_path(state_dir, root)), **kwargs)

    func = state_options("Target root whose STATE_DIR/last-run.json is read when RECORD is not given.")(with_state)
    if many:
        return click.argument("record_path", metavar="[RECORD]...", nargs=-1, type=click.Path())(func)
    return click.argument("record_path", metavar="[RECORD]", required=False, type=click.Path(dir_okay=False))(func)


def many_records(func: Callable) -> Callable:
    """record_options for the subcommands that read a fleet: RECORD... (files or directories of them)."""
    return record_options(func, many=True)


def _load_many(record_paths: tuple[str, ...], state_dir: str) -> list[tuple[str, dict]]:
    """[(label, record)] for each RECORD (a directory: every *.json in it, by name); labels are
    the runs' instance ids where those tell the runs apart, else the file paths."""
    from ..analysis import load_record

    if not record_paths:
        return [("", _load(None, state_dir))]
    paths: list[Path] = []
    for given in record_paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.json") if p.is_file())
            if not found:
                raise UsageError(f"{path}: no run record (*.json) in this directory")
            paths += found
        else:
            paths.append(path)
    loaded = [(str(p), load_record(p)) for p in paths]
    ids = [r.get("instance_id") for _, r in loaded]
    if all(ids) and len(set(ids)) == len(ids):
        return [(str(i), r) for i, (_, r) in zip(ids, loaded)]
    return loaded


def _load(record_path: str | None, state_dir: str) -> dict:
    from ..analysis import load_record

    from ..state import LAST_RUN

    path = Path(record_path) if record_path else Path(state_dir) / LAST_RUN
    record = load_record(path)
    return record


def _t(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}s"


@click.group()
def analyze() -> None:
    """Explain a run from its record: blame, critical chain, SVG timeline, Chrome trace."""


@analyze.command()
@many_records
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def blame(record_path: tuple[str, ...], state_dir: str, fmt: str) -> None:
    """Nodes by how long they ran, longest first; over many RECORDs, percentiles per node."""
    from ..analysis import blame as blame_rows

    runs = _load_many(record_path, state_dir)
    if len(runs) > 1:
        _fleet_blame([r for _, r in runs], fmt)
        return
    rows = blame_rows(runs[0][1])
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    width = max([len(r["id"]) for r in rows] + [4])
    for r in rows:
        click.echo(f"{r['duration_s']:9.3f}s  {r['id']:<{width}}  {r['status']}")


def _fleet_blame(records: list[dict], fmt: str) -> None:
    from ..analysis import fleet_blame

    fb = fleet_blame(records)
    if fmt == "json":
        click.echo(json.dumps(fb, indent=2))
        return
    width = max([len(r["id"]) for r in fb["nodes"] + fb["caps"]] + [4])
    click.echo(f"{fb['runs']} runs; duration of each node (p50, p90, p99, max), longest p99 first:")
    click.echo(f"{'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}  {'node':<{width}}  runs  statuses")
    for r in fb["nodes"]:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(r["statuses"].items(), key=lambda x: -x[1]))
        retries = f"; {r['retries']:g} retries" if r["retries"] else ""
        click.echo(f"{r['p50_s']:8.3f}s {r['p90_s']:8.3f}s {r['p99_s']:8.3f}s {r['max_s']:8.3f}s  "
                   f"{r['id']:<{width}}  {r['runs']:>4}  {statuses}{retries}")
    if fb["caps"]:
        click.echo("when each capability settled (seconds from the run's start):")
        for r in fb["caps"]:
            click.echo(f"{r['p50_s']:8.3f}s {r['p90_s']:8.3f}s {r['p99_s']:8.3f}s {r['max_s']:8.3f}s  "
                       f"{r['id']:<{width}}  {r['runs']:>4}")


@analyze.command("critical-chain")
@record_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def critical_chain(record_path: str | None, state_dir: str, fmt: str) -> None:
    """The chain that set the makespan: start offset (@) and duration (+) of each node; slack of the rest."""
    from ..analysis import critical_chain as chain_of

    try:
        cc = chain_of(_load(record_path, state_dir))
    except ValueError as exc:
        raise UsageError(f"run record: {exc}") from None
    if fmt == "json":
        click.echo(json.dumps(cc, indent=2))
        return
    click.echo(f"critical chain: {_t(cc['total_s'])} of a {_t(cc['makespan_s'])} makespan "
               f"(critical_path_s {_t(cc['critical_path_s'])})")
    width = max([len(r["id"]) for r in cc["chain"] + cc["slack"]] + [4])
    for r in cc["chain"]:
        if r["kind"] == "capability":
            who = f" from {r['provider']}" if r.get("provider") else ""
            click.echo(f"  {r['id']:<{width}}  {'@' + _t(r['start_s']):>9}  {'':>8}  {r['status']}{who}")
        else:
            click.echo(f"  {r['id']:<{width}}  {'@' + _t(r['start_s']):>9}  {'+' + _t(r['duration_s']):>8}  "
                       f"{r['status']}")
    click.echo(f"  {'total':<{width}}  {'':>9}  {'=' + _t(cc['total_s']):>8}")
    if cc["slack"]:
        click.echo("slack of the nodes off the chain (how much later each could end without lengthening it):")
        for r in cc["slack"]:
            click.echo(f"  {r['id']:<{width}}  {_t(r['slack_s']):>9}  (ran {_t(r['duration_s'])}, {r['status']})")


@analyze.command()
@record_options
@click.option("-o", "--output", required=True, metavar="FILE.svg", help="Where to write the SVG ('-' for stdout).")
def plot(record_path: str | None, state_dir: str, output: str) -> None:
    """An SVG timeline: one row a node, bars coloured by status, critical path highlighted."""
    from ..svg_timeline import render

    write_output(output, render(_load(record_path, state_dir)))
    if output != "-":
        click.echo(f"wrote {output}", err=True)


@analyze.command()
@many_records
@click.option("-o", "--output", required=True, metavar="FILE.json", help="Where to write the trace ('-' for stdout).")
def trace(record_path: tuple[str, ...], state_dir: str, output: str) -> None:
    """Chrome trace events (Perfetto, chrome://tracing): a track per worker, a span per node;
    many RECORDs: one process per run, on a common clock."""
    from ..trace import fleet_trace, to_trace

    runs = _load_many(record_path, state_dir)
    trace = fleet_trace(runs) if len(runs) > 1 else to_trace(runs[0][1])
    write_output(output, json.dumps(trace) + "\n")
    if output != "-":
        click.echo(f"wrote {output}", err=True)
