"""Power off, reboot or halt once the run is over (cloud-init's cc_power_state_change).

Capabilities: wants `cloud-config`. Cloud-config key: `power_state` with
`mode` (`poweroff`, `reboot`, `halt`; required), `delay` (`now`, `+N` or N
minutes), `message`, `timeout` (seconds to wait for cidag to exit, default
30) and `condition` (true, false, or a command: a string under `/bin/sh -c`
or an argv; exit 0 means act).

Only when the root is `/`: anywhere else (a test, an image build) the
module logs the command it would have run and does nothing, so it can never
power off the machine that runs cidag for another root. On `/` it evaluates
the condition, then starts a detached waiter that lets cidag finish (its
record written) for up to `timeout` seconds and then runs `shutdown`, as
cloud-init does. The shipped manifest runs it after every other module.
"""
from __future__ import annotations

import os
import shlex
import subprocess

from .. import userdata
from ..api import Context
from . import _run

CLOUD_CONFIG = {
    "power_state": {"type": "object", "required": ["mode"], "properties": {
        "mode": {"enum": ["poweroff", "reboot", "halt"]},
        "delay": {"type": ["string", "integer"], "pattern": r"^(now|\+?[0-9]+)$"},
        "message": {"type": "string"},
        "timeout": {"type": "integer", "minimum": 0},
        "condition": {"type": ["boolean", "string", "array"], "items": {"type": "string"}},
    }},
}
SETTINGS = {"type": "object", "properties": {}}
MODE_FLAG = {"poweroff": "-P", "reboot": "-r", "halt": "-H"}


def shutdown_command(cfg: dict) -> list[str]:
    """The `shutdown` argv for a power_state section (cloud-init's)."""
    delay = str(cfg.get("delay", "now")).strip()
    if delay != "now":
        delay = "+" + delay.lstrip("+")
    argv = ["shutdown", MODE_FLAG[cfg["mode"]], delay]
    if cfg.get("message"):
        argv.append(str(cfg["message"]))
    return argv


def _condition(ctx: Context, cond) -> bool:
    if isinstance(cond, bool):
        return cond
    res = ctx.run(cond)
    if res.returncode not in (0, 1):
        ctx.log.warning("power_state condition exited %s: taken as false", res.returncode)
    return res.returncode == 0


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    cfg = cc.get("power_state")
    if not cfg:
        ctx.log.info("no power_state")
        return None
    argv = shutdown_command(cfg)
    if not _run.is_host_root(ctx):
        msg = f"power_state: the root is {ctx.root}, not /: `{shlex.join(argv)}` not run"
        ctx.log.info("%s", msg)
        ctx.output.append(msg + "\n")
        return None
    if not _condition(ctx, cfg.get("condition", True)):
        ctx.log.info("power_state: condition false: no %s", cfg["mode"])
        return None
    timeout = int(cfg.get("timeout", 30))
    # Wait for this cidag to exit (its record written), at most `timeout` s, then shut down.
    waiter = ('i=0; while kill -0 "$1" 2>/dev/null && [ "$i" -lt "$2" ]; do sleep 1; i=$((i+1)); done; '
              'shift 2; exec "$@"')
    subprocess.Popen(["/bin/sh", "-c", waiter, "cidag-power-state", str(os.getpid()), str(timeout), *argv],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    ctx.log.info("power_state: `%s` once cidag exits (at most %d s)", shlex.join(argv), timeout)
    return None
