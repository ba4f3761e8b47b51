"""Network configuration from metadata, parsed and validated into one plain model.

Three formats arrive as the `network-config` capability (docs/sources.md):

- OpenStack `network_data.json` (config drive, HTTP): `links`, `networks`, `services`;
- cloud-init/NoCloud version 1: `config: [{type: physical, ...}, {type: nameserver, ...}]`;
- version 2 (netplan-like): `ethernets: {ID: {match, dhcp4, addresses, ...}}`.

`parse(doc)` turns any of them into a list of `Interface`, each value checked
and normalised (addresses through `ipaddress`, names and MACs against strict
patterns), so what reaches a unit file can hold no newline, `=` trick or path.
Bonds, bridges and VLANs are not supported: they are left out with a warning.
Raises NetworkConfigError naming the offending key, e.g.
`links[0].ethernet_mac_address: invalid MAC address 'fa:16'`.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")  # Linux: < 16 bytes, no '/', no blanks
IFGLOB = re.compile(r"[A-Za-z0-9_.*?-]{1,32}")  # v2 match.name: a glob such as en*
DRIVER = re.compile(r"[A-Za-z0-9_.*?-]{1,64}")
FILE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the part of a file name an interface gives
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")

# OpenStack link types that are a NIC as the guest sees it (cloud-init's list).
OPENSTACK_PHYSICAL = {"bridge", "dvs", "ethernet", "hw_veb", "hyperv", "ovs", "phy", "tap",
                      "vhostuser", "vif"}


class NetworkConfigError(ValueError):
    """network-config that cannot be used; the message names the key and the value."""


@dataclass
class Route:
    destination: IPNetwork | None  # None: the default route
    gateway: IPAddress | None = None
    metric: int | None = None


@dataclass
class Interface:
    """One NIC to configure. `mac` or `name` (a glob in v2) says which; `set_name` renames it."""

    key: str  # file names: 10-cidag-KEY.network / .link
    mac: str | None = None
    name: str | None = None
    driver: str | None = None
    set_name: str | None = None
    mtu: int | None = None
    dhcp4: bool = False
    dhcp6: bool = False
    accept_ra: bool | None = None
    addresses: list[IPInterface] = field(default_factory=list)
    gateways: list[IPAddress] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: list[IPAddress] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)


@dataclass
class NetworkConfig:
    interfaces: list[Interface]
    format: str  # "openstack" | "v1" | "v2" | "disabled"
    warnings: list[str] = field(default_factory=list)


def parse(doc: Any) -> NetworkConfig:
    """Validate one network-config document (any of the three formats). Raises NetworkConfigError."""
    if not isinstance(doc, dict):
        raise NetworkConfigError(f"expected a mapping, got {type(doc).__name__}")
    if isinstance(doc.get("network"), dict) and len(doc) == 1:
        doc = doc["network"]  # cloud-init accepts the config wrapped in `network:`
    if doc.get("config") == "disabled":
        return NetworkConfig([], "disabled")
    if "links" in doc or "networks" in doc:
        cfg = _openstack(doc)
    elif doc.get("version") == 1:
        cfg = _v1(doc)
    elif doc.get("version") == 2:
        cfg = _v2(doc)
    else:
        raise NetworkConfigError(
            f"version: unknown network-config format {doc.get('version')!r} "
            "(expected version 1 or 2, or OpenStack links/networks)")
    keys = [i.key for i in cfg.interfaces]
    for k in keys:
        if keys.count(k) > 1:
            raise NetworkConfigError(f"interface {k!r} is configured twice")
    return cfg


# -- values ------------------------------------------------------------------

def _str(value: Any, where: str) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise NetworkConfigError(f"{where}: expected a string, got {type(value).__name__}")
    return str(value)


def _checked(pattern: re.Pattern, value: Any, where: str, what: str) -> str:
    text = _str(value, where)
    if not pattern.fullmatch(text) or text in (".", ".."):
        raise NetworkConfigError(f"{where}: invalid {what} {text!r}")
    return text


def ifname(value: Any, where: str) -> str:
    """A Linux interface name. Raises NetworkConfigError."""
    return _checked(IFNAME, value, where, "interface name")


def file_key(value: Any, where: str) -> str:
    return _checked(FILE_KEY, value, where, "interface id (used in a file name)")


def mac(value: Any, where: str) -> str:
    """A MAC address, lower case. Raises NetworkConfigError."""
    text = _str(value, where).strip().lower()
    if not MAC.fullmatch(text):
        raise NetworkConfigError(f"{where}: invalid MAC address {text!r}")
    return text


def ip(value: Any, where: str) -> IPAddress:
    try:
        return ipaddress.ip_address(_str(value, where).strip())
    except ValueError:
        raise NetworkConfigError(f"{where}: invalid IP address {value!r}") from None


def _prefix(mask: Any, version: int, where: str) -> int:
    """A prefix length from `24`, `'24'`, `'255.255.255.0'` or `'ffff:ffff::'`."""
    text = _str(mask, where).strip().lstrip("/")
    bits = 32 if version == 4 else 128
    if text.isdigit():
        n = int(text)
    else:
        try:
            value = int(ipaddress.ip_address(text))
        except ValueError:
            raise NetworkConfigError(f"{where}: invalid netmask {mask!r}") from None
        n = bin(value).count("1")
        if value != ((1 << bits) - 1) ^ ((1 << (bits - n)) - 1):
            raise NetworkConfigError(f"{where}: netmask {mask!r} is not contiguous")
    if not 0 <= n <= bits:
        raise NetworkConfigError(f"{where}: prefix length {n} out of range for IPv{version}")
    return n


def _with_prefix(text: str, netmask: Any, where: str) -> tuple[IPAddress, int | None]:
    """`ADDR/LEN` or `ADDR` plus a netmask: the address and its prefix length (None if neither)."""
    host, _, plen = text.partition("/")
    addr = ip(host, where)
    if plen:
        return addr, _prefix(plen, addr.version, where)
    if netmask is not None:
        return addr, _prefix(netmask, addr.version, f"{where} netmask")
    return addr, None


def interface_address(address: Any, netmask: Any, where: str, default_v6: int = 64) -> IPInterface:
    """`10.0.0.5/24`, or `10.0.0.5` with a netmask (IPv6 without one: /64)."""
    text = _str(address, where).strip()
    addr, n = _with_prefix(text, netmask, where)
    if n is None:
        if addr.version != 6:
            raise NetworkConfigError(f"{where}: IPv4 address {text!r} has no prefix length or netmask")
        n = default_v6
    return ipaddress.ip_interface(f"{addr}/{n}")


def network(dest: Any, netmask: Any, where: str) -> IPNetwork | None:
    """A route destination; None for the default route (`default`, 0.0.0.0/0, ::/0)."""
    text = _str(dest, where).strip()
    if text == "default":
        return None
    addr, n = _with_prefix(text, netmask, where)
    if n is None:
        n = addr.max_prefixlen
    try:
        net = ipaddress.ip_network(f"{addr}/{n}", strict=False)
    except ValueError:
        raise NetworkConfigError(f"{where}: invalid network {text!r}") from None
    return None if net.prefixlen == 0 else net


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise NetworkConfigError(f"{where}: expected an integer, got boolean")
    try:
        n = int(str(value).strip())
    except ValueError:
        raise NetworkConfigError(f"{where}: expected an integer, got {value!r}") from None
    if not low <= n <= high:
        raise NetworkConfigError(f"{where}: {n} is out of range {low}..{high}")
    return n


def mtu(value: Any, where: str) -> int:
    return _int(value, where, 68, 65535)


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "false", "no", "off"):
        return value.lower() in ("true", "yes", "on")
    raise NetworkConfigError(f"{where}: expected true or false, got {value!r}")


def domain(value: Any, where: str) -> str:
    text = _str(value, where).strip().rstrip(".")
    if not 0 < len(text) <= 253 or not all(LABEL.fullmatch(p) for p in text.split(".")):
        raise NetworkConfigError(f"{where}: invalid DNS search domain {text!r}")
    return text


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in re.split(r"[\s,]+", value) if v]
    if not isinstance(value, list):
        raise NetworkConfigError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _map(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise NetworkConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _route(dest: Any, netmask: Any, gateway: Any, metric: Any, where: str) -> Route:
    via = ip(gateway, f"{where}.gateway") if gateway not in (None, "") else None
    return Route(
        destination=network(dest, netmask, f"{where}.destination") if dest is not None else None,
        gateway=None if via is None or via.is_unspecified else via,  # 0.0.0.0: on-link, no gateway
        metric=_int(metric, f"{where}.metric", 0, 2**32 - 1) if metric is not None else None,
    )


DHCP4 = {"dhcp", "dhcp4", "ipv4_dhcp"}  # v1 subnet and OpenStack network types alike
DHCP6 = {"dhcp6", "ipv6_dhcp", "ipv6_dhcpv6-stateful"}
RA = {"ipv6_slaac", "ipv6_dhcpv6-stateless"}  # addresses from router advertisements


def _dynamic(iface: Interface, kind: Any) -> bool:
    """Apply a DHCP or router-advertisement type to `iface`; False when `kind` is neither."""
    if kind in DHCP4:
        iface.dhcp4 = True
    elif kind in DHCP6:
        iface.dhcp6 = True
    elif kind in RA:
        iface.accept_ra = True
    else:
        return False
    return True


def _add_unique(items: list, values: list) -> None:
    for v in values:
        if v not in items:
            items.append(v)


# -- OpenStack network_data.json ----------------------------------------------

def _openstack(doc: dict) -> NetworkConfig:
    warnings: list[str] = []
    by_id: dict[str, Interface] = {}
    for i, link in enumerate(_list(doc.get("links"), "links")):
        where = f"links[{i}]"
        link = _map(link, where)
        kind = str(link.get("type", "phy"))
        lid = file_key(link.get("id", f"link{i}"), f"{where}.id")
        if kind not in OPENSTACK_PHYSICAL:
            warnings.append(f"{where}: link type {kind!r} ({lid}) is not supported, left out")
            continue
        iface = Interface(key=lid)
        if link.get("ethernet_mac_address"):
            iface.mac = mac(link["ethernet_mac_address"], f"{where}.ethernet_mac_address")
        if link.get("name"):
            iface.set_name = ifname(link["name"], f"{where}.name")
        if iface.mac is None:
            if iface.set_name is None:
                raise NetworkConfigError(f"{where}: a link needs ethernet_mac_address or name")
            iface.name, iface.set_name = iface.set_name, None
        else:
            iface.key = file_key(iface.set_name or lid, f"{where}.name")
        if link.get("mtu") is not None:
            iface.mtu = mtu(link["mtu"], f"{where}.mtu")
        by_id[lid] = iface
    used: list[Interface] = []
    for i, net in enumerate(_list(doc.get("networks"), "networks")):
        where = f"networks[{i}]"
        net = _map(net, where)
        link_id = _str(net.get("link", ""), f"{where}.link")
        if link_id not in by_id:
            warnings.append(f"{where}: link {link_id!r} is not a supported link, network left out")
            continue
        iface = by_id[link_id]
        kind = _str(net.get("type", ""), f"{where}.type")
        if kind in ("ipv4", "ipv6"):
            if "ip_address" not in net:
                raise NetworkConfigError(f"{where}: a static network needs ip_address")
            iface.addresses.append(interface_address(net["ip_address"], net.get("netmask"), f"{where}.ip_address"))
        elif not _dynamic(iface, kind):
            raise NetworkConfigError(f"{where}.type: unknown network type {kind!r}")
        for j, r in enumerate(_list(net.get("routes"), f"{where}.routes")):
            r = _map(r, f"{where}.routes[{j}]")
            iface.routes.append(_route(r.get("network", "default"), r.get("netmask"), r.get("gateway"),
                                       r.get("metric"), f"{where}.routes[{j}]"))
        _add_unique(iface.dns, [ip(a, f"{where}.dns_nameservers") for a in _list(net.get("dns_nameservers"),
                                                                                f"{where}.dns_nameservers")])
        _add_unique(iface.dns, _dns_services(net.get("services"), f"{where}.services"))
        if iface not in used:
            used.append(iface)
    dns = _dns_services(doc.get("services"), "services")
    for iface in used:
        _add_unique(iface.dns, dns)
    for lid, iface in by_id.items():
        if iface not in used:
            warnings.append(f"link {lid}: no network uses it, left unconfigured")
    return NetworkConfig(used, "openstack", warnings)


def _dns_services(services: Any, where: str) -> list[IPAddress]:
    out = []
    for j, s in enumerate(_list(services, where)):
        s = _map(s, f"{where}[{j}]")
        if s.get("type") == "dns":
            out.append(ip(s.get("address"), f"{where}[{j}].address"))
    return out


# -- version 1 -----------------------------------------------------------------

def _v1(doc: dict) -> NetworkConfig:
    warnings: list[str] = []
    ifaces: list[Interface] = []
    by_name: dict[str, Interface] = {}
    dns: list[IPAddress] = []
    domains: list[str] = []
    pending: list[tuple[str, dict]] = []  # nameservers and routes, applied once all interfaces are known
    for i, item in enumerate(_list(doc.get("config"), "config")):
        where = f"config[{i}]"
        item = _map(item, where)
        kind = item.get("type")
        if kind == "physical":
            name = ifname(item.get("name"), f"{where}.name")
            iface = Interface(key=file_key(name, f"{where}.name"))
            if item.get("mac_address"):
                iface.mac = mac(item["mac_address"], f"{where}.mac_address")
                iface.set_name = name
            else:
                iface.name = name
            if item.get("mtu") is not None:
                iface.mtu = mtu(item["mtu"], f"{where}.mtu")
            for j, sub in enumerate(_list(item.get("subnets"), f"{where}.subnets")):
                _v1_subnet(iface, _map(sub, f"{where}.subnets[{j}]"), f"{where}.subnets[{j}]")
            ifaces.append(iface)
            by_name[name] = iface
        elif kind in ("nameserver", "route"):
            pending.append((where, item))
        else:
            warnings.append(f"{where}: type {kind!r} is not supported, left out")
    for where, item in pending:
        if item["type"] == "nameserver":
            servers = [ip(a, f"{where}.address") for a in _list(item.get("address"), f"{where}.address")]
            search = [domain(d, f"{where}.search") for d in _list(item.get("search"), f"{where}.search")]
            target = item.get("interface")
            if target is not None:
                if target not in by_name:
                    raise NetworkConfigError(f"{where}.interface: no physical interface {target!r}")
                _add_unique(by_name[target].dns, servers)
                _add_unique(by_name[target].domains, search)
            else:
                _add_unique(dns, servers)
                _add_unique(domains, search)
        else:
            route = _route(item.get("destination", item.get("network", "default")), item.get("netmask"),
                           item.get("gateway"), item.get("metric"), where)
            _owner(ifaces, route, where).routes.append(route)
    for iface in ifaces:
        _add_unique(iface.dns, dns)
        _add_unique(iface.domains, domains)
    return NetworkConfig(ifaces, "v1", warnings)


def _v1_subnet(iface: Interface, sub: dict, where: str) -> None:
    kind = sub.get("type")
    if kind in ("static", "static6"):
        if "address" not in sub:
            raise NetworkConfigError(f"{where}: a static subnet needs address")
        mask = sub.get("netmask", sub.get("prefix"))
        for addr in _list(sub["address"], f"{where}.address"):
            iface.addresses.append(interface_address(addr, mask, f"{where}.address"))
        if sub.get("gateway"):
            _add_unique(iface.gateways, [ip(sub["gateway"], f"{where}.gateway")])
    elif kind != "manual" and not _dynamic(iface, kind):
        raise NetworkConfigError(f"{where}.type: unknown subnet type {kind!r}")
    for j, r in enumerate(_list(sub.get("routes"), f"{where}.routes")):
        r = _map(r, f"{where}.routes[{j}]")
        dest = r.get("destination", r.get("network", "default"))
        iface.routes.append(_route(dest, r.get("netmask", r.get("prefix")), r.get("gateway"), r.get("metric"),
                                   f"{where}.routes[{j}]"))
    _add_unique(iface.dns, [ip(a, f"{where}.dns_nameservers")
                            for a in _list(sub.get("dns_nameservers"), f"{where}.dns_nameservers")])
    _add_unique(iface.domains, [domain(d, f"{where}.dns_search")
                                for d in _list(sub.get("dns_search"), f"{where}.dns_search")])


def _owner(ifaces: list[Interface], route: Route, where: str) -> Interface:
    """The interface a global route belongs to: the one whose subnet holds its gateway, else the first."""
    if not ifaces:
        raise NetworkConfigError(f"{where}: a route but no physical interface")
    if route.gateway is not None:
        for iface in ifaces:
            if any(route.gateway in a.network for a in iface.addresses):
                return iface
    return ifaces[0]


# -- version 2 -----------------------------------------------------------------

V2_UNSUPPORTED = ("bonds", "bridges", "vlans", "wifis", "tunnels", "vrfs", "modems")


def _v2(doc: dict) -> NetworkConfig:
    warnings = [f"{key}: not supported, left out" for key in V2_UNSUPPORTED if doc.get(key)]
    ifaces = []
    for ident, conf in _map(doc.get("ethernets") or {}, "ethernets").items():
        where = f"ethernets.{ident}"
        conf = _map(conf or {}, where)
        iface = Interface(key=file_key(ident, where))
        match = _map(conf.get("match") or {}, f"{where}.match")
        if match.get("macaddress"):
            iface.mac = mac(match["macaddress"], f"{where}.match.macaddress")
        if match.get("name"):
            iface.name = _checked(IFGLOB, match["name"], f"{where}.match.name", "interface name pattern")
        if match.get("driver"):
            iface.driver = _checked(DRIVER, match["driver"], f"{where}.match.driver", "driver name")
        if not match:
            iface.name = ifname(ident, where)
        if conf.get("set-name"):
            iface.set_name = ifname(conf["set-name"], f"{where}.set-name")
            if iface.mac is None:
                warnings.append(f"{where}.set-name: needs match.macaddress to rename, ignored")
        if conf.get("mtu") is not None:
            iface.mtu = mtu(conf["mtu"], f"{where}.mtu")
        iface.dhcp4 = _bool(conf.get("dhcp4", False), f"{where}.dhcp4")
        iface.dhcp6 = _bool(conf.get("dhcp6", False), f"{where}.dhcp6")
        if conf.get("accept-ra") is not None:
            iface.accept_ra = _bool(conf["accept-ra"], f"{where}.accept-ra")
        for j, a in enumerate(_list(conf.get("addresses"), f"{where}.addresses")):
            iface.addresses.append(interface_address(a, None, f"{where}.addresses[{j}]"))
        for key in ("gateway4", "gateway6"):
            if conf.get(key):
                _add_unique(iface.gateways, [ip(conf[key], f"{where}.{key}")])
        for j, r in enumerate(_list(conf.get("routes"), f"{where}.routes")):
            r = _map(r, f"{where}.routes[{j}]")
            if "to" not in r:
                raise NetworkConfigError(f"{where}.routes[{j}]: a route needs `to`")
            iface.routes.append(_route(r["to"], None, r.get("via"), r.get("metric"), f"{where}.routes[{j}]"))
        ns = _map(conf.get("nameservers") or {}, f"{where}.nameservers")
        iface.dns = [ip(a, f"{where}.nameservers.addresses")
                     for a in _list(ns.get("addresses"), f"{where}.nameservers.addresses")]
        iface.domains = [domain(d, f"{where}.nameservers.search")
                         for d in _list(ns.get("search"), f"{where}.nameservers.search")]
        ifaces.append(iface)
    return NetworkConfig(ifaces, "v2", warnings)
