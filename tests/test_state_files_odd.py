"""Odd files where state files or manifests belong (issue 15, item 4): a FIFO never hangs a
reader, a directory or a 100,000-deep JSON is one line and exit 2, never a traceback."""
from __future__ import annotations

import json
import os

import pytest

from conftest import cidag, load_record, mount_tmpfs, nodes_by_id

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
    with mount_tmpfs(tmp_path / "disk", size="2m") as mnt:
        yield mnt


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


# -- odd things where a marker belongs (issue 15 item 4; docs/state-and-record.md, "Markers") ------

MK_MODULES = """
version: 1
modules:
  - {name: work, type: exec, settings: {command: 'echo run >> "$CIDAG_ROOT/work"'}}
  - {name: one, type: exec, frequency: once, settings: {command: 'echo run >> "$CIDAG_ROOT/one"'}}
"""
MARKERS = {"work": "instances/i-1/markers/work.json", "one": "once/one.json"}


def _socket(path):
    import stat

    os.mknod(path, stat.S_IFSOCK | 0o600)  # a bound socket's inode (bind() limits the path to 108 bytes)


ODD_MARKERS = {
    "directory": lambda p: p.mkdir(),
    "fifo": lambda p: os.mkfifo(p),
    "socket": _socket,
    "device": lambda p: p.symlink_to("/dev/zero"),
    "not-json": lambda p: p.write_bytes(b"\x00\xff garbage"),
    "symlink-to-a-directory": lambda p: p.symlink_to(p.parent),
}


def run_lines(proc) -> list[str]:
    """What a run said on stderr, progress lines left out."""
    return [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("[")]


@pytest.mark.parametrize("module", list(MARKERS))
@pytest.mark.parametrize("odd", list(ODD_MARKERS))
def test_an_odd_thing_where_a_marker_belongs_counts_as_done(tmp_path, manifests, module, odd):
    """make's and systemd's rule: whatever is at the marker's path means done. Before: a
    directory there was not done, the marker could never be written, and the module ran
    again on every boot; a FIFO was silently replaced."""
    s, m = manifests(MT_SOURCES, MK_MODULES)
    root = tmp_path / "root"
    marker = root / STATE / MARKERS[module]
    marker.parent.mkdir(parents=True)
    ODD_MARKERS[odd](marker)
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root), timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    warning = run_lines(proc)
    assert len(warning) == 1 and f"marker {MARKERS[module]} " in warning[0], proc.stderr
    assert f"module {module} taken as done (remove it to run the module again)" in warning[0]
    assert not (root / module).exists()  # it did not run again
    other = "one" if module == "work" else "work"
    assert (root / other).read_text() == "run\n"  # the rest of the run went on
    record = load_record(root / STATE / "last-run.json")
    assert record["result"] == "degraded" and any(MARKERS[module] in f for f in record["faults"])
    assert nodes_by_id(record)[f"module:{module}"]["reason"].startswith("already ran")
    assert not (root / STATE / "running.json").exists()


def test_an_empty_marker_is_a_stamp_made_on_purpose(tmp_path, manifests):
    s, m = manifests(MT_SOURCES, MK_MODULES)
    root = tmp_path / "root"
    marker = root / STATE / MARKERS["one"]
    marker.parent.mkdir(parents=True)
    marker.touch()
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root))
    assert proc.returncode == 0 and not run_lines(proc), proc.stderr
    assert not (root / "one").exists() and load_record(root / STATE / "last-run.json")["result"] == "ok"


def test_a_dangling_symlink_marker_is_no_marker(tmp_path, manifests):
    """As make and systemd see it: a symlink to nothing is absent. The marker replaces the
    link (never written through it, out of the state dir)."""
    s, m = manifests(MT_SOURCES, MK_MODULES)
    root = tmp_path / "root"
    marker = root / STATE / MARKERS["one"]
    marker.parent.mkdir(parents=True)
    marker.symlink_to(tmp_path / "elsewhere.json")
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root))
    assert proc.returncode == 0 and not run_lines(proc), proc.stderr
    assert (root / "one").exists() and marker.is_file() and not marker.is_symlink()
    assert not (tmp_path / "elsewhere.json").exists()


def test_forcing_a_module_whose_marker_is_a_directory(tmp_path, manifests):
    """--force runs it; its marker cannot replace the directory: one line naming it, exit 0."""
    s, m = manifests(MT_SOURCES, MK_MODULES)
    root = tmp_path / "root"
    (root / STATE / MARKERS["one"]).mkdir(parents=True)
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root), "--force", "one")
    assert proc.returncode == 0, proc.stderr
    assert run_lines(proc) == ["cidag.node.module:one: WARNING: marker not written (once/one.json is a directory); "
                               "it will run again next boot"]
    assert (root / "one").exists()


ODD_STATE = {
    "running.json-directory": ("running.json", lambda p: p.mkdir()),
    "reserve-fifo": (".record-reserve", lambda p: os.mkfifo(p)),  # before: run hung for ever, even on SIGTERM
    "reserve-directory": (".record-reserve", lambda p: p.mkdir()),
    "instance-data-directory": ("instance-data.json", lambda p: p.mkdir()),
    "once-a-file": ("once", lambda p: p.write_text("x")),
    "instances-a-fifo": ("instances", lambda p: os.mkfifo(p)),
    "markers-a-file": ("instances/i-1/markers", lambda p: p.write_text("x")),
    "instance-a-dangling-symlink": ("instances/i-1", lambda p: p.symlink_to("/nonexistent/i-1")),
}


@pytest.mark.parametrize("case", list(ODD_STATE))
def test_odd_state_files_never_stop_the_work(tmp_path, manifests, case):
    """Before: a directory at running.json was exit 70 before any work; a FIFO at the record
    reserve hung the run for ever. Now: the work is done, at most one line, exit 0."""
    s, m = manifests(MT_SOURCES, MK_MODULES)
    root = tmp_path / "root"
    name, make = ODD_STATE[case]
    path = root / STATE / name
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root), timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(run_lines(proc)) <= 1, proc.stderr
    assert (root / "work").exists() and (root / "one").exists()
    record = load_record(root / STATE / "last-run.json")
    assert record["result"] in ("ok", "degraded")
    status = cidag("status", "--root", str(root), timeout=30)
    assert status.returncode == 0 and "status: done" in status.stdout, status.stdout + status.stderr


def test_a_full_runs_directory_path_is_named(tmp_path, manifests):
    """runs/ blocked by a FIFO: the work is done, the record cannot be kept: one line saying
    what is in the way, the run's exit code at least 1 (spec: the record is the run's truth)."""
    s, m = manifests(MT_SOURCES, MK_MODULES)
    root = tmp_path / "root"
    (root / STATE).mkdir(parents=True)
    os.mkfifo(root / STATE / "runs")
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root), timeout=30)
    assert proc.returncode == 1 and (root / "work").exists()
    assert run_lines(proc) == [f"cidag: state dir {root / STATE}: the run ended ok but its record could not be "
                               "written (runs is a FIFO, where a directory belongs)"]


def test_a_run_out_of_inodes_still_leaves_a_true_record(tmp_path, manifests):
    """A tmpfs with 40 inodes: a module that makes files exhausts them. Before: runs/ took the
    inode the reserve gave back, the record was lost (`status`: no run), and on tmpfs the
    hard link of last-run.json needs an inode too."""
    s, m = manifests(MT_SOURCES, """
    version: 1
    modules:
      - name: fill
        type: exec
        settings: {command: 'mkdir -p "$CIDAG_ROOT/f"; for i in $(seq 1 100); do : > "$CIDAG_ROOT/f/$i" || exit 1; done'}
      - {name: next, type: exec, after: [fill], settings: {command: 'echo next'}}
    """)
    with mount_tmpfs(tmp_path / "disk", size="4m", nr_inodes=40) as disk:
        root = disk / "root"
        proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root), timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr  # `fill` failed: exit 1
        assert "Traceback" not in proc.stderr
        status = cidag("status", "--root", str(root))
        assert status.returncode == 1 and "result: failed" in status.stdout, status.stdout
        record = load_record(root / STATE / "last-run.json")
        nodes = nodes_by_id(record)
        assert nodes["module:fill"]["status"] == "failed" and "No space left on device" in nodes["module:fill"]["reason"]
        assert nodes["module:next"]["status"] == "ok"
        assert not list((root / STATE).rglob("*.tmp")) and not (root / STATE / "running.json").exists()


def test_a_run_whose_record_cannot_be_written_is_not_shown_as_the_previous_one(tmp_path, manifests):
    """When even the compact record does not fit (the disk was full before the run began, so
    no reserve could be set aside), `status` used to show the previous run as the last
    one. Now the run's running file stays: status says that a run ended without its record,
    and shows the previous one as previous."""
    s, m = manifests(MT_SOURCES, MT_MODULES)
    root = tmp_path / "root"
    with mount_tmpfs(tmp_path / "disk", size="1m") as disk:
        state = disk / "state"
        first = cidag("run", "--sources", s, "--modules", m, "--root", str(root), "--state-dir", str(state))
        assert first.returncode == 0, first.stderr
        # Fill the disk, then free exactly one page: room for the running file, none for the record.
        (disk / "page").write_bytes(b"\0" * 4096)
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        (disk / "page").unlink()
        second = cidag("run", "--sources", s, "--modules", m, "--root", str(root), "--state-dir", str(state))
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert "record could not be written" in second.stderr, second.stderr
        status = cidag("status", "--root", str(root), "--state-dir", str(state), "--format", "json")
    st = json.loads(status.stdout)
    assert st["status"] != "done" and "ended without writing its record" in st["reason"], st
    assert st["previous"]["result"] == "ok"
