"""Generate the SSH server's host keys for this instance, as cloud-init's cc_ssh does.

Capabilities: wants `cloud-config`. Cloud-config keys: `ssh_genkeytypes`
(default: the `types` setting, rsa, ecdsa and ed25519), `ssh_deletekeys`
(default true: keys left by the image or by another instance are removed
first, so no two instances share a host key).

Keys go to ROOT/etc/ssh/ssh_host_TYPE_key (0600) and .pub (0644), made by
`ssh-keygen`, one process per type at once (RSA is slow under emulation).
Runs per instance: a reboot keeps the keys, a new instance gets new ones.
A type whose key is already there is kept when `ssh_deletekeys` is false.
"""
from __future__ import annotations

import os
import shutil
import threading

from .. import paths, userdata
from ..api import Context

KEY_TYPES = ["rsa", "ecdsa", "ed25519"]
CLOUD_CONFIG = {
    "ssh_genkeytypes": {"type": "array", "items": {"enum": KEY_TYPES}},
    "ssh_deletekeys": {"type": "boolean"},
}
SETTINGS = {
    "type": "object",
    "properties": {
        "types": {"type": "array", "items": {"enum": KEY_TYPES}, "default": KEY_TYPES,
                  "description": "key types to generate (cloud-config ssh_genkeytypes wins)"},
        "delete": {"type": "boolean", "default": True,
                   "description": "remove existing host keys first (cloud-config ssh_deletekeys wins)"},
    },
}


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    types = list(dict.fromkeys(cc.get("ssh_genkeytypes", ctx.settings.get("types", KEY_TYPES))))
    delete = bool(cc.get("ssh_deletekeys", ctx.settings.get("delete", True)))
    generate(ctx, types, delete)
    return None


def generate(ctx: Context, types: list[str], delete: bool) -> list[str]:
    """Make the host keys of `types` under ROOT/etc/ssh; return the types generated."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise RuntimeError("ssh-keygen not found: no host keys (sshd will not start)")
    sshd = paths.makedirs(ctx.root, "etc/ssh")
    if delete:
        for f in sshd.glob("ssh_host_*key*"):
            if f.is_file() and not f.is_symlink():
                f.unlink()
    todo = []
    for t in types:
        key = paths.confine(ctx.root, f"etc/ssh/ssh_host_{t}_key")
        if not (key.exists() or key.is_symlink()):
            todo.append((t, key))
    errors: list[str] = []

    def make(t: str, key) -> None:
        res = ctx.run([keygen, "-q", "-t", t, "-N", "", "-C", f"root@{ctx.instance_id or 'cidag'}", "-f", str(key)])
        if not res.ok:
            errors.append(f"ssh-keygen -t {t} failed: {res.stderr_text().strip()[:200]}")
            return
        os.chmod(key, 0o600)

    threads = [threading.Thread(target=make, args=item, daemon=True) for item in todo]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    made = [t for t, _ in todo]
    ctx.log.info("host keys generated: %s", ", ".join(made) or "none needed")
    return made
