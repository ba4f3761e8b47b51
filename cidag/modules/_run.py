"""Running user commands for runcmd and scripts-user: environment, output kept (capped), one-line failures."""
from __future__ import annotations

import json
import os

from ..api import ALWAYS_SECRET, Context
from ..process import describe

OUTPUT_CAP = 64 << 10  # characters of command output a module keeps in the run record
# Whole documents that may hold passwords; secrets themselves follow the run's policy (ctx.is_secret).
SKIP_CAPS = {"cloud-config", "user-scripts", "user-data", "vendor-data"} | set(ALWAYS_SECRET)


def environment(ctx: Context, secrets: frozenset[str] = frozenset()) -> dict[str, str]:
    """Spec §2: CIDAG_ROOT, CIDAG_INSTANCE_ID and CIDAG_CAP_<NAME> for the plain capabilities read."""
    env = {"CIDAG_ROOT": str(ctx.root)}
    if ctx.instance_id:
        env["CIDAG_INSTANCE_ID"] = str(ctx.instance_id)
    for name in list(ctx.caps):
        if name in SKIP_CAPS or name in secrets or ctx.is_secret(name):
            continue
        try:
            value = ctx.caps[name]
        except Exception:  # unavailable capability: simply absent from the environment
            continue
        if value is None or callable(value):
            continue
        key = "CIDAG_CAP_" + name.upper().replace("-", "_").replace(".", "_")
        env[key] = value if isinstance(value, str) else json.dumps(value, default=str)
    env.update(ctx.env)  # what the engine sets wins...
    for name in SKIP_CAPS | set(secrets) | {n for n in list(ctx.caps) if ctx.is_secret(n)}:
        # ...except capabilities commands must not see (secrets, whole user-data); ctx.run adds
        # ctx.env to every command, so they are dropped from it too.
        key = "CIDAG_CAP_" + name.upper().replace("-", "_").replace(".", "_")
        env.pop(key, None)
        ctx.env.pop(key, None)
    return env


class Output:
    """Appends command output to ctx.output until OUTPUT_CAP characters, then counts what it drops."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.used, self.dropped = ctx, 0, 0

    def add(self, text: str) -> None:
        room = OUTPUT_CAP - self.used
        if room <= 0:
            self.dropped += len(text)
            return
        kept = text[:room]
        self.ctx.output.append(kept)
        self.used += len(kept)
        self.dropped += len(text) - len(kept)

    def close(self) -> None:
        if self.dropped:
            self.ctx.output.append(f"[cidag: {self.dropped} more characters of output dropped]\n")


def run_one(ctx: Context, out: Output, label: str, command, env: dict[str, str]) -> str | None:
    """Run one command; keep its output; return a one-line failure or None."""
    out.add(f"$ {label}\n")
    try:
        res = ctx.run(command, env=env, cwd=str(ctx.root) if os.path.isdir(ctx.root) else None)
    except OSError as exc:
        return f"{label}: cannot start: {exc.strerror or exc}"
    text = res.stdout_text() + res.stderr_text()
    if text:
        out.add(text if text.endswith("\n") else text + "\n")
    if res.dropped_stdout or res.dropped_stderr:
        out.add(f"[cidag: {res.dropped_stdout + res.dropped_stderr} bytes over the pipe cap dropped]\n")
    if res.timed_out:
        return f"{label}: killed at the module's timeout"
    if res.cancelled:
        return f"{label}: interrupted"
    if res.returncode != 0:
        return f"{label}: exit {res.returncode}"
    return None


def label_of(command) -> str:
    text = describe(command)
    return text if len(text) <= 120 else text[:117] + "..."


def drop_capability_env(ctx: Context) -> None:
    """Remove CIDAG_CAP_* from what ctx.run passes on: system tools (useradd, ssh-keygen) need none,
    and cloud-config may hold passwords."""
    for key in [k for k in ctx.env if k.startswith("CIDAG_CAP_")]:
        del ctx.env[key]
