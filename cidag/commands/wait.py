"""`cidag wait MILESTONE [--timeout D]`: block until the run in progress reaches a milestone.

Exit codes: 0 reached (or no run recorded: nothing to wait for), 1 the run
ended without reaching it, 124 --timeout ran out, 2 usage. The library is
cidag/milestones.py; cidag/cli.py also runs this without click (it is on the
path of every boot: cidag-done.service, a unit's ExecStartPre).
"""
from __future__ import annotations

import click

from .common import state_options, state_path


@click.command()
@click.argument("milestone")
@state_options("Target root whose run is waited for.")
@click.option("--timeout", "timeout_text", metavar="DURATION", default=None,
              help="Give up after this long (e.g. 90s, 5m) and exit 124.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; the exit code says it.")
@click.pass_context
def wait(ctx: click.Context, milestone: str, state_dir: str | None, root: str, timeout_text: str | None,
         quiet: bool) -> None:
    """Wait until the run in progress reaches MILESTONE (a name from modules.yaml, or `done`)."""
    code = wait_main(milestone, str(state_path(state_dir, root)), timeout_text, quiet)
    ctx.exit(code)


def wait_main(milestone: str, state_dir: str, timeout_text: str | None, quiet: bool) -> int:
    """What both the click command and the click-free path run; returns the exit code."""
    from ..durations import parse_duration
    from ..errors import UsageError
    from ..milestones import wait as wait_for

    timeout = None
    if timeout_text is not None:
        try:
            timeout = parse_duration(timeout_text)
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    got = wait_for(state_dir, milestone, timeout)
    if not quiet:
        print(got.detail, flush=True)
    return got.exit_code
