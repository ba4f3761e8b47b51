"""Options shared by the commands that read manifests or state."""
from __future__ import annotations

import click


def manifest_options(func):
    """--sources, --modules, --config-dir with the lookup order of spec §2."""
    func = click.option("--config-dir", type=click.Path(file_okay=False),
                        help="Directory holding sources.yaml and modules.yaml.")(func)
    func = click.option("--modules", "modules_path", type=click.Path(dir_okay=False),
                        help="Path of modules.yaml.")(func)
    func = click.option("--sources", "sources_path", type=click.Path(dir_okay=False),
                        help="Path of sources.yaml.")(func)
    return func


def verbose_option(func):
    """-v: tracebacks and debug logs (cli.main also looks for it before parsing)."""
    return click.option("-v", "--verbose", count=True, help="More output; tracebacks on errors.")(func)
