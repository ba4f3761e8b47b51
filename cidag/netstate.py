"""What the kernel says about the network: NICs in sysfs, addresses, default routes.

Read-only. `routable()` answers "can this machine reach beyond its links?":
an interface holds an address of global scope (not tentative, not failed
duplicate address detection) and a default route of the same family goes
through it. Global scope is systemd-networkd's `routable`: fe80::/10 and an
IPv4LL 169.254/16 address are link scope, while a 169.254.x address a DHCP
server hands out (QEMU's user network with `net=169.254.0.0/16`) is global.
Addresses come from a netlink RTM_GETADDR dump (what `ip -j addr` shows,
without spawning it), routes from /proc/net/route and /proc/net/ipv6_route.
"""
from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40
RT_SCOPE_UNIVERSE = 0
RTF_UP, RTF_REJECT = 0x0001, 0x0200
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


@dataclass(frozen=True)
class Address:
    ifname: str
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    scope: str  # global, link, host, ...
    usable: bool  # not tentative, DAD not failed


@dataclass(frozen=True)
class DefaultRoute:
    ifname: str
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    version: int


def addresses() -> list[Address]:
    """Every address the kernel holds, from one netlink dump. Raises OSError."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        seq = int.from_bytes(os.urandom(4), "little")
        s.send(struct.pack("=LHHLL", 24, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
               + struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0))
        out: list[Address] = []
        while True:
            data = s.recv(1 << 16)
            pos = 0
            while pos + 16 <= len(data):
                length, kind, _, mseq, _ = struct.unpack_from("=LHHLL", data, pos)
                if length < 16:
                    return out
                if mseq == seq:
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", data, pos + 16)[0]
                        raise OSError(err, f"netlink address dump: {os.strerror(err)}")
                    if kind == RTM_NEWADDR:
                        addr = _parse_addr(data[pos + 16:pos + length])
                        if addr is not None:
                            out.append(addr)
                pos += (length + 3) & ~3


def _parse_addr(msg: bytes) -> Address | None:
    family, plen, flags, scope, index = struct.unpack_from("=BBBBI", msg, 0)
    attrs: dict[int, bytes] = {}
    pos = 8
    while pos + 4 <= len(msg):
        alen, atype = struct.unpack_from("=HH", msg, pos)
        if alen < 4:
            break
        attrs[atype] = msg[pos + 4:pos + alen]
        pos += (alen + 3) & ~3
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    if IFA_FLAGS in attrs:
        flags = struct.unpack("=I", attrs[IFA_FLAGS][:4])[0]
    try:
        name = socket.if_indextoname(index)
    except OSError:  # gone since the dump
        return None
    host = ipaddress.ip_address(raw)
    return Address(name, ipaddress.ip_interface(f"{host}/{plen}"), SCOPES.get(scope, str(scope)),
                   not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))


def default_routes(proc: str | os.PathLike = "/proc") -> list[DefaultRoute]:
    """IPv4 and IPv6 default routes that are up, from /proc/net/route and /proc/net/ipv6_route."""
    out: list[DefaultRoute] = []
    base = Path(proc) / "net"
    try:
        lines = (base / "route").read_text().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        f = line.split()
        if len(f) < 8 or f[1] != "00000000" or f[7] != "00000000":
            continue
        flags = int(f[3], 16)
        if flags & RTF_UP and not flags & RTF_REJECT:
            gw = ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(f[2]), "little"))
            out.append(DefaultRoute(f[0], gw if int(gw) else None, 4))
    try:
        lines = (base / "ipv6_route").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        f = line.split()
        if len(f) < 10 or f[0] != "0" * 32 or f[1] != "00":
            continue
        flags = int(f[8], 16)
        if flags & RTF_UP and not flags & RTF_REJECT and f[9] != "lo":
            gw = ipaddress.IPv6Address(bytes.fromhex(f[4]))
            out.append(DefaultRoute(f[9], gw if int(gw) else None, 6))
    return out


def routable(proc: str | os.PathLike = "/proc") -> tuple[str | None, str]:
    """(what is routable, e.g. '10.0.2.15/24 on eth0 via 10.0.2.2', or None; a summary of the state)."""
    routes = default_routes(proc)
    addrs = [a for a in addresses() if a.ifname != "lo"]
    for r in routes:
        for a in addrs:
            if (a.ifname == r.ifname and a.address.version == r.version and a.scope == "global"
                    and a.usable):
                via = f" via {r.gateway}" if r.gateway else ""
                return f"{a.address} on {a.ifname}{via}", ""
    return None, describe(addrs, routes)


def describe(addrs: list[Address], routes: list[DefaultRoute]) -> str:
    """One line on why nothing is routable: each interface's addresses, and the default routes."""
    per: dict[str, list[str]] = {}
    for a in addrs:
        note = "" if a.usable else " tentative"
        per.setdefault(a.ifname, []).append(f"{a.address} {a.scope}{note}")
    ifaces = "; ".join(f"{n}: {', '.join(v)}" for n, v in sorted(per.items())) or "no address on any interface"
    rts = ", ".join(f"IPv{r.version} via {r.gateway or 'link'} on {r.ifname}" for r in routes)
    return f"{ifaces}; default routes: {rts or 'none'}"


# -- NICs in sysfs ---------------------------------------------------------------

def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str | None


def physical_nics(sysfs_root: str | os.PathLike = "/sys") -> list[Nic]:
    """Physical NICs under SYSFS/class/net (a `device` link, not lo), in natural name order."""
    base = Path(sysfs_root) / "class" / "net"
    try:
        names = os.listdir(base)
    except OSError:
        return []
    out = []
    for name in sorted(names, key=_natural):
        if name == "lo" or not os.path.lexists(base / name / "device"):
            continue  # virtual devices (bridges, veth, tun, ifb, ...) have no `device`
        try:
            mac = (base / name / "address").read_text().strip().lower()
        except OSError:
            mac = None
        out.append(Nic(name, mac or None))
    return out
