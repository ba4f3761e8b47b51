"""`cidag status`: outcome of the last run, exit codes, and --wait that never hangs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cidag.cli import main
from cidag import runstatus
from cidag.commands import status as status_mod
from record_factory import cidag_env, proposal_record, run_args, write_state


def cli(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(autouse=True)
def no_kernel_disable(monkeypatch, tmp_path):
    # The machine running the tests must not decide the outcome through its own /proc/cmdline.
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("quiet\n")
    monkeypatch.setattr(runstatus, "CMDLINE", str(cmdline))


def test_not_run(tmp_path, capsys):
    rc, out, err = cli(capsys, "status", "--state-dir", str(tmp_path / "none"), "--root", str(tmp_path))
    assert rc == 3
    assert out.startswith("status: not run") and err == ""


@pytest.mark.parametrize("result, code", [("ok", 0), ("degraded", 0), ("failed", 1), ("interrupted", 130)])
def test_done_exit_codes_follow_run(tmp_path, capsys, result, code):
    record = proposal_record()
    record["result"] = result
    record["exit_code"] = code
    write_state(tmp_path, record)
    rc, out, _ = cli(capsys, "status", "--state-dir", str(tmp_path), "--root", str(tmp_path), "--format", "json")
    data = json.loads(out)
    assert rc == code == data["exit_code"]
    assert data["status"] == "done" and data["result"] == result
    # by default only nodes that did not end ok are listed; --long lists all
    assert [n["id"] for n in data["nodes"]] == ["source:ec2", "module:write-files"]


def test_text_and_long(tmp_path, capsys):
    write_state(tmp_path, proposal_record())
    rc, out, _ = cli(capsys, "status", "--state-dir", str(tmp_path), "--root", str(tmp_path), "--long")
    assert rc == 0
    assert "result: degraded (exit 0)" in out
    assert "module:set-password" in out and "capability user-data unavailable" in out
    assert "admin-password: resolved from source:openstack" in out


def test_disabled_returns_at_once_even_while_running(tmp_path, capsys):
    (tmp_path / "etc/cidag").mkdir(parents=True)
    (tmp_path / "etc/cidag/cidag.disabled").write_text("")
    write_state(tmp_path / "state", running={"pid": os.getpid(), "started_at": now_utc()})
    rc, out, _ = cli(capsys, "status", "--wait", "--root", str(tmp_path), "--state-dir", str(tmp_path / "state"))
    assert rc == 0
    assert out.startswith("status: disabled") and "cidag.disabled exists" in out


def test_disabled_by_kernel_command_line(tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("ro quiet cidag=disabled\n")
    st = status_mod.wait_for_run(tmp_path, tmp_path, None, cmdline)
    assert st["status"] == "disabled" and st["exit_code"] == 0


def test_stale_running_file_is_not_a_run(tmp_path, capsys):
    write_state(tmp_path, proposal_record(), running={"pid": 2**22 + 12345, "started_at": now_utc()})
    rc, out, _ = cli(capsys, "status", "--wait", "--state-dir", str(tmp_path), "--root", str(tmp_path))
    assert rc == 130
    assert out.startswith("status: killed") and "previous run: degraded" in out


def test_wait_times_out_with_its_own_code(tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_state(tmp_path, running={"pid": sleeper.pid, "started_at": now_utc()})
        t0 = time.monotonic()
        rc, out, _ = cli(capsys, "status", "--wait", "--timeout", "300ms", "--state-dir", str(tmp_path),
                         "--root", str(tmp_path), "--format", "json")
        assert time.monotonic() - t0 < 20  # returned; no tight timing asserted
        data = json.loads(out)
        assert rc == 124 and data["status"] == "running" and data["timed_out"] is True
        rc, out, _ = cli(capsys, "status", "--state-dir", str(tmp_path), "--root", str(tmp_path))
        assert rc == 0 and out.startswith("status: running")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pid_reused_by_a_younger_process_is_stale():
    assert status_mod.pid_alive(os.getpid(), now_utc())
    assert not status_mod.pid_alive(os.getpid(), "2001-01-01T00:00:00.000000Z")


@pytest.mark.parametrize("pid", [0, -1, "12", True, None, 2**40])
def test_pid_alive_rejects_nonsense(pid):
    assert not status_mod.pid_alive(pid)


def test_zombie_is_not_alive():
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stat = Path(f"/proc/{child.pid}/stat").read_text()
            if stat.rpartition(")")[2].split()[0] == "Z":
                break
            time.sleep(0.01)
        assert not status_mod.pid_alive(child.pid)
    finally:
        child.wait()


@pytest.mark.parametrize("args, message", [
    (["--timeout", "5s"], "--timeout only makes sense with --wait"),
    (["--wait", "--timeout", "soon"], "--timeout: not a duration: 'soon'"),
])
def test_usage_errors(tmp_path, capsys, args, message):
    rc, out, err = cli(capsys, "status", "--state-dir", str(tmp_path), "--root", str(tmp_path), *args)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_corrupt_record_is_one_line(tmp_path, capsys):
    (tmp_path / "last-run.json").write_text("{not json")
    rc, out, err = cli(capsys, "status", "--state-dir", str(tmp_path), "--root", str(tmp_path))
    assert rc == 2 and "not a run record: invalid JSON" in err and "Traceback" not in err


def test_wait_for_a_real_run_in_another_process(tmp_path, capsys):
    proc = subprocess.Popen(run_args(tmp_path, sleep=1), env=cidag_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "root/var/lib/cidag"
    try:
        deadline = time.monotonic() + 30
        while not (state / "running.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never wrote running.json"
            time.sleep(0.01)
        running = json.loads((state / "running.json").read_text())
        assert running["pid"] == proc.pid
        rc, out, _ = cli(capsys, "status", "--state-dir", str(state), "--root", str(tmp_path / "root"))
        assert rc == 0 and out.startswith("status: running")
        rc, out, _ = cli(capsys, "status", "--wait", "--timeout", "60s", "--format", "json",
                         "--state-dir", str(state), "--root", str(tmp_path / "root"))
        data = json.loads(out)
        assert data["status"] == "done", data
        assert rc == 0 == data["exit_code"]
        assert data["result"] == "ok"  # use-data skipped: user-data cleanly unavailable is no fault
        assert data["started_at"] == running["started_at"]
        assert proc.wait(timeout=30) == 0
        assert not (state / "running.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
