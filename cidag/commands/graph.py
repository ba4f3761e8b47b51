"""`cidag graph`: the compiled DAG as Graphviz DOT, JSON or Mermaid."""
from __future__ import annotations

import click

from .common import manifest_options, verbose_option

from ..errors import UsageError


@click.command()
@manifest_options
@click.option("--dot", is_flag=True, help="Graphviz DOT (the default).")
@click.option("--json", "json_", is_flag=True, help="Nodes and edges as JSON.")
@click.option("--mermaid", is_flag=True, help="Mermaid flowchart (GitHub renders it).")
@verbose_option
def graph(sources_path, modules_path, config_dir, dot, json_, mermaid, verbose) -> int:
    """Print the compiled DAG: sources, capabilities and modules drawn differently;
    hard edges solid, soft edges (wants, after) dashed."""
    chosen = [name for name, on in (("--dot", dot), ("--json", json_), ("--mermaid", mermaid)) if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)}: choose one output format")
    fmt = chosen[0][2:] if chosen else "dot"
    from ..compiler import load_and_compile

    cg = load_and_compile(sources_path, modules_path, config_dir)
    if fmt == "json":
        from ..graph_render import to_json

        click.echo(to_json(cg.graph, cg.manifests.milestones), nl=False)
    elif fmt == "mermaid":
        from ..mermaid import to_mermaid

        click.echo(to_mermaid(cg.graph))
    else:
        from ..graph_render import to_dot

        click.echo(to_dot(cg.graph, cg.manifests.milestones), nl=False)
    return 0
