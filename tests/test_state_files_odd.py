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


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only): the root and state dir of a run that fills it."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_a_run_that_fills_the_disk_still_leaves_a_true_record(small_disk, manifests):
    """Issue 15 item 3: before, exit 70 'No space left on device' and `status` said no run."""
    s, m = manifests("""
    version: 1
    sources:
      - {name: s, type: static, capabilities: [instance-id], settings: {data: {instance-id: i-1}}}
    """, """
    version: 1
    modules:
      - name: fill
        type: exec
        settings: {command: 'head -c 100000000 /dev/zero > "$CIDAG_ROOT/fill"'}
      - {name: next, type: exec, after: [fill], settings: {command: 'echo next'}}
    """)
    root = small_disk / "root"
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root))
    assert proc.returncode == 1, proc.stderr  # `fill` failed (its shell could not write): exit 1, not 70
    assert "Traceback" not in proc.stderr
    status = cidag("status", "--root", str(root))
    assert status.returncode == 1 and "result: failed" in status.stdout
    record = (root / "var/lib/cidag/last-run.json").read_text()
    assert '"module:next"' in record and "No space left on device" in record


MT_SOURCES = """
version: 1
sources:
  - {name: s, type: static, capabilities: [instance-id], settings: {data: {instance-id: i-1}}}
"""
MT_MODULES = """
version: 1
modules:
  - {name: work, type: exec, settings: {command: 'touch "$CIDAG_ROOT/done"'}}
"""


@pytest.mark.parametrize("odd", ["directory", "immutable"])
def test_an_odd_last_run_file_loses_no_work(tmp_path, manifests, odd):
    """Issue 15 item 4: a directory where last-run.json belongs crashed `run` after all its
    work (IsADirectoryError); an immutable last-run.json too. Now: one line, the run's own
    exit code, its record kept under runs/."""
    import subprocess

    s, m = manifests(MT_SOURCES, MT_MODULES)
    root = tmp_path / "root"
    last = root / STATE / "last-run.json"
    if odd == "directory":
        last.mkdir(parents=True)
    else:
        assert cidag("run", "-q", "--sources", s, "--modules", m, "--root", str(root)).returncode == 0
        if subprocess.run(["chattr", "+i", str(last)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i not possible here")
        (root / "done").unlink()
    try:
        proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root), "--force-all")
    finally:
        if odd == "immutable":
            subprocess.run(["chattr", "-i", str(last)])
    assert proc.returncode == 0, proc.stderr
    assert (root / "done").exists()
    warning = [line for line in proc.stderr.splitlines() if "not updated" in line]
    assert len(warning) == 1 and "this run's record is" in warning[0] and "Traceback" not in proc.stderr
    kept = warning[0].rsplit(" ", 1)[1]
    assert '"module:work"' in open(kept).read()
