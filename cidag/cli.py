"""The `cidag` command: a thin click layer; each subcommand lives in cidag/commands/ and is imported on use."""
from __future__ import annotations

import importlib
import sys

import click

from .errors import CidagError

# name -> "module:function"; imported only when that command runs (start-up is on every boot).
COMMANDS = {
    "run": ("cidag.commands.run:run", "Compile the manifests and run the DAG."),
    "check": ("cidag.commands.check:check", "Lint manifests (schema, types, cycles, unprovided needs)."),
    "graph": ("cidag.commands.graph:graph", "Print the compiled DAG (Graphviz DOT, JSON, Mermaid)."),
    "status": ("cidag.commands.status:status", "The last run's outcome, per node."),
    "query": ("cidag.commands.query:query", "The metadata the last run resolved."),
    "analyze": ("cidag.commands.analyze:analyze", "Blame, critical chain, plot and trace of a run record."),
    "wait": ("cidag.commands.wait:wait", "Wait until the run in progress reaches a milestone (login, done...)."),
    "schema": ("cidag.commands.schema:schema", "JSON Schema of sources.yaml and modules.yaml."),
    "serve-metadata": ("cidag.commands.serve_metadata:serve_metadata", "Serve a loopback metadata simulator."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target = COMMANDS[name][0]
        modname, _, attr = target.partition(":")
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            return None  # command not built yet
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, so --help imports no subcommand.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cidag", prog_name="cidag")
def cli() -> None:
    """cidag: first-boot provisioning as a declarative DAG."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; turn cidag errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["run"] and argv is None:
        from .signals import latch

        latch()  # the `cidag` script comes here first; see signals.py
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    try:
        rc = cli.main(args=args, prog_name="cidag", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("cidag: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2 if exc.exit_code == 1 else exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except CidagError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        for line in str(exc).splitlines() or [type(exc).__name__]:
            click.echo(line if ":" in line.split(" ")[0] else f"cidag: {line}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("cidag: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line unless -v
        if verbose:
            raise
        click.echo(f"cidag: internal error: {type(exc).__name__}: {exc} (run with -v for a traceback)", err=True)
        return 70
    return rc if isinstance(rc, int) else 0
