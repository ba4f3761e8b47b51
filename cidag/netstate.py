"""What the kernel says about the network: NICs in sysfs, addresses, routes.

Read-only. `reach(endpoints)` answers "can this machine send to one of these
addresses?" with the kernel's own route lookup (RTM_GETROUTE, what `ip route
get ADDR` shows, without spawning it): a unicast route out of an interface
other than `lo` (on-link, a host route via a gateway, or a default route) and a
usable source address (held by the machine, not tentative, not failed
duplicate address detection). Through a gateway the source must be of global
scope: an fe80:: or IPv4LL 169.254/16 address cannot be answered beyond its
link. A 169.254.x address a DHCP server hands out (QEMU's user network with
`net=169.254.0.0/16`) is global. Addresses come from a netlink RTM_GETADDR dump
(what `ip -j addr` shows), default routes (for the summary of what is missing)
from /proc/net/route and /proc/net/ipv6_route.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_GETROUTE = 20, 22, 24, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x08, 0x40
RT_SCOPE_UNIVERSE = 0
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC = 1, 4, 5, 7
RTN_UNICAST = 1
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


def _netlink(kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
    """One rtnetlink request: the (type, payload) of each answer until the end of a dump or
    the single answer. Raises OSError (an error answer, e.g. ENETUNREACH for a route)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        seq = int.from_bytes(os.urandom(4), "little")
        s.send(struct.pack("=LHHLL", 16 + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = s.recv(1 << 16)
            pos = 0
            while pos + 16 <= len(data):
                length, mtype, _, mseq, _ = struct.unpack_from("=LHHLL", data, pos)
                if length < 16:
                    return out
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", data, pos + 16)[0]
                        if err == 0:  # an acknowledgement
                            return out
                        raise OSError(err, os.strerror(err))
                    out.append((mtype, data[pos + 16:pos + length]))
                    if not flags & NLM_F_DUMP:
                        return out
                pos += (length + 3) & ~3


def _attrs(msg: bytes, pos: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while pos + 4 <= len(msg):
        alen, atype = struct.unpack_from("=HH", msg, pos)
        if alen < 4:
            break
        attrs[atype & 0x3fff] = msg[pos + 4:pos + alen]
        pos += (alen + 3) & ~3
    return attrs


def addresses() -> list[Address]:
    """Every address the kernel holds, from one netlink dump. Raises OSError."""
    try:
        answers = _netlink(RTM_GETADDR, NLM_F_DUMP, struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0))
    except OSError as exc:
        raise OSError(exc.errno, f"netlink address dump: {exc.strerror}") from None
    out = []
    for mtype, msg in answers:
        addr = _parse_addr(msg) if mtype == RTM_NEWADDR else None
        if addr is not None:
            out.append(addr)
    return out


def _parse_addr(msg: bytes) -> Address | None:
    family, plen, flags, scope, index = struct.unpack_from("=BBBBI", msg, 0)
    attrs = _attrs(msg, 8)
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


@dataclass(frozen=True)
class Route:
    """The kernel's answer to `ip route get DESTINATION`."""

    destination: ipaddress.IPv4Address | ipaddress.IPv6Address
    ifname: str | None
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    source: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # the kernel's preferred source
    kind: int  # RTN_*: 1 unicast, 2 local, 6 blackhole, 7 unreachable, 8 prohibit

    def __str__(self) -> str:
        via = f"via {self.gateway}" if self.gateway else "on-link"
        src = f" src {self.source}" if self.source else ""
        return f"{self.destination} {via} dev {self.ifname}{src}"


def route_to(destination: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Route | None:
    """The route the kernel would use to `destination`; None when it has none (unreachable).
    Raises OSError for other netlink errors."""
    dst = ipaddress.ip_address(destination)
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    raw = dst.packed
    body = (struct.pack("=BBBBBBBBI", family, 8 * len(raw), 0, 0, 0, 0, 0, 0, 0)
            + struct.pack("=HH", 4 + len(raw), RTA_DST) + raw)
    try:
        answers = _netlink(RTM_GETROUTE, 0, body)
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EINVAL):
            return None  # unreachable, prohibit, or no source address the kernel could use
        raise
    for mtype, msg in answers:
        if mtype != RTM_NEWROUTE:
            continue
        kind = msg[7]
        attrs = _attrs(msg, 12)
        ifname = None
        if RTA_OIF in attrs:
            try:
                ifname = socket.if_indextoname(struct.unpack("=I", attrs[RTA_OIF][:4])[0])
            except OSError:
                pass  # gone since the answer
        gw = ipaddress.ip_address(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
        src = ipaddress.ip_address(attrs[RTA_PREFSRC]) if RTA_PREFSRC in attrs else None
        return Route(dst, ifname, gw, src, kind)
    return None


def reach(endpoints: list[str]) -> tuple[Route | None, str]:
    """(the first usable route to one of `endpoints`, or None; when None, one line on why:
    each endpoint's route and what is missing, the interfaces' addresses, the default routes)."""
    addrs = addresses()
    held = {a.address.ip: a for a in addrs}
    why = []
    for ep in endpoints:
        r = route_to(ep)
        if r is None or r.kind != RTN_UNICAST:
            continue
        if r.ifname in (None, "lo"):
            continue
        src = held.get(r.source) if r.source is not None else None
        if src is None:
            why.append(f"{r} has no source address")
        elif not src.usable:
            why.append(f"{r}: source address tentative")
        elif r.gateway is not None and src.scope != "global":
            why.append(f"{r}: {src.scope}-scope source through a gateway")
        else:
            return r, ""
    return None, "; ".join(why + [summary(addrs, default_routes())])


def summary(addrs: list[Address], routes: list[DefaultRoute]) -> str:
    """What a user checks first: each interface's addresses and the default routes,
    e.g. 'eth0 10.0.0.5/24, no default route'."""
    per: dict[str, list[str]] = {}
    for a in addrs:
        if a.ifname == "lo":
            continue
        shown = per.setdefault(a.ifname, [])
        if a.scope not in ("link", "host"):
            shown.append(f"{a.address}" + ("" if a.usable else " tentative"))
    ifaces = ", ".join(f"{name} {' '.join(shown) or 'link-local only'}"
                       for name, shown in sorted(per.items(), key=lambda kv: _natural(kv[0])))
    rts = ", ".join(f"default via {r.gateway or 'link'} dev {r.ifname}" for r in routes)
    return f"{ifaces or 'no address but on lo'}, {rts or 'no default route'}"


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
