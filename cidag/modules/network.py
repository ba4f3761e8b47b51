"""Configure the network: write network-config in the image's network stack and have it use it.

Capabilities: wants `network-config` (OpenStack network_data.json, or
cloud-init's version 1 or 2); provides nothing (the `network-online` module
says when the network is up: network_online.py).

1. Picks a renderer: setting `renderer` (`auto`, the default, detects the
   stack from the files of ROOT: netrender.py; or `networkd`, `netplan`,
   `network-manager`, `eni`).
2. Renders network-config (netconfig.py, then networkd.py, netplan.py,
   nmkeyfile.py or eni.py) under ROOT, removing the files a previous run
   wrote that are no longer wanted, whichever renderer wrote them. No
   network-config: DHCP on the first physical NIC in SYSFS/class/net (by
   MAC), or on `en* eth*` when sysfs shows none; but files a source gave on
   an earlier boot are kept. `config: disabled` writes nothing.
3. On a real boot (root `/`, run as root): makes the network manager use
   them, without waiting for any systemd job (cidag.service is not ordered
   after the network managers, see docs/systemd.md): `systemctl start
   --no-block UNIT` when it is not running yet (it reads the files when it
   starts), else, only when a file changed, its reload call (`networkctl
   reload`; `nmcli connection reload` and `nmcli --wait 0 connection up`)
   or `systemctl restart --no-block UNIT` (running without D-Bus, still
   starting and so maybe with the old files, or ifupdown's
   networking.service). netplan: `netplan generate` first, then the same
   for the backend it generated for. The module ends as soon as that is done.
"""
from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass

import yaml

from .. import netconfig, netrender, networkd, netstate, paths
from ..yamldoc import safe_load as _safe_load
from ..api import Context
from ..process import run_command

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
                  "description": "on a real boot (root / and run as root), make the network manager use the files"},
        "renderer": {"type": "string", "enum": ["auto", *netrender.NAMES], "default": "auto",
                     "description": "the network stack to write for; auto: detected from the root's files"},
    },
}


def run(ctx: Context) -> None:
    s = ctx.settings
    on_host = os.path.realpath(ctx.root) == "/"
    renderer = _renderer(ctx)
    interfaces, origin = _interfaces(ctx, renderer)
    changed: list[str] = []
    if interfaces is not None:
        files = netrender.files(renderer, interfaces, origin)
        if renderer == "eni":
            _check_interfaces_file(ctx)
        changed = _install(ctx, files, netrender.MODES.get(renderer, 0o644))
    if on_host and interfaces:
        _warn_unmatched(ctx, interfaces, renderer)
    if on_host and os.geteuid() == 0 and s["apply"]:
        _apply(ctx, renderer, interfaces or [], changed)
    return None


def _renderer(ctx: Context) -> str:
    chosen = ctx.settings["renderer"]
    if chosen == "auto":
        chosen, why = netrender.detect(str(ctx.root))
        ctx.log.info("renderer %s: %s", chosen, why)
    return chosen


# -- what to write -----------------------------------------------------------

def _interfaces(ctx: Context, renderer: str) -> tuple[list[netconfig.Interface] | None, str]:
    """The interfaces to write and where they come from; None: leave the files alone.
    Raises NetworkConfigError."""
    doc = ctx.caps.get("network-config")
    if doc is None:
        kept = _from_source(ctx, renderer)
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


def _from_source(ctx: Context, renderer: str) -> list[str]:
    """Our configuration files (not .link) that came from a source's network-config (not from the
    fallback), of the renderer in use."""
    out = []
    for path in netrender.owned_files(ctx.root):
        if path.rsplit("/", 1)[0] != netrender.RENDERER_DIRS[renderer] or path.endswith(".link"):
            continue
        data = paths.read_file(ctx.root, path, limit=1 << 20) or b""
        if FALLBACK_ORIGIN.encode() not in data.split(b"\n", 1)[0]:
            out.append(path.rsplit("/", 1)[1])
    return out


def _install(ctx: Context, files: dict[str, str], mode: int) -> list[str]:
    """Write the files that differ, remove our stale ones (any renderer's); the paths changed."""
    changed = []
    for path, text in files.items():
        if paths.read_file(ctx.root, path, limit=1 << 20) == text.encode():
            continue
        paths.write_file(ctx.root, path, text, mode=0o644 if path.endswith(".link") else mode)
        ctx.log.info("wrote /%s", path)
        changed.append(path)
    for path in netrender.owned_files(ctx.root):
        if path not in files:
            os.unlink(paths.confine(ctx.root, path))  # unlink never follows a symlink
            ctx.log.info("removed /%s (no longer in the network config)", path)
            changed.append(path)
    if not changed:
        ctx.log.info("network files unchanged")
    return changed


def _check_interfaces_file(ctx: Context) -> None:
    """ifupdown reads interfaces.d only when /etc/network/interfaces says so: write Debian's file
    when there is none, fail when it does not include the directory. Raises RuntimeError."""
    from .. import eni
    text = paths.read_file(ctx.root, eni.INTERFACES, limit=1 << 20)
    if text is None:
        paths.write_file(ctx.root, eni.INTERFACES, eni.DEFAULT_INTERFACES, mode=0o644)
        ctx.log.info("wrote /%s (there was none)", eni.INTERFACES)
    elif not eni.sourced(text.decode("utf-8", "replace")):
        raise RuntimeError(f"/{eni.INTERFACES} does not read /{eni.PATH}: add "
                           "`source /etc/network/interfaces.d/*` to it")


def _warn_unmatched(ctx: Context, interfaces: list[netconfig.Interface], renderer: str) -> None:
    """A config for NICs this machine does not have (eth0 where the guest says enp0s2) never comes up:
    say so at once rather than only at the timeout."""
    nics = netstate.physical_nics(ctx.settings["sysfs_root"])
    for iface in interfaces:
        if nics and not any(_matches(iface, nic) for nic in nics):
            here = ", ".join(f"{n.name} ({n.mac})" for n in nics)
            what = f"{networkd.PREFIX}{iface.key}.network" if renderer == "networkd" else (
                f"interface {iface.key} ({renderer})")
            ctx.log.warning("%s matches none of this machine's NICs: %s", what, here)


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


def _unit_state(ctx: Context, unit: str) -> str:
    """The unit's ActiveState (active, activating, inactive...), "unknown" when not known."""
    deadline = min(ctx.deadline, time.monotonic() + TOOL_TIMEOUT)
    try:
        res = run_command(["systemctl", "is-active", unit], deadline=deadline, cancelled=ctx.cancelled)
    except OSError:
        return "unknown"
    return (res.stdout_text().strip().splitlines() or ["unknown"])[0]


@dataclass(frozen=True)
class Manager:
    """A network manager's unit, and the calls that make a running one reread its files (over
    D-Bus, answered by the manager itself: no systemd job); none: it is restarted."""

    unit: str
    reload: tuple[tuple[str, ...], ...] = ()


NETWORKD = Manager("systemd-networkd.service", (("networkctl", "reload"),))
NETWORK_MANAGER = Manager("NetworkManager.service", (("nmcli", "connection", "reload"),))
# ifupdown has no daemon: `systemctl restart networking.service` (ifdown -a, ifup -a) is Debian's way
# to apply a changed /etc/network/interfaces.
IFUPDOWN = Manager("networking.service")
NETPLAN_OUT = ("/run/systemd/network/10-netplan-{}.network", "/run/NetworkManager/system-connections/netplan-{}.nmconnection")


def _apply(ctx: Context, renderer: str, interfaces: list[netconfig.Interface], changed: list[str]) -> None:
    """Have the renderer's network manager use the files."""
    if renderer == "networkd":
        _bring_up(ctx, bool(changed))
    elif renderer == "eni":
        _bring_up(ctx, bool(changed), IFUPDOWN)
    elif renderer == "network-manager":
        from .. import nmkeyfile

        ids = [nmkeyfile.connection_id(i) for i in interfaces
               if f"{nmkeyfile.DIRECTORY}/{nmkeyfile.connection_id(i)}.nmconnection" in changed]
        _bring_up(ctx, bool(changed), NETWORK_MANAGER, _activations(ids))
    else:
        _netplan(ctx, interfaces, changed)


def _activations(ids: list[str]) -> list[list[str]]:
    """Switch each device to its changed connection: a reload alone leaves a device on the connection
    it has (NetworkManager's automatic "Wired connection 1"). --wait 0: ask, do not wait for it."""
    return [["nmcli", "--wait", "0", "connection", "up", "id", i] for i in ids]


def _netplan(ctx: Context, interfaces: list[netconfig.Interface], changed: list[str]) -> None:
    """`netplan generate` (netplan's own generator ran at boot, before the file was there), then tell
    the backend netplan wrote for: NetworkManager when it wrote keyfiles, else networkd."""
    from .. import netplan

    ids = netplan.ids(interfaces)
    outputs = [p.format(i) for i in ids for p in NETPLAN_OUT]
    regenerate = bool(changed) or (bool(ids) and not any(os.path.exists(p) for p in outputs))
    if regenerate:
        ok, why = _tool(ctx, ["netplan", "generate"])
        if not ok:
            raise RuntimeError(f"netplan generate: {why}")
        ctx.log.info("netplan generate")
        if any(i.set_name and i.mac for i in interfaces):
            _rename(ctx)
    if any(os.path.exists(NETPLAN_OUT[1].format(i)) for i in ids):
        _bring_up(ctx, regenerate, NETWORK_MANAGER, _activations([f"netplan-{i}" for i in ids]) if regenerate else [])
    else:
        _bring_up(ctx, regenerate)


def _rename(ctx: Context) -> None:
    """netplan's networkd files match a renamed NIC by its new name, so the rename (its .link file)
    must happen now, not at the next boot: have udev replay the NICs' add events (as `netplan
    apply` does; udev renames a NIC that is still down). `udevadm trigger` does not wait for them."""
    for argv in (["udevadm", "control", "--reload"], ["udevadm", "trigger", "--action=add", "--subsystem-match=net"]):
        ok, why = _tool(ctx, argv)
        if not ok:
            ctx.log.warning("%s: %s (the rename happens at the next boot)", " ".join(argv), why)
            return
    ctx.log.info("udevadm trigger --action=add --subsystem-match=net (set-name)")


def _bring_up(ctx: Context, changed: bool, manager: Manager = NETWORKD, activate: list[list[str]] | None = None) -> None:
    """Tell the network manager; never wait for a systemd job (one could wait for cidag itself)."""
    if not os.path.isdir(BOOTED):
        ctx.log.warning("not booted with systemd: files written, no network manager told")
        return
    # cidag may start before the manager (cidag.service is not ordered after it): the files
    # are written before this check, so a manager not yet started reads them when it starts.
    state = _unit_state(ctx, manager.unit)
    active = state in ("active", "reloading")
    if (active or state == "activating") and not changed:
        ctx.log.info("%s is %s and the files are unchanged", manager.unit, state)
        return
    if active and manager.reload and os.path.exists(DBUS_SOCKET):
        for argv in manager.reload:
            ok, why = _tool(ctx, list(argv))
            if not ok:
                ctx.log.warning("%s failed (%s): restarting %s", " ".join(argv), why, manager.unit)
                break
            ctx.log.info("%s", " ".join(argv))
        else:
            for argv in activate or []:
                ok, why = _tool(ctx, argv)
                if ok:
                    ctx.log.info("%s", " ".join(argv))
                else:  # e.g. no device for it (yet): it connects when one appears
                    ctx.log.warning("%s: %s", " ".join(argv), why)
            return
    # No D-Bus this early: systemctl talks to systemd over its private socket. A manager
    # starting now may have read the old files: a restart job re-runs its start (systemd merges
    # it into the running start job). --no-block: never wait for a systemd job.
    argv = ["systemctl", "restart" if active or state == "activating" else "start", "--no-block", manager.unit]
    ok, why = _tool(ctx, argv)
    if not ok:
        raise RuntimeError(f"{' '.join(argv)}: {why}")
    ctx.log.info("%s", " ".join(argv))
