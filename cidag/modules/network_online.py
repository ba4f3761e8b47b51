"""Provide `network-online` once the kernel can reach one of the endpoints the HTTP sources need.

Capabilities: provides `network-online` (the HTTP sources `need` it); reads none.

1. Root `/`: polls the kernel's own route lookup (netstate.reach, what `ip
   route get ADDR` answers) for each of `endpoints` (default the metadata
   service, 169.254.169.254 and fd00:ec2::254): an on-link route, a host
   route through a gateway and a default route all count, with a usable
   source address. The first found is provided as the value
   (`169.254.169.254 via 10.0.0.1 dev eth0 src 10.0.0.5`).
2. No route yet: it waits for the network to settle, then decides at once.
   Settled is systemd-networkd's word (ROOT-independent, /run/systemd/netif):
   every link it manages is `configured` or `failed`, in a state written
   after the newest file in ROOT/etc/systemd/network (a state from before
   the `network` module's files is stale). Another network stack, or a link
   that stays `configuring` (no carrier, DHCP unanswered): `settle_timeout`.
   Settled without a route: the module ends **ok** without providing
   `network-online`, saying which route is missing; what needs it is skipped
   with that reason, the local sources and the rest go on.
3. Another root: its network cannot be checked, so `network-online` is not
   provided, unless `wait_online: false`, which provides it unchecked (the
   demo and the tests set it with CIDAG_NETWORK_WAIT_ONLINE=false).

Never starts or waits for a systemd job: cidag runs before the network
managers (docs/systemd.md), it only reads what the kernel and networkd show.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import time

from .. import netstate, paths
from ..api import Context

DIRECTORY = "etc/systemd/network"  # the network files (as the network module's)
SETTLED = ("configured", "failed")  # networkd's ADMIN_STATE once it is done with a link
TRANSIENT = ("pending", "initialized", "configuring")
MAX_PAUSE = 0.2  # seconds between two looks (a few syscalls each)

SETTINGS = {
    "type": "object",
    "properties": {
        "endpoints": {"type": "array", "items": {"type": "string", "minLength": 2, "pattern": r"^[0-9A-Fa-f:.]+$"},
                      "default": ["169.254.169.254", "fd00:ec2::254"],
                      "description": "IP addresses the HTTP sources fetch from: network-online once the kernel "
                                     "has a route to one of them (on-link, host or default route)"},
        "wait_online": {"type": "boolean", "default": True,
                        "description": "check the kernel's routes (root / only); false: provide network-online "
                                       "unchecked (a --root other than /: the demo, the tests)"},
        "settle_timeout": {"format": "duration", "default": 30.0,
                           "description": "with no sign that the network has settled (another network manager, "
                                          "a link still configuring), decide after this long"},
        "netif_dir": {"type": "string", "default": "/run/systemd/netif",
                      "description": "systemd-networkd's state directory (links/IFINDEX)"},
    },
}


def run(ctx: Context) -> dict:
    s = ctx.settings
    endpoints = _endpoints(s["endpoints"])
    if not s["wait_online"]:
        ctx.log.info("wait_online is false: network-online provided without a check")
        return {"network-online": True}
    if os.path.realpath(ctx.root) != "/":
        return _unprovided(ctx, "the root is not /: its network cannot be checked "
                                "(wait_online: false provides network-online unchecked)")
    return _wait(ctx, endpoints)


def _endpoints(given: list[str]) -> list[str]:
    """The endpoints in normal form. Raises ValueError (one line) for a bad or empty list."""
    if not given:
        raise ValueError("endpoints: at least one address is needed")
    out = []
    for i, text in enumerate(given):
        try:
            out.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise ValueError(f"endpoints[{i}]: {text!r} is not an IP address") from None
    return out


def _unprovided(ctx: Context, why: str) -> dict:
    """End ok without network-online, saying why (the reason of what is skipped for want of it)."""
    ctx.log.warning("network-online not provided: %s", why)
    ctx.unprovided["network-online"] = why
    return {"network-online": None}


def _wait(ctx: Context, endpoints: list[str]) -> dict:
    start = time.monotonic()
    # Decide with a reason before the engine's timeout would cut the module off.
    hard_end = ctx.deadline - min(2.0, 0.05 * ctx.remaining())
    settle_end = min(hard_end, start + ctx.settings["settle_timeout"])
    pause = 0.02
    while True:
        route, why = netstate.reach(endpoints)
        if route is not None:
            ctx.log.info("route after %.2fs: %s", time.monotonic() - start, route)
            return {"network-online": str(route)}
        settled, links = links_settled(ctx.settings["netif_dir"], _newest_config(ctx))
        now = time.monotonic()
        if settled or now >= settle_end or ctx.cancelled.is_set():
            if settled:
                when = f"networkd settled after {now - start:.1f}s: {links}"
            elif ctx.cancelled.is_set():
                when = "interrupted"
            else:
                when = f"not settled after {now - start:.0f}s: {links}"
            ctx.log.info("%s", when)
            return _unprovided(ctx, f"no route to {' or '.join(endpoints)} ({why}); {when}")
        ctx.cancelled.wait(max(0.0, min(pause, settle_end - now)))
        pause = min(pause * 2, MAX_PAUSE)


def _newest_config(ctx: Context) -> float:
    """mtime of the newest file in ROOT/etc/systemd/network (0 when there is none)."""
    try:
        base = paths.confine(ctx.root, DIRECTORY)
        names = os.listdir(base)
    except (OSError, ValueError):
        return 0.0
    newest = 0.0
    for name in names:
        try:
            newest = max(newest, os.lstat(os.path.join(base, name)).st_mtime)
        except OSError:
            continue  # removed meanwhile
    return newest


def links_settled(netif_dir: str, since: float) -> tuple[bool, str]:
    """(has systemd-networkd settled every link it manages, one line on the links' states).

    Settled: a state file for every interface the kernel has but lo, none of them in a
    transient state, at least one managed (configured or failed), and each managed
    link's state written at or after `since` (the newest network file: an older state
    predates the configuration). A missing directory (networkd not running, another
    network manager) is never settled."""
    links = os.path.join(netif_dir, "links")
    states: dict[str, tuple[str, float]] = {}
    try:
        names = os.listdir(links)
    except OSError:
        return False, f"no {links}"
    for name in names:
        if not name.isdigit():
            continue
        path = os.path.join(links, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(1 << 16)
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        admin = next((line[12:].strip() for line in text.splitlines() if line.startswith("ADMIN_STATE=")), "?")
        states[name] = (admin, mtime)
    parts, settled, managed = [], True, 0
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        interfaces = []
    for index, ifname in sorted(interfaces):
        if ifname == "lo":
            continue
        admin, mtime = states.get(str(index), ("unknown to networkd", 0.0))
        if admin in SETTLED:
            managed += 1
            if mtime < since:
                admin, settled = f"{admin} before the network files changed", False
        elif admin in TRANSIENT or admin.startswith("unknown"):
            settled = False
        parts.append(f"{ifname} {admin}")
    return settled and managed > 0, ", ".join(parts) or "no interface but lo"

