"""openstack-http against the loopback simulator: what a probe gives, and how it fails."""
from __future__ import annotations

import time

import pytest

from cidag.errors import SourceUnavailable
from cidag.simulator import Simulator, load_fixture
from cidag.sources.openstack import PasswordConflict
from cidag.testing import make_context

SECRET = "sim-Secret-1"


@pytest.fixture
def sim():
    with Simulator(load_fixture(None)) as s:
        yield s


@pytest.fixture
def dmi(tmp_path):
    """A fake sysfs root saying OpenStack; tests change the files to say otherwise."""
    root = tmp_path / "sys"
    Simulator(load_fixture(None)).write_sysfs(root)
    return root


def probe(url, dmi, timeout=10.0, **settings):
    settings = {"url": url, "sysfs_root": str(dmi), "cmdline": "/nonexistent", "backoff": "50ms", **settings}
    ctx, call = make_context("source", "openstack-http", settings, timeout=timeout)
    return call(ctx)


def test_success_exports_every_documented_capability(sim, dmi):
    caps = probe(sim.url, dmi)
    assert caps["instance-id"] == "6c1f2a7e-3b1d-4c5e-9f0a-8d2b7c4e1a90"
    assert caps["hostname"] == "sim-host"
    assert caps["public-keys"][0].startswith("ssh-ed25519 ")
    assert caps["user-data"].startswith("#cloud-config")
    assert caps["vendor-data"].startswith("#cloud-config")
    assert caps["network-config"]["links"][0]["id"] == "tap0"
    assert caps["admin-password"] == SECRET
    assert caps["availability-zone"] == "nova"
    assert callable(caps["post-password"])
    # Version listing first, then the four documents.
    paths = [r[2] for r in sim.requests]
    assert paths[0] == "/openstack"
    assert sorted(paths[1:]) == sorted(f"/openstack/latest/{n}" for n in
                                       ("meta_data.json", "user_data", "vendor_data.json", "network_data.json"))


def test_post_password_then_409_is_reported_not_retried(sim, dmi):
    post = probe(sim.url, dmi)["post-password"]
    post("n3w-pass")
    assert sim.passwords == [b"n3w-pass"]
    with pytest.raises(PasswordConflict, match="already holds a password") as exc:
        post("other-pass")
    assert "other-pass" not in str(exc.value)
    assert [r[3] for r in sim.requests if r[1] == "POST"] == [200, 409]


def test_preset_password_answers_409(dmi):
    fixture = load_fixture(None)
    fixture["openstack"]["password"] = "already"
    with Simulator(fixture) as sim:
        with pytest.raises(PasswordConflict):
            probe(sim.url, dmi)["post-password"]("x")


def test_newest_dated_version_when_latest_is_not_listed(dmi):
    fixture = load_fixture(None)
    fixture["openstack"]["versions"] = ["2013-04-04", "2017-02-22", "2016-06-30"]
    with Simulator(fixture) as sim:
        assert probe(sim.url, dmi)["hostname"] == "sim-host"
        assert "/openstack/2017-02-22/meta_data.json" in [r[2] for r in sim.requests]


def test_optional_documents_may_be_absent(dmi):
    fixture = load_fixture(None)
    del fixture["instance"]["user-data"], fixture["instance"]["vendor-data"]
    fixture["openstack"]["network_data"] = None
    with Simulator(fixture) as sim:
        caps = probe(sim.url, dmi)
    assert "user-data" not in caps and "vendor-data" not in caps and "network-config" not in caps


def test_wrong_platform_is_unavailable_in_milliseconds(sim, dmi):
    ids = dmi / "class/dmi/id"
    (ids / "sys_vendor").write_text("Amazon EC2\n")
    (ids / "product_name").write_text("m5.large\n")
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="not OpenStack: DMI sys_vendor='Amazon EC2'"):
        probe(sim.url, dmi)
    assert time.monotonic() - t0 < 0.5
    assert sim.requests == []  # nothing was asked of the network


def test_platform_check_off_probes_anyway(sim, dmi):
    (dmi / "class/dmi/id/product_name").write_text("Some Other Cloud\n")
    (dmi / "class/dmi/id/sys_vendor").write_text("Other\n")
    assert probe(sim.url, dmi, platform_check=False)["hostname"] == "sim-host"


def test_kernel_command_line_hint(sim, dmi, tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("root=/dev/vda1 ds=ec2 quiet\n")
    with pytest.raises(SourceUnavailable, match="kernel command line says ds=ec2"):
        probe(sim.url, dmi, cmdline=str(cmdline))
    cmdline.write_text("root=/dev/vda1 ci.ds=OpenStack\n")
    (dmi / "class/dmi/id/product_name").write_text("Unknown\n")
    assert probe(sim.url, dmi, cmdline=str(cmdline))["hostname"] == "sim-host"


def test_connection_refused_is_unavailable_at_once(dmi):
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match=r"connection refused at http://127.0.0.1:1 \(1 try in"):
        probe("http://127.0.0.1:1", dmi, timeout=30)
    assert time.monotonic() - t0 < 2


def test_service_without_openstack_is_unavailable(dmi):
    fixture = load_fixture(None)
    fixture["openstack"]["enabled"] = False
    with Simulator(fixture) as sim:
        with pytest.raises(SourceUnavailable, match=r"no OpenStack metadata at .*\(GET /openstack: 404\)"):
            probe(sim.url, dmi)


def test_slow_service_is_read_in_two_round_trips_with_max_parallel(sim, dmi):
    sim.add_fault("/openstack*", delay=0.5)
    t0 = time.monotonic()
    assert probe(sim.url, dmi, max_parallel=4)["hostname"] == "sim-host"
    took = time.monotonic() - t0
    assert 0.9 < took < 2.2  # five requests one after another (the default) take 2.5 s


def test_flapping_service_is_retried(sim, dmi):
    sim.add_fault("/openstack/latest/meta_data.json", status=500, first=2)
    sim.add_fault("/openstack", status=503, first=1)
    assert probe(sim.url, dmi, retries=3)["instance-id"]


def test_stalled_service_fails_at_the_probe_deadline(sim, dmi):
    sim.add_fault("/openstack/latest/user_data", stall=True)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="timeout at .*/user_data") as exc:
        probe(sim.url, dmi, timeout=1.5, request_timeout="30s")
    assert not isinstance(exc.value, SourceUnavailable)
    assert time.monotonic() - t0 < 1.5 + 2


def test_oversized_document_fails(sim, dmi):
    sim.add_fault("/openstack/latest/user_data", body="huge", size=2 << 20)
    with pytest.raises(Exception, match="response too large"):
        probe(sim.url, dmi, max_size=1 << 20)


def test_malformed_json_fails_with_the_document_named(sim, dmi):
    sim.add_fault("/openstack/latest/meta_data.json", body='{"uuid": "x",')
    with pytest.raises(RuntimeError, match=r"meta_data.json: invalid JSON"):
        probe(sim.url, dmi)


def test_wrong_content_fails(sim, dmi):
    sim.add_fault("/openstack", body="<html><body>Welcome to nginx</body></html>")
    with pytest.raises(RuntimeError, match="no usable version in the listing"):
        probe(sim.url, dmi)
    sim.clear_faults()
    sim.add_fault("/openstack/latest/meta_data.json", body='["not", "an", "object"]')
    with pytest.raises(RuntimeError, match="expected a JSON object"):
        probe(sim.url, dmi)


def test_redirect_off_host_fails(sim, dmi):
    sim.add_fault("/openstack/latest/meta_data.json", redirect="http://localhost:1/meta_data.json")
    with pytest.raises(Exception, match="redirect off host refused"):
        probe(sim.url, dmi)


def test_secret_never_in_failure_messages(sim, dmi):
    sim.add_fault("/openstack/latest/network_data.json", body="{broken")
    with pytest.raises(RuntimeError) as exc:
        probe(sim.url, dmi)
    assert SECRET not in str(exc.value)


def test_a_service_that_resets_connections_fails_the_source_as_a_reset(sim, dmi):
    """Issue 15: reported as `timeout at ...` before, though nothing timed out."""
    sim.add_fault("/openstack*", reset=True)
    with pytest.raises(RuntimeError, match=r"^connection reset at .*/openstack \(") as exc:
        probe(sim.url, dmi, timeout=1.5, retries=100)
    assert "timeout" not in str(exc.value)
