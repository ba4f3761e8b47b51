"""Render the network model (netconfig.Interface) as ifupdown's /etc/network/interfaces.d/50-cidag.

One `auto` line and `iface` stanzas per interface. A NIC known by its MAC is
picked with ifupdown's pattern `auto mac/MAC=LOGICAL` (whatever its kernel
name), one known by name patterns with `auto /en*=LOGICAL /eth*=LOGICAL`; the
logical name is the `set-name` or the interface's id. One stanza per address
(ifupdown applies every stanza of an interface), the gateway in the first
static stanza of its family, other routes as `post-up ip route add` in the
first stanza of their family, the MTU as `pre-up ip link set ... mtu`
(ifupdown's `mtu` option exists only for static stanzas). `dns-nameservers`
and `dns-search` take effect where resolvconf is installed, as with
cloud-init. Renames go to a systemd .link file, as with networkd.

The file has no extension: `source-directory` only reads names made of
letters, digits, `_` and `-` (run-parts' rule). /etc/network/interfaces must
include the directory (`sourced()`), as Debian's does.
"""
from __future__ import annotations

import re

from .netconfig import Interface, Route
from .netrender import default_routes, gateway_for, globs, header, is_glob, of_version, route_version
from . import networkd

PATH = "etc/network/interfaces.d/50-cidag"
INTERFACES = "etc/network/interfaces"
# What Debian's ifupdown installs; written when the root has no /etc/network/interfaces at all.
DEFAULT_INTERFACES = ("# interfaces(5) file used by ifup(8) and ifdown(8)\n"
                      "# Include files from /etc/network/interfaces.d:\n"
                      "source /etc/network/interfaces.d/*\n")
SOURCE = re.compile(r"^\s*(source\s+(/etc/network/)?interfaces\.d/(\*|50-cidag)"
                    r"|source-directory\s+(/etc/network/)?interfaces\.d/?)\s*$", re.M)
METHODS = {4: "inet", 6: "inet6"}


def sourced(text: str) -> bool:
    """/etc/network/interfaces (its text) reads interfaces.d/50-cidag."""
    return SOURCE.search(text) is not None


def logical_name(iface: Interface) -> str:
    patterns = globs(iface)
    if not iface.mac and len(patterns) == 1 and not is_glob(patterns[0]):
        return patterns[0]  # a plain kernel name: ifup it by that name
    return iface.set_name or iface.key


def _auto(iface: Interface, name: str) -> str:
    if iface.mac:
        return f"auto mac/{iface.mac}={name}"
    patterns = globs(iface)
    if patterns == [name]:
        return f"auto {name}"
    return "auto " + " ".join(f"/{p}={name}" for p in patterns)


def _route_cmd(r: Route, verb: str) -> str:
    dest = str(r.destination) if r.destination is not None else "default"
    cmd = f"ip -{route_version(r)} route {verb} {dest}"
    if r.gateway is not None:
        cmd += f" via {r.gateway}"
    cmd += " dev $IFACE"
    return cmd + (f" metric {r.metric}" if r.metric is not None else "")


def _stanzas(iface: Interface, name: str) -> list[tuple[int, list[str], str]]:
    """(family, option lines, head line) for every stanza, in order."""
    out: list[tuple[int, list[str], str]] = []
    for version in (4, 6):
        dhcp = iface.dhcp4 if version == 4 else iface.dhcp6
        head = f"iface {name} {METHODS[version]}"
        if dhcp:
            out.append((version, [], f"{head} dhcp"))
        elif version == 6 and iface.accept_ra and not of_version(iface.addresses, 6):
            out.append((version, [], f"{head} auto"))
        gateway = gateway_for(iface, version)
        for a in of_version(iface.addresses, version):
            lines = [f"address {a}"]
            if gateway is not None:
                lines.append(f"gateway {gateway}")
                gateway = None
            out.append((version, lines, f"{head} static"))
    if not out:
        out.append((4, [], f"iface {name} inet manual"))
    return out


def render_interface(iface: Interface) -> str:
    """The `auto` line and stanzas of one interface."""
    name = logical_name(iface)
    stanzas = _stanzas(iface, name)
    first = stanzas[0][1]
    if iface.mtu:
        first.insert(0, f"pre-up ip link set dev $IFACE mtu {iface.mtu}")
    if iface.dns:
        first.append("dns-nameservers " + " ".join(str(d) for d in iface.dns))
    if iface.domains:
        first.append("dns-search " + " ".join(iface.domains))
    written = {str(g) for _, lines, _ in stanzas for g in lines if g.startswith("gateway ")}
    for r in default_routes(iface):
        if r.destination is None and r.metric is None and f"gateway {r.gateway}" in written:
            continue
        lines = next((s[1] for s in stanzas if s[0] == route_version(r)), first)
        lines += [f"post-up {_route_cmd(r, 'add')}", f"pre-down {_route_cmd(r, 'del')} || true"]
    text = _auto(iface, name) + "\n"
    for _, lines, head in stanzas:
        text += head + "\n" + "".join(f"    {line}\n" for line in lines)
    return text


def render(interfaces: list[Interface], origin: str) -> str:
    """The text of interfaces.d/50-cidag."""
    return header(origin) + "\n".join(render_interface(i) for i in interfaces)


def render_files(interfaces: list[Interface], origin: str) -> dict[str, str]:
    """Path relative to the root -> text (netrender.files): the file, and .link files for renames."""
    return {PATH: render(interfaces, origin), **networkd.links(interfaces, origin)}
