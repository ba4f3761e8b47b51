"""Real boots, one per network renderer: a bookworm guest whose only enabled network stack is netplan
(on networkd), NetworkManager or ifupdown (guest_image.NET_VARIANTS), provisioned from a NoCloud seed
whose network-config asks for a static address by MAC. cidag's `renderer: auto` must pick the stack
from the image's files, write its file, and have the manager put the address on the NIC.
"""
from __future__ import annotations

import json

import guest_image
import pytest
from conftest import seed_iso, write_fixture
from test_boot import assert_first_login, assert_provisioned, instance, node, status_of

MAC = "52:54:00:12:34:56"  # the guest's NIC (machine.Guest)
# The harness's user network is 169.254.0.0/16 (docs/vm-tests.md): the ssh forward points at
# 169.254.2.15, slirp routes through 169.254.2.2 and answers DNS at 169.254.2.3.
NETWORK_CONFIG = {"version": 2, "ethernets": {"nic0": {
    "match": {"macaddress": MAC}, "mtu": 1400, "addresses": ["169.254.2.15/16"], "gateway4": "169.254.2.2",
    "nameservers": {"addresses": ["169.254.2.3"]}}}}
FILES = {
    "netplan": "/etc/netplan/50-cidag.yaml",
    "network-manager": "/etc/NetworkManager/system-connections/cidag-nic0.nmconnection",
    "eni": "/etc/network/interfaces.d/50-cidag",
}
# What shows the stack itself applied the file (not networkd from an earlier layer).
APPLIED = {
    "netplan": "cat /run/systemd/network/10-netplan-nic0.network",
    "network-manager": "nmcli -t -f NAME connection show --active",
    "eni": "ifquery --state",
}
EXPECT = {"netplan": "Address=169.254.2.15/16", "network-manager": "cidag-nic0", "eni": "=nic0"}


@pytest.mark.parametrize("variant", sorted(guest_image.NET_VARIANTS))
def test_renderer_boot(variant, workdir, keys, guests):
    renderer = guest_image.NET_VARIANTS[variant]
    image = guest_image.image(variant)
    inst = instance(f"iid-{variant}", f"vm-{renderer}", keys, default=False)
    inst["network-config"] = NETWORK_CONFIG
    seed = seed_iso(workdir, write_fixture(workdir / "nc.yaml", inst), "nocloud")
    g = guests(image, workdir / "g", disks=[seed]).start()
    report = g.wait_report(1)
    assert_first_login(g, keys["user"][0], "alice")
    st = status_of(report)
    assert st["instance_id"] == f"iid-{variant}", report.status
    # The cloud-config lists its own users and no `default` (the first real boot failed there):
    # nobody gets the metadata's keys, and ssh-keys still ends ok.
    assert node(st, "module:ssh-keys") is None, "ssh-keys did not end ok"
    assert_provisioned(g, keys, f"vm-{renderer}", default_user=None)

    def root(cmd: str) -> str:
        return g.root(keys["user"][0], "alice", cmd)

    record = json.loads(root("cat /var/lib/cidag/last-run.json"))
    network = next(n for n in record["nodes"] if n["id"] == "module:network")
    assert network["status"] == "ok", network
    assert f"renderer {renderer}:" in json.dumps(network.get("log")), network
    assert root(f"stat -c %a {FILES[renderer]}").strip() == ("644" if renderer == "eni" else "600")
    assert EXPECT[renderer] in root(APPLIED[renderer])
    links = json.loads(root("ip -j addr show"))
    nic = next(link for link in links if link.get("address") == MAC)
    assert nic["mtu"] == 1400, nic
    assert {(a["local"], a["prefixlen"]) for a in nic["addr_info"] if a["family"] == "inet"} == {("169.254.2.15", 16)}
    routes = json.loads(root("ip -j route show default"))
    assert [(r["gateway"], r["dev"]) for r in routes] == [("169.254.2.2", nic["ifname"])], routes
    assert not list(root("ls /etc/systemd/network/").split()), "networkd files written besides"
