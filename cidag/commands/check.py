"""`cidag check`: lint manifests for CI and pre-commit."""
from __future__ import annotations

import json
import os

import click

from ..errors import Diagnostic, ManifestError, UsageError
from .common import manifest_options, verbose_option


def lint(sources_path: str, modules_path: str) -> tuple[list[Diagnostic], dict]:
    """Every diagnostic for the two files (errors and warnings), and a few counts."""
    from ..compiler import build_graph
    from ..manifest import load_manifests

    try:
        m = load_manifests(sources_path, modules_path)
    except ManifestError as exc:
        return exc.diagnostics, {}
    cg = build_graph(m)
    counts = {"sources": len(m.sources), "modules": len(m.modules),
              "capabilities": sum(1 for n in cg.graph if n.startswith("cap:")),
              "edges": cg.graph.number_of_edges()}
    return cg.diagnostics, counts


def split_files(files: tuple[str, ...]) -> tuple[str | None, str | None]:
    """Tell sources from modules manifests by their top-level key."""
    from ..manifest import detect_kind
    from ..yamldoc import load_file

    found: dict[str, str] = {}
    for path in files:
        kind = detect_kind(load_file(path))
        if kind is None:
            raise ManifestError([Diagnostic(path, 1, 1, "not a cidag manifest: no top-level 'sources' or 'modules' key")])
        if kind in found:
            raise UsageError(f"two {kind} manifests given: {found[kind]} and {path}")
        found[kind] = path
    return found.get("sources"), found.get("modules")


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
    from ..manifest import find_manifests

    if files:
        s, m = split_files(files)
        sources_path, modules_path = s or sources_path, m or modules_path
        # One file given (pre-commit passes only what changed): its sibling in the same
        # directory is the other half before the usual lookup order.
        for given, other, fname in ((s, modules_path, "modules.yaml"), (m, sources_path, "sources.yaml")):
            sibling = os.path.join(os.path.dirname(given or ""), fname)
            if given and not other and os.path.isfile(sibling):
                if fname == "modules.yaml":
                    modules_path = sibling
                else:
                    sources_path = sibling
    sources_path, modules_path = find_manifests(sources_path, modules_path, config_dir)
    diags, counts = lint(sources_path, modules_path)
    if user_data:
        diags = diags + _user_data(user_data)
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


def _user_data(path: str) -> list[Diagnostic]:
    try:
        from ..userdata import validate_user_data_file
    except ImportError:
        raise UsageError("--user-data: user-data validation is not available in this build") from None
    return list(validate_user_data_file(path))


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
