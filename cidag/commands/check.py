"""`cidag check`: lint manifests for CI and pre-commit (the findings are lint.py's; this prints them)."""
from __future__ import annotations

import json

import click

from ..errors import Diagnostic
from ..lint import lint, manifest_kind, manifest_paths, split_files, user_data_findings  # noqa: F401 - manifest_kind re-exported
from .common import manifest_options, verbose_option


@click.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@manifest_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Warnings are errors.")
@click.option("--user-data", "user_data", type=click.Path(dir_okay=False),
              help="Also validate this user-data file against the modules' schemas.")
@verbose_option
def check(files, sources_path, modules_path, config_dir, fmt, strict, user_data, verbose) -> int:
    """Lint manifests: schema, types and settings, duplicates, unprovided needs (error) and
    wants (warning), cycles, modules that can never run. Exit 0 clean, 2 errors."""
    s, m, found = split_files(files) if files else (None, None, [])
    if found and not (s or m):  # nothing left to lint
        return _report(found + (user_data_findings(user_data) if user_data else []), {}, fmt, strict, None, None)
    sources_path, modules_path = manifest_paths((s, m), sources_path, modules_path, config_dir)
    diags, counts = lint(sources_path, modules_path)
    if user_data:
        diags = diags + user_data_findings(user_data)
    return _report(found + diags, counts, fmt, strict, sources_path, modules_path)


def _report(diags: list[Diagnostic], counts: dict, fmt: str, strict: bool,
            sources_path: str | None, modules_path: str | None) -> int:
    """Print the findings in `fmt` (text also gets a summary line); the exit code."""
    errors = [d for d in diags if d.severity == "error" or strict]
    _print(diags, fmt, strict)
    if fmt == "text":
        n_err = sum(1 for d in diags if d.severity == "error")
        n_warn = len(diags) - n_err
        if not n_err:
            tail = f", {n_warn} warning(s)" if n_warn else ""
            click.echo(f"ok: {sources_path}, {modules_path}: {counts.get('sources', 0)} sources, "
                       f"{counts.get('modules', 0)} modules, {counts.get('capabilities', 0)} capabilities{tail}")
        else:
            click.echo(f"{n_err} error(s), {n_warn} warning(s)", err=True)
    return 2 if errors else 0


def _print(diags: list[Diagnostic], fmt: str, strict: bool) -> None:
    if fmt == "json":
        click.echo(json.dumps([{"file": d.file, "line": d.line, "col": d.col, "severity": d.severity,
                                "code": d.code, "message": d.message} for d in diags], indent=1))
        return
    for d in diags:
        if fmt == "github":
            level = "error" if d.severity == "error" or strict else "warning"
            msg = d.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            click.echo(f"::{level} file={d.file},line={d.line},col={d.col}::{msg}")
        else:
            click.echo(d.format())
