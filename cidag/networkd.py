"""Render the network model (netconfig.Interface) as systemd-networkd files.

One `10-cidag-KEY.network` per interface (matched by MAC address when the
metadata gives one, else by name), and a `10-cidag-KEY.link` when the
metadata asks for a name on a NIC known by its MAC (udev applies it when the
NIC appears, so from the next boot on; the `.network` matches the MAC, so the
first boot does not depend on it). The `10-` prefix sorts before the
distribution's catch-all files (networkd uses the first file that matches).
Every value written comes out of `netconfig` already validated.
"""
from __future__ import annotations

from .netconfig import Interface
from .netrender import NETWORKD_DIR, header as _header

PREFIX = "10-cidag-"
FALLBACK_KEY = "fallback"


def _section(name: str, lines: list[str]) -> str:
    return f"[{name}]\n" + "".join(line + "\n" for line in lines) if lines else ""


def _match(iface: Interface) -> list[str]:
    lines = []
    if iface.mac:
        lines.append(f"MACAddress={iface.mac}")
    if iface.name:
        lines.append(f"Name={iface.name}")
    if iface.driver:
        lines.append(f"Driver={iface.driver}")
    return lines


def _dhcp(iface: Interface) -> str:
    if iface.dhcp4 and iface.dhcp6:
        return "yes"
    return "ipv4" if iface.dhcp4 else "ipv6" if iface.dhcp6 else "no"


def render_network(iface: Interface, origin: str) -> str:
    """The text of the interface's .network file."""
    network = [f"DHCP={_dhcp(iface)}"]
    if iface.accept_ra is not None:
        network.append(f"IPv6AcceptRA={'yes' if iface.accept_ra else 'no'}")
    network += [f"Address={a}" for a in iface.addresses]
    network += [f"Gateway={g}" for g in iface.gateways]
    network += [f"DNS={d}" for d in iface.dns]
    if iface.domains:
        network.append("Domains=" + " ".join(iface.domains))
    parts = [_header(origin), _section("Match", _match(iface))]
    if iface.mtu:
        parts.append(_section("Link", [f"MTUBytes={iface.mtu}"]))
    parts.append(_section("Network", network))
    for r in iface.routes:
        lines = []
        if r.destination is not None:
            lines.append(f"Destination={r.destination}")
        if r.gateway is not None:
            lines.append(f"Gateway={r.gateway}")
        if r.metric is not None:
            lines.append(f"Metric={r.metric}")
        parts.append(_section("Route", lines))
    return parts[0] + "\n".join(p for p in parts[1:] if p)


def render_link(iface: Interface, origin: str) -> str | None:
    """The text of the interface's .link file (a rename by MAC), or None when none is needed."""
    if not (iface.set_name and iface.mac):
        return None
    return _header(origin) + _section("Match", [f"MACAddress={iface.mac}"]) + "\n" + _section(
        "Link", [f"Name={iface.set_name}"])


def render(interfaces: list[Interface], origin: str) -> dict[str, str]:
    """File name -> text for every file the interfaces need."""
    files: dict[str, str] = {}
    for iface in interfaces:
        files[f"{PREFIX}{iface.key}.network"] = render_network(iface, origin)
        link = render_link(iface, origin)
        if link is not None:
            files[f"{PREFIX}{iface.key}.link"] = link
    return files


def links(interfaces: list[Interface], origin: str) -> dict[str, str]:
    """The .link files that rename NICs by MAC (udev reads them whichever manager configures the NIC)."""
    out = {}
    for iface in interfaces:
        link = render_link(iface, origin)
        if link is not None:
            out[f"{NETWORKD_DIR}/{PREFIX}{iface.key}.link"] = link
    return out


def render_files(interfaces: list[Interface], origin: str) -> dict[str, str]:
    """Path relative to the root -> text (netrender.files)."""
    return {f"{NETWORKD_DIR}/{name}": text for name, text in render(interfaces, origin).items()}
