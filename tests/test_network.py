"""The network module: network-config rendered as systemd-networkd files on a temporary root,
hostile metadata refused, the fallback NIC from a fake sysfs, the routable check against this
machine's kernel (read-only), and the shipped manifests' config drive -> network -> HTTP order."""
from __future__ import annotations

import ipaddress
import os
import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from cidag import netstate
from cidag.engine import RunOptions, load_and_compile, run
from cidag.testing import make_context

NET = "etc/systemd/network"

OPENSTACK = {
    "links": [
        {"id": "tap0", "type": "phy", "ethernet_mac_address": "FA:16:3E:00:00:01", "mtu": 1450},
        {"id": "tap1", "type": "ovs", "ethernet_mac_address": "fa:16:3e:00:00:02", "name": "eth1"},
        {"id": "bond0", "type": "bond", "bond_links": ["tap0", "tap1"]},
    ],
    "networks": [
        {"id": "n0", "type": "ipv4", "link": "tap0", "ip_address": "10.0.0.5", "netmask": "255.255.255.0",
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"},
                    {"network": "192.168.0.0", "netmask": "255.255.0.0", "gateway": "10.0.0.254"}]},
        {"id": "n1", "type": "ipv6", "link": "tap0", "ip_address": "2001:db8::5",
         "netmask": "ffff:ffff:ffff:ffff::",
         "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}]},
        {"id": "n2", "type": "ipv4_dhcp", "link": "tap1"},
    ],
    "services": [{"type": "dns", "address": "8.8.8.8"}, {"type": "ntp", "address": "10.0.0.9"}],
}

V1 = yaml.safe_load("""
version: 1
config:
  - type: physical
    name: eth0
    mac_address: "52:54:00:12:34:56"
    mtu: 9000
    subnets:
      - type: static
        address: 192.168.1.10/24
        gateway: 192.168.1.1
        dns_nameservers: [192.168.1.2]
        dns_search: [corp.example]
      - type: dhcp6
  - type: physical
    name: ens4
    subnets: [{type: dhcp}]
  - type: nameserver
    address: [1.1.1.1, 2606:4700:4700::1111]
    search: [example.com]
  - type: route
    destination: 172.16.0.0/12
    gateway: 192.168.1.254
    metric: 50
  - type: bond
    name: bond0
""")

V2 = yaml.safe_load("""
network:
  version: 2
  ethernets:
    primary:
      match: {macaddress: "52:54:00:ab:cd:ef"}
      set-name: eth0
      addresses: [10.1.0.20/16, "2001:db8:1::20/64"]
      gateway4: 10.1.0.1
      gateway6: "2001:db8:1::1"
      routes: [{to: 10.2.0.0/16, via: 10.1.0.254, metric: 10}]
      nameservers: {addresses: [10.1.0.2], search: [lab.example, example.org]}
    wired:
      match: {name: "en*"}
      dhcp4: true
      dhcp6: yes
    eth9: {dhcp4: true}
  vlans:
    v100: {id: 100, link: primary}
""")


def render(tmp_path: Path, config, **settings) -> tuple[Path, dict | None]:
    root = tmp_path / "root"
    settings.setdefault("sysfs_root", str(tmp_path / "no-sysfs"))
    ctx, call = make_context("module", "network", settings,
                             caps={} if config is None else {"network-config": config}, root=root)
    return root, call(ctx)


def files(root: Path) -> dict[str, str]:
    d = root / NET
    return {p.name: p.read_text() for p in sorted(d.iterdir())} if d.exists() else {}


def body(text: str) -> str:
    """A file without its header comment."""
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


def test_openstack_network_data_rendered(tmp_path):
    root, out = render(tmp_path, OPENSTACK)
    got = files(root)
    assert set(got) == {"10-cidag-tap0.network", "10-cidag-eth1.network", "10-cidag-eth1.link"}
    assert got["10-cidag-tap0.network"].startswith(
        "# Written by cidag (network module) from network-config (OpenStack network_data.json)")
    assert body(got["10-cidag-tap0.network"]) == textwrap.dedent("""\
        [Match]
        MACAddress=fa:16:3e:00:00:01

        [Link]
        MTUBytes=1450

        [Network]
        DHCP=no
        Address=10.0.0.5/24
        Address=2001:db8::5/64
        DNS=8.8.8.8

        [Route]
        Gateway=10.0.0.1

        [Route]
        Destination=192.168.0.0/16
        Gateway=10.0.0.254

        [Route]
        Gateway=2001:db8::1
        """)
    assert body(got["10-cidag-eth1.network"]) == "[Match]\nMACAddress=fa:16:3e:00:00:02\n\n[Network]\nDHCP=ipv4\nDNS=8.8.8.8\n"
    # A name on a NIC known by its MAC: udev renames it (from the next boot on).
    assert body(got["10-cidag-eth1.link"]) == "[Match]\nMACAddress=fa:16:3e:00:00:02\n\n[Link]\nName=eth1\n"
    assert (root / NET / "10-cidag-tap0.network").stat().st_mode & 0o777 == 0o644
    assert out is None  # provides nothing: the network-online module says when the network is up


def test_version_1_rendered(tmp_path):
    root, _ = render(tmp_path, V1)
    got = files(root)
    assert set(got) == {"10-cidag-eth0.network", "10-cidag-eth0.link", "10-cidag-ens4.network"}
    assert body(got["10-cidag-eth0.network"]) == textwrap.dedent("""\
        [Match]
        MACAddress=52:54:00:12:34:56

        [Link]
        MTUBytes=9000

        [Network]
        DHCP=ipv6
        Address=192.168.1.10/24
        Gateway=192.168.1.1
        DNS=192.168.1.2
        DNS=1.1.1.1
        DNS=2606:4700:4700::1111
        Domains=corp.example example.com

        [Route]
        Destination=172.16.0.0/12
        Gateway=192.168.1.254
        Metric=50
        """)
    assert "Name=eth0" in got["10-cidag-eth0.link"]
    # No MAC: matched by name; global nameservers on every interface.
    assert body(got["10-cidag-ens4.network"]) == textwrap.dedent("""\
        [Match]
        Name=ens4

        [Network]
        DHCP=ipv4
        DNS=1.1.1.1
        DNS=2606:4700:4700::1111
        Domains=example.com
        """)


def test_version_2_rendered(tmp_path):
    root, _ = render(tmp_path, V2)
    got = files(root)
    assert set(got) == {"10-cidag-primary.network", "10-cidag-primary.link", "10-cidag-wired.network",
                        "10-cidag-eth9.network"}
    assert body(got["10-cidag-primary.network"]) == textwrap.dedent("""\
        [Match]
        MACAddress=52:54:00:ab:cd:ef

        [Network]
        DHCP=no
        Address=10.1.0.20/16
        Address=2001:db8:1::20/64
        Gateway=10.1.0.1
        Gateway=2001:db8:1::1
        DNS=10.1.0.2
        Domains=lab.example example.org

        [Route]
        Destination=10.2.0.0/16
        Gateway=10.1.0.254
        Metric=10
        """)
    assert "Name=eth0" in got["10-cidag-primary.link"]
    assert body(got["10-cidag-wired.network"]) == "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n"
    assert body(got["10-cidag-eth9.network"]) == "[Match]\nName=eth9\n\n[Network]\nDHCP=ipv4\n"


def test_stale_files_removed_and_others_left(tmp_path):
    root, _ = render(tmp_path, V1)
    (root / NET / "50-admin.network").write_text("[Match]\nName=x\n")
    render(tmp_path, {"version": 2, "ethernets": {"eth9": {"dhcp4": True}}})
    assert set(files(root)) == {"10-cidag-eth9.network", "50-admin.network"}


def test_config_disabled_leaves_files_alone(tmp_path):
    root, _ = render(tmp_path, V1)
    before = files(root)
    render(tmp_path, {"network": {"config": "disabled"}})
    assert files(root) == before


HOSTILE = [
    ({"version": 2, "ethernets": {"../../etc/x": {"dhcp4": True}}}, "ethernets.../../etc/x: invalid"),
    ({"version": 2, "ethernets": {"eth0": {"match": {"name": "en*\nExecStart=/bin/sh"}}}},
     "match.name: invalid interface name pattern"),
    ({"version": 2, "ethernets": {"e": {"match": {"macaddress": "52:54:00:12:34:56\n[Network]"}}}},
     "invalid MAC address"),
    ({"version": 2, "ethernets": {"eth0": {"addresses": ["10.0.0.5/24\nDNS=6.6.6.6"]}}}, "invalid"),
    ({"version": 2, "ethernets": {"eth0": {"nameservers": {"search": ["ok.example\n[Route]"]}}}},
     "invalid DNS search domain"),
    ({"version": 2, "ethernets": {"eth0": {"set-name": "eth0 x"}}}, "set-name: invalid interface name"),
    ({"version": 1, "config": [{"type": "physical", "name": "eth0/../../x"}]}, "config[0].name: invalid"),
    ({"version": 1, "config": [{"type": "physical", "name": "averyveryverylongname"}]}, "invalid interface name"),
    ({"links": [{"id": "a/b", "ethernet_mac_address": "fa:16:3e:00:00:01"}], "networks": []}, "links[0].id"),
    ({"links": [{"id": "t", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
      "networks": [{"type": "ipv4", "link": "t", "ip_address": "10.0.0.5", "netmask": "255.0.255.0"}]},
     "not contiguous"),
    ({"links": [{"id": "t", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
      "networks": [{"type": "ipv4", "link": "t", "ip_address": "10.0.0.5"}]}, "no prefix length or netmask"),
    ({"version": 2, "ethernets": {"eth0": {"mtu": "1500\n"}, "eth1": {"mtu": 20}}}, "out of range"),
    ({"version": 3}, "unknown network-config format"),
    ({"version": 1, "config": [{"type": "physical", "name": "eth0"}, {"type": "physical", "name": "eth0"}]},
     "configured twice"),
    ({"version": 2, "ethernets": {"eth0": {"dhcp4": "sometimes"}}}, "expected true or false"),
]


@pytest.mark.parametrize("config,message", HOSTILE)
def test_hostile_network_config_refused_and_nothing_written(tmp_path, config, message):
    root = tmp_path / "root"
    (root / NET).mkdir(parents=True)
    (root / NET / "10-cidag-old.network").write_text("# Written by cidag (network module) from x\n")
    with pytest.raises(ValueError) as err:
        render(tmp_path, config)
    assert message in str(err.value) and "\n" not in str(err.value).strip()
    assert set(files(root)) == {"10-cidag-old.network"}  # nothing written, nothing removed
    assert not (tmp_path / "etc").exists() and not (root / "etc/x").exists()


def test_a_symlinked_directory_out_of_the_root_is_refused(tmp_path):
    outside = tmp_path / "host-network"
    outside.mkdir()
    (tmp_path / "root/etc/systemd").mkdir(parents=True)
    (tmp_path / "root" / NET).symlink_to(outside)
    with pytest.raises(ValueError, match="outside the root"):
        render(tmp_path, V2)
    assert list(outside.iterdir()) == []


def fake_sysfs(tmp_path: Path, nics: dict[str, str | None]) -> Path:
    """SYSFS/class/net/NAME with `address`; a physical NIC (value: its MAC) gets a `device` link."""
    sysfs = tmp_path / "sys"
    net = sysfs / "class/net"
    net.mkdir(parents=True)
    for name, mac in nics.items():
        (net / name).mkdir()
        (net / name / "address").write_text((mac or "86:b4:0b:06:89:34") + "\n")
        if mac is not None:
            (net / name / "device").symlink_to("../../../devices/pci0000:00/0000:00:03.0")
    return sysfs


def test_fallback_dhcp_on_the_first_physical_nic(tmp_path):
    sysfs = fake_sysfs(tmp_path, {"lo": None, "br0": None, "eth10": "52:54:00:00:00:10",
                                  "eth2": "52:54:00:00:00:02", "ifb0": None})
    root, out = render(tmp_path, None, sysfs_root=str(sysfs))
    got = files(root)
    assert list(got) == ["10-cidag-eth2.network"]  # natural order: eth2 before eth10; br0, ifb0 are virtual
    assert "from the fallback" in got["10-cidag-eth2.network"].splitlines()[0]
    assert body(got["10-cidag-eth2.network"]) == "[Match]\nMACAddress=52:54:00:00:00:02\n\n[Network]\nDHCP=ipv4\n"


def test_fallback_without_sysfs_matches_en_and_eth(tmp_path):
    root, _ = render(tmp_path, None)
    assert body(files(root)["10-cidag-fallback.network"]) == "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n"


def test_fallback_refuses_a_hostile_sysfs_name(tmp_path):
    sysfs = fake_sysfs(tmp_path, {"eth0\nDHCP=yes": "52:54:00:00:00:02"})
    with pytest.raises(ValueError, match="invalid interface name"):
        render(tmp_path, None, sysfs_root=str(sysfs))


def test_fallback_keeps_what_a_source_gave_on_an_earlier_boot(tmp_path):
    root, _ = render(tmp_path, V2)
    before = files(root)
    render(tmp_path, None)  # e.g. the config drive is gone on this boot
    assert files(root) == before
    # ...but a fallback file is replaced by the next fallback.
    root2 = tmp_path / "two"
    render(root2, None)
    sysfs = fake_sysfs(root2, {"ens3": "52:54:00:00:00:03"})
    render(root2, None, sysfs_root=str(sysfs))
    assert list(files(root2 / "root")) == ["10-cidag-ens3.network"]


def test_in_a_run_network_online_unprovided_on_a_temp_root_skips_what_needs_it(tmp_path):
    """Through the engine: network writes the files, network-online ends ok without providing
    network-online (a temp root's network cannot be checked), and nothing that needs it runs."""
    s, m = tmp_path / "sources.yaml", tmp_path / "modules.yaml"
    s.write_text(yaml.safe_dump({"version": 1, "sources": [
        {"name": "drive", "type": "static", "capabilities": ["network-config"],
         "settings": {"data": {"network-config": V2["network"]}}},
        {"name": "http", "type": "static", "capabilities": ["hostname"], "needs": ["network-online"],
         "settings": {"data": {"hostname": "h"}}}]}))
    m.write_text(yaml.safe_dump({"version": 1, "modules": [
        {"name": "network", "type": "network", "frequency": "per-boot", "wants": ["network-config"],
         "settings": {"sysfs_root": str(tmp_path / "none")}},
        {"name": "network-online", "type": "network-online", "frequency": "per-boot", "after": ["network"],
         "provides": ["network-online"]},
        {"name": "host", "type": "exec", "frequency": "per-boot", "needs": ["hostname"],
         "settings": {"command": "true"}}]}))
    result = run(load_and_compile(str(s), str(m)), RunOptions(root=tmp_path / "root", handle_signals=False))
    rec = result.record
    nodes = {n["id"]: n for n in rec["nodes"]}
    assert rec["result"] == "ok"
    assert nodes["module:network"]["status"] == nodes["module:network-online"]["status"] == "ok"
    assert nodes["module:network-online"]["start_s"] >= nodes["module:network"]["end_s"]
    assert rec["capabilities"]["network-online"]["status"] == "unavailable"
    assert nodes["source:http"]["status"] == "skipped"
    assert nodes["source:http"]["reason"] == (
        "capability network-online unavailable: network-online: the root is not /: its network "
        "cannot be checked (wait_online: false provides network-online unchecked)")
    assert nodes["module:network-online"]["reason"].startswith("the root is not /")
    assert nodes["module:host"]["status"] == "skipped"
    assert (tmp_path / "root" / NET / "10-cidag-primary.network").exists()


# -- the kernel's state, read-only -------------------------------------------------

@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 not installed")
def test_netlink_addresses_match_ip_addr():
    shown = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout)
    expected = {(link["ifname"], f"{a['local']}/{a['prefixlen']}", a["scope"])
                for link in shown for a in link.get("addr_info", [])}
    got = {(a.ifname, str(a.address), a.scope) for a in netstate.addresses()}
    assert got == expected


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 not installed")
@pytest.mark.parametrize("destination", ["169.254.169.254", "fd00:ec2::254", "192.0.2.77", "127.0.0.1", "::1"])
def test_route_to_agrees_with_ip_route_get(destination):
    """route_to() asks the kernel what `ip route get` asks it: same device, gateway and source."""
    res = subprocess.run(["ip", "-j", "route", "get", destination], capture_output=True, text=True)
    got = netstate.route_to(destination)
    if res.returncode != 0:  # "Network is unreachable"
        assert got is None
        return
    shown = json.loads(res.stdout)[0]
    assert got is not None
    assert (got.ifname, str(got.gateway) if got.gateway else None, str(got.source) if got.source else None) == (
        shown.get("dev"), shown.get("gateway"), shown.get("prefsrc"))
    assert (got.kind == netstate.RTN_UNICAST) == (shown.get("type", "unicast") == "unicast")


def test_reach_ignores_loopback_and_says_what_is_missing():
    route, why = netstate.reach(["127.0.0.1", "::1"])  # local routes through lo are not the network
    assert route is None
    assert why.endswith("default route") or "default via" in why


def test_default_routes_parsed_from_proc(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net/route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "eth1\t00000000\t00000000\t0201\t0\t0\t0\t00000000\t0\t0\t0\n")
    (tmp_path / "net/ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n")
    got = netstate.default_routes(tmp_path)
    assert got == [netstate.DefaultRoute("eth0", ipaddress.ip_address("192.0.2.1"), 4),
                   netstate.DefaultRoute("eth0", ipaddress.ip_address("fd00::1"), 6)]


# -- the shipped manifests --------------------------------------------------------

def test_shipped_manifests_order_config_drive_network_http():
    repo = Path(__file__).resolve().parent.parent
    cg = load_and_compile(str(repo / "sources.yaml"), str(repo / "modules.yaml"))
    g = cg.graph
    for http in ("source:openstack", "source:ec2"):
        assert g.has_edge("cap:network-online", http) and g.edges["cap:network-online", http]["kind"] == "needs"
        assert not g.has_edge(http, "cap:network-config")  # else: a cycle through the network module
    assert g.has_edge("source:configdrive", "cap:network-config")
    assert g.has_edge("cap:network-config", "module:network")
    # network ends the `network` milestone the network managers wait for: it provides nothing
    # the HTTP sources wait on; network-online, after it, does.
    assert [v for _, v in g.out_edges("module:network") if v.startswith("cap:")] == []
    assert g.has_edge("module:network", "module:network-online")
    assert g.has_edge("module:network-online", "cap:network-online")
    assert cg.specs["module:network-online"].frequency == "per-boot"


# -- telling systemd-networkd (the decisions; the VM boot tests run the real tools) --------------

TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$(basename "$0") $*" in
  "systemctl is-active"*) cat "{state}/active"; [ "$(cat "{state}/active")" = active ] ;;
  "networkctl reload") exit $(cat "{state}/reload") ;;
esac
exit 0
"""


@pytest.mark.parametrize("active,changed,dbus,reload_rc,expected", [
    ("active", False, False, 0, []),
    ("active", True, False, 0, ["systemctl restart --no-block systemd-networkd.service"]),
    ("active", True, True, 0, ["networkctl reload"]),
    ("active", True, True, 1, ["networkctl reload", "systemctl restart --no-block systemd-networkd.service"]),
    ("inactive", False, False, 0, ["systemctl start --no-block systemd-networkd.service"]),
    ("inactive", True, True, 0, ["systemctl start --no-block systemd-networkd.service"]),
    # Started while cidag wrote the files: it may have read the old ones, so its start is re-run.
    ("activating", True, True, 0, ["systemctl restart --no-block systemd-networkd.service"]),
    ("activating", False, False, 0, []),
])
def test_how_networkd_is_told(tmp_path, monkeypatch, active, changed, dbus, reload_rc, expected):
    from cidag.modules import network

    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir(), state.mkdir()
    for tool in ("systemctl", "networkctl"):
        (bin_dir / tool).write_text(TOOL.format(log=tmp_path / "calls", state=state))
        (bin_dir / tool).chmod(0o755)
    (state / "active").write_text(active)
    (state / "reload").write_text(str(reload_rc))
    (tmp_path / "booted").mkdir()
    if dbus:
        (tmp_path / "bus").write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(network, "BOOTED", str(tmp_path / "booted"))
    monkeypatch.setattr(network, "DBUS_SOCKET", str(tmp_path / "bus"))
    ctx, _ = make_context("module", "network", {}, root=tmp_path / "root")
    network._bring_up(ctx, changed)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "systemctl is-active systemd-networkd.service"
    assert calls[1:] == expected


def test_a_failed_networkd_start_fails_the_module_with_its_message(tmp_path, monkeypatch):
    from cidag.modules import network

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(
        '#!/bin/sh\n[ "$1" = is-active ] && echo inactive && exit 3\necho "Unit systemd-networkd.service not found." >&2\nexit 5\n')
    (bin_dir / "systemctl").chmod(0o755)
    (tmp_path / "booted").mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(network, "BOOTED", str(tmp_path / "booted"))
    ctx, _ = make_context("module", "network", {}, root=tmp_path / "root")
    with pytest.raises(RuntimeError, match=r"^systemctl start --no-block systemd-networkd.service: exit 5: "
                                           r"Unit systemd-networkd.service not found\.$"):
        network._bring_up(ctx, True)


def test_yaml_text_and_on_link_routes(tmp_path):
    text = textwrap.dedent("""\
        version: 2
        ethernets:
          eth0:
            addresses: [10.3.0.5/24]
            routes: [{to: 10.4.0.0/16, via: 0.0.0.0}, {to: default, via: 10.3.0.1}]
            set-name: lan0
        """)
    ctx, call = make_context("module", "network", {"sysfs_root": str(tmp_path / "none")},
                             caps={"network-config": text}, root=tmp_path / "root")
    with pytest.MonkeyPatch.context() as mp:
        warnings = []
        mp.setattr(ctx.log, "warning", lambda fmt, *a: warnings.append(fmt % a))
        call(ctx)
    got = files(tmp_path / "root")
    assert list(got) == ["10-cidag-eth0.network"]  # no .link: set-name without a MAC to match
    assert "[Route]\nDestination=10.4.0.0/16\n\n[Route]\nGateway=10.3.0.1\n" in got["10-cidag-eth0.network"]
    assert warnings == ["network-config ethernets.eth0.set-name: needs match.macaddress to rename, ignored"]
