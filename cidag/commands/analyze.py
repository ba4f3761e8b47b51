"""`cidag analyze blame|critical-chain|plot|trace [RECORD]`: read a run record, explain the boot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import click

from .common import write_output

from ..errors import UsageError

DEFAULT_STATE_DIR = "/var/lib/cidag"


def record_options(func: Callable) -> Callable:
    """RECORD argument and --state-dir, shared by every subcommand."""
    func = click.option(
        "--state-dir", type=click.Path(file_okay=False), default=DEFAULT_STATE_DIR, show_default=True,
        help="State directory whose last-run.json is read when RECORD is not given.",
    )(func)
    return click.argument("record_path", metavar="[RECORD]", required=False, type=click.Path(dir_okay=False))(func)


def _load(record_path: str | None, state_dir: str) -> dict:
    from ..analysis import load_record

    path = Path(record_path) if record_path else Path(state_dir) / "last-run.json"
    record = load_record(path)
    return record


def _t(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}s"


@click.group()
def analyze() -> None:
    """Explain a run from its record: blame, critical chain, SVG timeline, Chrome trace."""


@analyze.command()
@record_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def blame(record_path: str | None, state_dir: str, fmt: str) -> None:
    """Nodes by how long they ran, longest first."""
    from ..analysis import blame as blame_rows

    rows = blame_rows(_load(record_path, state_dir))
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    width = max([len(r["id"]) for r in rows] + [4])
    for r in rows:
        click.echo(f"{r['duration_s']:9.3f}s  {r['id']:<{width}}  {r['status']}")


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
@record_options
@click.option("-o", "--output", required=True, metavar="FILE.json", help="Where to write the trace ('-' for stdout).")
def trace(record_path: str | None, state_dir: str, output: str) -> None:
    """Chrome trace events (Perfetto, chrome://tracing): a track per worker, a span per node."""
    from ..trace import to_trace

    write_output(output, json.dumps(to_trace(_load(record_path, state_dir))) + "\n")
    if output != "-":
        click.echo(f"wrote {output}", err=True)
