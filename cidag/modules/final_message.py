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

import json
import os
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
    started = getattr(ctx, "run_started", None)  # monotonic, if the engine provides it
    if isinstance(started, (int, float)):
        return time.monotonic() - started
    try:
        with open(os.path.join(ctx.state_dir, "running.json")) as f:
            info = json.load(f)
        when = datetime.strptime(info["started_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        return max(0.0, time.time() - when.timestamp())
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:  # age of this process: /proc/self/stat field 22 is its start in clock ticks since boot
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _uptime() -> str:
    try:
        with open("/proc/uptime") as f:
            return f.read().split()[0]
    except OSError:
        return "unknown"


def _result_so_far(ctx: Context) -> str:
    provided = getattr(ctx, "run_result", None)  # the public API this wants, if the engine adds it
    if provided is not None:
        return str(provided() if callable(provided) else provided)
    plan = getattr(ctx.caps, "_plan", None)
    nodes = getattr(plan, "nodes", None)
    if not isinstance(nodes, dict):
        return "unknown"
    result = "ok"
    try:
        for node_id, state in nodes.items():
            kind, status, reason = state.kind, state.status, getattr(state, "reason", "") or ""
            if kind == "module" and status in ("failed", "timeout", "interrupted"):
                return "failed"
            if (kind == "source" and status in ("failed", "timeout")) or (
                    kind == "module" and status == "skipped" and reason.startswith("capability")):
                result = "degraded"
    except AttributeError:
        return "unknown"
    return result


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
