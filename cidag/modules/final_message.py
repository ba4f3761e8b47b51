"""Log one line at the end of the boot: instance id, seconds since the run started, result so far.

Capabilities: wants `cloud-config`, `instance-id`. Cloud-config key:
`final_message` (a template, as in cloud-init). Placeholders: $INSTANCE_ID,
$MAKESPAN (seconds since the run started), $RESULT, $UPTIME, $TIMESTAMP,
$VERSION. The line goes to the node's log and output (so `cidag status` and
the record show it).

The run's start comes from STATE_DIR/running.json (`started_at`), else the
age of the process. The result so far follows the record's rules (ok,
degraded, failed) over the nodes that have ended; the plugin API has no call
for it yet, so it is read from the engine's plan behind the facade, and is
"unknown" where that is not there.
"""
from __future__ import annotations

import string
import time
from datetime import datetime, timezone

from .. import userdata
from ..api import Context

DEFAULT = "cidag finished: instance $INSTANCE_ID, ${MAKESPAN}s since the run started, result $RESULT"
CLOUD_CONFIG = {"final_message": {"type": "string"}}
SETTINGS = {
    "type": "object",
    "properties": {"message": {"type": "string", "default": DEFAULT}},
}


def _since_start(ctx: Context) -> float | None:
    return None if ctx.run_started is None else time.monotonic() - ctx.run_started


def _uptime() -> str:
    try:
        with open("/proc/uptime") as f:
            return f.read().split()[0]
    except OSError:
        return "unknown"


def _result_so_far(ctx: Context) -> str:
    return ctx.run_result() if ctx.run_result is not None else "unknown"


def run(ctx: Context) -> dict | None:
    from .. import __version__

    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    template = cc.get("final_message") if isinstance(cc.get("final_message"), str) else ctx.settings["message"]
    since = _since_start(ctx)
    result = _result_so_far(ctx)
    values = {
        "INSTANCE_ID": ctx.instance_id or ctx.caps.get("instance-id") or "unknown",
        "MAKESPAN": f"{since:.2f}" if since is not None else "unknown",
        "RESULT": result,
        "UPTIME": _uptime(),
        "TIMESTAMP": datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000"),
        "VERSION": __version__,
    }
    line = " ".join(string.Template(template).safe_substitute(values).split())
    ctx.log.info("%s", line)
    ctx.output.append(line + "\n")
    return None
