"""`cidag schema [--kind sources|modules|both]`: JSON Schema (draft 2020-12) of the manifests
(made by manifest_schema.py)."""
from __future__ import annotations

import json

import click

from ..manifest_schema import manifest_schema, settings_to_json_schema  # noqa: F401 - re-exported
from .common import write_output


@click.command()
@click.option("--kind", type=click.Choice(["sources", "modules", "both"]), default="both", show_default=True,
              help="Schema of sources.yaml, modules.yaml, or one accepting either.")
@click.option("-o", "--output", default="-", show_default=True, metavar="FILE", help="Where to write it.")
def schema(kind: str, output: str) -> None:
    """JSON Schema (draft 2020-12) of the manifests, for editors and CI."""
    write_output(output, json.dumps(manifest_schema(kind), indent=2) + "\n")
