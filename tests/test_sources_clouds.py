"""gce, azure, oracle and hetzner against the loopback simulator, and through the engine."""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import run_shipped
from cidag.errors import SourceUnavailable
from cidag.simulator import PLATFORM_DMI, Simulator, load_fixture
from cidag.testing import make_context

SECRET = "sim-Secret-1"  # the fixture's admin password (Azure's ovf UserPassword)
# type -> (path under the simulator's root, the header the platform requires, or None)
CLOUDS = {
    "gce": ("/computeMetadata/v1", ("Metadata-Flavor", "Google")),
    "azure": ("", ("Metadata", "true")),
    "oracle": ("/opc/v2", ("Authorization", "Bearer Oracle")),
    "hetzner": ("/hetzner/v1", None),
}
# A path of each that needs the header, and the status the platform answers without it.
REFUSED = {"gce": ("/computeMetadata/v1/instance/id", 403),
           "azure": ("/metadata/instance?api-version=2021-08-01", 400),
           "oracle": ("/opc/v2/instance/", 401)}
KEYS = load_fixture(None)["instance"]["public-keys"]
USER_DATA = "#cloud-config\nhostname: sim-host\n"


@pytest.fixture
def sim():
    with Simulator(load_fixture(None)) as s:
        yield s


def sysfs(tmp_path: Path, platform: str) -> Path:
    fixture = dict(load_fixture(None), dmi=PLATFORM_DMI[platform])
    return Simulator(fixture).write_sysfs(tmp_path / f"sys-{platform}")


def probe(cloud: str, url: str, tmp_path: Path, platform: str | None = None, timeout: float = 10.0,
          cmdline: str = "", **settings):
    (tmp_path / "cmdline").write_text(cmdline)
    settings = {"url": url + CLOUDS[cloud][0], "sysfs_root": str(sysfs(tmp_path, platform or cloud)),
                "cmdline": str(tmp_path / "cmdline"), "backoff": "50ms", **settings}
    if cloud == "azure":
        settings = {"wireserver": url, "path": str(tmp_path / "no-ovf"), "device": None, **settings}
    ctx, call = make_context("source", cloud, settings, timeout=timeout)
    return call(ctx)


# -- each cloud

def test_gce(sim, tmp_path):
    assert probe("gce", sim.url, tmp_path) == {
        "instance-id": "4520031799277581759", "hostname": "sim-host", "availability-zone": "nova",
        "public-keys": KEYS, "user-data": USER_DATA,
    }
    assert all(r[3] == 200 for r in sim.requests) and len(sim.requests) == 2


def test_gce_keys_by_user_project_keys_blocking_and_expiry(tmp_path):
    expired = 'ssh-rsa AAAAold google-ssh {"userName":"cidag","expireOn":"2001-01-01T00:00:00+0000"}'
    later = 'ssh-rsa AAAAnew google-ssh {"userName":"cidag","expireOn":"2999-01-01T00:00:00+0000"}'
    fixture = load_fixture(None)
    fixture["gce"].update(
        attributes={"ssh-keys": f"alice:ssh-ed25519 AAAAalice\ncloudinit:ssh-ed25519 AAAAci\ncidag:{expired}\n",
                    "sshKeys": f"cidag:{later}"},
        project_attributes={"ssh-keys": "cidag:ssh-ed25519 AAAAproject", "sshKeys": "bob:ssh-ed25519 AAAAbob"})
    with Simulator(fixture) as sim:
        assert probe("gce", sim.url, tmp_path)["public-keys"] == [
            "ssh-ed25519 AAAAci", later, "ssh-ed25519 AAAAproject"]
        assert probe("gce", sim.url, tmp_path, key_users=["*"])["public-keys"] == [
            "ssh-ed25519 AAAAalice", "ssh-ed25519 AAAAci", later, "ssh-ed25519 AAAAproject", "ssh-ed25519 AAAAbob"]
        fixture["gce"]["attributes"]["block-project-ssh-keys"] = "TRUE"
    with Simulator(fixture) as sim:
        assert probe("gce", sim.url, tmp_path)["public-keys"] == ["ssh-ed25519 AAAAci", later]


def test_gce_base64_user_data(tmp_path):
    fixture = load_fixture(None)
    fixture["gce"]["attributes"] = {"user-data": base64.b64encode(b"\x00\xffbinary").decode(),
                                    "user-data-encoding": "base64"}
    with Simulator(fixture) as sim:
        assert probe("gce", sim.url, tmp_path)["user-data"] == b"\x00\xffbinary"


def test_azure_imds_only(sim, tmp_path):
    caps = probe("azure", sim.url, tmp_path)
    report = caps.pop("report-ready")
    assert caps == {
        "instance-id": "5c3e1f5a-7d1b-4a8e-9f2c-3b6d8e0a1c24", "hostname": "sim-host", "availability-zone": "1",
        "public-keys": KEYS, "user-data": USER_DATA, "vendor-data": '#cloud-config\n{"user": {"name": "azureuser"}}\n',
    }
    assert sim.reported == []  # probing does not report: the module does, later
    assert "incarnation 1" in report(timeout=5)
    gs = sim.azure_goal_state()
    assert sim.reported == [{**gs, "state": "Ready"}]
    assert [r[1:4] for r in sim.requests[-2:]] == [("GET", "/machine/", 200), ("POST", "/machine", 200)]


def test_azure_ovf_env_gives_user_password_and_custom_data(sim, tmp_path):
    sim.fixture["azure"]["username"] = "alice"
    sim.fixture["instance"]["user-data"] = "#cloud-config\nruncmd: [true]\n"
    sim.write_ovf(tmp_path / "ovf")
    sim.fixture["instance"]["user-data"] = "#cloud-config\n{}\n"  # IMDS says otherwise: the ovf wins
    caps = probe("azure", sim.url, tmp_path, path=str(tmp_path / "ovf"))
    assert caps["admin-password"] == SECRET
    assert caps["user-data"] == "#cloud-config\nruncmd: [true]\n"
    assert caps["vendor-data"] == '#cloud-config\n{"user": {"name": "alice"}, "ssh_pwauth": true}\n'
    assert caps["public-keys"] == KEYS


def test_azure_broken_ovf_is_one_line_without_its_content(sim, tmp_path):
    (tmp_path / "ovf").mkdir()
    (tmp_path / "ovf/ovf-env.xml").write_text(f"<Environment><UserPassword>{SECRET}</UserPassword>")
    with pytest.raises(RuntimeError, match=r"ovf-env.xml: invalid XML: .*line 1") as exc:
        probe("azure", sim.url, tmp_path, path=str(tmp_path / "ovf"))
    assert SECRET not in str(exc.value) and "\n" not in str(exc.value)


def test_azure_unmountable_device_is_imds_only(sim, tmp_path):
    (tmp_path / "not-a-disk").write_bytes(b"\0" * 4096)
    caps = probe("azure", sim.url, tmp_path, device=str(tmp_path / "not-a-disk"))
    assert caps["instance-id"] == "5c3e1f5a-7d1b-4a8e-9f2c-3b6d8e0a1c24" and "admin-password" not in caps


def test_azure_report_ready_failure_is_one_line(sim, tmp_path):
    report = probe("azure", sim.url, tmp_path, retries=1)["report-ready"]
    sim.add_fault("/machine", method="POST", status=500)
    with pytest.raises(Exception, match=r"HTTP 500") as exc:
        report(timeout=3)
    assert "\n" not in str(exc.value) and sim.reported == []


def test_oracle(sim, tmp_path):
    assert probe("oracle", sim.url, tmp_path) == {
        "instance-id": "ocid1.instance.oc1.phx.anyhqljtsimcidag", "hostname": "sim-host",
        "availability-zone": "qIZq:PHX-AD-1", "public-keys": KEYS, "user-data": USER_DATA,
    }


def test_oracle_bad_base64_user_data(tmp_path):
    fixture = load_fixture(None)
    fixture["oracle"]["instance"] = {"metadata": {"user_data": "not base64!"}}
    with Simulator(fixture) as sim, pytest.raises(RuntimeError, match=r"metadata.user_data: not valid base64"):
        probe("oracle", sim.url, tmp_path)


def test_hetzner(sim, tmp_path):
    sim.fixture["hetzner"]["metadata"] = {"vendor_data": "#cloud-config\npackages: [htop]\n"}
    assert probe("hetzner", sim.url, tmp_path) == {
        "instance-id": "42424242", "hostname": "sim-host", "availability-zone": "fsn1-dc14",
        "public-keys": KEYS, "user-data": USER_DATA, "vendor-data": "#cloud-config\npackages: [htop]\n",
    }  # network-config is served but not exported (docs/sources.md)


def test_hetzner_empty_userdata_is_none(tmp_path):
    fixture = load_fixture(None)
    del fixture["instance"]["user-data"]
    with Simulator(fixture) as sim:
        assert "user-data" not in probe("hetzner", sim.url, tmp_path)


# -- what they all do

@pytest.mark.parametrize("cloud", CLOUDS)
def test_wrong_platform_is_unavailable_at_once(sim, tmp_path, cloud):
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="^not .*: DMI .*OpenStack"):
        probe(cloud, sim.url, tmp_path, platform="openstack")
    assert time.monotonic() - t0 < 0.5 and sim.requests == []


@pytest.mark.parametrize("cloud", CLOUDS)
def test_kernel_command_line_names_the_platform(sim, tmp_path, cloud):
    with pytest.raises(SourceUnavailable, match="kernel command line says ds=nocloud"):
        probe(cloud, sim.url, tmp_path, cmdline="quiet ds=nocloud;s=http://x/\n")
    caps = probe(cloud, sim.url, tmp_path, platform="openstack", cmdline=f"ds={cloud}\n")
    assert caps["hostname"] == "sim-host"


@pytest.mark.parametrize("cloud", sorted(REFUSED))
def test_the_simulator_refuses_a_request_without_the_header(sim, cloud):
    path, status = REFUSED[cloud]
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(sim.url + path, timeout=5)
    assert exc.value.code == status
    name, value = CLOUDS[cloud][1]
    with urllib.request.urlopen(urllib.request.Request(sim.url + path, headers={name: value}), timeout=5) as r:
        assert r.status == 200


@pytest.mark.parametrize("cloud", CLOUDS)
def test_unreachable_is_unavailable_at_once(tmp_path, cloud):
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="connection refused"):
        probe(cloud, "http://127.0.0.1:1", tmp_path, timeout=30)
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("cloud", CLOUDS)
def test_stalled_service_fails_at_the_deadline_in_one_line(sim, tmp_path, cloud):
    sim.add_fault("/*", method="GET", stall=True)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="timeout") as exc:
        probe(cloud, sim.url, tmp_path, timeout=1.0, request_timeout=30)
    assert time.monotonic() - t0 < 3 and "\n" not in str(exc.value)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_server_error_fails_naming_the_url(sim, tmp_path, cloud):
    sim.add_fault("/*", method="GET", status=500)
    with pytest.raises(Exception, match=r"HTTP 500 .* at http://127\.0\.0\.1:\d+/") as exc:
        probe(cloud, sim.url, tmp_path, retries=1)
    assert "\n" not in str(exc.value)


# -- through the engine: the shipped manifests, one cloud's DMI, every URL at the simulator

@pytest.mark.parametrize("cloud", CLOUDS)
def test_shipped_manifests_on_each_cloud(sim, tmp_path, cloud):
    root = tmp_path / "root"
    sysfs(tmp_path, cloud)
    (tmp_path / "cmdline").write_text("")
    if cloud == "azure":
        sim.write_ovf(tmp_path / "ovf")
    rec, nodes, out = run_shipped(root, {
           "CIDAG_CONFIGDRIVE_PATH": str(tmp_path / "none"), "CIDAG_NOCLOUD_PATH": str(tmp_path / "none"),
           "CIDAG_OPENSTACK_URL": sim.url, "CIDAG_EC2_URL": sim.url,
           "CIDAG_GCE_URL": sim.url + "/computeMetadata/v1", "CIDAG_AZURE_URL": sim.url,
           "CIDAG_AZURE_WIRESERVER": sim.url, "CIDAG_AZURE_OVF_PATH": str(tmp_path / "ovf"),
           "CIDAG_AZURE_OVF_DEVICE": "", "CIDAG_ORACLE_URL": sim.url + "/opc/v2",
           "CIDAG_HETZNER_URL": sim.url + "/hetzner/v1",
           "CIDAG_SYSFS": str(tmp_path / f"sys-{cloud}"), "CIDAG_CMDLINE": str(tmp_path / "cmdline")})
    assert nodes[f"source:{cloud}"]["status"] == "available", (nodes[f"source:{cloud}"]["reason"], out.stderr)
    assert rec["capabilities"]["instance-id"]["provider"] == f"source:{cloud}"
    for other in set(CLOUDS) - {cloud}:  # ruled out by DMI, not by a request
        assert nodes[f"source:{other}"]["status"] in ("unavailable", "skipped")
    assert {p.split("/")[1] for _, _, p, _ in sim.requests} <= {"computeMetadata", "metadata", "machine",
                                                                "opc", "hetzner"}
    if cloud == "azure":
        assert nodes["module:report-ready"]["status"] == "ok", nodes["module:report-ready"]["reason"]
        assert [r["state"] for r in sim.reported] == ["Ready"]
        logs = "".join(p.read_text(errors="replace") for p in (root / "var/lib/cidag").rglob("*") if p.is_file())
        assert SECRET not in json.dumps(rec) + out.stdout + out.stderr + logs
        # The ovf's UserName is the default user (vendor-data `user:`), and gets the ovf's password.
        assert "\nazureuser:x:" in (root / "etc/passwd").read_text()
        assert "password set for azureuser" in json.dumps(nodes["module:set-password"]["log"])
    else:
        assert nodes["module:report-ready"]["status"] == "ok" and sim.reported == []
        assert "nothing to report" in json.dumps(nodes["module:report-ready"]["log"])
