"""Render the network model (netconfig.Interface) as NetworkManager keyfiles.

One /etc/NetworkManager/system-connections/cidag-KEY.nmconnection per
interface (mode 0600: NetworkManager ignores keyfiles others can read), an
ethernet connection matched by MAC (`ethernet.mac-address`), by exact name
(`connection.interface-name`) or by name patterns and driver (`[match]`). The
text is written as NetworkManager writes it back (`nmcli --offline connection
modify` gives the same keys and values: tests/test_network_renderers.py), so a
value NetworkManager would drop shows in the tests. The uuid is derived from
the id, so a rewrite of the same config is the same file. Renames (`set-name`
with a MAC) go to a systemd .link file, as with networkd: NetworkManager does
not rename NICs.
"""
from __future__ import annotations

import uuid

from .netconfig import Interface, Route
from .netrender import default_routes, gateway_for, globs, header, is_glob, of_version, route_version
from . import networkd

DIRECTORY = "etc/NetworkManager/system-connections"
PREFIX = "cidag-"
NAMESPACE = uuid.UUID("5f0c2ba5-6a4e-4b53-9a37-0d2f4c1c1d3a")  # cidag's: uuid5(NAMESPACE, key)
ANY = {4: "0.0.0.0", 6: "::"}


def connection_id(iface: Interface) -> str:
    return f"{PREFIX}{iface.key}"


def _list(values: list) -> str:
    return "".join(f"{v};" for v in values)


def _section(name: str, lines: list[str]) -> str:
    return f"[{name}]\n" + "".join(line + "\n" for line in lines)


def _route(r: Route) -> str:
    version = route_version(r)
    dest = str(r.destination) if r.destination is not None else f"{ANY[version]}/0"
    if r.metric is not None:
        return f"{dest},{r.gateway or ANY[version]},{r.metric}"
    return f"{dest},{r.gateway}" if r.gateway is not None else dest


def _ip(iface: Interface, version: int, search: bool) -> list[str]:
    """The [ipv4] or [ipv6] lines; `search`: the DNS search domains go here."""
    addresses = of_version(iface.addresses, version)
    dhcp = iface.dhcp4 if version == 4 else iface.dhcp6
    if version == 4:
        method = "auto" if dhcp else "manual" if addresses else "disabled"
    elif iface.accept_ra is False:
        method = "dhcp" if dhcp else "manual" if addresses else "disabled"
    else:  # NetworkManager's "auto" is SLAAC plus DHCPv6 as the router says: networkd's default too
        method = "auto" if dhcp or iface.accept_ra or not addresses else "manual"
    lines = [f"method={method}"]
    if method == "disabled":  # NetworkManager refuses DNS servers or routes on a disabled family
        return lines
    gateway = gateway_for(iface, version) if addresses else None
    for n, a in enumerate(addresses, 1):
        lines.append(f"address{n}={a}" + (f",{gateway}" if n == 1 and gateway else ""))
    dns = of_version(iface.dns, version)
    if dns:
        lines.append(f"dns={_list(dns)}")
    if search and iface.domains:
        lines.append(f"dns-search={_list(iface.domains)}")
    routes = [r for r in default_routes(iface) if route_version(r) == version
              and not (r.destination is None and r.gateway == gateway and r.metric is None and gateway)]
    lines += [f"route{n}={_route(r)}" for n, r in enumerate(routes, 1)]
    return lines


def render(iface: Interface, origin: str) -> str:
    """The text of the interface's keyfile."""
    connection = [f"id={connection_id(iface)}", f"uuid={uuid.uuid5(NAMESPACE, iface.key)}", "type=ethernet"]
    patterns = globs(iface)
    if len(patterns) == 1 and not is_glob(patterns[0]) and not iface.mac:
        connection.append(f"interface-name={patterns[0]}")
        patterns = []
    match = []
    if patterns:
        match.append(f"interface-name={_list(patterns)}")
    if iface.driver:
        match.append(f"driver={iface.driver};")
    ethernet = []
    if iface.mac:
        ethernet.append(f"mac-address={iface.mac.upper()}")  # as NetworkManager writes it
    if iface.mtu:
        ethernet.append(f"mtu={iface.mtu}")
    parts = [_section("connection", connection), _section("ethernet", ethernet)]
    if match:
        parts.append(_section("match", match))
    # The search domains go with IPv4 unless it is disabled (NetworkManager drops its settings then).
    v4 = bool(iface.dhcp4 or of_version(iface.addresses, 4))
    parts += [_section("ipv4", _ip(iface, 4, search=v4)), _section("ipv6", _ip(iface, 6, search=not v4))]
    return header(origin) + "\n".join(parts)


def render_files(interfaces: list[Interface], origin: str) -> dict[str, str]:
    """Path relative to the root -> text (netrender.files): the keyfiles, and .link files for renames."""
    out = {f"{DIRECTORY}/{connection_id(i)}.nmconnection": render(i, origin) for i in interfaces}
    out.update(networkd.links(interfaces, origin))
    return out
