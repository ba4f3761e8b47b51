"""configdrive and nocloud on real directories (and nocloud's seed URL on the loopback simulator)."""
from __future__ import annotations

import json
import os
import time

import pytest

from cidag.errors import SourceUnavailable
from cidag.platform_check import ds_hints
from cidag.simulator import Simulator, load_fixture
from cidag.testing import make_context


def probe(type_ref, timeout=10.0, **settings):
    ctx, call = make_context("source", type_ref, settings, timeout=timeout)
    return call(ctx)


@pytest.fixture
def drive(tmp_path):
    return Simulator(load_fixture(None)).write_configdrive(tmp_path / "config-2")


@pytest.fixture
def seed(tmp_path):
    return Simulator(load_fixture(None)).write_nocloud(tmp_path / "seed")


# -- configdrive

def test_configdrive_success(drive):
    caps = probe("configdrive", path=str(drive))
    assert caps["instance-id"] == "6c1f2a7e-3b1d-4c5e-9f0a-8d2b7c4e1a90"
    assert caps["hostname"] == "sim-host"
    assert caps["admin-password"] == "sim-Secret-1"
    assert caps["network-config"]["networks"][0]["type"] == "ipv4_dhcp"
    assert caps["launch-index"] == "0"
    assert "post-password" not in caps


def test_configdrive_absent_is_unavailable_quickly(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="no config drive at .*missing"):
        probe("configdrive", path=str(tmp_path / "missing"), label="cidag-test-no-such-label")
    assert time.monotonic() - t0 < 0.5


def test_configdrive_missing_device_is_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable, match="no config drive"):
        probe("configdrive", path=str(tmp_path / "missing"), device=str(tmp_path / "no-such-dev"))


def test_directory_that_is_not_a_config_drive_is_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable, match="not a config drive"):
        probe("configdrive", path=str(tmp_path))


def test_configdrive_newest_dated_version_without_latest(drive):
    latest = drive / "openstack/latest"
    for f in latest.iterdir():
        f.unlink()
    latest.rmdir()
    dated = drive / "openstack/2018-08-27"
    dated.mkdir()
    (dated / "meta_data.json").write_text(json.dumps({"uuid": "newer", "hostname": "h2"}))
    assert probe("configdrive", path=str(drive))["instance-id"] == "newer"


def test_configdrive_malformed_json(drive):
    (drive / "openstack/latest/meta_data.json").write_text('{"uuid": ')
    with pytest.raises(RuntimeError, match=r"openstack/latest/meta_data.json: invalid JSON"):
        probe("configdrive", path=str(drive))


def test_configdrive_without_uuid_fails(drive):
    (drive / "openstack/latest/meta_data.json").write_text('{"hostname": "x"}')
    with pytest.raises(RuntimeError, match="no usable uuid"):
        probe("configdrive", path=str(drive))


def test_configdrive_binary_user_data_stays_bytes(drive):
    (drive / "openstack/latest/user_data").write_bytes(b"\x1f\x8b\x08\x00gzip")
    assert probe("configdrive", path=str(drive))["user-data"] == b"\x1f\x8b\x08\x00gzip"


def test_configdrive_symlink_out_of_the_drive_is_refused(drive, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret host file")
    target = drive / "openstack/latest/user_data"
    target.unlink()
    os.symlink(outside, target)
    with pytest.raises(RuntimeError, match="points outside"):
        probe("configdrive", path=str(drive))


# -- nocloud

def test_nocloud_seed_directory(seed):
    caps = probe("nocloud", path=str(seed))
    assert caps["instance-id"] == "6c1f2a7e-3b1d-4c5e-9f0a-8d2b7c4e1a90"
    assert caps["hostname"] == "sim-host"
    assert caps["network-config"] == {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}
    assert caps["user-data"].startswith("#cloud-config")


def test_nocloud_absent_is_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable, match="no NoCloud seed"):
        probe("nocloud", path=str(tmp_path), label="cidag-test-no-such-label", cmdline="/nonexistent")


def test_nocloud_malformed_yaml(seed):
    (seed / "meta-data").write_text("instance-id: [unclosed\n")
    with pytest.raises(RuntimeError, match="meta-data: invalid YAML"):
        probe("nocloud", path=str(seed))


def test_nocloud_wrong_content(seed):
    (seed / "meta-data").write_text("- just\n- a list\n")
    with pytest.raises(RuntimeError, match="expected a YAML mapping"):
        probe("nocloud", path=str(seed))


def test_nocloud_network_config_wrapped_in_network(seed):
    (seed / "network-config").write_text("network:\n  version: 1\n  config: []\n")
    assert probe("nocloud", path=str(seed))["network-config"] == {"version": 1, "config": []}


def test_nocloud_seedfrom_url(tmp_path):
    with Simulator(load_fixture(None)) as sim:
        caps = probe("nocloud", path=str(tmp_path), label="cidag-test-no-such-label",
                     seedfrom=f"{sim.url}/nocloud/")
        assert caps["hostname"] == "sim-host"
        assert len(sim.requests) == 4


def test_nocloud_seed_from_the_kernel_command_line(tmp_path):
    with Simulator(load_fixture(None)) as sim:
        cmdline = tmp_path / "cmdline"
        cmdline.write_text(f"quiet ds=nocloud;s={sim.url}/nocloud/ console=ttyS0\n")
        caps = probe("nocloud", path=str(tmp_path), label="cidag-test-no-such-label", cmdline=str(cmdline))
        assert caps["instance-id"]


def test_nocloud_seed_url_without_meta_data_is_unavailable(tmp_path):
    with Simulator(load_fixture(None)) as sim:
        with pytest.raises(SourceUnavailable, match="no meta-data at seedfrom"):
            probe("nocloud", path=str(tmp_path), label="cidag-test-no-such-label",
                  seedfrom=f"{sim.url}/elsewhere/")


def test_nocloud_seed_url_refused_is_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable, match="connection refused"):
        probe("nocloud", path=str(tmp_path), label="cidag-test-no-such-label",
              seedfrom="http://127.0.0.1:1/")


# -- settings and the kernel command line

def test_unknown_setting_is_an_error():
    from cidag.errors import SettingsError

    with pytest.raises(SettingsError, match="unknown setting 'pth'"):
        make_context("source", "configdrive", {"pth": "/x"})
    with pytest.raises(SettingsError, match="not a duration"):
        make_context("source", "openstack-http", {"request_timeout": "soon"})


def test_ds_hints():
    assert ds_hints("ro ds=nocloud;s=http://10.0.0.1/seed/;i=iid quiet") == [
        ("nocloud", {"s": "http://10.0.0.1/seed/", "i": "iid"})]
    assert ds_hints("ci.ds=OpenStack,Ec2") == [("openstack", {}), ("ec2", {})]
    assert ds_hints("root=/dev/sda dsx=1") == []


def test_platform_check_without_dmi_lets_the_probe_go_on(tmp_path):
    from cidag.platform_check import check

    settings = {"sysfs_root": str(tmp_path / "no-sys"), "cmdline": str(tmp_path / "none")}
    assert check("openstack", settings) == "no DMI to check"
    assert check("ec2", settings) == "no DMI to check"


def test_platform_check_reads_asset_tag_and_hypervisor_uuid(tmp_path):
    from cidag.platform_check import check

    ids = tmp_path / "class/dmi/id"
    ids.mkdir(parents=True)
    (ids / "sys_vendor").write_text("QEMU\n")
    (ids / "chassis_asset_tag").write_text("OpenTelekomCloud\n")
    settings = {"sysfs_root": str(tmp_path), "cmdline": "/nonexistent"}
    assert check("openstack", settings) == "DMI says OpenStack"
    with pytest.raises(SourceUnavailable, match="not EC2"):
        check("ec2", settings)
    (tmp_path / "hypervisor").mkdir()
    (tmp_path / "hypervisor/uuid").write_text("ec2a1b2c-0000-0000-0000-000000000000\n")
    assert check("ec2", settings) == "DMI says EC2"
    assert check("ec2", {**settings, "platform_check": False}) == "platform check off"


# -- any metadata document: a capability dict or a one-line ValueError, never another exception

from hypothesis import given, settings, strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["uuid", "hostname", "name", "public_keys", "keys", "admin_pass",
                         "availability_zone", "launch_index", "cloud-init", "x"]), inner, max_size=6),
    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(meta=_json, vendor=_json, network=_json)
def test_openstack_documents_fail_cleanly(meta, vendor, network):
    from cidag.sources._common import openstack_caps

    try:
        caps = openstack_caps(meta, b"ud", json.dumps(vendor).encode(), json.dumps(network).encode(), "x/")
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(caps["instance-id"], str)
        assert all(isinstance(k, str) for k in caps.get("public-keys", []))


@settings(max_examples=200, deadline=None)
@given(meta=st.text(max_size=60) | _json.map(json.dumps))
def test_nocloud_meta_data_fails_cleanly(meta):
    from cidag.sources.nocloud import from_files

    docs = {"meta-data": meta.encode()}
    try:
        caps = from_files(docs.get, "seed/")
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(caps["instance-id"], str)


# -- a real config-2 device: an ext4 image (this kernel has no iso9660/vfat), loop-mounted read-only

def _config2_image(tmp_path):
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not shutil.which("mount"):
        pytest.skip("needs root, mkfs.ext4 and mount")
    tree = Simulator(load_fixture(None)).write_configdrive(tmp_path / "tree")
    image = tmp_path / "config-2.img"
    with open(image, "wb") as fh:
        fh.truncate(4 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-L", "config-2", "-d", str(tree), str(image)], check=True)
    probe_mnt = tmp_path / "probe-mnt"
    probe_mnt.mkdir()
    ok = subprocess.run(["mount", "-o", "ro", "-t", "ext4", str(image), str(probe_mnt)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot loop-mount here: {ok.stderr.decode().strip()}")
    subprocess.run(["umount", str(probe_mnt)], check=True)
    return image


def _mounts() -> str:
    with open("/proc/mounts") as fh:
        return fh.read()


def test_configdrive_device_is_mounted_read_only_and_released(tmp_path):
    image = _config2_image(tmp_path)
    caps = probe("configdrive", path=str(tmp_path / "no-dir"), device=str(image), fstypes="ext4")
    assert caps["hostname"] == "sim-host"
    assert "cidag-mnt-" not in _mounts()


def test_configdrive_device_already_mounted_is_read_in_place(tmp_path):
    import subprocess

    image = _config2_image(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "ro", "-t", "ext4", str(image), str(mnt)], check=True)
    try:
        # The loop device is what /proc/mounts names; the probe is given that device.
        dev = next(line.split()[0] for line in _mounts().splitlines() if line.split()[1] == str(mnt))
        caps = probe("configdrive", path=str(tmp_path / "no-dir"), device=dev, fstypes="ext4")
        assert caps["instance-id"] == "6c1f2a7e-3b1d-4c5e-9f0a-8d2b7c4e1a90"
        assert str(mnt) in _mounts()  # left as it was
    finally:
        subprocess.run(["umount", str(mnt)])


def test_configdrive_device_that_does_not_mount_fails_in_one_line(tmp_path):
    _config2_image(tmp_path)
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 65536)
    with pytest.raises(RuntimeError, match=r"^cannot mount .*junk.img: ") as exc:
        probe("configdrive", path=str(tmp_path / "no-dir"), device=str(junk), fstypes="ext4")
    assert "\n" not in str(exc.value)


# -- a config drive whose by-label link udev has not made yet (cidag starts before sysinit.target)

def test_configdrive_link_made_by_udev_late_is_found(tmp_path, monkeypatch):
    """udev still has events queued and makes the link 0.5 s into the probe (a real process
    stands for udevd): the probe uses it then, without waiting for the queue to drain."""
    import subprocess

    from cidag.sources import _common

    image = _config2_image(tmp_path)
    by_label, queue = tmp_path / "by-label", tmp_path / "udev-queue"
    by_label.mkdir()
    queue.touch()
    monkeypatch.setattr(_common, "BY_LABEL", by_label)
    monkeypatch.setattr(_common, "UDEV_QUEUE", queue)
    udevd = subprocess.Popen(["sh", "-c", f"sleep 0.5; ln -s {image} {by_label}/config-2; sleep 20; rm {queue}"])
    try:
        t0 = time.monotonic()
        caps = probe("configdrive", path=str(tmp_path / "no-dir"), fstypes="ext4")
        assert caps["hostname"] == "sim-host"
        assert time.monotonic() - t0 < 15  # used when made, not when the queue drained
    finally:
        udevd.kill()


def test_no_config_drive_waits_for_udev_queue_to_drain_and_no_longer(tmp_path, monkeypatch):
    import subprocess

    from cidag.sources import _common

    queue = tmp_path / "udev-queue"
    queue.touch()
    monkeypatch.setattr(_common, "BY_LABEL", tmp_path / "by-label")
    monkeypatch.setattr(_common, "UDEV_QUEUE", queue)
    udevd = subprocess.Popen(["sh", "-c", f"sleep 0.5; rm {queue}"])
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="no config drive"):
        probe("configdrive", path=str(tmp_path / "no-dir"), timeout=30)
    waited = time.monotonic() - t0
    udevd.wait()
    assert 0.4 < waited < 10  # until the queue drained, not until the 30 s deadline


def test_no_config_drive_and_no_udev_is_unavailable_at_once(tmp_path, monkeypatch):
    from cidag.sources import _common

    monkeypatch.setattr(_common, "BY_LABEL", tmp_path / "by-label")
    monkeypatch.setattr(_common, "UDEV_QUEUE", tmp_path / "no-udev-queue")
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable, match="no config drive"):
        probe("configdrive", path=str(tmp_path / "no-dir"), timeout=30)
    assert time.monotonic() - t0 < 1
