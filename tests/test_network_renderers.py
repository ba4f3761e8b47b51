"""The netplan, NetworkManager and ifupdown renderers, each checked by the real tool on a temporary
root (`netplan generate --root-dir`, `nmcli --offline`, `ifquery`/`ifup --no-act`), the choice of
renderer from the root's files, and how each manager is told on a real boot (with stand-in tools)."""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cidag import netconfig, netrender
from cidag.testing import make_context

# Every case the renderers must carry: a NIC by MAC renamed, static v4/v6 with gateways, a host
# route to the metadata address via the gateway, an on-link route, a metric, DNS and search
# domains, an MTU; static without gateway; DHCPv4+v6 on a name pattern; DHCP on a plain name.
COVER = yaml.safe_load("""
version: 2
ethernets:
  primary:
    match: {macaddress: "52:54:00:12:34:01"}
    set-name: lan0
    mtu: 9000
    addresses: [192.0.2.10/24, "2001:db8::10/64"]
    gateway4: 192.0.2.1
    gateway6: "2001:db8::1"
    routes:
      - {to: 169.254.169.254/32, via: 192.0.2.1}
      - {to: 198.51.100.0/24, via: 0.0.0.0}
      - {to: 10.20.0.0/16, via: 192.0.2.254, metric: 100}
    nameservers: {addresses: [192.0.2.53, "2001:db8::53"], search: [example.com, corp.example]}
  nogw:
    match: {macaddress: "52:54:00:12:34:02"}
    addresses: [10.9.0.5/24, "fd00:9::5/64"]
  pool:
    match: {name: "ens*"}
    dhcp4: true
    dhcp6: true
  eth3: {dhcp4: true}
""")

NETPLAN = "etc/netplan/50-cidag.yaml"
NM_DIR = "etc/NetworkManager/system-connections"
ENI = "etc/network/interfaces.d/50-cidag"


def render(root: Path, config, renderer: str, **settings) -> None:
    settings.setdefault("sysfs_root", str(root.parent / "no-sysfs"))
    ctx, call = make_context("module", "network", {"renderer": renderer, **settings},
                             caps={} if config is None else {"network-config": config}, root=root)
    call(ctx)


def fake_sysfs(tmp_path: Path, name: str, mac: str) -> Path:
    net = tmp_path / "sys/class/net" / name
    net.mkdir(parents=True)
    (net / "address").write_text(mac + "\n")
    (net / "device").symlink_to("../../../devices/pci0000:00/0000:00:03.0")
    return tmp_path / "sys"


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- netplan ----------------------------------------------------------------------------

needs_netplan = pytest.mark.skipif(shutil.which("netplan") is None,
                                   reason="netplan not installed (Debian package netplan.io)")


def netplan_generate(root: Path) -> dict[str, str]:
    """Run the real `netplan generate` on the root; the networkd files it wrote, by name."""
    res = subprocess.run(["netplan", "generate", "--root-dir", str(root)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # no warning either (permissions, deprecated keys)
    out = root / "run/systemd/network"
    return {p.name: p.read_text() for p in sorted(out.iterdir())}


@needs_netplan
def test_netplan_file_generates_what_the_config_says(tmp_path):
    root = tmp_path / "root"
    render(root, COVER, "netplan")
    assert tree(root) == [NETPLAN]
    assert (root / NETPLAN).stat().st_mode & 0o777 == 0o600
    assert (root / NETPLAN).read_text().startswith("# Written by cidag (network module) from network-config")
    got = netplan_generate(root)
    assert set(got) == {"10-netplan-primary.network", "10-netplan-primary.link", "10-netplan-nogw.network",
                        "10-netplan-pool.network", "10-netplan-eth3.network"}
    primary = got["10-netplan-primary.network"]
    for part in ["[Match]\nPermanentMACAddress=52:54:00:12:34:01\nName=lan0\n", "[Link]\nMTUBytes=9000\n",
                 "Address=192.0.2.10/24\nAddress=2001:db8::10/64\n",
                 "DNS=192.0.2.53\nDNS=2001:db8::53\nDomains=example.com corp.example\n",
                 "[Route]\nDestination=0.0.0.0/0\nGateway=192.0.2.1\n",
                 "[Route]\nDestination=::/0\nGateway=2001:db8::1\n",
                 "[Route]\nDestination=169.254.169.254/32\nGateway=192.0.2.1\n",
                 "[Route]\nDestination=198.51.100.0/24\nScope=link\n",
                 "[Route]\nDestination=10.20.0.0/16\nGateway=192.0.2.254\nMetric=100\n"]:
        assert part in primary
    assert "Name=lan0" in got["10-netplan-primary.link"]
    nogw = got["10-netplan-nogw.network"]
    assert "Address=10.9.0.5/24\nAddress=fd00:9::5/64\n" in nogw and "Gateway" not in nogw
    assert "Name=ens*" in got["10-netplan-pool.network"] and "DHCP=yes" in got["10-netplan-pool.network"]
    assert "Name=eth3" in got["10-netplan-eth3.network"] and "DHCP=ipv4" in got["10-netplan-eth3.network"]


@needs_netplan
@pytest.mark.parametrize("sysfs", [False, True])
def test_netplan_fallback(tmp_path, sysfs):
    root = tmp_path / "root"
    settings = {"sysfs_root": str(fake_sysfs(tmp_path, "ens3", "52:54:00:00:00:03"))} if sysfs else {}
    render(root, None, "netplan", **settings)
    got = netplan_generate(root)
    if sysfs:
        assert list(got) == ["10-netplan-ens3.network"]
        assert "MACAddress=52:54:00:00:00:03" in got["10-netplan-ens3.network"]
    else:  # one netplan entry per pattern: netplan matches one glob
        assert list(got) == ["10-netplan-fallback-2.network", "10-netplan-fallback.network"]
        assert "Name=en*" in got["10-netplan-fallback.network"]
        assert "Name=eth*" in got["10-netplan-fallback-2.network"]
    assert all("DHCP=ipv4" in text for text in got.values())


@needs_netplan
def test_netplan_keeps_the_images_backend(tmp_path):
    """No `renderer:` in our file: an image whose netplan uses NetworkManager gets keyfiles."""
    root = tmp_path / "root"
    (root / "etc/netplan").mkdir(parents=True)
    (root / "etc/netplan/01-network-manager-all.yaml").write_text("network: {version: 2, renderer: NetworkManager}\n")
    (root / "etc/netplan/01-network-manager-all.yaml").chmod(0o600)
    render(root, COVER, "netplan")
    subprocess.run(["netplan", "generate", "--root-dir", str(root)], check=True, capture_output=True)
    out = sorted(p.name for p in (root / "run/NetworkManager/system-connections").iterdir())
    assert out == [f"netplan-{i}.nmconnection" for i in ("eth3", "nogw", "pool", "primary")]


# -- NetworkManager -----------------------------------------------------------------------

def _nmcli_offline() -> bool:
    if shutil.which("nmcli") is None:
        return False
    res = subprocess.run(["nmcli", "--offline", "connection", "modify", "connection.autoconnect", "yes"],
                         input="[connection]\nid=x\ntype=ethernet\n", capture_output=True, text=True)
    return res.returncode == 0


needs_nmcli = pytest.mark.skipif(not _nmcli_offline(),
                                 reason="nmcli with --offline (NetworkManager >= 1.40, Debian package "
                                        "network-manager) not installed")


def keyfile(text: str) -> dict[tuple[str, str], str]:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(text)
    return {(s, k): v for s in parser.sections() for k, v in parser[s].items()}


def nm_reads(text: str) -> dict[tuple[str, str], str]:
    """What NetworkManager's own keyfile reader makes of `text` (libnm, offline), as it writes it back."""
    res = subprocess.run(["nmcli", "--offline", "connection", "modify", "connection.autoconnect", "yes"],
                         input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return keyfile(res.stdout)


@needs_nmcli
def test_keyfiles_read_back_unchanged_by_network_manager(tmp_path):
    root = tmp_path / "root"
    render(root, COVER, "network-manager")
    assert tree(root) == [f"{NM_DIR}/cidag-{k}.nmconnection" for k in ("eth3", "nogw", "pool", "primary")] + [
        "etc/systemd/network/10-cidag-primary.link"]
    got = {}
    for path in (root / NM_DIR).iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
        ours = keyfile(path.read_text())
        theirs = nm_reads(path.read_text())
        # Every key we wrote is one NetworkManager keeps, with the same value: nothing dropped or changed.
        assert {k: theirs.get(k) for k in ours} == ours
        got[path.stem] = ours
    primary = got["cidag-primary"]
    assert primary[("ethernet", "mac-address")] == "52:54:00:12:34:01"  # (upper case where letters)
    assert primary[("ethernet", "mtu")] == "9000"
    assert primary[("ipv4", "method")] == "manual"
    assert primary[("ipv4", "address1")] == "192.0.2.10/24,192.0.2.1"
    assert primary[("ipv4", "route1")] == "169.254.169.254/32,192.0.2.1"
    assert primary[("ipv4", "route2")] == "198.51.100.0/24"  # no next hop: on-link
    assert primary[("ipv4", "route3")] == "10.20.0.0/16,192.0.2.254,100"
    assert primary[("ipv4", "dns")] == "192.0.2.53;"
    assert primary[("ipv4", "dns-search")] == "example.com;corp.example;"
    assert primary[("ipv6", "address1")] == "2001:db8::10/64,2001:db8::1"
    assert primary[("ipv6", "dns")] == "2001:db8::53;"
    assert ("connection", "interface-name") not in primary  # matched by MAC: renamed only next boot
    nogw = got["cidag-nogw"]
    assert nogw[("ipv4", "address1")] == "10.9.0.5/24" and nogw[("ipv6", "address1")] == "fd00:9::5/64"
    assert got["cidag-pool"][("match", "interface-name")] == "ens*;"
    assert got["cidag-pool"][("ipv4", "method")] == got["cidag-pool"][("ipv6", "method")] == "auto"
    assert got["cidag-eth3"][("connection", "interface-name")] == "eth3"
    # The rename is udev's, through the same .link file as with networkd.
    assert "Name=lan0" in (root / "etc/systemd/network/10-cidag-primary.link").read_text()


@needs_nmcli
def test_keyfile_fallback_matches_both_patterns(tmp_path):
    root = tmp_path / "root"
    render(root, None, "network-manager")
    text = (root / NM_DIR / "cidag-fallback.nmconnection").read_text()
    theirs = nm_reads(text)
    assert theirs[("match", "interface-name")] == "en*;eth*;"
    assert theirs[("ipv4", "method")] == "auto"


@needs_nmcli
def test_the_round_trip_catches_what_network_manager_drops():
    """The check above can fail: NetworkManager silently drops a route it cannot parse."""
    text = "[connection]\nid=x\ntype=ethernet\n\n[ipv4]\nmethod=auto\nroute1=not-a-route\n"
    assert ("ipv4", "route1") not in nm_reads(text)


# -- ifupdown ---------------------------------------------------------------------------------

needs_ifupdown = pytest.mark.skipif(shutil.which("ifquery") is None or shutil.which("ifup") is None,
                                    reason="ifupdown not installed (Debian package ifupdown)")


def ifquery(path: Path, name: str) -> list[str]:
    res = subprocess.run(["ifquery", "-i", str(path), name], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def ifup_commands(path: Path, phys: str, logical: str) -> list[str]:
    """What `ifup` would run to bring `phys` up with the stanzas of `logical` (--no-act runs nothing)."""
    res = subprocess.run(["ifup", "--no-act", "-i", str(path), f"{phys}={logical}"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)  # it prints the commands on stderr
    assert res.returncode == 0, res.stdout
    return [" ".join(line.split()) for line in res.stdout.splitlines() if line.strip()]


@needs_ifupdown
def test_eni_file_is_what_ifup_runs(tmp_path):
    root = tmp_path / "root"
    render(root, COVER, "eni")
    path = root / ENI
    assert tree(root) == ["etc/network/interfaces", ENI, "etc/systemd/network/10-cidag-primary.link"]
    # No /etc/network/interfaces in the root: Debian's, which reads interfaces.d.
    assert "source /etc/network/interfaces.d/*" in (root / "etc/network/interfaces").read_text()
    text = path.read_text()
    assert re.findall(r"^auto .*$", text, re.M) == [
        "auto mac/52:54:00:12:34:01=lan0", "auto mac/52:54:00:12:34:02=nogw", "auto /ens*=pool", "auto eth3"]
    assert ifquery(path, "lan0")[:3] == ["pre-up: ip link set dev $IFACE mtu 9000", "address: 192.0.2.10",
                                         "gateway: 192.0.2.1"]
    cmds = ifup_commands(path, "dummy9", "lan0")
    for cmd in ["ip link set dev $IFACE mtu 9000",
                "ip addr add 192.0.2.10/255.255.255.0 broadcast 192.0.2.255 dev dummy9 label dummy9",
                "ip route add default via 192.0.2.1 dev dummy9 onlink",
                "ip -4 route add 169.254.169.254/32 via 192.0.2.1 dev $IFACE",
                "ip -4 route add 198.51.100.0/24 dev $IFACE",
                "ip -4 route add 10.20.0.0/16 via 192.0.2.254 dev $IFACE metric 100",
                "ip -6 addr add 2001:db8::10/64 dev dummy9",
                "ip -6 route replace default via 2001:db8::1 dev dummy9 onlink"]:
        assert cmd in cmds
    assert cmds.index("ip -4 route add 198.51.100.0/24 dev $IFACE") > cmds.index(
        "ip addr add 192.0.2.10/255.255.255.0 broadcast 192.0.2.255 dev dummy9 label dummy9")
    nogw = ifup_commands(path, "dummy9", "nogw")
    assert "ip -6 addr add fd00:9::5/64 dev dummy9" in nogw and not any("default" in c for c in nogw)
    assert "ip -4 route add" not in " ".join(nogw)
    assert "accept_ra: 1" in ifquery(path, "pool") and ifquery(path, "eth3") == []  # DHCP: no options of ours
    assert "iface pool inet dhcp\niface pool inet6 dhcp\n" in text and "iface eth3 inet dhcp\n" in text
    assert "dns-nameservers 192.0.2.53 2001:db8::53" in ifquery(path, "lan0")[3].replace(":", "", 1)


@needs_ifupdown
def test_eni_fallback(tmp_path):
    root = tmp_path / "root"
    render(root, None, "eni")
    text = (root / ENI).read_text()
    assert "auto /en*=fallback /eth*=fallback\niface fallback inet dhcp\n" in text
    res = subprocess.run(["ifquery", "-i", str(root / ENI), "--list", "--allow=auto"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_eni_refuses_an_interfaces_file_that_does_not_read_the_directory(tmp_path):
    root = tmp_path / "root"
    (root / "etc/network").mkdir(parents=True)
    (root / "etc/network/interfaces").write_text("auto lo\niface lo inet loopback\n")
    with pytest.raises(RuntimeError, match=r"^/etc/network/interfaces does not read "
                                           r"/etc/network/interfaces.d/50-cidag: add `source "):
        render(root, COVER, "eni")
    for line in ("source-directory /etc/network/interfaces.d", "source-directory interfaces.d",
                 "source /etc/network/interfaces.d/*", "  source interfaces.d/50-cidag"):
        (root / "etc/network/interfaces").write_text(f"auto lo\n{line}\n")
        render(root, COVER, "eni")
    assert (root / "etc/network/interfaces").read_text() == "auto lo\n  source interfaces.d/50-cidag\n"


# -- choosing the renderer --------------------------------------------------------------------

def image(root: Path, *, installed=(), enabled=(), dirs=(), files=()) -> Path:
    """A root with commands in usr/sbin, units enabled (links in multi-user.target.wants), dirs, files."""
    for cmd in installed:
        (root / "usr/sbin").mkdir(parents=True, exist_ok=True)
        (root / "usr/sbin" / cmd).write_text("")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in enabled:
        wants.mkdir(parents=True, exist_ok=True)
        (wants / unit).symlink_to(f"/lib/systemd/system/{unit}")
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")
    return root


NM = dict(installed=["NetworkManager", "nmcli"], enabled=["NetworkManager.service"])
NETWORKD = dict(enabled=["systemd-networkd.service"])
IFUPDOWN = dict(installed=["ifup", "ifquery"], files=["etc/network/interfaces"])
NETPLAN_CMD = dict(installed=["netplan"], dirs=["etc/netplan"])


def merged(*kinds: dict) -> dict:
    out: dict = {}
    for kind in kinds:
        for key, values in kind.items():
            out[key] = [*out.get(key, []), *values]
    return out


@pytest.mark.parametrize("kinds,expected", [
    ((), "networkd"),  # nothing known (this host's own tools do not count: the root is looked at)
    ((NETWORKD,), "networkd"),
    ((NETPLAN_CMD, NETWORKD), "netplan"),  # Debian 12 cloud images, Ubuntu servers
    ((NETPLAN_CMD, NM), "netplan"),  # Ubuntu desktops: netplan on NetworkManager
    ((NM,), "network-manager"),  # Fedora, RHEL
    ((NM, IFUPDOWN), "network-manager"),  # Debian desktops: ifupdown installed, only lo in it
    ((NETWORKD, IFUPDOWN), "networkd"),
    ((IFUPDOWN,), "eni"),  # older Debian cloud images, Alpine
    ((dict(installed=["NetworkManager"]),), "networkd"),  # installed but not enabled
    ((dict(installed=["netplan"]),), "networkd"),  # no /etc/netplan
])
def test_renderer_detected_from_the_roots_files(tmp_path, kinds, expected):
    root = image(tmp_path / "root", **merged(*kinds))
    assert netrender.detect(str(root))[0] == expected


def test_detection_runs_no_process(tmp_path, monkeypatch):
    """Cheap, every boot: a few lstat and scandir calls on the root, no systemctl."""
    def refuse(*a, **kw):
        raise AssertionError("detect() started a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse, raising=False)
    monkeypatch.setattr(os, "fork", refuse)
    root = image(tmp_path / "root", **merged(NM, IFUPDOWN))
    assert netrender.detect(str(root)) == ("network-manager", "NetworkManager.service is enabled")


def test_a_masked_unit_is_not_enabled(tmp_path):
    root = image(tmp_path / "root", **merged(NM, IFUPDOWN))
    (root / "etc/systemd/system/NetworkManager.service").symlink_to("/dev/null")
    assert netrender.detect(str(root)) == ("eni", "ifupdown is installed (/etc/network/interfaces)")


def test_the_setting_overrides_and_switching_removes_the_other_renderers_files(tmp_path):
    root = image(tmp_path / "root", **NETPLAN_CMD)
    render(root, COVER, "auto")
    assert (root / NETPLAN).exists()
    render(root, COVER, "networkd")
    assert tree(root) == sorted(["usr/sbin/netplan"] + [f"etc/systemd/network/10-cidag-{n}" for n in (
        "primary.network", "primary.link", "nogw.network", "pool.network", "eth3.network")])
    (root / NM_DIR).mkdir(parents=True)
    (root / NM_DIR / "admin.nmconnection").write_text("[connection]\n")
    render(root, COVER, "network-manager")
    assert not list((root / "etc/systemd/network").glob("*.network"))
    assert (root / NM_DIR / "admin.nmconnection").exists()  # not ours: never touched
    with pytest.raises(ValueError, match="'wicked' is not one of 'auto', 'networkd', 'netplan'"):
        render(root, COVER, "wicked")


def test_a_source_config_is_kept_by_the_fallback_with_every_renderer(tmp_path):
    for renderer in ("netplan", "network-manager", "eni"):
        root = tmp_path / renderer
        render(root, COVER, renderer)
        before = {p: (root / p).read_text() for p in tree(root)}
        render(root, None, renderer)
        assert {p: (root / p).read_text() for p in tree(root)} == before


# -- telling the manager (stand-in tools; the VM boots run the real ones) ---------------------------

TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$(basename "$0") $*" in
  "systemctl is-active"*) cat "{state}"; [ "$(cat "{state}")" = active ] ;;
  "netplan generate") mkdir -p "{run}/systemd/network" && touch "{run}/systemd/network/10-netplan-eth3.network" ;;
esac
exit 0
"""


@pytest.fixture
def booted(tmp_path, monkeypatch):
    """Stand-in systemctl, networkctl, nmcli, netplan logging their calls; a booted systemd with D-Bus."""
    from cidag.modules import network

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("systemctl", "networkctl", "nmcli", "netplan", "udevadm"):
        (bin_dir / tool).write_text(TOOL.format(log=tmp_path / "calls", state=tmp_path / "state",
                                                run=tmp_path / "run"))
        (bin_dir / tool).chmod(0o755)
    (tmp_path / "booted").mkdir()
    (tmp_path / "bus").write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(network, "BOOTED", str(tmp_path / "booted"))
    monkeypatch.setattr(network, "DBUS_SOCKET", str(tmp_path / "bus"))
    monkeypatch.setattr(network, "NETPLAN_OUT", tuple(p.replace("/run", str(tmp_path / "run"))
                                                      for p in network.NETPLAN_OUT))

    def apply(renderer: str, state: str, changed: list[str], config=COVER) -> list[str]:
        (tmp_path / "state").write_text(state)
        ifaces = netconfig.parse(config).interfaces
        ctx, _ = make_context("module", "network", {}, root=tmp_path / "root")
        network._apply(ctx, renderer, ifaces, changed)
        calls = (tmp_path / "calls").read_text().splitlines()
        (tmp_path / "calls").unlink()
        return calls

    return apply


def test_network_manager_running_reloads_and_switches_the_changed_connections(booted):
    calls = booted("network-manager", "active", [f"{NM_DIR}/cidag-eth3.nmconnection"])
    assert calls == ["systemctl is-active NetworkManager.service", "nmcli connection reload",
                     "nmcli --wait 0 connection up id cidag-eth3"]
    assert booted("network-manager", "active", []) == ["systemctl is-active NetworkManager.service"]
    assert booted("network-manager", "inactive", [f"{NM_DIR}/cidag-eth3.nmconnection"])[1:] == [
        "systemctl start --no-block NetworkManager.service"]
    assert booted("network-manager", "activating", [f"{NM_DIR}/cidag-eth3.nmconnection"])[1:] == [
        "systemctl restart --no-block NetworkManager.service"]


def test_ifupdown_is_restarted_never_waited_for(booted):
    assert booted("eni", "active", [ENI]) == ["systemctl is-active networking.service",
                                              "systemctl restart --no-block networking.service"]
    assert booted("eni", "inactive", []) == ["systemctl is-active networking.service",
                                             "systemctl start --no-block networking.service"]


def test_netplan_generates_then_tells_the_backend_it_wrote_for(booted, tmp_path):
    eth3 = {"version": 2, "ethernets": {"eth3": {"dhcp4": True}}}
    assert booted("netplan", "active", [NETPLAN], eth3) == [
        "netplan generate", "systemctl is-active systemd-networkd.service", "networkctl reload"]
    # A set-name: netplan's .network matches the new name, so udev renames the NIC now.
    assert booted("netplan", "active", [NETPLAN]) == [
        "netplan generate", "udevadm control --reload", "udevadm trigger --action=add --subsystem-match=net",
        "systemctl is-active systemd-networkd.service", "networkctl reload"]
    # Unchanged, and netplan's generator wrote the backend's files at boot: nothing to generate.
    assert booted("netplan", "active", []) == ["systemctl is-active systemd-networkd.service"]
    nm = tmp_path / "run/NetworkManager/system-connections"
    nm.mkdir(parents=True)
    (nm / "netplan-eth3.nmconnection").write_text("")
    calls = booted("netplan", "active", [NETPLAN])
    assert calls[0] == "netplan generate"
    assert calls[3:5] == ["systemctl is-active NetworkManager.service", "nmcli connection reload"]
    assert "nmcli --wait 0 connection up id netplan-primary" in calls


# -- every sample config through every tool ----------------------------------------------------

EDGE = yaml.safe_load("""
version: 1
config:
  - type: physical
    name: v6only
    mac_address: "52:54:00:00:00:61"
    subnets: [{type: static6, address: "2001:db8:6::5/64"}, {type: ipv6_slaac}]
  - type: physical
    name: quiet
    subnets: [{type: manual}]
  - type: nameserver
    address: [192.0.2.53]
    search: [example.net]
  - type: route
    destination: 0.0.0.0/0
    gateway: 0.0.0.0
""")


def _samples() -> dict:
    from test_network import OPENSTACK, V1, V2
    return {"openstack": OPENSTACK, "v1": V1, "v2": V2, "cover": COVER, "edge": EDGE}


@pytest.mark.parametrize("sample", sorted(_samples()))
def test_every_sample_passes_every_tool(tmp_path, sample):
    config = _samples()[sample]
    checked = 0
    if shutil.which("netplan"):
        root = tmp_path / "netplan"
        render(root, config, "netplan")
        assert netplan_generate(root)
        checked += 1
    if _nmcli_offline():
        root = tmp_path / "nm"
        render(root, config, "network-manager")
        for path in (root / NM_DIR).iterdir():
            ours = keyfile(path.read_text())
            assert {k: v for k, v in nm_reads(path.read_text()).items() if k in ours} == ours, path.name
        checked += 1
    if shutil.which("ifquery"):
        root = tmp_path / "eni"
        render(root, config, "eni")
        text = (root / ENI).read_text()
        for name in re.findall(r"^iface (\S+) ", text, re.M):
            ifup_commands(root / ENI, "dummy9", name)
        checked += 1
    if not checked:
        pytest.skip("none of netplan.io, network-manager, ifupdown installed")
