"""Run the cloud-config `runcmd` commands, in order (make -k: the others still run).

Capabilities: wants `cloud-config`. Cloud-config key: `runcmd` (a string runs
under `/bin/sh -c`, a list is an argv). Settings `commands` run first.

Each command runs in its own process group, killed at the node's timeout;
the working directory is ROOT and the environment carries CIDAG_ROOT,
CIDAG_INSTANCE_ID and CIDAG_CAP_* (spec §2). With `--root`, commands run on
the host: they must write under $CIDAG_ROOT. Output goes to the run record,
capped at 64 KiB.
"""
from __future__ import annotations

from .. import userdata
from ..api import Context
from . import _run

COMMAND = {"type": ["string", "array"], "items": {"type": "string"}}
CLOUD_CONFIG = {"runcmd": {"type": "array", "items": COMMAND}}
SETTINGS = {
    "type": "object",
    "properties": {"commands": {"type": "array", "items": COMMAND, "default": []}},
}


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    commands = list(ctx.settings.get("commands") or []) + list(cc.get("runcmd") or [])
    commands = [c for c in commands if c]
    if not commands:
        ctx.log.info("no commands to run")
        return None
    _run.run_commands(ctx, commands, _run.environment(ctx))
    return None
