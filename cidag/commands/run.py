"""`cidag run`: compile the manifests and run them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import manifest_options, root_option, verbose_option


@click.command()
@manifest_options
@root_option("Target root the modules act on.")
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="Markers and run records [default: ROOT/var/lib/cidag].")
@click.option("-j", "--jobs", type=click.IntRange(1, 1024), default=4, show_default=True,
              help="Modules run at once (sources with no needs all start at once).")
@click.option("--select", type=click.Choice(["preferred", "first"]), help="Override the manifest's select.")
@click.option("--strategy", type=click.Choice(["one-step", "two-step", "serial"]), default="one-step",
              show_default=True)
@click.option("--only", multiple=True, metavar="NAME", help="Run only these modules and what they need.")
@click.option("--dry-run", is_flag=True, help="Print the order nodes would start in with -j 1, and what would be skipped; run nothing.")
@click.option("--fail-fast", is_flag=True, help="Start nothing new after the first failure.")
@click.option("--force", multiple=True, metavar="NAME", help="Run NAME even if its marker says it ran.")
@click.option("--force-all", is_flag=True, help="Ignore every marker.")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), help="Also write the record here.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Node log lines on stderr as text or JSON lines.")
@verbose_option
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def run(sources_path, modules_path, config_dir, root, state_dir, jobs, select, strategy, only,
        dry_run, fail_fast, force, force_all, record_path, fmt, log_format, verbose, quiet) -> int:
    """Compile the manifests and run the DAG. Exit 0 ok, 1 a module failed, 2 bad input, 130 interrupted."""
    from ..disabled import disabled_reason
    from ..engine import RunOptions, load_and_compile
    from ..engine import run as run_graph
    from ..logs import setup_logging

    reason = disabled_reason(root)
    if reason and not dry_run:
        click.echo(f"cidag: disabled ({reason}); nothing run", err=True)
        return 0
    setup_logging(verbose=verbose, quiet=quiet, fmt=log_format)
    only = tuple(n for item in only for n in item.split(",") if n)
    cg = load_and_compile(sources_path, modules_path, config_dir)
    for diag in cg.diagnostics:
        if not quiet and verbose:
            click.echo(diag.format(), err=True)
    opts = RunOptions(root=Path(root).resolve(), state_dir=Path(state_dir) if state_dir else None,
                      jobs=1 if dry_run else jobs, select=select, strategy=strategy, only=only,
                      force=tuple(force), force_all=force_all, fail_fast=fail_fast, dry_run=dry_run,
                      record_path=Path(record_path) if record_path else None,
                      observer=_progress(quiet, fmt))
    result = run_graph(cg, opts)
    if opts.observer is not None:
        opts.observer.close()
    if dry_run:
        skipped = [{"id": n["id"], "reason": n["reason"] or ""} for n in result.record["nodes"]
                   if n["status"] == "skipped"]
        if fmt == "json":
            click.echo(json.dumps({"start_order": result.start_order, "skipped": skipped}, indent=1))
        else:
            for i, node in enumerate(result.start_order, 1):
                click.echo(f"{i:3d}. {node}")
            if skipped:
                width = max(len(n["id"]) for n in skipped)
                click.echo("skipped:")
                for n in skipped:
                    click.echo(f"     {n['id']:<{width}}  {n['reason']}".rstrip())
        return 0
    if fmt == "json":
        click.echo(json.dumps(result.record, indent=1))
    elif not quiet:
        click.echo(summary(result.record, result.record_path))
    return result.exit_code


def _progress(quiet: bool, fmt: str):
    if quiet or fmt == "json":
        return None
    try:
        from ..progress import Progress
    except ImportError:
        return None
    stream = sys.stderr
    return Progress(stream, total=None, is_tty=stream.isatty())


def summary(record: dict, record_path) -> str:
    """The end-of-run table: each node, its status, duration and why."""
    rows = []
    for n in record["nodes"]:
        dur = "" if n["duration_s"] is None else f"{n['duration_s']:.2f}s"
        rows.append((n["id"], n["status"], dur, n["reason"] or ""))
    w0 = max([len(r[0]) for r in rows] + [4])
    lines = [f"{'NODE':<{w0}}  {'STATUS':<11}  {'TIME':>7}  REASON"]
    for node, status, dur, reason in rows:
        lines.append(f"{node:<{w0}}  {status:<11}  {dur:>7}  {reason}".rstrip())
    cp, ms = record["critical_path_s"], record["makespan_s"]
    ratio = f" ({ms / cp:.2f}x)" if cp else ""
    lines.append("")
    iid = record.get("instance_id")
    lines.append(f"result: {record['result']}   makespan {ms:.2f}s   critical path {cp:.2f}s{ratio}"
                 f"   {'instance ' + iid if iid else 'no instance-id'}")
    if record.get("milestones"):
        lines.append("milestones: " + ", ".join(
            f"{name} {m['reached_s']:.2f}s" if m.get("reached_s") is not None else f"{name} not reached"
            for name, m in record["milestones"].items()))
    if record_path:
        lines.append(f"record: {record_path}")
    return "\n".join(lines)
