"""Install SSH authorized keys for the default and named users, and optionally host keys.

Capabilities: wants `public-keys` (a list, a newline-separated string, or a
mapping name -> key), `default-user` (the name the users module made),
`cloud-config`. Cloud-config keys: `ssh_authorized_keys` (for the default
user), `users[].ssh_authorized_keys`, `disable_root`, `disable_root_opts`.

Keys go to ROOT/HOME/.ssh/authorized_keys (directory 0700, file 0600, owned
by the user when cidag runs as root), merged with the keys already there. No
symlink is followed below the home directory. With `disable_root` (default
true, as in cloud-init) root gets the metadata keys behind a `command=` that
only says which user to log in as. The `host_keys` setting also makes
host keys; the shipped manifests leave that to the `ssh-host-keys` module.
"""
from __future__ import annotations

import os
import re

from .. import paths, userdata
from ..api import Context
from . import _run, ssh_host_keys
from . import _accounts as acc

KEY_TYPES = ssh_host_keys.KEY_TYPES
CLOUD_CONFIG = {
    "ssh_authorized_keys": {"type": ["array", "string"], "items": {"type": "string"}},
    "disable_root": {"type": "boolean"},
    "disable_root_opts": {"type": "string"},
}
DISABLE_ROOT_OPTS = ('no-port-forwarding,no-agent-forwarding,no-X11-forwarding,'
                     'command="echo \'Please login as the user \\"$USER\\" rather than the user \\"root\\".\';'
                     'echo;sleep 10;exit 142"')
SETTINGS = {
    "type": "object",
    "properties": {
        "user": {"type": ["string", "null"], "default": None,
                 "description": "who gets the metadata keys; default: the default-user capability, else root"},
        "disable_root": {"type": "boolean", "default": True,
                         "description": "root's copy of the metadata keys only tells to log in as the user"},
        "host_keys": {"type": "array", "items": {"enum": KEY_TYPES}, "default": [],
                      "description": "host key types to generate when missing (cloud-config ssh_genkeytypes wins)"},
    },
}
KEY_RE = re.compile(r"^(?:[^\s]+\s+)?(ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+\s+[A-Za-z0-9+/=]+")


def normalize_keys(value) -> list[str]:
    """Public keys as a list of one-line strings, from a list, a mapping or a multi-line string."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, str):
        value = value.splitlines()
    out: list[str] = []
    for item in value:
        if isinstance(item, dict):  # e.g. {"openssh-key": "..."} from some metadata services
            item = item.get("openssh-key") or item.get("key") or ""
        for line in str(item).splitlines():
            line = line.strip()
            if line and not line.startswith("#") and line not in out:
                out.append(line)
    return out


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    _run.drop_capability_env(ctx)
    target_user = ctx.settings.get("user") or acc.default_user_name(ctx) or "root"
    wanted: dict[str, list[str]] = {}

    def add(name: str, keys: list[str]) -> list[str]:
        good = [k for k in keys if KEY_RE.match(k)]
        if len(good) < len(keys):
            ctx.log.warning("%s: %d line(s) that are not public keys ignored", name, len(keys) - len(good))
        wanted.setdefault(name, []).extend(good)
        return good

    meta_keys = add(target_user, normalize_keys(ctx.caps.get("public-keys"))
                    + normalize_keys(cc.get("ssh_authorized_keys")))
    for u in cc.get("users") or []:
        if isinstance(u, dict) and u.get("ssh_authorized_keys") and u.get("name"):
            add(str(u["name"]), normalize_keys(u["ssh_authorized_keys"]))
    if cc.get("disable_root", ctx.settings.get("disable_root", True)) and target_user != "root" and meta_keys:
        # cloud-init's disable_root: root gets the keys, but logging in only says which user to use.
        opts = str(cc.get("disable_root_opts") or DISABLE_ROOT_OPTS).replace("$USER", target_user)
        wanted.setdefault("root", []).extend(f"{opts} {k}" for k in meta_keys)
    db = acc.Database(ctx.root)
    problems = []
    done = 0
    for name, keys in wanted.items():
        if not keys:
            continue
        user = db.user(name)
        if user is None:
            problems.append(f"user {name!r} does not exist in the target root")
            continue
        try:
            added = install(ctx, user, keys)
        except (paths.PathRefused, OSError) as exc:
            problems.append(f"{name}: {exc}")
            continue
        done += 1
        ctx.log.info("%s: %d key(s) in authorized_keys (%d new)", name, len(keys), added)
    types = ctx.settings.get("host_keys") or []
    if types:
        ssh_host_keys.generate(ctx, list(types), delete=False)
    if not done and not types:
        ctx.log.info("no keys to install")
    if problems and not done and not types:
        raise RuntimeError("; ".join(problems))  # nothing could be done at all
    for problem in problems:
        ctx.fault(problem)  # that user's keys; the others are in place
    return None


def install(ctx: Context, user: acc.User, keys: list[str]) -> int:
    """Merge `keys` into the user's authorized_keys; return how many were new."""
    if not user.home.startswith("/") or user.home == "/":
        raise OSError(f"home {user.home!r} unusable")
    home = paths.confine(ctx.root, user.home)
    if not home.is_dir():
        paths.makedirs(ctx.root, os.path.dirname(user.home.rstrip("/")) or "/")  # /home stays root's
        paths.makedirs(ctx.root, user.home, mode=0o700, uid=user.uid, gid=user.gid)
    # Below the home the user owns everything: follow no symlink there.
    sshdir = paths.makedirs(home, ".ssh", mode=0o700, uid=user.uid, gid=user.gid, follow_symlinks=False)
    fd = os.open(sshdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:  # an existing ~/.ssh gets the right mode and owner too
        os.fchmod(fd, 0o700)
        if os.geteuid() == 0:
            os.fchown(fd, user.uid, user.gid)
    finally:
        os.close(fd)
    if os.path.islink(sshdir / "authorized_keys"):
        raise paths.PathRefused(f"{sshdir / 'authorized_keys'} is a symlink")
    existing = paths.read_file(home, ".ssh/authorized_keys")
    lines = (existing or b"").decode("utf-8", "replace").splitlines()
    have = {ln.strip() for ln in lines}
    new = [k for k in keys if k not in have]
    text = "\n".join(lines + new).strip("\n") + "\n"
    paths.write_file(home, ".ssh/authorized_keys", text, mode=0o600, uid=user.uid, gid=user.gid,
                     follow_symlinks=False)
    return len(new)
