"""Fixtures for the boot tests: the cached guest image, seeds, a metadata service on loopback.

The boot tests run where the machine can build and boot the image (root,
mmdebstrap, QEMU, xorriso, ssh); `CIDAG_VM_TESTS=0` skips them, `=1` makes a
missing tool an error instead of a skip.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guest_image  # noqa: E402
import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "vm: boots a QEMU guest (slow; CIDAG_VM_TESTS=0 skips)")
    config.addinivalue_line("markers", "boots(n): the test boots a guest n times (tests/conftest.py starts these first)")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    mode = os.environ.get("CIDAG_VM_TESTS", "auto")
    missing = guest_image.missing_tools()
    for item in items:
        if here not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.vm)
        if mode == "0":
            item.add_marker(pytest.mark.skip(reason="CIDAG_VM_TESTS=0"))
        elif missing and mode != "1":
            item.add_marker(pytest.mark.skip(reason="boot tests need: " + ", ".join(missing)))


@pytest.fixture(scope="session")
def cidag_image() -> guest_image.Image:
    """The bookworm image with cidag from this checkout (built once per machine and checkout)."""
    return guest_image.image("cidag")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Fresh key pairs: 'meta' (given by the metadata) and 'user' (in the cloud-config)."""
    return {name: machine.keypair(tmp_path, name) for name in ("meta", "user")}


def write_fixture(path: Path, instance: dict, **sections) -> Path:
    """A `cidag serve-metadata` fixture: the `instance` section plus optional others."""
    doc = {"instance": instance, **sections}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _simulator(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "cidag", "serve-metadata", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def seed_iso(workdir: Path, fixture: Path, kind: str) -> Path:
    """A config drive (`config-2`), NoCloud (`cidata`) or Azure provisioning (`ovf-env.xml`) ISO
    rendered from a fixture."""
    tree = workdir / f"seed-{kind}"
    option, label = {"configdrive": ("--write-configdrive", "config-2"), "nocloud": ("--write-nocloud", "cidata"),
                     "azure": ("--write-ovf", "rd_rdfe_stable")}[kind]
    proc = _simulator(str(fixture), option, str(tree), "--no-serve", "-q")
    proc.communicate(timeout=60)
    assert proc.returncode == 0, f"serve-metadata {option} failed"
    return machine.make_iso(tree, label, workdir / f"{kind}.iso")


@pytest.fixture
def metadata_service():
    """start(fixture, *faults) -> the loopback port of a running `cidag serve-metadata`."""
    procs: list[subprocess.Popen] = []

    def start(fixture: Path, *faults: dict) -> int:
        args = [str(fixture), "--port", "0", "-q"]
        for fault in faults:
            args += ["--fault", json.dumps(fault)]
        proc = _simulator(*args)
        procs.append(proc)
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), f"serve-metadata did not start: {url!r}"
        return int(url.rsplit(":", 1)[1])

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def guests():
    """new(**kw) -> a Guest; every guest is killed at the end of the test."""
    made: list[machine.Guest] = []

    def new(*args, **kw) -> machine.Guest:
        g = machine.Guest(*args, **kw)
        made.append(g)
        return g

    yield new
    for g in made:
        g.kill()
