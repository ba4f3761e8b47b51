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
    import atexit
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="cidag-rsa-"))
    atexit.register(shutil.rmtree, d, True)  # one key for the whole session, removed at its end
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-m", "PEM", "-f", str(d / "k")],
                   check=True)
    return (d / "k.pub").read_text().strip(), d / "k"


def rsa_key() -> tuple[str, Path]:
    """A fresh ssh-rsa public key and its private key file (skips when ssh-keygen is missing)."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    return _rsa_key()


def _copy_with_libs(root: Path, program: str, dest: str) -> None:
    """Copy a host program to ROOT/dest and the shared libraries ldd lists to their own paths."""
    target = root / dest.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(program), target)
    res = subprocess.run(["ldd", os.path.realpath(program)], capture_output=True, text=True)
    for line in res.stdout.splitlines():
        lib = next((p for p in line.split() if p.startswith("/")), None)
        if lib:
            (root / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), root / lib.lstrip("/"))


def chroot_root(tmp_path: Path, tools: dict[str, str] | tuple = ()) -> Path:
    """A target root one can chroot into: the host's /bin/sh (and its libraries) copied in, and
    stand-in tools in ROOT/usr/bin, each a shell script that appends `NAME ARGS` to
    ROOT/var/log/tools.log (a dict gives extra script lines per tool). Needs root and ldd."""
    if not IS_ROOT or shutil.which("chroot") is None or shutil.which("ldd") is None:
        pytest.skip("chroot needs root (and ldd to copy a shell into the target)")
    root = make_root(tmp_path)
    (root / "bin/sh").unlink()
    _copy_with_libs(root, "/bin/sh", "/bin/sh")
    (root / "var/log").mkdir(parents=True, exist_ok=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    extra = tools if isinstance(tools, dict) else {t: "" for t in tools}
    for name, body in extra.items():
        p = root / "usr/bin" / name
        p.write_text(f'#!/bin/sh\necho "{name} $*" >> /var/log/tools.log\n{body}\n')
        p.chmod(0o755)
    return root


def tool_calls(root: Path) -> list[str]:
    """The lines the stand-in tools of chroot_root() recorded."""
    log = root / "var/log/tools.log"
    return log.read_text().splitlines() if log.exists() else []
