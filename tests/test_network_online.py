"""The network-online module without touching this machine's network: its settings, the
settled signal read from a networkd state directory, a temporary root, and the shipped
manifests on a temporary root where network-online cannot be checked (the real kernel
and networkd cases are in test_network_netns.py)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cidag.errors import SettingsError
from cidag.modules import network_online
from cidag.testing import make_context

REPO = Path(__file__).resolve().parent.parent


def test_wait_online_false_provides_it_unchecked(tmp_path):
    ctx, call = make_context("module", "network-online", {"wait_online": "false"}, root=tmp_path)
    assert call(ctx) == {"network-online": True}
    assert ctx.unprovided == {}


def test_another_root_is_not_checked_and_says_why(tmp_path):
    ctx, call = make_context("module", "network-online", {}, root=tmp_path)
    start = time.monotonic()
    assert call(ctx) == {"network-online": None}
    assert time.monotonic() - start < 1  # nothing waited for
    assert ctx.unprovided == {"network-online": "the root is not /: its network cannot be checked "
                                                "(wait_online: false provides network-online unchecked)"}


@pytest.mark.parametrize("endpoints,message", [
    ([], "endpoints: at least one address is needed"),
    (["169.254.169.254", "fd00::ec2::254"], "endpoints[1]: 'fd00::ec2::254' is not an IP address"),
    (["1.2.3"], "endpoints[0]: '1.2.3' is not an IP address"),
])
def test_bad_endpoints_fail_with_one_line(tmp_path, endpoints, message):
    ctx, call = make_context("module", "network-online", {"endpoints": endpoints}, root=tmp_path)
    with pytest.raises(ValueError) as err:
        call(ctx)
    assert str(err.value) == message


def test_a_host_name_is_refused_by_the_schema():
    """The endpoints are addresses: a name would need DNS, which needs the network."""
    with pytest.raises(SettingsError, match="does not match"):
        make_context("module", "network-online", {"endpoints": ["metadata.example"]})


# -- the settled signal: networkd's per-link state files ------------------------------

def netif(tmp_path: Path, states: dict[str, str], age: float = 0.0) -> str:
    """A networkd state directory with links/IFINDEX for the named interfaces of this machine."""
    index = {name: i for i, name in socket.if_nameindex()}
    links = tmp_path / "netif/links"
    links.mkdir(parents=True, exist_ok=True)
    for name, admin in states.items():
        path = links / str(index[name])
        path.write_text(f"# This is private data. Do not parse.\nADMIN_STATE={admin}\nOPER_STATE=routable\n")
        if age:
            t = time.time() - age
            os.utime(path, (t, t))
    return str(tmp_path / "netif")


NICS = [name for _, name in socket.if_nameindex() if name != "lo"]
needs_a_nic = pytest.mark.skipif(not NICS, reason="no interface but lo")


@needs_a_nic
def test_settled_when_every_managed_link_is_configured_or_failed(tmp_path):
    states = {name: "unmanaged" for name in NICS}
    states[NICS[0]] = "configured"
    settled, how = network_online.links_settled(netif(tmp_path, states), since=time.time() - 60)
    assert settled, how
    assert f"{NICS[0]} configured" in how
    states[NICS[0]] = "failed"
    assert network_online.links_settled(netif(tmp_path, states), since=0)[0]


@needs_a_nic
@pytest.mark.parametrize("admin", ["configuring", "pending", "initialized"])
def test_not_settled_while_a_link_is_being_configured(tmp_path, admin):
    states = {name: "configured" for name in NICS}
    states[NICS[-1]] = admin
    settled, how = network_online.links_settled(netif(tmp_path, states), since=0)
    assert not settled and f"{NICS[-1]} {admin}" in how


@needs_a_nic
def test_not_settled_when_nothing_is_managed_or_an_interface_is_unknown(tmp_path):
    settled, how = network_online.links_settled(netif(tmp_path, {n: "unmanaged" for n in NICS}), since=0)
    assert not settled, how  # e.g. the config matches no NIC: the bounded wait decides
    other = tmp_path / "other"
    settled, how = network_online.links_settled(netif(other, {}), since=0)
    assert not settled and f"{NICS[0]} unknown to networkd" in how


@needs_a_nic
def test_a_state_older_than_the_network_files_is_stale(tmp_path):
    """networkd restarted with --no-block: until it rewrites the state, the old one must not count."""
    d = netif(tmp_path, {n: "configured" for n in NICS}, age=30)
    settled, how = network_online.links_settled(d, since=time.time() - 10)
    assert not settled and "configured before the network files changed" in how
    assert network_online.links_settled(d, since=time.time() - 60)[0]


def test_no_state_directory_is_never_settled(tmp_path):
    assert network_online.links_settled(str(tmp_path / "none"), since=0) == (
        False, f"no {tmp_path / 'none' / 'links'}")


# -- the shipped manifests ----------------------------------------------------------

def test_shipped_manifests_without_network_online_run_ok_and_skip_the_http_sources(tmp_path):
    """A temp root with wait_online left true: network-online cannot be checked, so it is not
    provided. The run is ok (not degraded), the HTTP sources are skipped at once with the
    reason, and the local sources and the modules go on."""
    root = tmp_path / "root"
    seed = tmp_path / "nocloud"
    seed.mkdir()
    (seed / "meta-data").write_text("instance-id: iid-local\nlocal-hostname: local-host\n")
    (seed / "user-data").write_text("#cloud-config\n{}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "CIDAG_CONFIGDRIVE_PATH": str(tmp_path / "no-config-2"), "CIDAG_NOCLOUD_PATH": str(seed),
           "CIDAG_OPENSTACK_URL": "http://127.0.0.1:1", "CIDAG_EC2_URL": "http://127.0.0.1:1",
           "CIDAG_SYSFS": str(tmp_path / "sys"), "CIDAG_CMDLINE": str(tmp_path / "cmdline")}
    env.pop("CIDAG_NETWORK_WAIT_ONLINE", None)
    (tmp_path / "cmdline").write_text("console=ttyS0\n")
    res = subprocess.run([sys.executable, "-m", "cidag", "run", "--sources", str(REPO / "sources.yaml"),
                          "--modules", str(REPO / "modules.yaml"), "--root", str(root), "-j", "4", "-q"],
                         capture_output=True, text=True, env=env, timeout=120)
    rec = json.loads((root / "var/lib/cidag/last-run.json").read_text())
    nodes = {n["id"]: n for n in rec["nodes"]}
    assert res.returncode == 0 and rec["result"] == "ok", (res.stderr[-3000:], {
        k: (n["status"], n["reason"]) for k, n in nodes.items() if n["status"] not in ("ok", "available")})
    assert nodes["module:network"]["status"] == nodes["module:network-online"]["status"] == "ok"
    assert rec["capabilities"]["network-online"]["status"] == "unavailable"
    for http in ("source:openstack", "source:ec2"):
        assert nodes[http]["status"] == "skipped"
        assert nodes[http]["reason"] == (
            "capability network-online unavailable: network-online: the root is not /: its network "
            "cannot be checked (wait_online: false provides network-online unchecked)")
        assert nodes[http]["start_s"] is None or nodes[http]["end_s"] < 5
    assert nodes["source:nocloud"]["status"] == "available"
    assert rec["capabilities"]["hostname"]["provider"] == "source:nocloud"
    assert (root / "etc/hostname").read_text().strip() == "local-host"
    assert (root / "etc/systemd/network/10-cidag-fallback.network").exists()
