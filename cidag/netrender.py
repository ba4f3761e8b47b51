"""Which network renderer an image uses, and what the renderers share.

Four renderers write the parsed model (netconfig.Interface) in the format of a
network stack: `networkd` (networkd.py), `netplan` (netplan.py),
`network-manager` (nmkeyfile.py) and `eni` (eni.py, ifupdown). `detect(root)`
picks one from what the target root holds, looking only at a few paths with
lstat (no process, nothing of the host when --root is not /), in this order
(docs/modules.md says why):

1. `netplan`: the netplan command and /etc/netplan (netplan then drives
   networkd or NetworkManager itself);
2. `network-manager`: NetworkManager installed and its unit enabled;
3. `networkd`: systemd-networkd's unit enabled;
4. `eni`: ifup installed and /etc/network/interfaces present;
5. `networkd` otherwise.

`files(name, interfaces, origin)` is every file the renderer writes, as paths
relative to the root; `OWNED` says which names in which directories are
cidag's, so files of an earlier run (or of another renderer) can be removed.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from . import paths
from .netconfig import Interface, IPAddress, Route

NAMES = ("networkd", "netplan", "network-manager", "eni")
MODULES = {"networkd": "networkd", "netplan": "netplan", "network-manager": "nmkeyfile", "eni": "eni"}


@dataclass(frozen=True)
class Owned:
    """cidag's files in one directory: names that start with `prefix` and end with one of `suffixes`."""

    directory: str
    prefix: str
    suffixes: tuple[str, ...]

    def ours(self, name: str) -> bool:
        return name.startswith(self.prefix) and name.endswith(self.suffixes)


NETWORKD_DIR = "etc/systemd/network"
# Where each renderer puts its configuration (the .link files for renames go to NETWORKD_DIR).
RENDERER_DIRS = {"networkd": NETWORKD_DIR, "netplan": "etc/netplan",
                 "network-manager": "etc/NetworkManager/system-connections", "eni": "etc/network/interfaces.d"}
OWNED = (
    Owned(NETWORKD_DIR, "10-cidag-", (".network", ".link")),
    Owned(RENDERER_DIRS["netplan"], "50-cidag.", (".yaml",)),
    Owned(RENDERER_DIRS["network-manager"], "cidag-", (".nmconnection",)),
    Owned(RENDERER_DIRS["eni"], "50-cidag", ("50-cidag",)),
)
# netplan and NetworkManager refuse or warn about configuration others can read (it may hold secrets).
MODES = {"netplan": 0o600, "network-manager": 0o600}

SBIN = ("usr/sbin", "sbin", "usr/bin", "bin")
UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")


def header(origin: str) -> str:
    """The first line of every file: who wrote it and from what (network.py reads it back)."""
    return f"# Written by cidag (network module) from {origin}; edits are overwritten.\n"


def globs(iface: Interface) -> list[str]:
    """The interface's name patterns (the fallback has two: `en* eth*`)."""
    return iface.name.split() if iface.name else []


def is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def route_version(route: Route) -> int:
    """4 or 6: the destination's family, else the gateway's (an on-link default: 4)."""
    if route.destination is not None:
        return route.destination.version
    return route.gateway.version if route.gateway is not None else 4


def default_routes(iface: Interface) -> list[Route]:
    """The interface's gateways as default routes, then its routes, without repeats."""
    out: list[Route] = []
    for r in [Route(None, g) for g in iface.gateways] + iface.routes:
        if r not in out:
            out.append(r)
    return out


def of_version(items: list, version: int) -> list:
    return [a for a in items if a.version == version]


def gateway_for(iface: Interface, version: int) -> IPAddress | None:
    found = of_version(iface.gateways, version)
    return found[0] if found else None


# -- choosing ------------------------------------------------------------------

def _exists(root: str, rel: str) -> bool:
    return os.path.lexists(os.path.join(root, rel))


def _installed(root: str, command: str) -> bool:
    return any(_exists(root, f"{d}/{command}") for d in SBIN)


def enabled(root: str, unit: str) -> bool:
    """The unit is enabled in the root: a link to it in some *.wants/ directory, and not masked."""
    masked = os.path.join(root, "etc/systemd/system", unit)
    if os.path.islink(masked) and os.readlink(masked) == "/dev/null":
        return False
    for d in UNIT_DIRS:
        try:
            with os.scandir(os.path.join(root, d)) as it:
                wants = [e.name for e in it if e.name.endswith((".wants", ".requires"))]
        except OSError:
            continue
        if any(_exists(root, f"{d}/{w}/{unit}") for w in wants):
            return True
    return False


def detect(root: str) -> tuple[str, str]:
    """(renderer, why) for the image in `root` (see the module docstring for the order)."""
    if _installed(root, "netplan") and os.path.isdir(os.path.join(root, "etc/netplan")):
        return "netplan", "netplan is installed (/etc/netplan)"
    if _installed(root, "NetworkManager") and enabled(root, "NetworkManager.service"):
        return "network-manager", "NetworkManager.service is enabled"
    if enabled(root, "systemd-networkd.service"):
        return "networkd", "systemd-networkd.service is enabled"
    if _installed(root, "ifup") and os.path.isfile(os.path.join(root, "etc/network/interfaces")):
        return "eni", "ifupdown is installed (/etc/network/interfaces)"
    return "networkd", "no other network stack found"


def files(name: str, interfaces: list[Interface], origin: str) -> dict[str, str]:
    """Path relative to the root -> text, for every file renderer `name` writes."""
    module = importlib.import_module(f".{MODULES[name]}", __package__)
    return module.render_files(interfaces, origin)


def owned_files(root: str) -> list[str]:
    """cidag's network files present under `root`, as paths relative to it, whichever renderer wrote them."""
    out = []
    for owned in OWNED:
        try:
            names = os.listdir(paths.confine(root, owned.directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        out += [f"{owned.directory}/{n}" for n in sorted(names) if owned.ours(n)]
    return out
