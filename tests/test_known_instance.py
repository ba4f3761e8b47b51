"""A known instance's reboot: the identity file a run leaves, and the generator that reads it at boot."""
from __future__ import annotations

import os
import subprocess
from importlib import resources
from pathlib import Path

import pytest

import conftest  # noqa: F401  (the suite's fixtures and path set-up)
from cidag import known_instance
from cidag.commands.run_core import RunArgs, run_command

UUID = "6B0E6D4C-2F4E-4C8E-9E38-1A2B3C4D5E6F"
GENERATOR = Path(str(resources.files("cidag") / "data" / "cidag-generator"))


def manifests(tmp_path: Path, login_ok: bool = True, frequency: str = "per-instance") -> tuple[Path, Path]:
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "version: 1\nsources:\n  - name: cd\n    type: static\n    capabilities: [instance-id]\n"
        "    settings: {data: {instance-id: i-1}}\n")
    modules = tmp_path / "modules.yaml"
    modules.write_text(
        "version: 1\nmodules:\n"
        f"  - name: users\n    type: exec\n    needs: [instance-id]\n    frequency: {frequency}\n"
        f"    settings: {{command: \"{'true' if login_ok else 'false'}\"}}\n"
        "  - name: later\n    type: exec\n    frequency: per-boot\n    after: [users]\n"
        "    settings: {command: \"true\"}\n"
        "milestones:\n  login: [users]\n")
    return sources, modules


def run(tmp_path: Path, root: Path, sources: Path, modules: Path) -> int:
    return run_command(RunArgs(sources_path=str(sources), modules_path=str(modules), root=str(root),
                               quiet=True, cache=False))


def make_root(tmp_path: Path, uuid: str | None = UUID) -> Path:
    root = tmp_path / "root"
    dmi = root / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    if uuid is not None:
        (dmi / "product_uuid").write_text(uuid + "\n")
    return root


def identity(root: Path) -> Path:
    return root / "var/lib/cidag" / known_instance.IDENTITY


def test_a_run_whose_login_work_is_done_remembers_the_machine(tmp_path):
    root = make_root(tmp_path)
    assert run(tmp_path, root, *manifests(tmp_path)) == 0
    assert identity(root).read_text().splitlines()[0] == UUID.lower()
    # the reboot: the login module is skipped by its marker, and the file stays
    assert run(tmp_path, root, *manifests(tmp_path)) == 0
    assert identity(root).read_text().splitlines()[0] == UUID.lower()


def test_a_failed_login_module_makes_the_next_boot_wait(tmp_path):
    root = make_root(tmp_path)
    assert run(tmp_path, root, *manifests(tmp_path)) == 0
    assert identity(root).exists()
    # a new instance-id whose login module fails: the file written before is gone
    (tmp_path / "new").mkdir()
    sources, modules = manifests(tmp_path / "new", login_ok=False)
    sources.write_text(sources.read_text().replace("i-1", "i-2"))
    assert run(tmp_path, root, sources, modules) == 1
    assert not identity(root).exists()


@pytest.mark.parametrize("uuid", [None, "00000000-0000-0000-0000-000000000000", "03000200-0400-0500-0006-000700080009"])
def test_no_real_uuid_no_identity(tmp_path, uuid):
    root = make_root(tmp_path, uuid)
    assert run(tmp_path, root, *manifests(tmp_path)) == 0
    assert not identity(root).exists()


def test_login_work_on_every_boot_is_never_skipped(tmp_path):
    root = make_root(tmp_path)
    assert run(tmp_path, root, *manifests(tmp_path, frequency="per-boot")) == 0
    assert not identity(root).exists()


def generate(tmp_path: Path, root: Path) -> Path:
    """Run the generator as systemd does; the path of the mask it may have made."""
    dirs = [tmp_path / "gen" / d for d in ("normal", "early", "late")]
    subprocess.run(["sh", str(GENERATOR), *map(str, dirs)], check=True, timeout=10,
                   env={**os.environ, "CIDAG_GENERATOR_ROOT": str(root)})
    return dirs[1] / "cidag-login.target"


def test_generator_masks_the_login_wait_on_the_same_machine_only(tmp_path):
    root = make_root(tmp_path)
    assert not generate(tmp_path, root).exists()  # first boot: no identity yet
    assert run(tmp_path, root, *manifests(tmp_path)) == 0
    mask = generate(tmp_path, root)
    assert mask.is_symlink() and os.readlink(mask) == "/dev/null"
    # ... and cidag yields the CPU to the logins it no longer holds
    dropin = tmp_path / "gen/normal/cidag.service.d/50-known-instance.conf"
    assert "CPUWeight=20" in dropin.read_text().splitlines()
    mask.unlink()
    dropin.unlink()
    # the image captured and booted as another machine: another UUID, logins wait again
    (root / "sys/class/dmi/id/product_uuid").write_text("0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b\n")
    assert not generate(tmp_path, root).exists()
    assert not dropin.exists()


@pytest.mark.parametrize("uuid", ["00000000-0000-0000-0000-000000000000", None])
def test_generator_never_trusts_a_placeholder(tmp_path, uuid):
    root = make_root(tmp_path, uuid)
    state = root / "var/lib/cidag"
    state.mkdir(parents=True)
    (state / known_instance.IDENTITY).write_text((uuid or "") + "\n")
    assert not generate(tmp_path, root).exists()


def test_generator_never_blocks_on_an_odd_identity_file(tmp_path):
    root = make_root(tmp_path)
    state = root / "var/lib/cidag"
    state.mkdir(parents=True)
    os.mkfifo(state / known_instance.IDENTITY)  # reading it would wait for a writer for ever
    assert not generate(tmp_path, root).exists()  # generate() times out after 10 s if it blocks
