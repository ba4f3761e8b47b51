"""`cidag graph`: the compiled DAG as Graphviz DOT, JSON or Mermaid."""
from __future__ import annotations

import click

from .common import manifest_options, verbose_option


@click.command()
@manifest_options
@click.option("--dot", "fmt", flag_value="dot", default=True, help="Graphviz DOT (default).")
@click.option("--json", "fmt", flag_value="json", help="Nodes and edges as JSON.")
@click.option("--mermaid", "fmt", flag_value="mermaid", help="Mermaid flowchart (GitHub renders it).")
@verbose_option
def graph(sources_path, modules_path, config_dir, fmt, verbose) -> int:
    """Print the compiled DAG: sources, capabilities and modules drawn differently;
    hard edges solid, soft edges (wants, after) dashed."""
    from ..engine import load_and_compile

    cg = load_and_compile(sources_path, modules_path, config_dir)
    if fmt == "json":
        from ..graph_render import to_json

        click.echo(to_json(cg.graph), nl=False)
    elif fmt == "mermaid":
        from ..mermaid import to_mermaid

        click.echo(to_mermaid(cg.graph))
    else:
        from ..graph_render import to_dot

        click.echo(to_dot(cg.graph), nl=False)
    return 0
