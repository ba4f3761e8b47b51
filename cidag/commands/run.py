"""`cidag run`: compile the manifests and run them (the options; run_core.py does the work)."""
from __future__ import annotations

import click

from .common import manifest_options, root_option, verbose_option
from .run_core import RunArgs, run_command, summary  # noqa: F401 - summary: kept importable from here


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
@click.option("--no-cache", is_flag=True,
              help="Compile the manifests even if the compiled-plan cache is valid; write no cache.")
def run(sources_path, modules_path, config_dir, root, state_dir, jobs, select, strategy, only,
        dry_run, fail_fast, force, force_all, record_path, fmt, log_format, verbose, quiet, no_cache) -> int:
    """Compile the manifests and run the DAG. Exit 0 ok, 1 a module failed, 2 bad input, 130 interrupted."""
    return run_command(RunArgs(sources_path, modules_path, config_dir, root, state_dir, jobs, select, strategy,
                               tuple(only), dry_run, fail_fast, tuple(force), force_all, record_path, fmt,
                               log_format, verbose, quiet, cache=not no_cache))


