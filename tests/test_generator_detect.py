"""cidag-generator's ds-identify job: with /etc/cidag/cidag.detect (or cidag=detect), a boot where
no source can apply leaves cidag out; run as systemd runs it, against a fake root."""
from __future__ import annotations

import os
import subprocess
from importlib import resources
from pathlib import Path

import pytest

import conftest  # noqa: F401
from cidag.disabled import disabled_reason
from cidag.runstatus import current_status

GENERATOR = Path(str(resources.files("cidag") / "data" / "cidag-generator"))
MASKED = ("cidag.service", "cidag-done.service", "cidag-login.target")


def fake_root(tmp_path: Path, *, detect: bool = True, cmdline: str = "root=LABEL=root ro",
              dmi: dict[str, str] | None = None, labels: tuple[str, ...] = ()) -> Path:
    """A root as a bare QEMU guest shows it: DMI of QEMU, /var mounted, no seed; `labels` are
    what the fake blkid prints."""
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cmdline").write_text(cmdline + "\n")
    d = root / "sys/class/dmi/id"
    d.mkdir(parents=True)
    fields = {"sys_vendor": "QEMU", "product_name": "Standard PC (i440FX + PIIX, 1996)",
              "chassis_asset_tag": "", "product_uuid": "6b0e6d4c-2f4e-4c8e-9e38-1a2b3c4d5e6f"}
    fields.update(dmi or {})
    for name, value in fields.items():
        (d / name).write_text(value + "\n")
    (root / "etc/cidag").mkdir(parents=True)
    if detect:
        (root / "etc/cidag/cidag.detect").write_text("")
    (root / "var/lib/cidag").mkdir(parents=True)
    blkid = tmp_path / "blkid"
    blkid.write_text("#!/bin/sh\n" + "".join(f"echo '{label}'\n" for label in labels) + "exit 0\n")
    blkid.chmod(0o755)
    return root


def generate(tmp_path: Path, root: Path, blkid: str | None = None, cwd: Path | None = None) -> set[str]:
    """Run the generator as systemd does; the units it masked in the early dir."""
    dirs = [tmp_path / "gen" / d for d in ("normal", "early", "late")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CIDAG_GENERATOR_ROOT": str(root),
           "CIDAG_GENERATOR_BLKID": blkid or str(tmp_path / "blkid")}
    r = subprocess.run(["sh", str(GENERATOR), *map(str, dirs)], timeout=10, env=env, cwd=cwd,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # nothing for the journal: a missing file is no news
    return {p.name for p in dirs[1].iterdir() if p.is_symlink() and os.readlink(p) == "/dev/null"}


def test_no_source_possible_masks_cidag_and_status_says_why(tmp_path):
    root = fake_root(tmp_path)
    assert generate(tmp_path, root) == set(MASKED)
    reason = disabled_reason(root, root / "proc/cmdline")
    assert reason is not None and reason.startswith("cidag-generator found no source on this boot")
    st = current_status(root / "var/lib/cidag", root, root / "proc/cmdline")
    assert st["status"] == "disabled" and "no source" in st["reason"]


def test_without_the_switch_cidag_always_runs(tmp_path):
    # The shipped sources.yaml ends with a static fallback that always applies.
    root = fake_root(tmp_path, detect=False)
    assert generate(tmp_path, root) == set()
    assert not (root / "run/cidag/generator-disabled").exists()
    assert disabled_reason(root, root / "proc/cmdline") is None


def test_the_switch_on_the_kernel_command_line(tmp_path):
    root = fake_root(tmp_path, detect=False, cmdline="quiet cidag=detect")
    assert generate(tmp_path, root) == set(MASKED)


def test_cidag_enabled_overrides_the_switch(tmp_path):
    root = fake_root(tmp_path, cmdline="quiet cidag=enabled")
    assert generate(tmp_path, root) == set()


@pytest.mark.parametrize("dmi", [
    {"product_name": "OpenStack Nova"},
    {"chassis_asset_tag": "OpenTelekomCloud"},
    {"sys_vendor": "OpenStack Foundation"},
    {"sys_vendor": "Amazon EC2"},
    {"product_uuid": "EC2E1916-9099-7CAF-FD21-012345ABCDEF"},
    {"product_name": "Google Compute Engine", "sys_vendor": "Google"},
    {"chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77", "sys_vendor": "Microsoft Corporation"},
    {"chassis_asset_tag": "OracleCloud.com"},
    {"sys_vendor": "Hetzner"},
    {"sys_vendor": "DigitalOcean"},
], ids=lambda d: next(iter(d.values())))
def test_a_known_cloud_in_dmi_keeps_cidag(tmp_path, dmi):
    root = fake_root(tmp_path, dmi=dmi)
    assert generate(tmp_path, root) == set()


def test_xen_ec2_by_the_hypervisor_uuid(tmp_path):
    root = fake_root(tmp_path)
    (root / "sys/hypervisor").mkdir(parents=True)
    (root / "sys/hypervisor/uuid").write_text("ec2a1b2c-0000-0000-0000-000000000000\n")
    assert generate(tmp_path, root) == set()


@pytest.mark.parametrize("cmdline", ["ds=nocloud;s=http://10.0.0.1/", "ci.ds=ec2", "ci.datasource=openstack"])
def test_a_ds_hint_keeps_cidag(tmp_path, cmdline):
    root = fake_root(tmp_path, cmdline=f"ro {cmdline} quiet")
    assert generate(tmp_path, root) == set()


@pytest.mark.parametrize("label", ["config-2", "CONFIG-2", "cidata", "CIDATA"])
def test_a_labelled_drive_keeps_cidag(tmp_path, label):
    root = fake_root(tmp_path, labels=("root", label))
    assert generate(tmp_path, root) == set()


def test_a_seed_directory_keeps_cidag(tmp_path):
    root = fake_root(tmp_path)
    (root / "var/lib/cloud/seed/nocloud").mkdir(parents=True)
    assert generate(tmp_path, root) == set()
    root2 = fake_root(tmp_path / "2")
    (root2 / "run/cidag/config-2").mkdir(parents=True)
    assert generate(tmp_path / "2", root2) == set()


@pytest.mark.parametrize("what", ["no-dmi", "no-var", "no-blkid"])
def test_where_it_cannot_tell_cidag_runs(tmp_path, what):
    root = fake_root(tmp_path)
    blkid = None
    if what == "no-dmi":
        for f in (root / "sys/class/dmi/id").iterdir():
            f.unlink()
        (root / "sys/class/dmi/id").rmdir()
    elif what == "no-var":
        (root / "var/lib/cidag").rmdir()  # /var not mounted when generators run
    else:
        blkid = str(tmp_path / "no-such-blkid")
    assert generate(tmp_path, root, blkid) == set()


def test_a_label_is_never_a_glob(tmp_path):
    root = fake_root(tmp_path, labels=("*",))
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "cidata").write_text("")  # `*` expanded here would read as a NoCloud label
    assert generate(tmp_path, root, cwd=here) == set(MASKED)


@pytest.mark.parametrize("detect", [False, True])
def test_the_usual_paths_start_no_process(tmp_path, detect):
    """Cost: switch off, or on and a cloud in DMI: only builtins (`read`, `[`, `case`) run
    before the known-instance test; with PATH empty an external command would fail."""
    root = fake_root(tmp_path, detect=detect, dmi={"sys_vendor": "Amazon EC2"})
    dirs = [str(tmp_path / "gen" / d) for d in ("normal", "early", "late")]
    env = {**os.environ, "CIDAG_GENERATOR_ROOT": str(root), "PATH": "/nonexistent"}
    r = subprocess.run(["/bin/sh", "-x", str(GENERATOR), *dirs], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and all(line.startswith("+") for line in r.stderr.splitlines()), r.stderr
    assert "source_possible" in r.stderr if detect else "source_possible" not in r.stderr
