"""Run the cloud-config `bootcmd` commands early, on every boot (cloud-init's bootcmd).

Capabilities: wants `cloud-config`. Cloud-config key: `bootcmd` (a string runs
under `/bin/sh -c`, a list is an argv). The shipped manifest runs this node
`per-boot` and every other config module after it, as cloud-init does.

Commands run as runcmd's do (cidag/modules/_run.py): in order, every one
even if one fails, working directory ROOT, environment CIDAG_ROOT,
CIDAG_INSTANCE_ID, CIDAG_CAP_* and cloud-init's `INSTANCE_ID`; with `--root`
they run on the host and must write under $CIDAG_ROOT.
"""
from __future__ import annotations

from .. import userdata
from ..api import Context
from . import _run
from .runcmd import COMMAND

CLOUD_CONFIG = {"bootcmd": {"type": "array", "items": COMMAND}}
SETTINGS = {
    "type": "object",
    "properties": {"commands": {"type": "array", "items": COMMAND, "default": [],
                                "description": "run before the cloud-config bootcmd"}},
}


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    commands = [c for c in list(ctx.settings.get("commands") or []) + list(cc.get("bootcmd") or []) if c]
    if not commands:
        ctx.log.info("no bootcmd")
        return None
    env = _run.environment(ctx)
    if ctx.instance_id:
        env["INSTANCE_ID"] = str(ctx.instance_id)  # what cloud-init's bootcmd scripts read
    _run.run_commands(ctx, commands, env)
    return None
