"""Helpers for the module tests: a target root the shadow tools accept, and checks as they make them."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0
KEY_ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@ed"


def make_root(tmp_path: Path) -> Path:
    """An empty target with the shells and /root that pwck looks for inside it."""
    root = tmp_path / "root"
    for d in ("bin", "root", "etc/skel"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for sh in ("sh", "bash"):
        (root / "bin" / sh).write_text("")
        (root / "bin" / sh).chmod(0o755)
    (root / "etc/skel/.profile").write_text("# profile\n")
    return root


def pwck_ok(root: Path) -> None:
    """pwck -r -R and grpck -r -R must find nothing (only as root, and where installed)."""
    for tool in ("pwck", "grpck"):
        if not IS_ROOT or shutil.which(tool) is None:
            continue
        res = subprocess.run([tool, "-r", "-R", str(root)], capture_output=True, text=True)
        assert res.returncode == 0, f"{tool}: {res.stdout}{res.stderr}"


def passwd(root: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}


def shadow(root: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in (root / "etc/shadow").read_text().splitlines()}


def group(root: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}


@functools.lru_cache(maxsize=1)
def _rsa_key() -> tuple[str, Path]:
    """A fresh ssh-rsa public key and its private key file (skips when ssh-keygen is missing)."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    import tempfile

    d = Path(tempfile.mkdtemp())
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-m", "PEM", "-f", str(d / "k")],
                   check=True)
    return (d / "k.pub").read_text().strip(), d / "k"


def rsa_key() -> tuple[str, Path]:
    """A fresh ssh-rsa public key and its private key file (skips when ssh-keygen is missing)."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    return _rsa_key()
