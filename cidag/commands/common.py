"""Options shared by the commands that read manifests or state."""
from __future__ import annotations

from pathlib import Path

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


def state_options(root_help: str):
    """--state-dir and --root, for commands that read a run's state; the command gets
    `state_dir` and `root` and calls state_path() with them."""

    def wrap(func):
        func = root_option(root_help)(func)
        func = click.option("--state-dir", type=click.Path(file_okay=False), default=None,
                            help="State directory  [default: ROOT/var/lib/cidag]")(func)
        return func

    return wrap


def root_option(help_text: str):
    """--root DIR, defaulting to $CIDAG_ROOT, else / (docs/state-and-record.md): so after
    `export CIDAG_ROOT=demo-root` every command reads the demo's state, and a command that
    a module runs (cidag sets CIDAG_ROOT for it) reads the state of the root being provisioned."""
    return click.option("--root", type=click.Path(file_okay=False), default="/", envvar="CIDAG_ROOT",
                        help=f"{help_text}  [default: $CIDAG_ROOT, else /]")


def state_path(state_dir: str | None, root: str) -> Path:
    """The state directory as `cidag run` defaults it: ROOT/var/lib/cidag."""
    from ..state import default_state_dir

    return Path(state_dir) if state_dir else default_state_dir(root)


def write_output(output: str, text: str) -> None:
    """Write `text` to the file `output`, or to stdout for '-'; one-line error otherwise."""
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        from ..errors import UsageError

        raise UsageError(f"{output}: cannot write: {exc.strerror or exc}") from None
