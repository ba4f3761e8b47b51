"""Issue 8's engine semantics, with real sources: a reboot of the same instance waits for no
source only already-done modules need; a capability the instance's own source declares but
did not give does not wait for another platform's stalled source (docs/engine.md)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from cidag.engine import RunOptions, load_and_compile, run
from cidag.simulator import Simulator, load_fixture
from conftest import nodes_by_id


@pytest.fixture
def world(tmp_path):
    """A config drive on disk (vendor_data.json is `{}`) and an OpenStack service that stalls."""
    with Simulator(load_fixture(None)) as sim:
        sim.write_configdrive(tmp_path / "config-2")
        for version in ("latest", "2013-04-04"):
            (tmp_path / "config-2/openstack" / version / "vendor_data.json").write_text("{}")
        sim.write_sysfs(tmp_path / "sys")
        (tmp_path / "cmdline").write_text("")
        sim.add_fault("/openstack*", stall=True)
        yield sim, tmp_path


def manifests(tmp_path: Path, sim: Simulator, select: str, modules: list) -> tuple[str, str]:
    checks = {"sysfs_root": str(tmp_path / "sys"), "cmdline": str(tmp_path / "cmdline")}
    sources = {"version": 1, "select": select, "sources": [
        {"name": "configdrive", "type": "configdrive", "timeout": "10s",
         "capabilities": ["instance-id", "hostname", "public-keys", "user-data", "vendor-data"],
         "settings": {"path": str(tmp_path / "config-2")}},
        {"name": "openstack", "type": "openstack-http", "timeout": "30s",
         "capabilities": ["instance-id", "hostname", "public-keys", "user-data", "vendor-data", "post-password"],
         "settings": {"url": sim.url, "retries": 0, **checks}},
    ]}
    s, m = tmp_path / "sources.yaml", tmp_path / "modules.yaml"
    s.write_text(yaml.safe_dump(sources, sort_keys=False))
    m.write_text(yaml.safe_dump({"version": 1, "modules": modules}, sort_keys=False))
    return str(s), str(m)


def exec_mod(name, command="true", **kw):
    return {"name": name, "type": "exec", "settings": {"command": command}, **kw}


@pytest.mark.parametrize("select", ["first", "preferred"])
def test_a_want_the_instance_source_declares_but_did_not_give_does_not_wait(world, select):
    sim, tmp_path = world
    s, m = manifests(tmp_path, sim, select, [
        {"name": "user-data", "type": "user-data", "frequency": "per-boot",
         "wants": ["user-data", "vendor-data"], "provides": ["cloud-config", "user-scripts"]},
        exec_mod("final", frequency="per-boot", wants=["cloud-config"])])
    t = time.monotonic()
    rec = run(load_and_compile(s, m), RunOptions(root=tmp_path / "root", handle_signals=False)).record
    assert time.monotonic() - t < 10, "waited for the stalled source"
    n = nodes_by_id(rec)
    assert rec["capabilities"]["instance-id"]["provider"] == "source:configdrive"
    vendor = rec["capabilities"]["vendor-data"]
    assert vendor["status"] == "unavailable"
    assert "openstack not asked (configdrive is this instance's source)" in vendor["reason"]
    assert n["module:user-data"]["status"] == "ok" and n["module:final"]["status"] == "ok"
    assert n["source:openstack"]["status"] == "skipped"  # cancelled: it can change nothing
    assert rec["result"] == "ok"


def test_a_reboot_of_the_same_instance_does_not_probe_sources_only_done_modules_need(world):
    sim, tmp_path = world
    sim.clear_faults()
    s, m = manifests(tmp_path, sim, "preferred", [
        exec_mod("hostname", 'echo "$CIDAG_CAP_HOSTNAME" > "$CIDAG_ROOT/hostname"', wants=["hostname"]),
        exec_mod("post", needs=["post-password"]),  # only the HTTP source offers it
        exec_mod("every-boot", 'echo "$CIDAG_INSTANCE_ID" > "$CIDAG_ROOT/iid"', frequency="per-boot")])
    cg = load_and_compile(s, m)
    root = tmp_path / "root"
    first = run(cg, RunOptions(root=root, handle_signals=False)).record
    assert nodes_by_id(first)["module:post"]["status"] == "ok"
    assert nodes_by_id(first)["source:openstack"]["status"] == "available"
    # Second boot, same instance: the HTTP service now stalls, and nothing needs it.
    sim.add_fault("/openstack*", stall=True)
    t = time.monotonic()
    second = run(cg, RunOptions(root=root, handle_signals=False)).record
    assert time.monotonic() - t < 10, "the reboot waited for a source only done modules need"
    n = nodes_by_id(second)
    assert n["source:openstack"]["status"] == "skipped"
    assert n["source:openstack"]["reason"] == "not needed"
    assert n["source:openstack"]["start_s"] is None  # never probed
    assert n["module:post"]["status"] == "skipped"
    assert n["module:post"]["reason"].startswith("already ran for instance")
    assert n["module:post"]["reason_code"] == "already-ran"
    assert n["module:every-boot"]["status"] == "ok"
    assert second["result"] == "ok"


def test_a_new_instance_probes_the_deferred_source_once_instance_id_is_known(world):
    sim, tmp_path = world
    sim.clear_faults()
    s, m = manifests(tmp_path, sim, "preferred", [exec_mod("post", needs=["post-password"])])
    cg = load_and_compile(s, m)
    root = tmp_path / "root"
    run(cg, RunOptions(root=root, handle_signals=False))
    # The same disk booted as another instance: the markers are not its own.
    meta = tmp_path / "config-2/openstack/latest/meta_data.json"
    meta.write_text(meta.read_text().replace(sim.instance["instance-id"], "i-another-one"))
    rec = run(cg, RunOptions(root=root, handle_signals=False)).record
    n = nodes_by_id(rec)
    assert rec["instance_id"] == "i-another-one"
    assert n["source:openstack"]["status"] == "available"
    assert n["source:openstack"]["start_s"] >= n["source:configdrive"]["end_s"]  # deferred until then
    assert n["module:post"]["status"] == "ok"
