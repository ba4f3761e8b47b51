"""Configure the target's NTP client: chrony or systemd-timesyncd (cloud-init's cc_ntp).

Capabilities: wants `cloud-config`. Cloud-config key: `ntp` with `enabled`
(default true), `ntp_client` (`auto`, `chrony`, `systemd-timesyncd`),
`servers`, `pools`, `peers`, `allow` (chrony), `config.confpath`. `ntp:` with
no value configures the defaults.

`auto` picks chrony when the target has chronyd, else systemd-timesyncd when
it has it; with neither the module fails (cidag installs no package: list the
client in `packages`, which runs first). Without servers and pools, the pools
are cloud-init's `0-3.DISTRO.pool.ntp.org` (DISTRO from ROOT/etc/os-release).
chrony gets a whole chrony.conf (ROOT/etc/chrony/chrony.conf, or
ROOT/etc/chrony.conf where there is no /etc/chrony directory), as cloud-init
writes it; systemd-timesyncd gets a drop-in,
ROOT/etc/systemd/timesyncd.conf.d/cidag.conf. When the root is / the
service is restarted if it runs (`systemctl try-restart`).
"""
from __future__ import annotations

import re
import shutil

from .. import paths, userdata
from ..api import Context
from . import _run

HOSTS = {"type": "array", "items": {"type": "string"}}
CLOUD_CONFIG = {
    "ntp": {"type": ["object", "null"], "properties": {
        "enabled": {"type": "boolean"},
        "ntp_client": {"type": "string"},
        "servers": HOSTS, "pools": HOSTS, "peers": HOSTS, "allow": HOSTS,
        "config": {"type": "object", "properties": {
            "confpath": {"type": "string"}, "check_exe": {"type": "string"},
            "packages": HOSTS, "service_name": {"type": "string"}, "template": {"type": "string"}}},
    }},
}
SETTINGS = {"type": "object", "properties": {}}
CLIENTS = {  # name -> (executables in the target that show it is installed, service)
    "chrony": (["usr/sbin/chronyd", "sbin/chronyd"], "chrony.service"),
    "systemd-timesyncd": (["usr/lib/systemd/systemd-timesyncd", "lib/systemd/systemd-timesyncd"],
                          "systemd-timesyncd.service"),
}
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*")  # names, IPv4 and IPv6 addresses
ALLOW = re.compile(r"[A-Za-z0-9.:/_-]+")  # chrony `allow`: also subnets
CHRONY_TAIL = """\
keyfile /etc/chrony/chrony.keys
driftfile /var/lib/chrony/chrony.drift
logdir /var/log/chrony
maxupdateskew 100.0
rtcsync
makestep 1 3
"""


def installed(ctx: Context, client: str) -> bool:
    return any(paths.confine(ctx.root, p).is_file() for p in CLIENTS[client][0])


def default_pools(ctx: Context) -> list[str]:
    """cloud-init's default pools: N.DISTRO.pool.ntp.org, N.pool.ntp.org where the distro has none."""
    text = (paths.read_file(ctx.root, "etc/os-release") or b"").decode("utf-8", "replace")
    m = re.search(r'^ID="?([a-z0-9._-]+)"?\s*$', text, re.M)
    distro = {"sles": "opensuse", "alpine": "", "eurolinux": ""}.get(m.group(1), m.group(1)) if m else ""
    return [".".join(p for p in (str(n), distro, "pool.ntp.org") if p) for n in range(4)]


def _checked(values, pattern: re.Pattern, what: str) -> list[str]:
    out = []
    for v in values or []:
        v = str(v).strip()
        if not pattern.fullmatch(v):
            raise ValueError(f"ntp.{what}: invalid entry {v!r}")
        out.append(v)
    return out


def chrony_conf(servers: list[str], pools: list[str], peers: list[str], allow: list[str]) -> str:
    lines = ["# Written by cidag (ntp module); edits are overwritten."]
    lines += [f"pool {p} iburst" for p in pools] + [f"server {s} iburst" for s in servers]
    lines += [f"peer {p}" for p in peers] + [f"allow {a}" for a in allow]
    return "\n".join(lines) + "\n" + CHRONY_TAIL


def timesyncd_conf(servers: list[str], pools: list[str]) -> str:
    return ("# Written by cidag (ntp module); edits are overwritten. See timesyncd.conf(5).\n"
            "[Time]\n" + (f"NTP={' '.join(servers + pools)}\n" if servers or pools else ""))


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    if "ntp" not in cc:
        ctx.log.info("no ntp section")
        return None
    cfg = cc.get("ntp") or {}
    if cfg.get("enabled", True) is False:
        ctx.log.info("ntp: enabled is false")
        return None
    extra = cfg.get("config") or {}
    for key in sorted(set(extra) - {"confpath"}):
        ctx.log.warning("ntp.config.%s is not supported: ignored", key)
    client = cfg.get("ntp_client") or "auto"
    if client == "auto":
        client = next((c for c in CLIENTS if installed(ctx, c)), None)
        if client is None:
            raise RuntimeError("ntp: no NTP client (chrony or systemd-timesyncd) in the target; "
                               "add one to packages or set ntp_client")
    elif client not in CLIENTS:
        raise ValueError(f"ntp.ntp_client {client!r} is not supported (chrony, systemd-timesyncd)")
    elif not installed(ctx, client):
        ctx.log.warning("ntp: %s is not installed in the target; its configuration is written anyway", client)
    servers = _checked(cfg.get("servers"), HOST, "servers")
    pools = _checked(cfg.get("pools"), HOST, "pools")
    if not servers and not pools:
        pools = default_pools(ctx)
    if client == "chrony":
        default = "etc/chrony/chrony.conf" if paths.confine(ctx.root, "etc/chrony").is_dir() else "etc/chrony.conf"
        text = chrony_conf(servers, pools, _checked(cfg.get("peers"), HOST, "peers"),
                           _checked(cfg.get("allow"), ALLOW, "allow"))
    else:
        default = "etc/systemd/timesyncd.conf.d/cidag.conf"
        text = timesyncd_conf(servers, pools)
    written = paths.write_file(ctx.root, extra.get("confpath") or default, text, mode=0o644)
    ctx.log.info("ntp: %s configured in %s (%d server(s), %d pool(s))", client,
                 "/" + str(written.relative_to(paths.confine(ctx.root, "/"))), len(servers), len(pools))
    if _run.is_host_root(ctx) and shutil.which("systemctl"):
        res = ctx.run(["systemctl", "try-restart", CLIENTS[client][1]])
        if not res.ok:
            ctx.log.warning("systemctl try-restart %s: exit %s", CLIENTS[client][1], res.returncode)
    return None
