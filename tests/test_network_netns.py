"""The network module against the real systemd-networkd, in a private network and mount namespace.

`unshare -mn` gives a network namespace with its own veth pair and a mount
namespace in which a temporary directory is bind-mounted on
/etc/systemd/network and a fresh, read-only sysfs shows only the namespace's
devices (read-only sysfs: networkd does not wait for udev, which is not
running there). Nothing reaches the host's network or files. Needs root,
unshare, iproute2 and systemd-networkd; skipped otherwise.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cidag.testing import make_context

REPO = Path(__file__).resolve().parent.parent
NETWORKD = next((p for p in ("/lib/systemd/systemd-networkd", "/usr/lib/systemd/systemd-networkd")
                 if os.path.exists(p)), None)



def _can_unshare() -> bool:
    """Root in a container without CAP_SYS_ADMIN (Docker's default) cannot make namespaces."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = "mount --make-rprivate / && mount -t tmpfs tmpfs /mnt && ip link add x0 type veth peer name x1"
    return subprocess.run(["unshare", "-mn", "sh", "-c", probe], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(
    NETWORKD is None or not shutil.which("ip") or not os.path.isdir("/etc/systemd/network")
    or not _can_unshare(),
    reason="needs root allowed to unshare (mount and network namespaces, veth), iproute2, "
           "systemd-networkd and /etc/systemd/network")

SETUP = """\
set -eu
mount --make-rprivate /
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/netif
chown systemd-network:systemd-network /run/systemd/netif 2>/dev/null || true
mount --bind "$NETDIR" /etc/systemd/network
mount -t sysfs -o ro sysfs /sys
ip link set lo up
ip link add eth0 address 52:54:00:12:34:56 type veth peer name peer0
ip link set peer0 up  # carrier on eth0: networkd configures a link only once it has one
networkd=
trap '[ -z "$networkd" ] || kill $networkd' EXIT
start_networkd() { {networkd} >"$NETDIR/../networkd.log" 2>&1 & networkd=$!; }
"""

PEER_DHCP_SERVER = """\
[Match]
Name=peer0

[Network]
Address=10.9.0.1/24
DHCPServer=yes
"""

MODULE = """\
import json, sys
from cidag.testing import make_context
ctx, call = make_context("module", "network", json.loads(sys.argv[1]),
                         caps=json.loads(sys.argv[2]), root="/", timeout=float(sys.argv[3]))
try:
    print(json.dumps(call(ctx)))
except Exception as exc:
    print(json.dumps({"error": str(exc)}))
"""


def in_netns(tmp_path: Path, netdir: Path, body: str, timeout: float = 60) -> tuple[str, str]:
    """Run `body` after SETUP in a new network and mount namespace; (stdout, stderr)."""
    script = tmp_path / "netns.sh"
    script.write_text(SETUP.replace("{networkd}", NETWORKD) + textwrap.dedent(body))
    (tmp_path / "module.py").write_text(MODULE)
    env = dict(os.environ, NETDIR=str(netdir), PYTHON=sys.executable, MODULE=str(tmp_path / "module.py"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    res = subprocess.run(["unshare", "-mn", "sh", str(script)], capture_output=True, text=True,
                         env=env, timeout=timeout)
    log = (tmp_path / "networkd.log").read_text() if (tmp_path / "networkd.log").exists() else ""
    assert res.returncode == 0, res.stdout + res.stderr + log
    return res.stdout, res.stderr


def test_networkd_applies_the_rendered_static_config(tmp_path):
    """Rendered on a temp root, then read by the real networkd: addresses, routes, MTU as configured."""
    config = yaml.safe_load("""
        version: 1
        config:
          - type: physical
            name: eth0
            mac_address: "52:54:00:12:34:56"
            mtu: 9000
            subnets:
              - {type: static, address: 192.168.1.10/24, gateway: 192.168.1.1}
              - {type: static6, address: "2001:db8::10/64"}
          - type: route
            destination: 172.16.0.0/12
            gateway: 192.168.1.254
            metric: 50
        """)
    root = tmp_path / "root"
    ctx, call = make_context("module", "network", {"sysfs_root": str(tmp_path / "none")},
                             caps={"network-config": config}, root=root)
    call(ctx)
    out, _ = in_netns(tmp_path, root / "etc/systemd/network", """\
        start_networkd
        for i in $(seq 100); do
          ip -4 route show 172.16.0.0/12 | grep -q . && break; sleep 0.1
        done
        ip -j addr show eth0
        echo ---
        ip -j route show
        """)
    addr_json, route_json = out.split("---\n")
    link = json.loads(addr_json)[0]
    assert link["mtu"] == 9000
    assert {(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["scope"] == "global"} == {
        ("192.168.1.10", 24), ("2001:db8::10", 64)}
    routes = {(r["dst"], r.get("gateway"), r.get("metric")) for r in json.loads(route_json)}
    assert ("default", "192.168.1.1", None) in routes
    assert ("172.16.0.0/12", "192.168.1.254", 50) in routes


def test_real_boot_fallback_dhcp_then_network_online(tmp_path):
    """The module as on a real boot (root /): no network-config, so DHCP on en*/eth* (the veth is
    not a physical NIC); networkd starts once the file is there, gets a lease from the peer's
    DHCP server, and the module provides network-online from the kernel's state."""
    netdir = tmp_path / "network"
    netdir.mkdir()
    (netdir / "50-peer.network").write_text(PEER_DHCP_SERVER)
    out, _ = in_netns(tmp_path, netdir, """\
        "$PYTHON" "$MODULE" '{"sysfs_root": "/sys"}' '{}' 30 > "$NETDIR/../result.json" &
        module=$!
        for i in $(seq 100); do [ -e /etc/systemd/network/10-cidag-fallback.network ] && break; sleep 0.1; done
        start_networkd
        wait $module
        cat "$NETDIR/../result.json"
        """)
    result = json.loads(out)
    assert "error" not in result, result
    online = result["network-online"]
    assert online.startswith("10.9.0.") and online.endswith(" on eth0 via 10.9.0.1"), online
    assert "Name=en* eth*" in (netdir / "10-cidag-fallback.network").read_text()
    assert (netdir / "50-peer.network").read_text() == PEER_DHCP_SERVER  # not ours: untouched


def test_real_boot_never_routable_fails_with_the_state(tmp_path):
    """A config naming a NIC the machine lacks: a warning at once, then the timeout's reason
    lists what the kernel has."""
    netdir = tmp_path / "network"
    netdir.mkdir()
    sysfs = tmp_path / "sys/class/net/enp0s2"  # what the guest would call its NIC
    sysfs.mkdir(parents=True)
    (sysfs / "address").write_text("52:54:00:12:34:56\n")
    (sysfs / "device").symlink_to("../../../devices/pci0000:00/0000:00:02.0")
    settings = json.dumps({"sysfs_root": str(tmp_path / "sys")})
    caps = json.dumps({"network-config": {"version": 2, "ethernets": {"ens9": {"dhcp4": True}}}})
    out, err = in_netns(tmp_path, netdir, f"""\
        ip addr add 192.0.2.5/24 dev eth0
        ip link set eth0 up
        "$PYTHON" "$MODULE" '{settings}' '{caps}' 2
        """)
    assert "10-cidag-ens9.network matches none of this machine's NICs: enp0s2 (52:54:00:12:34:56)" in err
    error = json.loads(out)["error"]
    assert error.startswith("no routable address after "), error
    assert "eth0: 192.0.2.5/24 global" in error and "default routes: none" in error
    assert (netdir / "10-cidag-ens9.network").exists()
