"""Lint manifests (`cidag check`): every finding about two manifest files, telling a sources
manifest from a modules one, and what a user-data file holds that cidag would not apply."""
from __future__ import annotations

import difflib
import os

from .errors import Diagnostic, ManifestError, UsageError


def lint(sources_path: str, modules_path: str) -> tuple[list[Diagnostic], dict]:
    """Every diagnostic for the two files (errors and warnings), and a few counts."""
    from .compiler import build_graph, collector_paused
    from .manifest import load_manifests

    with collector_paused():
        try:
            m = load_manifests(sources_path, modules_path)
        except ManifestError as exc:
            return exc.diagnostics, {}
        cg = build_graph(m)
    counts = {"sources": len(m.sources), "modules": len(m.modules),
              "capabilities": sum(1 for n in cg.graph if n.startswith("cap:")),
              "edges": cg.graph.number_of_edges()}
    return cg.diagnostics, counts


def manifest_paths(files: tuple[str | None, str | None], sources: str | None, modules: str | None,
                   config_dir: str | None) -> tuple[str, str]:
    """The two manifests to lint: `files` (sources, modules) told from `check FILE...`, else
    --sources / --modules, else the usual lookup order (manifest.find_manifests). With one
    file given (pre-commit passes only what changed), its sibling in the same directory is
    the other half first. Raises UsageError when one cannot be found."""
    from .manifest import find_manifests

    given_s, given_m = files
    sources, modules = given_s or sources, given_m or modules
    for given, other, fname in ((given_s, modules, "modules.yaml"), (given_m, sources, "sources.yaml")):
        sibling = os.path.join(os.path.dirname(given or ""), fname)
        if given and not other and os.path.isfile(sibling):
            if fname == "modules.yaml":
                modules = sibling
            else:
                sources = sibling
    return find_manifests(sources, modules, config_dir)


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
    from .manifest import detect_kind
    from .yamldoc import load_file

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


def user_data_findings(path: str) -> list[Diagnostic]:
    """What `cidag check --user-data FILE` reports about a user-data file."""
    try:
        from .userdata import validate_user_data_file
    except ImportError:
        raise UsageError("--user-data: user-data validation is not available in this build") from None
    return list(validate_user_data_file(path))
