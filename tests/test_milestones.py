"""Milestones: declared in modules.yaml, reached when their modules end, told to systemd
(sd_notify over a real datagram socket) and to `cidag wait`, kept in the record."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cidag, cli_env, load_record

SOURCES = """
version: 1
sources:
  - {name: s, type: static, capabilities: [instance-id], settings: {data: {instance-id: i-1}}}
"""
# `slow` is outside the milestone: it must not hold it back. It writes a file when it ends.
MODULES = """
version: 1
modules:
  - {name: user, type: exec, settings: {command: "sleep 0.2"}}
  - {name: keys, type: exec, after: [user], settings: {command: "sleep 0.2"}}
  - name: slow
    type: exec
    after: [keys]
    settings: {command: 'sleep {SLOW}; env > "$CIDAG_ROOT/slow-env"; touch "$CIDAG_ROOT/slow-done"'}
milestones:
  login: [user, keys]
  nothing: []
"""


def write(manifests, slow: float = 3.0) -> tuple[str, str]:
    return manifests(SOURCES, MODULES.replace("{SLOW}", str(slow)))


def start_run(s: str, m: str, root: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cidag", "run", "-q", "--sources", s, "--modules", m,
                             "--root", str(root)], env=cli_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_file(path: Path, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_record_has_each_milestone_and_when(manifests, tmp_path):
    s, m = write(manifests, slow=0.5)
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr
    rec = load_record(tmp_path / "root/var/lib/cidag/last-run.json")
    nodes = {n["id"]: n for n in rec["nodes"]}
    login = rec["milestones"]["login"]
    assert login["modules"] == ["user", "keys"]
    # reached when its last module ended, before the slow module did
    assert login["reached_s"] >= nodes["module:keys"]["end_s"]
    assert login["reached_s"] < nodes["module:slow"]["end_s"]
    assert rec["milestones"]["nothing"]["reached_s"] < nodes["module:user"]["end_s"]
    assert "milestones: login" in proc.stdout
    assert not any(n["id"].startswith("milestone:") for n in rec["nodes"])  # not nodes of the record


def test_a_milestone_whose_modules_do_not_run_is_reached_at_once(manifests, tmp_path):
    s, m = write(manifests, slow=0.1)
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(tmp_path / "root"), "--only", "slow")
    assert proc.returncode == 0, proc.stderr
    rec = load_record(tmp_path / "root/var/lib/cidag/last-run.json")
    assert rec["milestones"]["login"]["reached_s"] < 0.1


def test_a_failed_module_still_reaches_its_milestone(manifests, tmp_path):
    # make -k: a login whose key module failed is still a login (sshd must not wait for ever)
    s, m = manifests(SOURCES, MODULES.replace("{SLOW}", "0.1").replace('"sleep 0.2"}}\n  - name: slow',
                                                                        '"exit 3"}}\n  - name: slow'))
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(tmp_path / "root"))
    assert proc.returncode == 1
    rec = load_record(tmp_path / "root/var/lib/cidag/last-run.json")
    assert {n["id"]: n["status"] for n in rec["nodes"]}["module:keys"] == "failed"
    assert rec["milestones"]["login"]["reached_s"] is not None


def test_an_interrupted_run_does_not_reach_it(manifests, tmp_path):
    s, m = manifests(SOURCES, MODULES.replace("{SLOW}", "0.1").replace("sleep 0.2", "sleep 30", 1))
    root = tmp_path / "root"
    proc = start_run(s, m, root)
    state = root / "var/lib/cidag"
    wait_for_file(state / "running.json")
    time.sleep(0.5)
    proc.terminate()
    assert proc.wait(timeout=30) == 130
    rec = load_record(state / "last-run.json")
    assert rec["milestones"]["login"]["reached_s"] is None
    waited = cidag("wait", "login", "--root", str(root))
    assert waited.returncode == 1 and "not reached" in waited.stdout


@pytest.mark.parametrize("bad, message", [
    ("  login: [user, kyes]", "modules.yaml:10:17: milestone login: 'kyes' is not a module (did you mean 'keys'?)"),
    ("  done: [user]", "modules.yaml:10:3: milestone 'done' is built in"),
    ("  login: user", "modules.yaml:10:10: login must be a list"),
])
def test_bad_milestones_are_one_line_and_exit_2(manifests, bad, message):
    text = MODULES.replace("{SLOW}", "0").replace("  login: [user, keys]\n  nothing: []", bad)
    s, m = manifests(SOURCES, text)
    for args in (("check", s, m), ("run", "--dry-run", "--sources", s, "--modules", m)):
        proc = cidag(*args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert message in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr


def test_wait_returns_at_the_milestone_while_the_run_goes_on(manifests, tmp_path):
    s, m = write(manifests, slow=4)
    root = tmp_path / "root"
    proc = start_run(s, m, root)
    try:
        wait_for_file(root / "var/lib/cidag/running.json")
        waited = cidag("wait", "login", "--root", str(root), timeout=30)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert "login: reached at" in waited.stdout
        assert proc.poll() is None and not (root / "slow-done").exists()  # provisioning goes on
        status = cidag("status", "--root", str(root))
        assert "status: running" in status.stdout and "login reached at" in status.stdout
        done = cidag("wait", "done", "--root", str(root), timeout=30)
        assert done.returncode == 0 and (root / "slow-done").exists()
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_wait_with_nothing_to_wait_for_or_a_timeout(manifests, tmp_path):
    proc = cidag("wait", "login", "--root", str(tmp_path / "empty"))
    assert proc.returncode == 0 and "no run recorded" in proc.stdout
    s, m = write(manifests, slow=0.1)
    root = tmp_path / "root"
    run = start_run(s, m, root)
    try:
        wait_for_file(root / "var/lib/cidag/running.json")
        waited = cidag("wait", "done", "--root", str(root), "--timeout", "10ms")
        assert waited.returncode in (124, 0)  # 0 only when the run already ended (a slow machine)
    finally:
        run.wait(timeout=30)
    assert cidag("wait", "nope", "--root", str(root)).returncode == 1
    assert cidag("wait", "done", "--root", str(root), "--timeout", "soon").returncode == 2


def test_wait_is_not_hung_by_a_fifo_where_the_record_belongs(tmp_path):
    state = tmp_path / "var/lib/cidag"
    state.mkdir(parents=True)
    os.mkfifo(state / "last-run.json")
    proc = cidag("wait", "done", "--root", str(tmp_path), timeout=20)
    assert proc.returncode == 0 and "no run recorded" in proc.stdout


def test_systemd_hears_ready_at_the_milestone_not_at_the_end(manifests, tmp_path):
    """A real datagram socket where systemd's would be: READY=1 arrives while the slow
    module still runs; the commands cidag runs do not inherit NOTIFY_SOCKET."""
    s, m = write(manifests, slow=3)
    root = tmp_path / "root"
    addr = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.settimeout(30)
    proc = start_run(s, m, root, env={"NOTIFY_SOCKET": addr, "CIDAG_READY_MILESTONE": "login"})
    try:
        messages = []
        while not any("READY=1" in msg for msg in messages):
            messages.append(sock.recv(4096).decode())
        ready = next(msg for msg in messages if "READY=1" in msg)
        assert "STATUS=login reached" in ready
        assert proc.poll() is None and not (root / "slow-done").exists()
        assert any("nothing reached" in msg for msg in messages)  # the other milestone: STATUS only
        proc.wait(timeout=30)
        assert "STATUS=run ended: ok" in sock.recv(4096).decode()
    finally:
        proc.wait(timeout=30)
        sock.close()
    assert proc.returncode == 0
    assert "NOTIFY_SOCKET" not in (root / "slow-env").read_text()


def test_ready_at_the_end_without_that_milestone(manifests, tmp_path):
    s, m = write(manifests, slow=0.1)
    addr = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(addr)
    sock.settimeout(30)
    proc = cidag("run", "-q", "--sources", s, "--modules", m, "--root", str(tmp_path / "root"),
                 env={"NOTIFY_SOCKET": addr, "CIDAG_READY_MILESTONE": "no-such"})
    assert proc.returncode == 0
    got = []
    sock.setblocking(False)
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except BlockingIOError:
            break
    ready = [g for g in got if "READY=1" in g]
    assert len(ready) == 1 and "run ended: ok" in ready[0]
    sock.close()


def test_graph_draws_milestones(manifests):
    s, m = write(manifests, slow=0.1)
    data = json.loads(cidag("graph", "--json", "--sources", s, "--modules", m).stdout)
    assert {"id": "milestone:login", "kind": "milestone", "name": "login"} in data["nodes"]
    reaches = {(e["from"], e["to"]) for e in data["edges"] if e["kind"] == "reaches"}
    assert reaches == {("module:user", "milestone:login"), ("module:keys", "milestone:login")}
    dot = cidag("graph", "--dot", "--sources", s, "--modules", m).stdout
    assert '"module:keys" -> "milestone:login" [style=dotted];' in dot
