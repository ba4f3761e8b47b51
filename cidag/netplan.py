"""Render the network model (netconfig.Interface) as one netplan file, /etc/netplan/50-cidag.yaml.

Version 2 `ethernets`, one entry per interface keyed by its id, matched by MAC
(and renamed with `set-name`), by name pattern or by driver. No `renderer:`
key: netplan's own default (networkd, or what another file of the image says,
as Ubuntu desktops say NetworkManager) stays in charge. Gateways are written as
`routes: [{to: default, via: GW}]` (netplan deprecates gateway4/gateway6), a
route without a gateway as `scope: link`. A name list such as the fallback's
`en* eth*` becomes one entry per pattern (netplan matches one glob). The file
is mode 0600: netplan warns about anything more open.
"""
from __future__ import annotations

import yaml

from .netconfig import Interface, Route
from .netrender import default_routes, globs, header, route_version

PATH = "etc/netplan/50-cidag.yaml"


def _route(r: Route) -> dict:
    out: dict = {"to": str(r.destination) if r.destination is not None else "default"}
    if r.gateway is not None:
        out["via"] = str(r.gateway)
    else:
        out["scope"] = "link"
        if r.destination is None:  # netplan reads `default` by its `via`: say the family
            out["to"] = "0.0.0.0/0" if route_version(r) == 4 else "::/0"
    if r.metric is not None:
        out["metric"] = r.metric
    return out


def _entry(iface: Interface, glob: str | None) -> dict:
    match: dict = {}
    if iface.mac:
        match["macaddress"] = iface.mac
    if glob:
        match["name"] = glob
    if iface.driver:
        match["driver"] = iface.driver
    conf: dict = {"match": match}
    if iface.set_name and iface.mac:
        conf["set-name"] = iface.set_name
    if iface.mtu:
        conf["mtu"] = iface.mtu
    conf["dhcp4"] = iface.dhcp4
    conf["dhcp6"] = iface.dhcp6
    if iface.accept_ra is not None:
        conf["accept-ra"] = iface.accept_ra
    if iface.addresses:
        conf["addresses"] = [str(a) for a in iface.addresses]
    routes = default_routes(iface)
    if routes:
        conf["routes"] = [_route(r) for r in routes]
    ns: dict = {}
    if iface.dns:
        ns["addresses"] = [str(a) for a in iface.dns]
    if iface.domains:
        ns["search"] = list(iface.domains)
    if ns:
        conf["nameservers"] = ns
    return conf


def _entries(interfaces: list[Interface]) -> list[tuple[str, Interface, str | None]]:
    """(netplan id, interface, name pattern): one per pattern, ids KEY, KEY-2, ..."""
    return [(iface.key if n == 0 else f"{iface.key}-{n + 1}", iface, glob)
            for iface in interfaces for n, glob in enumerate(globs(iface) or [None])]


def render(interfaces: list[Interface], origin: str) -> str:
    """The text of 50-cidag.yaml."""
    ethernets = {ident: _entry(iface, glob) for ident, iface, glob in _entries(interfaces)}
    doc = {"network": {"version": 2, "ethernets": ethernets}}
    return header(origin) + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def ids(interfaces: list[Interface]) -> list[str]:
    """The netplan ids the file defines (netplan names its output files after them)."""
    return [ident for ident, _, _ in _entries(interfaces)]


def render_files(interfaces: list[Interface], origin: str) -> dict[str, str]:
    """Path relative to the root -> text (netrender.files)."""
    return {PATH: render(interfaces, origin)}
