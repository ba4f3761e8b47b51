"""`cidag check`: lint manifests for CI and pre-commit."""
from __future__ import annotations

import difflib
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


def split_files(files: tuple[str, ...]) -> tuple[str | None, str | None, list[Diagnostic]]:
    """Tell sources from modules manifests; returns (sources, modules, findings about files
    whose kind cannot be told, e.g. one that cannot be read or parsed)."""
    found: dict[str, str] = {}
    diags: list[Diagnostic] = []
    for path in files:
        kind, problems = manifest_kind(path)
        if kind is None:
            diags.extend(problems)
            continue
        if kind in found:
            raise UsageError(f"two {kind} manifests given: {found[kind]} and {path}")
        found[kind] = path
    return found.get("sources"), found.get("modules"), diags


def manifest_kind(path: str) -> tuple[str | None, list[Diagnostic]]:
    """'sources' or 'modules' for `path`: by its top-level key, a near miss of one
    (`modulez:`), a `select:` key, else its file name; with the findings when none tells.

    A file told by its name or a misspelt key is then linted as that kind, so
    `check FILE` and `check --modules FILE` report the same errors the same way.
    """
    from ..manifest import detect_kind
    from ..yamldoc import load_file

    by_name = {"sources.yaml": "sources", "sources.yml": "sources",
               "modules.yaml": "modules", "modules.yml": "modules"}.get(os.path.basename(path))
    try:
        doc = load_file(path)
    except ManifestError as exc:
        return by_name, exc.diagnostics  # linting it as by_name reports the same finding
    kind = detect_kind(doc)
    if kind is None and isinstance(doc.data, dict):
        keys = [k for k in doc.data if isinstance(k, str)]
        near = {kind for k in keys for kind in difflib.get_close_matches(k, ("sources", "modules"), n=1)}
        if len(near) == 1:
            kind = near.pop()
        elif "select" in keys:
            kind = "sources"
    kind = kind or by_name
    if kind is None:
        return None, [Diagnostic(path, 1, 1, "not a cidag manifest: no top-level 'sources' or 'modules' key",
                                 code="not-a-manifest")]
    return kind, []


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

    found: list[Diagnostic] = []
    if files:
        s, m, found = split_files(files)
        if found and not (s or m):  # nothing left to lint
            return _report(found + (_user_data(user_data) if user_data else []), {}, fmt, strict, None, None)
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
