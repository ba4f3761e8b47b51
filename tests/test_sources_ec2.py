"""ec2 (IMDSv2) against the loopback simulator."""
from __future__ import annotations

import time

import pytest

from cidag.errors import SourceUnavailable
from cidag.simulator import Simulator, load_fixture
from cidag.testing import make_context


def ec2_fixture(**instance) -> dict:
    fixture = load_fixture(None)
    fixture["instance"].update(instance)
    fixture["dmi"] = {"sys_vendor": "Amazon EC2", "product_name": "m5.large",
                      "product_uuid": "ec2e1916-9099-7caf-fd21-012345abcdef"}
    return fixture


@pytest.fixture
def sim():
    with Simulator(ec2_fixture()) as s:
        yield s


@pytest.fixture
def dmi(tmp_path):
    root = tmp_path / "sys"
    Simulator(ec2_fixture()).write_sysfs(root)
    return root


def probe(url, dmi, timeout=10.0, **settings):
    settings = {"url": url, "sysfs_root": str(dmi), "cmdline": "/nonexistent", "backoff": "50ms", **settings}
    ctx, call = make_context("source", "ec2", settings, timeout=timeout)
    return call(ctx)


def test_success_with_a_token(sim, dmi):
    caps = probe(sim.url, dmi)
    assert caps == {
        "instance-id": "i-0c1d2a3b4e5f60718",
        "hostname": "sim-host",
        "availability-zone": "nova",
        "local-ipv4": "10.0.0.5",
        "public-keys": sim.instance["public-keys"],
        "user-data": "#cloud-config\nhostname: sim-host\n",
    }
    assert sim.requests[0][1:3] == ("PUT", "/latest/api/token")
    assert all(r[3] == 200 for r in sim.requests)


def test_several_public_keys(dmi):
    keys = ["ssh-ed25519 AAAA one", "ssh-rsa AAAB two", "ssh-ed25519 AAAC three"]
    with Simulator(ec2_fixture(**{"public-keys": keys})) as sim:
        assert probe(sim.url, dmi)["public-keys"] == keys


def test_no_user_data_is_not_a_failure(dmi):
    fixture = ec2_fixture()
    del fixture["instance"]["user-data"]
    with Simulator(fixture) as sim:
        caps = probe(sim.url, dmi)
    assert "user-data" not in caps and caps["instance-id"]


def test_token_refused_fails_without_imdsv1(sim, dmi):
    sim.add_fault("/latest/api/token", status=403)
    with pytest.raises(Exception, match=r"IMDSv2 token refused: PUT .* got HTTP 403") as exc:
        probe(sim.url, dmi)
    assert not isinstance(exc.value, SourceUnavailable)


def test_token_refused_falls_back_to_imdsv1_when_allowed(dmi):
    fixture = ec2_fixture()
    fixture["ec2"]["imdsv1"] = True
    with Simulator(fixture) as sim:
        sim.add_fault("/latest/api/token", status=403)
        assert probe(sim.url, dmi, allow_imdsv1=True)["instance-id"] == "i-0c1d2a3b4e5f60718"


def test_no_token_service_is_unavailable(sim, dmi):
    sim.add_fault("/latest/api/token", status=404)
    with pytest.raises(SourceUnavailable, match="no IMDSv2 token service"):
        probe(sim.url, dmi)


def test_wrong_platform_is_unavailable_in_milliseconds(sim, dmi):
    (dmi / "class/dmi/id/sys_vendor").write_text("OpenStack Foundation\n")
    (dmi / "class/dmi/id/product_uuid").write_text("6c1f2a7e-3b1d-4c5e-9f0a-8d2b7c4e1a90\n")
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="not EC2"):
        probe(sim.url, dmi)
    assert time.monotonic() - t0 < 0.5 and sim.requests == []


def test_unreachable_is_unavailable_at_once(dmi):
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="connection refused"):
        probe("http://127.0.0.1:1", dmi, timeout=30)
    assert time.monotonic() - t0 < 2


def test_slow_service_is_read_in_about_two_round_trips_with_max_parallel(sim, dmi):
    sim.add_fault("/latest/*", delay=0.4)
    t0 = time.monotonic()
    probe(sim.url, dmi, max_parallel=8)
    assert time.monotonic() - t0 < 2.0  # eight requests one after another (the default): 3.2 s


def test_flapping_token_service_is_retried(sim, dmi):
    sim.add_fault("/latest/api/token", status=500, first=2)
    assert probe(sim.url, dmi, retries=3)["instance-id"]


def test_stalled_fails_at_the_deadline(sim, dmi):
    sim.add_fault("/latest/meta-data/local-ipv4", stall=True)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="timeout"):
        probe(sim.url, dmi, timeout=1.0, request_timeout=30)
    assert time.monotonic() - t0 < 1.0 + 2


def test_wrong_content_fails(sim, dmi):
    sim.add_fault("/latest/meta-data/instance-id", body="<html>\n<body>hello</body>\n</html>")
    with pytest.raises(RuntimeError, match="wrong content"):
        probe(sim.url, dmi)


def test_oversized_user_data_fails(sim, dmi):
    sim.add_fault("/latest/user-data", body="endless")
    with pytest.raises(Exception, match="too large"):
        probe(sim.url, dmi, max_size=1 << 20)


def test_redirect_off_host_fails(sim, dmi):
    sim.add_fault("/latest/meta-data/instance-id", redirect="http://localhost:1/x")
    with pytest.raises(Exception, match="redirect off host refused"):
        probe(sim.url, dmi)


def test_serial_fetch_setting_reads_one_after_another(sim, dmi):
    sim.add_fault("/latest/meta-data/*", delay=0.2)
    t0 = time.monotonic()
    probe(sim.url, dmi, max_parallel=1)
    assert time.monotonic() - t0 > 0.2 * 5
