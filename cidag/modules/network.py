"""Configure the network with systemd-networkd: write its files and have it use them.

Capabilities: wants `network-config` (OpenStack network_data.json, or
cloud-init's version 1 or 2); provides nothing (the `network-online` module
says when the network is up: network_online.py).

1. Renders network-config (netconfig.py, networkd.py) as
   ROOT/etc/systemd/network/10-cidag-*.network (and .link for a rename),
   removing the module's files a previous run wrote that are no longer
   wanted. No network-config: DHCP on the first physical NIC in
   SYSFS/class/net (by MAC), or on `en* eth*` when sysfs shows none; but
   files a source gave on an earlier boot are kept. `config: disabled`
   writes nothing.
2. On a real boot (root `/`, run as root): makes systemd-networkd use them,
   without waiting for any systemd job (cidag.service is not ordered after
   the network managers, see docs/systemd.md): `systemctl start --no-block`
   when it is not running yet (it reads the files when it starts), else,
   only when a file changed, `networkctl reload` (running, D-Bus up) or
   `systemctl restart --no-block` (running, or still starting and so maybe
   with the old files). The module ends as soon as that is done.
"""
from __future__ import annotations

import fnmatch
import os
import time

import yaml

from .. import netconfig, networkd, netstate, paths
from ..yamldoc import safe_load as _safe_load
from ..api import Context
from ..process import run_command

DIRECTORY = "etc/systemd/network"
FALLBACK_ORIGIN = "the fallback (no network-config: DHCP on the first NIC)"
FORMATS = {"openstack": "OpenStack network_data.json", "v1": "version 1", "v2": "version 2"}
TOOL_TIMEOUT = 15.0  # seconds for one systemctl/networkctl call (networkctl waits 25 s for D-Bus)
BOOTED = "/run/systemd/system"  # exists when systemd is PID 1 (sd_booted)
DBUS_SOCKET = "/run/dbus/system_bus_socket"

SETTINGS = {
    "type": "object",
    "properties": {
        "sysfs_root": {"type": "string", "default": "/sys",
                       "description": "where the fallback finds the NICs (SYSFS/class/net)"},
        "apply": {"type": "boolean", "default": True,
                  "description": "on a real boot (root / and run as root), make systemd-networkd use the files"},
    },
}


def run(ctx: Context) -> None:
    s = ctx.settings
    on_host = os.path.realpath(ctx.root) == "/"
    interfaces, origin = _interfaces(ctx)
    files = None if interfaces is None else networkd.render(interfaces, origin)
    changed = _install(ctx, files) if files is not None else False
    if on_host and interfaces:
        _warn_unmatched(ctx, interfaces)
    if on_host and os.geteuid() == 0 and s["apply"]:
        _bring_up(ctx, changed)
    return None


# -- what to write -----------------------------------------------------------

def _interfaces(ctx: Context) -> tuple[list[netconfig.Interface] | None, str]:
    """The interfaces to write and where they come from; None: leave the directory alone.
    Raises NetworkConfigError."""
    doc = ctx.caps.get("network-config")
    if doc is None:
        kept = _from_source(ctx)
        if kept:
            ctx.log.info("no network-config: keeping what an earlier boot wrote (%s)", ", ".join(kept))
            return None, ""
        return [_fallback(ctx)], FALLBACK_ORIGIN
    if isinstance(doc, (str, bytes)):  # e.g. an exec source handing over the YAML text
        try:
            doc = _safe_load(doc)
        except yaml.YAMLError as exc:
            raise netconfig.NetworkConfigError(f"network-config is not YAML: {exc}".splitlines()[0]) from None
    cfg = netconfig.parse(doc)
    for warning in cfg.warnings:
        ctx.log.warning("network-config %s", warning)
    if cfg.format == "disabled":
        ctx.log.info("network-config says `config: disabled`: network files left alone")
        return None, ""
    if not cfg.interfaces:
        ctx.log.warning("network-config configures no interface")
    provider = (ctx.caps.provider("network-config") or "?").split(":", 1)[-1]
    return cfg.interfaces, f"network-config ({FORMATS[cfg.format]}) of {provider}"


def _fallback(ctx: Context) -> netconfig.Interface:
    nics = netstate.physical_nics(ctx.settings["sysfs_root"])
    if not nics:
        ctx.log.info("no network-config and no NIC in %s/class/net: DHCP on en* eth*", ctx.settings["sysfs_root"])
        return netconfig.Interface(key=networkd.FALLBACK_KEY, name="en* eth*", dhcp4=True)
    nic = nics[0]
    where = f"{ctx.settings['sysfs_root']}/class/net"
    name = netconfig.ifname(nic.name, where)
    iface = netconfig.Interface(key=netconfig.file_key(name, where), dhcp4=True)
    if nic.mac and nic.mac != "00:00:00:00:00:00":
        iface.mac = netconfig.mac(nic.mac, f"{where}/{name}/address")
    else:
        iface.name = name
    ctx.log.info("no network-config: DHCP on the first NIC, %s (%s)", name, iface.mac or "no MAC")
    return iface


def _ours(ctx: Context) -> list[str]:
    """Names of the files this module wrote in ROOT/etc/systemd/network."""
    try:
        names = os.listdir(paths.confine(ctx.root, DIRECTORY))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if n.startswith(networkd.PREFIX) and n.endswith((".network", ".link")))


def _from_source(ctx: Context) -> list[str]:
    """Our .network files that came from a source's network-config (not from the fallback)."""
    out = []
    for name in _ours(ctx):
        data = paths.read_file(ctx.root, f"{DIRECTORY}/{name}", limit=1 << 20) or b""
        if name.endswith(".network") and FALLBACK_ORIGIN.encode() not in data.split(b"\n", 1)[0]:
            out.append(name)
    return out


def _install(ctx: Context, files: dict[str, str]) -> bool:
    """Write the files that differ, remove our stale ones; True when anything changed."""
    changed = False
    for name, text in files.items():
        path = f"{DIRECTORY}/{name}"
        if paths.read_file(ctx.root, path, limit=1 << 20) == text.encode():
            continue
        paths.write_file(ctx.root, path, text, mode=0o644)
        ctx.log.info("wrote /%s", path)
        changed = True
    for name in _ours(ctx):
        if name not in files:
            os.unlink(paths.confine(ctx.root, f"{DIRECTORY}/{name}"))  # unlink never follows a symlink
            ctx.log.info("removed /%s/%s (no longer in the network config)", DIRECTORY, name)
            changed = True
    if not changed:
        ctx.log.info("network files unchanged")
    return changed


def _warn_unmatched(ctx: Context, interfaces: list[netconfig.Interface]) -> None:
    """A config for NICs this machine does not have (eth0 where the guest says enp0s2) never comes up:
    say so at once rather than only at the timeout."""
    nics = netstate.physical_nics(ctx.settings["sysfs_root"])
    for iface in interfaces:
        if nics and not any(_matches(iface, nic) for nic in nics):
            here = ", ".join(f"{n.name} ({n.mac})" for n in nics)
            ctx.log.warning("%s%s.network matches none of this machine's NICs: %s",
                            networkd.PREFIX, iface.key, here)


def _matches(iface: netconfig.Interface, nic: netstate.Nic) -> bool:
    """networkd's [Match]: every key given must match (Name= is a list of globs)."""
    if iface.mac and iface.mac != nic.mac:
        return False
    return not iface.name or any(fnmatch.fnmatchcase(nic.name, g) for g in iface.name.split())


# -- bringing it up ------------------------------------------------------------

def _tool(ctx: Context, argv: list[str]) -> tuple[bool, str]:
    """Run a system tool with a short deadline of its own (inside the module's): (ok, why not)."""
    deadline = min(ctx.deadline, time.monotonic() + TOOL_TIMEOUT)
    try:
        res = run_command(argv, deadline=deadline, cancelled=ctx.cancelled)
    except OSError as exc:
        return False, f"cannot run {argv[0]}: {exc.strerror or exc}"
    if res.ok:
        return True, ""
    if res.timed_out or res.cancelled:
        return False, "timed out" if res.timed_out else "interrupted"
    text = (res.stderr_text() or res.stdout_text()).strip().splitlines()
    return False, f"exit {res.returncode}" + (f": {text[0]}" if text else "")


def _unit_state(ctx: Context) -> str:
    """systemd-networkd's ActiveState (active, activating, inactive...), "unknown" when not known."""
    deadline = min(ctx.deadline, time.monotonic() + TOOL_TIMEOUT)
    try:
        res = run_command(["systemctl", "is-active", "systemd-networkd.service"], deadline=deadline,
                          cancelled=ctx.cancelled)
    except OSError:
        return "unknown"
    return (res.stdout_text().strip().splitlines() or ["unknown"])[0]


def _bring_up(ctx: Context, changed: bool) -> None:
    """Tell systemd-networkd; never wait for a systemd job (one could wait for cidag itself)."""
    if not os.path.isdir(BOOTED):
        ctx.log.warning("not booted with systemd: files written, no network manager told")
        return
    # cidag may start before networkd (cidag.service is not ordered after it): the files
    # are written before this check, so a networkd not yet started reads them when it starts.
    state = _unit_state(ctx)
    active = state in ("active", "reloading")
    if (active or state == "activating") and not changed:
        ctx.log.info("systemd-networkd is %s and the files are unchanged", state)
        return
    if active and os.path.exists(DBUS_SOCKET):
        # A D-Bus call to the running networkd: it reloads and answers, no job involved.
        ok, why = _tool(ctx, ["networkctl", "reload"])
        if ok:
            ctx.log.info("networkctl reload")
            return
        ctx.log.warning("networkctl reload failed (%s): restarting systemd-networkd", why)
    # No D-Bus this early: systemctl talks to systemd over its private socket. A networkd
    # starting now may have read the old files: a restart job re-runs its start (systemd merges
    # it into the running start job). --no-block: never wait for a systemd job.
    argv = ["systemctl", "restart" if active or state == "activating" else "start", "--no-block",
            "systemd-networkd.service"]
    ok, why = _tool(ctx, argv)
    if not ok:
        raise RuntimeError(f"{' '.join(argv)}: {why}")
    ctx.log.info("%s", " ".join(argv))
