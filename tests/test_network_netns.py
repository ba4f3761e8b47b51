"""The network and network-online modules against the real systemd-networkd, in private
network and mount namespaces.

`unshare -mn` gives the guest a network namespace with its own veth pair and a
mount namespace in which a temporary directory is bind-mounted on
/etc/systemd/network and a fresh, read-only sysfs shows only the namespace's
devices (read-only sysfs: networkd does not wait for udev, which is not
running there). The other end of the veth goes to a second pair of
namespaces with a networkd of its own (DHCP server, addresses), so the
guest's kernel knows only what crosses the link, as behind a hypervisor.
Nothing reaches the host's network or files. Needs root, unshare, iproute2
and systemd-networkd; skipped otherwise.
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
networkd= peer= web=
trap 'for p in $networkd $peer $web; do kill $p; done' EXIT
start_networkd() { {networkd} >"$NETDIR/../networkd.log" 2>&1 & networkd=$!; }
# start_peer FILE: peer0 into namespaces of its own, configured by its own networkd from FILE.
start_peer() {
  mkdir -p "$NETDIR/../peer"
  cp "$1" "$NETDIR/../peer/50-peer.network"
  unshare -mn sh -c '
    set -e
    mount -t tmpfs tmpfs /run/systemd
    mkdir -p /run/systemd/netif
    chown systemd-network:systemd-network /run/systemd/netif 2>/dev/null || true
    mount --bind "$NETDIR/../peer" /etc/systemd/network
    mount -t sysfs -o ro sysfs /sys
    ip link set lo up
    touch "$NETDIR/../peer.ready"
    exec {networkd} >"$NETDIR/../peer.log" 2>&1' &
  peer=$!
  for i in $(seq 200); do [ -e "$NETDIR/../peer.ready" ] && break; sleep 0.05; done
  ip link set peer0 netns $peer
}
# serve_metadata: an HTTP server in the peer's network namespace (the metadata service).
serve_metadata() {
  mkdir -p "$NETDIR/../www/latest"
  echo "iid-netns" > "$NETDIR/../www/latest/instance-id"
  nsenter -t $peer -n "$PYTHON" -m http.server 80 --bind 0.0.0.0 --directory "$NETDIR/../www" \
    >/dev/null 2>&1 &
  web=$!
}
"""

PEER_DHCP_SERVER = """\
[Match]
Name=peer0

[Network]
Address=10.9.0.1/24
DHCPServer=yes
"""
# A DHCP server that hands out no router: an isolated network.
PEER_NO_ROUTER = PEER_DHCP_SERVER + "\n[DHCPServer]\nEmitRouter=no\n"
PEER_STATIC = "[Match]\nName=peer0\n\n[Network]\nAddress=10.9.0.1/24\n"
# The metadata service behind the link: 169.254.169.254 is the peer's (and 10.9.0.254,
# a gateway to it).
# (networkd probes a 169.254/16 address for conflicts for seconds unless told not to.)
METADATA = "\n[Address]\nAddress=169.254.169.254/32\nDuplicateAddressDetection=none\n"
PEER_METADATA_ON_LINK = PEER_NO_ROUTER + METADATA
PEER_METADATA_GATEWAY = PEER_STATIC + "Address=10.9.0.254/24\n" + METADATA
FETCH = """\
import sys, time, urllib.request
for _ in range(50):
    try:
        print(urllib.request.urlopen("http://169.254.169.254/latest/instance-id", timeout=5).read().decode().strip())
        break
    except ConnectionRefusedError:  # the server is still starting
        time.sleep(0.1)
"""
ENDPOINTS = "169.254.169.254 or fd00:ec2::254"

MODULE = """\
import json, sys, time
from cidag.testing import make_context
settings = json.loads(sys.argv[2])
if sys.argv[1] == "network":  # the host may have netplan or NetworkManager: these tests run networkd
    settings.setdefault("renderer", "networkd")
ctx, call = make_context("module", sys.argv[1], settings,
                         caps=json.loads(sys.argv[3]), root="/", timeout=float(sys.argv[4]))
start = time.monotonic()
try:
    out = {"result": call(ctx)}
except Exception as exc:
    out = {"error": str(exc)}
out.update(unprovided=ctx.unprovided, elapsed=time.monotonic() - start)
print(json.dumps(out))
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


def real_boot(tmp_path: Path, peer: str, caps: dict | None = None, online: dict | None = None,
              timeout: float = 60, fetch: bool = False) -> tuple[dict, str]:
    """As the boot goes: the network module writes the files (root /), systemd-networkd starts
    (the `network` milestone reached), then network-online decides; with `fetch`, the guest
    then asks the peer's metadata service for its instance-id. (the module's output, plus
    `fetched`; the log)."""
    netdir = tmp_path / "network"
    netdir.mkdir()
    (tmp_path / "peer.network").write_text(peer)
    (tmp_path / "fetch.py").write_text(FETCH)
    net = json.dumps({"sysfs_root": "/sys"})
    out, err = in_netns(tmp_path, netdir, f"""\
        start_peer "$NETDIR/../peer.network"
        {"serve_metadata" if fetch else ":"}
        "$PYTHON" "$MODULE" network '{net}' '{json.dumps(caps or {})}' 30 >/dev/null
        start_networkd
        "$PYTHON" "$MODULE" network-online '{json.dumps(online or {})}' '{{}}' {timeout}
        {'"$PYTHON" "$NETDIR/../fetch.py"' if fetch else "echo"}
        ip -j route show table all
        """, timeout=timeout + 60)
    result, fetched, routes = out.split("\n", 2)
    return {**json.loads(result), "fetched": fetched}, err + "\n" + routes


def default_routes(log: str) -> list[dict]:
    """The default routes in the `ip -j route show table all` at the end of the log."""
    return [r for r in json.loads(log.rsplit("\n", 2)[-2]) if r.get("dst") == "default"]


def test_dhcp_default_route_provides_network_online(tmp_path):
    """No network-config: DHCP on en*/eth* (the veth is not a physical NIC); the lease has a
    router, so the metadata service is reached through the default route."""
    out, _ = real_boot(tmp_path, PEER_DHCP_SERVER)
    assert "error" not in out, out
    online = out["result"]["network-online"]
    assert online.startswith("169.254.169.254 via 10.9.0.1 dev eth0 src 10.9.0."), online
    assert "Name=en* eth*" in (tmp_path / "network/10-cidag-fallback.network").read_text()


def test_dhcp_without_router_on_link_metadata_provides_network_online(tmp_path):
    """An isolated network: a lease without a router, and the metadata service on the link
    (an on-link route, as the config drive's network_data.json gives it)."""
    config = {"version": 2, "ethernets": {"eth0": {
        "dhcp4": True, "routes": [{"to": "169.254.169.254/32", "via": "0.0.0.0"}]}}}
    out, log = real_boot(tmp_path, PEER_METADATA_ON_LINK, caps={"network-config": config}, fetch=True)
    assert "error" not in out, out
    online = out["result"]["network-online"]
    assert online is not None and online.startswith("169.254.169.254 on-link dev eth0 src 10.9.0."), (out, log)
    assert out["fetched"] == "iid-netns"  # the route is usable: the metadata service answers
    assert default_routes(log) == [], log


def test_static_host_route_through_a_gateway_provides_network_online(tmp_path):
    """No default route, a host route to the metadata service through a gateway on the link."""
    config = {"version": 2, "ethernets": {"eth0": {
        "addresses": ["10.9.0.5/24"], "routes": [{"to": "169.254.169.254/32", "via": "10.9.0.254"}]}}}
    out, log = real_boot(tmp_path, PEER_METADATA_GATEWAY, caps={"network-config": config}, fetch=True)
    assert "error" not in out, out
    assert out["result"] == {"network-online": "169.254.169.254 via 10.9.0.254 dev eth0 src 10.9.0.5"}, log
    assert out["fetched"] == "iid-netns"  # the route is usable: the metadata service answers
    assert default_routes(log) == [], log


def test_no_route_ends_ok_at_once_without_network_online(tmp_path):
    """A lease without a router on a subnet without the metadata service: once networkd has
    configured the link, the module ends ok, network-online not provided, and says which
    route is missing; well before its settle_timeout and its timeout."""
    out, _ = real_boot(tmp_path, PEER_NO_ROUTER, online={"settle_timeout": "60s"}, timeout=90)
    assert "error" not in out, out
    assert out["result"] == {"network-online": None}
    why = out["unprovided"]["network-online"]
    assert why.startswith(f"no route to {ENDPOINTS} (eth0 10.9.0."), why
    assert "/24, no default route); networkd settled after " in why and why.endswith(": eth0 configured"), why
    assert out["elapsed"] < 30, out  # decided on networkd's word, not at settle_timeout (60 s)


def test_other_network_stack_no_route_ends_ok_after_settle_timeout(tmp_path):
    """No networkd state (another network manager): the bounded settle_timeout, then ok
    without network-online. A config naming a NIC the machine lacks is warned about at once."""
    netdir = tmp_path / "network"
    netdir.mkdir()
    sysfs = tmp_path / "sys/class/net/enp0s2"  # what the guest would call its NIC
    sysfs.mkdir(parents=True)
    (sysfs / "address").write_text("52:54:00:12:34:56\n")
    (sysfs / "device").symlink_to("../../../devices/pci0000:00/0000:00:02.0")
    settings = json.dumps({"sysfs_root": str(tmp_path / "sys")})
    caps = json.dumps({"network-config": {"version": 2, "ethernets": {"ens9": {"dhcp4": True}}}})
    (tmp_path / "peer.network").write_text(PEER_STATIC)
    out, err = in_netns(tmp_path, netdir, f"""\
        start_peer "$NETDIR/../peer.network"
        ip addr add 192.0.2.5/24 dev eth0
        ip link set eth0 up
        "$PYTHON" "$MODULE" network '{settings}' '{caps}' 30 >/dev/null
        "$PYTHON" "$MODULE" network-online '{{"settle_timeout": 1}}' '{{}}' 30
        """)
    assert "10-cidag-ens9.network matches none of this machine's NICs: enp0s2 (52:54:00:12:34:56)" in err
    result = json.loads(out)
    assert result["result"] == {"network-online": None}
    why = result["unprovided"]["network-online"]
    assert why == (f"no route to {ENDPOINTS} (eth0 192.0.2.5/24, no default route); "
                   "not settled after 1s: no /run/systemd/netif/links"), why
    assert 1 <= result["elapsed"] < 20
    assert (netdir / "10-cidag-ens9.network").exists()


def test_ipv6_only_on_link_endpoint_provides_network_online(tmp_path):
    """An IPv6-only link whose prefix holds EC2's fd00:ec2::254: the IPv4 endpoint has no
    route, the IPv6 one is on-link."""
    config = {"version": 2, "ethernets": {"eth0": {"addresses": ["fd00:ec2::5/64"], "accept-ra": False}}}
    peer = "[Match]\nName=peer0\n\n[Network]\nAddress=fd00:ec2::1/64\nIPv6AcceptRA=no\n"
    out, log = real_boot(tmp_path, peer, caps={"network-config": config})
    assert "error" not in out, out
    online = out["result"]["network-online"]
    assert online is not None and online.startswith("fd00:ec2::254 on-link dev eth0 src "), (out, log)
