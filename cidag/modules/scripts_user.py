"""Run the `#!` parts of user-data (cloud-init's scripts-user / scripts-vendor).

Capabilities: needs or wants `user-scripts` (from the user-data module: a list
of {name, content}). No cloud-config key.

Each script is written 0700 to STATE_DIR/scripts/ (cloud-init keeps them in
/var/lib/cloud/instance/scripts) and run like a runcmd command: own process
group, killed at the node's timeout, output capped into the run record,
environment CIDAG_ROOT, CIDAG_INSTANCE_ID, CIDAG_CAP_*. All scripts run even if
one fails; the module then fails naming it.
"""
from __future__ import annotations

import os
import re

from .. import paths
from ..api import Context
from . import _run

SETTINGS = {
    "type": "object",
    "properties": {
        "origin": {"enum": ["all", "user-data", "vendor-data"], "default": "all",
                   "description": "which scripts this node runs"},
    },
}


def run(ctx: Context) -> dict | None:
    scripts = ctx.caps.get("user-scripts") or []
    want = ctx.settings.get("origin", "all")
    scripts = [s for s in scripts if want == "all" or s.get("origin", "user-data") == want]
    if not scripts:
        ctx.log.info("no scripts to run")
        return None
    os.makedirs(ctx.state_dir, 0o755, exist_ok=True)
    folder = paths.makedirs(ctx.state_dir, "scripts", mode=0o700)
    env = _run.environment(ctx)
    out = _run.Output(ctx)
    failures = []
    for i, s in enumerate(scripts):
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(s.get("name") or f"part-{i:03d}")).lstrip(".") or f"part-{i:03d}"
        content = s.get("content") or b""
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        path = paths.write_file(folder, name, data, mode=0o700)
        if ctx.cancelled.is_set():
            failures.append("interrupted")
            break
        problem = _run.run_one(ctx, out, name, [str(path)], env)
        if problem:
            ctx.log.error("%s", problem)
            failures.append(problem)
    out.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(scripts)} script(s) failed: {failures[0]}")
    ctx.log.info("%d script(s) ran", len(scripts))
    return None
