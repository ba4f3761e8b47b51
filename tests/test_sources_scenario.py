"""The proposal scenario for real: config drive present, OpenStack HTTP answering after ~2 s,
EC2 unreachable; `select: preferred` with the config drive preferred."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_shipped
from cidag.engine import RunOptions, load_and_compile, run
from cidag.simulator import Simulator, load_fixture

OPENSTACK_DELAY = 1.0  # per request; the probe needs two round trips: ~2 s


def post_it(ctx):
    """A module type (referenced as test_sources_scenario:post_it) that posts the admin password."""
    ctx.caps["post-password"](ctx.caps["admin-password"])
    return None


@pytest.fixture
def world(tmp_path):
    """The simulator with its config drive and fake DMI written, OpenStack slowed down."""
    with Simulator(load_fixture(None)) as sim:
        sim.add_fault("/openstack*", method="GET", delay=OPENSTACK_DELAY)
        sim.write_configdrive(tmp_path / "config-2")
        sim.write_sysfs(tmp_path / "sys")
        (tmp_path / "cmdline").write_text("")
        yield sim, tmp_path


def write_manifests(tmp_path: Path, sim: Simulator) -> tuple[Path, Path]:
    checks = {"sysfs_root": str(tmp_path / "sys"), "cmdline": str(tmp_path / "cmdline")}
    sources = {"version": 1, "select": "preferred", "sources": [
        {"name": "configdrive", "type": "configdrive", "timeout": "10s",
         "capabilities": ["instance-id", "hostname", "public-keys", "admin-password"],
         "settings": {"path": str(tmp_path / "config-2")}},
        {"name": "openstack", "type": "openstack-http", "timeout": "30s",
         "capabilities": ["instance-id", "hostname", "public-keys", "admin-password", "post-password"],
         "settings": {"url": sim.url, **checks}},
        {"name": "ec2", "type": "ec2", "timeout": "30s",
         "capabilities": ["instance-id", "hostname", "local-ipv4"],
         "settings": {"url": "http://127.0.0.1:1", **checks, "platform_check": False}},
    ]}
    modules = {"version": 1, "modules": [
        {"name": "hostname-file", "type": "exec", "needs": ["hostname"], "frequency": "per-boot",
         "settings": {"command": 'printf "%s" "$CIDAG_CAP_HOSTNAME" > "$CIDAG_ROOT/hostname"'}},
        {"name": "keys-file", "type": "exec", "needs": ["public-keys"], "frequency": "per-boot",
         "settings": {"command": 'printf "%s" "$CIDAG_CAP_PUBLIC_KEYS" > "$CIDAG_ROOT/keys.json"'}},
        {"name": "post-password", "type": "test_sources_scenario:post_it", "frequency": "per-boot",
         "needs": ["admin-password", "post-password"]},
    ]}
    s, m = tmp_path / "sources.yaml", tmp_path / "modules.yaml"
    s.write_text(yaml.safe_dump(sources, sort_keys=False))
    m.write_text(yaml.safe_dump(modules, sort_keys=False))
    return s, m


def test_config_drive_modules_finish_before_the_http_probe_and_post_password_comes_from_openstack(world):
    sim, tmp_path = world
    root = tmp_path / "root"
    root.mkdir()
    s, m = write_manifests(tmp_path, sim)
    result = run(load_and_compile(str(s), str(m)), RunOptions(root=root, jobs=4, handle_signals=False))
    rec = result.record
    nodes = {n["id"]: n for n in rec["nodes"]}
    caps = rec["capabilities"]
    assert result.exit_code == 0, nodes
    assert nodes["source:configdrive"]["status"] == "available"
    assert nodes["source:openstack"]["status"] == "available"
    # EC2 is refused at once, unless the config drive settled everything it offers first:
    # then the engine stops waiting for it ("not needed any more").
    ec2 = nodes["source:ec2"]
    assert (ec2["status"], "connection refused" in ec2["reason"]) in {("unavailable", True), ("skipped", False)}
    assert ec2["end_s"] < 1.0
    # One run, two sources.
    assert caps["hostname"]["provider"] == "source:configdrive"
    assert caps["admin-password"]["provider"] == "source:configdrive"
    assert caps["post-password"]["provider"] == "source:openstack"
    # Config-drive-only modules are done before the HTTP probe ends.
    http_end = nodes["source:openstack"]["end_s"]
    assert http_end >= 2 * OPENSTACK_DELAY * 0.9
    assert nodes["module:hostname-file"]["end_s"] < http_end
    assert nodes["module:keys-file"]["end_s"] < http_end
    assert nodes["module:post-password"]["start_s"] >= http_end
    assert (root / "hostname").read_text() == "sim-host"
    assert sim.passwords == [b"sim-Secret-1"]
    assert "sim-Secret-1" not in json.dumps(rec)


def test_shipped_manifests_against_the_simulator(world):
    """`python -m cidag run` on the shipped sources.yaml and modules.yaml, aimed at the simulator."""
    sim, tmp_path = world
    root = tmp_path / "root"
    rec, nodes, out = run_shipped(root, {
        "CIDAG_CONFIGDRIVE_PATH": str(tmp_path / "config-2"), "CIDAG_NOCLOUD_PATH": str(tmp_path / "no-seed"),
        "CIDAG_OPENSTACK_URL": sim.url, "CIDAG_EC2_URL": "http://127.0.0.1:1",
        "CIDAG_SYSFS": str(tmp_path / "sys"), "CIDAG_CMDLINE": str(tmp_path / "cmdline")})
    assert nodes["source:configdrive"]["status"] == "available", out.stderr
    assert nodes["source:openstack"]["status"] == "available", nodes["source:openstack"]["reason"]
    # Absent here; "skipped" when the config drive settled all they offer before they answered.
    assert nodes["source:ec2"]["status"] in ("unavailable", "skipped")
    assert nodes["source:nocloud"]["status"] in ("unavailable", "skipped")
    assert rec["capabilities"]["instance-id"]["provider"] == "source:configdrive"
    # config drive -> network -> HTTP source, in one run.
    assert nodes["module:network"]["status"] == "ok", nodes["module:network"]["reason"]
    assert nodes["source:openstack"]["start_s"] >= nodes["module:network"]["end_s"]
    assert "MACAddress=fa:16:3e:00:00:01\n" in (root / "etc/systemd/network/10-cidag-tap0.network").read_text()
    if "post-password" in rec["capabilities"]:
        assert rec["capabilities"]["post-password"]["provider"] == "source:openstack"
        if nodes.get("module:set-password", {}).get("status") == "ok":
            # set-password posts it RSA-encrypted to the ssh-rsa key, never in clear.
            assert len(sim.passwords) == 1 and b"sim-Secret-1" not in sim.passwords[0]
    assert "sim-Secret-1" not in json.dumps(rec) + out.stdout + out.stderr
