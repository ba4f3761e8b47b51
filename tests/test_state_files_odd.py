"""Odd files where state files or manifests belong (issue 15, item 4): a FIFO never hangs a
reader, a directory or a 100,000-deep JSON is one line and exit 2, never a traceback."""
from __future__ import annotations

import os

import pytest

from conftest import cidag

STATE = "var/lib/cidag"
READERS = [("status",), ("query", "hostname"), ("analyze", "blame")]


def state_with(tmp_path, name: str, make) -> str:
    state = tmp_path / STATE
    state.mkdir(parents=True)
    make(state / name)
    return str(tmp_path)


def fifo(path):
    os.mkfifo(path)


def deep_json(path):
    path.write_text("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("name", ["last-run.json", "instance-data.json", "running.json"])
@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_a_fifo_in_the_state_dir_hangs_no_reader(tmp_path, name, args):
    root = state_with(tmp_path, name, fifo)
    proc = cidag(*args, "--root", root, timeout=20)  # before: blocked for ever on open()
    assert proc.returncode in (2, 3, 130), proc.stdout + proc.stderr  # 130: status calls it a killed run
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 1


@pytest.mark.parametrize("name, args", [("last-run.json", ("status",)), ("instance-data.json", ("query", "hostname")),
                                        ("last-run.json", ("analyze", "blame"))])
def test_a_deeply_nested_state_file_is_one_line(tmp_path, name, args):
    root = state_with(tmp_path, name, deep_json)
    proc = cidag(*args, "--root", root, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "nested too deep" in proc.stderr and "Traceback" not in proc.stderr


def test_wait_and_status_with_a_directory_as_the_record(tmp_path):
    root = state_with(tmp_path, "last-run.json", lambda p: p.mkdir())
    proc = cidag("status", "--root", root, timeout=20)
    assert proc.returncode == 2 and "is a directory" in proc.stderr and "Traceback" not in proc.stderr
    proc = cidag("wait", "done", "--root", root, timeout=20)
    assert proc.returncode == 0 and "no run recorded" in proc.stdout


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_fifo_given_as_a_manifest(tmp_path, command):
    os.mkfifo(tmp_path / "modules.yaml")
    args = [str(tmp_path / "modules.yaml")] if command == "check" else [
        "--modules", str(tmp_path / "modules.yaml"), "--root", str(tmp_path / "root")]
    proc = cidag(command, *args, timeout=20)
    assert proc.returncode == 2
    assert f"{tmp_path / 'modules.yaml'}:1:1: cannot read: not a regular file (a FIFO)" in proc.stdout + proc.stderr
