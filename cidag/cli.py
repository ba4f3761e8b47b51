"""The `cidag` command: a thin click layer; each subcommand lives in cidag/commands/ and is imported on use.

click itself is imported only when a command needs it: the forms in FAST_PATHS
(`cidag run` as the systemd unit starts it) go straight to a click-free function
(start-up is on every boot; docs/engine.md, "The compiled-plan cache").
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable

from .errors import CidagError

# name -> "module:function"; imported only when that command runs (start-up is on every boot).
COMMANDS = {
    "run": ("cidag.commands.run:run", "Compile the manifests and run the DAG."),
    "check": ("cidag.commands.check:check", "Lint manifests (schema, types, cycles, unprovided needs)."),
    "graph": ("cidag.commands.graph:graph", "Print the compiled DAG (Graphviz DOT, JSON, Mermaid)."),
    "compile": ("cidag.commands.compile:compile", "Write the compiled-plan cache `cidag run` loads."),
    "status": ("cidag.commands.status:status", "The last run's outcome, per node."),
    "query": ("cidag.commands.query:query", "The metadata the last run resolved."),
    "analyze": ("cidag.commands.analyze:analyze", "Blame, critical chain, plot and trace of a run record."),
    "wait": ("cidag.commands.wait:wait", "Wait until the run in progress reaches a milestone (login, done...)."),
    "clean": ("cidag.commands.clean:clean", "Reset this machine or --root so its next boot is a first boot."),
    "schema": ("cidag.commands.schema:schema", "JSON Schema of sources.yaml and modules.yaml."),
    "serve-metadata": ("cidag.commands.serve_metadata:serve_metadata", "Serve a loopback metadata simulator."),
}

# Click-free forms: `cidag NAME OPERAND...` with exactly N operands and no option calls
# "module:function"(*operands), which returns the exit code like the click command of
# the same form would (same output, same errors). Any other argv goes through click.
FAST_PATHS: dict[str, tuple[int, str]] = {
    "run": (0, "cidag.commands.run_core:fast_run"),
    "wait": (1, "cidag.milestones:fast_wait"),
}


def _fast_path(args: list[str]) -> Callable[[], Any] | None:
    """The function for `args` from FAST_PATHS (its operands bound), or None."""
    if not args or args[0] not in FAST_PATHS:
        return None
    count, target = FAST_PATHS[args[0]]
    operands = args[1:]
    if len(operands) != count or any(a.startswith("-") for a in operands):
        return None
    modname, _, attr = target.partition(":")
    func = getattr(importlib.import_module(modname), attr)
    return lambda: func(*operands)


def _echo_err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; turn cidag errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["run"] and argv is None:
        from .signals import latch

        latch()  # the `cidag` script comes here first; see signals.py
    verbose = any(a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in args)
    try:
        fast = _fast_path(args)
        rc = fast() if fast is not None else _click_main(args)
    except CidagError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        for line in str(exc).splitlines() or [type(exc).__name__]:
            _echo_err(line if ":" in line.split(" ")[0] else f"cidag: {line}")
        return exc.exit_code
    except KeyboardInterrupt:
        _echo_err("cidag: interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line unless -v
        if verbose:
            raise
        _echo_err(f"cidag: internal error: {type(exc).__name__}: {exc} (run with -v for a traceback)")
        return 70
    rc = rc if isinstance(rc, int) else 0
    if argv is None and args[:1] == ["check"]:
        _exit_now(rc)
    return rc


def _exit_now(rc: int) -> None:
    """Leave without freeing every object one by one: `check` of 10,000 modules holds about
    a million, a tenth of a second at exit for nothing (mypy does the same). It has written
    all it writes; only its output is flushed."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


def _click_main(args: list[str]) -> Any:
    """Parse `args` with click and run the command; click's own errors become exit codes here."""
    import click

    try:
        return cli_group().main(args=args, prog_name="cidag", standalone_mode=False)
    except click.exceptions.Abort:
        _echo_err("cidag: interrupted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2 if exc.exit_code == 1 else exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code


_GROUP = None


def cli_group():
    """The click group of every command (built, and click imported, on first use)."""
    global _GROUP
    if _GROUP is not None:
        return _GROUP
    import click

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

    _GROUP = cli
    return cli


def __getattr__(name: str) -> Any:
    # `from cidag.cli import cli` still gives the click group (built on first use).
    if name == "cli":
        return cli_group()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
