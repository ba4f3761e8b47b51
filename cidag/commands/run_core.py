"""What `cidag run` does, without click: the click command (run.py) and the click-free
fast path of `cidag run` with no options (cli.FAST_PATHS, the form the systemd unit
uses) both call `run_command`."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunArgs:
    """The options of `cidag run`, with its defaults (run.py documents each)."""

    sources_path: str | None = None
    modules_path: str | None = None
    config_dir: str | None = None
    root: str = "/"
    state_dir: str | None = None
    jobs: int = 4
    select: str | None = None
    strategy: str = "one-step"
    only: tuple[str, ...] = ()
    dry_run: bool = False
    fail_fast: bool = False
    force: tuple[str, ...] = ()
    force_all: bool = False
    record_path: str | None = None
    fmt: str = "text"
    log_format: str = "text"
    verbose: int = 0
    quiet: bool = False
    cache: bool = True  # the compiled-plan cache (plancache.py)


def echo(text: str, err: bool = False) -> None:
    """One line to stdout or stderr, flushed (as click.echo)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def fast_run() -> int:
    """`cidag run` with no options: its defaults, --root from $CIDAG_ROOT (else /)."""
    return run_command(RunArgs(root=os.environ.get("CIDAG_ROOT") or "/"))


def run_command(a: RunArgs) -> int:
    """Compile (or load the compiled plan of) the manifests and run them; the exit code.
    Raises CidagError (UsageError, ManifestError, InternalError) for cli.main to report."""
    from ..disabled import disabled_reason
    from ..engine import RunOptions
    from ..engine import run as run_graph
    from ..logs import setup_logging
    from .. import known_instance
    from ..plancache import cache_dir, load_for_run

    reason = disabled_reason(a.root)
    if reason and not a.dry_run:
        echo(f"cidag: disabled ({reason}); nothing run", err=True)
        return 0
    setup_logging(verbose=a.verbose, quiet=a.quiet, fmt=a.log_format)
    only = tuple(n for item in a.only for n in item.split(",") if n)
    root = Path(a.root).resolve()
    # A dry run writes nothing, the cache included; it still reads a valid one.
    cg = load_for_run(a.sources_path, a.modules_path, a.config_dir,
                      cache=cache_dir(root) if a.cache else None, write=not a.dry_run)
    for diag in cg.diagnostics:
        if not a.quiet and a.verbose:
            echo(diag.format(), err=True)
    opts = RunOptions(root=root, state_dir=Path(a.state_dir) if a.state_dir else None,
                      jobs=1 if a.dry_run else a.jobs, select=a.select, strategy=a.strategy, only=only,
                      force=tuple(a.force), force_all=a.force_all, fail_fast=a.fail_fast, dry_run=a.dry_run,
                      record_path=Path(a.record_path) if a.record_path else None,
                      observer=_progress(a.quiet, a.fmt))
    if not a.dry_run:
        try:
            known_instance.forget(opts.resolved_state_dir())
        except OSError:
            pass  # an unusable state directory: the run itself reports it
        from .. import prefetch  # nodes import their code lazily: have it ready when they start

        prefetch.start(cg, opts.resolved_state_dir())
    result = run_graph(cg, opts)
    if not a.dry_run:
        _remember_instance(cg, opts, result.record)
    if opts.observer is not None:
        opts.observer.close()
    if a.dry_run:
        skipped = [{"id": n["id"], "reason": n["reason"] or ""} for n in result.record["nodes"]
                   if n["status"] == "skipped"]
        if a.fmt == "json":
            echo(json.dumps({"start_order": result.start_order, "skipped": skipped}, indent=1))
        else:
            for i, node in enumerate(result.start_order, 1):
                echo(f"{i:3d}. {node}")
            if skipped:
                width = max(len(n["id"]) for n in skipped)
                echo("skipped:")
                for n in skipped:
                    echo(f"     {n['id']:<{width}}  {n['reason']}".rstrip())
        return 0
    if a.fmt == "json":
        echo(json.dumps(result.record, indent=1))
    elif not a.quiet:
        echo(summary(result.record, result.record_path))
    return result.exit_code


def _remember_instance(cg, opts, record: dict) -> None:
    """STATE/login-identity for the next boot's generator (known_instance.py); never fails a run."""
    from .. import known_instance

    frequencies = {spec.name: spec.frequency for spec in cg.specs.values() if spec.kind == "module"}
    milestone = os.environ.get("CIDAG_READY_MILESTONE") or "login"
    try:
        known_instance.remember(opts.resolved_state_dir(), opts.root, record, frequencies, milestone)
    except OSError as exc:  # the next boot then waits for the milestone, as on a first boot
        echo(f"cidag: login-identity not written: {exc.strerror or exc}", err=True)


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
