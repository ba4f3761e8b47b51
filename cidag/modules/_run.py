"""Running commands for modules: user commands (runcmd, bootcmd, scripts-user) with their
environment, and the target's own tools (package managers, useradd, locale-gen...) inside the
target root. Output is kept (capped) in the record; failures are one line.
"""
from __future__ import annotations

import json
import os
import shutil

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
        if value is None or callable(value) or (isinstance(value, str) and "\0" in value):
            continue  # an environment cannot carry a NUL: the command reads it as absent
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


def run_one(ctx: Context, out: Output, label: str, command, env: dict[str, str], *,
            cwd: str | None | bool = True) -> str | None:
    """Run one command; keep its output; return a one-line failure or None.

    `cwd=True` runs it in ROOT (user commands); None in cidag's own directory.
    """
    out.add(f"$ {label}\n")
    if cwd is True:
        cwd = str(ctx.root) if os.path.isdir(ctx.root) else None
    try:
        res = ctx.run(command, env=env, cwd=cwd or None)
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


def run_each(ctx: Context, items: list, start, what: str) -> None:
    """`start(out, item)` (a one-line failure or None) for each item in order, each even if one
    before failed (make -k), output kept; raise RuntimeError naming the first failure. A timeout
    or an interrupt stops the rest. `what` names the items in messages ("command(s)")."""
    out = Output(ctx)
    failures = []
    for item in items:
        if ctx.cancelled.is_set():
            failures.append("interrupted")
            break
        problem = start(out, item)
        if problem:
            ctx.log.error("%s", problem)
            failures.append(problem)
            if "timeout" in problem or "interrupted" in problem:
                break
    out.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(items)} {what} failed: {failures[0]}")
    ctx.log.info("%d %s ran", len(items), what)


def run_commands(ctx: Context, commands: list, env: dict[str, str]) -> None:
    """Run user commands in order (run_each): a string under /bin/sh -c, a list as argv."""
    run_each(ctx, commands, lambda out, cmd: run_one(ctx, out, label_of(cmd), cmd, env), "command(s)")


def drop_capability_env(ctx: Context) -> None:
    """Remove CIDAG_CAP_* from what ctx.run passes on: system tools (useradd, ssh-keygen) need none,
    and cloud-config may hold passwords."""
    for key in [k for k in ctx.env if k.startswith("CIDAG_CAP_")]:
        del ctx.env[key]


# --- the target's own tools, run inside the target root ---

# What a tool run inside the target finds on its PATH (the host's PATH names host directories).
TARGET_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def is_host_root(ctx: Context) -> bool:
    """True when the target is this machine's own `/` (a module may then touch the running system)."""
    return os.path.realpath(ctx.root) == "/"


def target_argv(ctx: Context, argv: list[str], *, root_option: str | None = None) -> list[str]:
    """`argv` made to act on the target root instead of the machine running cidag.

    The root is `/`: as is. Otherwise the tool's own root option when it has one
    (`root_option="--prefix"` gives `useradd --prefix ROOT ...`), else the tool
    runs under `chroot ROOT`, so its files, its configuration and its scripts
    (a package's maintainer scripts) are the target's. Raises RuntimeError
    when chroot is needed and cidag is not root.
    """
    root = os.path.realpath(ctx.root)
    if root == "/":
        return list(argv)
    if root_option:
        return [argv[0], root_option, root, *argv[1:]]
    if os.geteuid() != 0:
        raise RuntimeError(f"{argv[0]} must run inside the target {root}, and chroot needs root")
    return [shutil.which("chroot") or "/usr/sbin/chroot", root, *argv]


def target_has(ctx: Context, tool: str) -> bool:
    """Whether `tool` is an executable on the target's PATH (looked up in ROOT, not on the host)."""
    from .. import paths

    for d in TARGET_PATH.split(":"):
        try:
            p = paths.confine(ctx.root, f"{d}/{tool}")
        except paths.PathRefused:
            continue
        if p.is_file() and os.access(p, os.X_OK):
            return True
    return False


def run_in_target(ctx: Context, out: Output, argv: list[str], *, root_option: str | None = None,
                  env: dict[str, str] | None = None) -> str | None:
    """Run one of the target's tools for it (see target_argv); keep its output; return a one-line
    failure or None. Capability values never reach it (cloud-config may hold passwords)."""
    drop_capability_env(ctx)
    label = label_of(argv)
    try:
        full = target_argv(ctx, argv, root_option=root_option)
    except RuntimeError as exc:
        out.add(f"$ {label}\n")
        return f"{label}: {exc}"
    full_env = dict(env or {})
    if full[0] != argv[0]:  # under chroot: the target's PATH and a locale every system has
        full_env = {"PATH": TARGET_PATH, "LC_ALL": "C", **full_env}
    problem = run_one(ctx, out, label, full, full_env, cwd=None)
    if problem:
        tail = [ln for ln in (ctx.output[-1] if ctx.output else "").splitlines() if ln.strip()]
        if tail and not tail[-1].startswith("$ "):
            problem += f": {tail[-1].strip()[:200]}"
    return problem


def check_in_target(ctx: Context, argv: list[str], *, root_option: str | None = None,
                    env: dict[str, str] | None = None) -> None:
    """run_in_target, raising RuntimeError with the one-line failure."""
    out = Output(ctx)
    problem = run_in_target(ctx, out, argv, root_option=root_option, env=env)
    out.close()
    if problem:
        raise RuntimeError(problem)
