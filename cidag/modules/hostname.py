"""Set the host name in the target root: ROOT/etc/hostname and, when asked, ROOT/etc/hosts.

Capabilities: wants `hostname`, `cloud-config`. Cloud-config keys (they win
over the metadata and the settings): `hostname`, `fqdn`,
`prefer_fqdn_over_hostname`, `preserve_hostname`, `manage_etc_hosts`,
`create_hostname_file` (false: no /etc/hostname is created where none is).

`manage_etc_hosts: true` (or `template`) writes the whole /etc/hosts;
`localhost` only keeps a `127.0.1.1 FQDN SHORT` line up to date in it. When
the root is `/` and cidag runs as root, the running host name is set too.
"""
from __future__ import annotations

import os
import re
import socket

from .. import paths, userdata
from ..api import Context
from . import _run

MANAGE = {"type": ["boolean", "string"], "enum": [True, False, "template", "localhost"]}
CLOUD_CONFIG = {
    "hostname": {"type": "string"},
    "fqdn": {"type": "string"},
    "prefer_fqdn_over_hostname": {"type": "boolean"},
    "preserve_hostname": {"type": "boolean"},
    "manage_etc_hosts": MANAGE,
    "create_hostname_file": {"type": "boolean"},
}
SETTINGS = {
    "type": "object",
    "properties": {
        "hostname": {"type": ["string", "null"], "default": None,
                     "description": "used when neither cloud-config nor the metadata gives one"},
        "manage_etc_hosts": dict(MANAGE, default=False),
        "prefer_fqdn_over_hostname": {"type": "boolean", "default": False},
        "set_running": {"type": "boolean", "default": True,
                        "description": "also set the running host name (only when the root is /)"},
    },
}

LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")  # fullmatch: "web\n" is no label

TEMPLATE = """\
# Written by cidag (hostname module, manage_etc_hosts); edits are overwritten.
127.0.1.1 {names}
127.0.0.1 localhost

# The following lines are desirable for IPv6 capable hosts
::1 localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
"""


def valid(name: str) -> bool:
    """RFC 1123 host name (one or more labels, at most 253 characters)."""
    return 0 < len(name) <= 253 and all(LABEL.fullmatch(p) for p in name.rstrip(".").split("."))


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    _run.drop_capability_env(ctx)
    s = ctx.settings
    if cc.get("preserve_hostname"):
        ctx.log.info("preserve_hostname is set: host name left alone")
        return None
    name = cc.get("fqdn") or cc.get("hostname") or ctx.caps.get("hostname") or s.get("hostname")
    if not name:
        ctx.log.info("no host name in cloud-config, metadata or settings: nothing to do")
        return None
    name = str(name).strip().rstrip(".")
    if not valid(name):
        raise ValueError(f"invalid host name {name!r}")
    fqdn = name if "." in name else None
    short = name.split(".")[0]
    if cc.get("hostname") and cc.get("fqdn"):
        short = str(cc["hostname"]).split(".")[0]
    prefer = cc.get("prefer_fqdn_over_hostname", s.get("prefer_fqdn_over_hostname", False))
    etc_name = fqdn if (prefer and fqdn) else short
    # create_hostname_file: false only keeps a missing /etc/hostname missing (as cloud-init).
    if cc.get("create_hostname_file", True) or paths.confine(ctx.root, "etc/hostname").exists():
        paths.write_file(ctx.root, "etc/hostname", etc_name + "\n", mode=0o644)
        ctx.log.info("/etc/hostname: %s", etc_name)
    else:
        ctx.log.info("create_hostname_file is false: no /etc/hostname created")
    manage = cc.get("manage_etc_hosts", s.get("manage_etc_hosts", False))
    names = f"{fqdn} {short}" if fqdn else short
    if manage in (True, "template"):
        paths.write_file(ctx.root, "etc/hosts", TEMPLATE.format(names=names), mode=0o644)
        ctx.log.info("/etc/hosts written from the template")
    elif manage == "localhost":
        # The shipped manifest asks for this on every image: an /etc/hosts that is no regular file
        # of the root (a FIFO, a directory, a symlink out of it) keeps the name from resolving
        # locally, but must not cost the host name itself.
        try:
            _update_hosts(ctx, names)
        except paths.PathRefused as exc:
            ctx.log.warning("/etc/hosts left alone: %s", exc)
    if s.get("set_running", True) and os.path.realpath(ctx.root) == "/" and os.geteuid() == 0:
        _set_running(ctx, etc_name)
    return None


def _update_hosts(ctx: Context, names: str) -> None:
    old = (paths.read_file(ctx.root, "etc/hosts") or b"").decode("utf-8", "replace")
    line = f"127.0.1.1 {names}"
    lines = old.splitlines()
    out = [line if ln.split()[:1] == ["127.0.1.1"] else ln for ln in lines]
    if line not in out:
        out.insert(0, line)
    if not any(ln.split()[:1] == ["127.0.0.1"] for ln in out):
        out.insert(1, "127.0.0.1 localhost")
    paths.write_file(ctx.root, "etc/hosts", "\n".join(out) + "\n", mode=0o644)
    ctx.log.info("/etc/hosts: %s", line)


def _set_running(ctx: Context, name: str) -> None:
    # The kernel's call, not hostnamectl: cidag runs before D-Bus and systemd-hostnamed.
    try:
        socket.sethostname(name)
    except OSError as exc:
        ctx.log.warning("could not set the running host name: %s", exc)
        return
    ctx.log.info("running host name: %s", name)
