"""Frequencies, markers and recovery from a run killed at any moment (real processes)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cidag.engine import RunOptions, run
from conftest import cli_env, cidag, load_record, nodes_by_id
from graphs import compile_text


def manifests_for(iid: str, log: Path):
    sources = {"version": 1, "sources": [{"name": "s", "type": "static", "capabilities": ["instance-id"],
                                          "settings": {"data": {"instance-id": iid}}}]}
    modules = {"version": 1, "modules": [
        {"name": name, "type": "exec", "frequency": freq, "settings": {"command": f"echo {name} >> {log}"}}
        for name, freq in (("inst", "per-instance"), ("boot", "per-boot"), ("once", "once"))]}
    return compile_text(sources, modules)


def ran(log: Path) -> list[str]:
    lines = log.read_text().split() if log.exists() else []
    log.write_text("")
    return sorted(lines)


def test_frequencies_and_force(tmp_path):
    log = tmp_path / "log"
    o = RunOptions(root=tmp_path / "root", handle_signals=False)
    run(manifests_for("i-1", log), o)
    assert ran(log) == ["boot", "inst", "once"]
    rec = run(manifests_for("i-1", log), o).record
    assert ran(log) == ["boot"]
    n = nodes_by_id(rec)
    assert n["module:inst"]["reason"] == "already ran for instance i-1"
    assert n["module:once"]["reason"] == "already ran once on this machine"
    run(manifests_for("i-2", log), o)  # a new instance: per-instance runs again, once does not
    assert ran(log) == ["boot", "inst"]
    run(manifests_for("i-2", log), RunOptions(root=tmp_path / "root", handle_signals=False, force=("inst",)))
    assert ran(log) == ["boot", "inst"]
    run(manifests_for("i-2", log), RunOptions(root=tmp_path / "root", handle_signals=False, force_all=True))
    assert ran(log) == ["boot", "inst", "once"]


def test_a_module_that_already_ran_still_provides_its_capabilities(tmp_path):
    sources = {"version": 1, "sources": [{"name": "s", "type": "static", "capabilities": ["instance-id"],
                                          "settings": {"data": {"instance-id": "i-1"}}}]}
    modules = {"version": 1, "modules": [
        {"name": "user", "type": "exec", "provides": ["default-user"],
         "settings": {"command": """echo '{"default-user": "ubuntu"}'"""}},
        {"name": "motd", "type": "exec", "frequency": "per-boot", "needs": ["default-user"],
         "settings": {"command": 'printf %s "$CIDAG_CAP_DEFAULT_USER" > motd'}}]}
    cg = compile_text(sources, modules)
    o = RunOptions(root=tmp_path, handle_signals=False)
    run(cg, o)
    (tmp_path / "motd").unlink()
    rec = run(cg, o).record
    assert nodes_by_id(rec)["module:user"]["status"] == "skipped"
    assert (tmp_path / "motd").read_text() == "ubuntu"


def test_instance_id_never_makes_a_path_outside_the_state_dir(tmp_path):
    log = tmp_path / "log"
    run(manifests_for("../../../../etc/evil", log), RunOptions(root=tmp_path / "root", handle_signals=False))
    state = tmp_path / "root/var/lib/cidag"
    markers = list(state.rglob("inst.json"))
    assert len(markers) == 1 and markers[0].is_relative_to(state / "instances")
    assert markers[0].parent.parent.name.startswith("sha256-")


def test_state_dir_that_cannot_be_written_is_one_line(tmp_path, manifests):
    s, m = manifests("version: 1\nsources: []\n", "version: 1\nmodules: []\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = cidag("run", "--sources", s, "--modules", m, "--state-dir", str(blocker / "state"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"cidag: state dir {blocker}/state:")
    assert "Traceback" not in proc.stderr


KILL_SOURCES = """
version: 1
sources:
  - {name: s, type: static, capabilities: [instance-id], settings: {data: {instance-id: i-kill}}}
"""


def kill_modules(log: Path) -> str:
    mods = []
    for i in range(6):
        dep = f", depends_on: [m{i - 1}]" if i % 2 else ""
        mods.append(f"  - {{name: m{i}, type: exec{dep}, settings: {{command: 'sleep 0.{i + 1}; echo m{i} >> {log}'}}}}")
    return "version: 1\nmodules:\n" + "\n".join(mods) + "\n"


@pytest.mark.parametrize("kill_after", [0.15, 0.35, 0.6, 0.9])
def test_killed_run_is_resumed_exactly(tmp_path, manifests, kill_after):
    """SIGKILL a real `cidag run` at some moment; the next run re-runs exactly the modules
    that had not ended ok (their markers are the proof of an ok end)."""
    log = tmp_path / "log"
    s, m = manifests(KILL_SOURCES, kill_modules(log))
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, "-m", "cidag", "run", "-q", "-j", "2", "--sources", s, "--modules", m,
                             "--root", str(root)], env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    time.sleep(kill_after + 0.4)  # python start-up + a moment into the run
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Commands run in their own process groups (so a timeout can kill a whole group); without
    # systemd's cgroup they outlive a SIGKILLed cidag. Let them finish before counting.
    time.sleep(1.0)
    markers_dir = root / "var/lib/cidag/instances/i-kill/markers"
    done = sorted(p.stem for p in markers_dir.glob("*.json")) if markers_dir.exists() else []
    first_log = log.read_text().split() if log.exists() else []
    assert set(done) <= set(first_log)  # a marker only after the module really ended ok
    log.write_text("")
    second = cidag("run", "-q", "--sources", s, "--modules", m, "--root", str(root))
    assert second.returncode == 0, second.stderr
    rerun = sorted(log.read_text().split())
    assert rerun == sorted(set(f"m{i}" for i in range(6)) - set(done))
    rec = load_record(root / "var/lib/cidag/last-run.json")
    for name in done:
        assert nodes_by_id(rec)[f"module:{name}"]["reason"] == "already ran for instance i-kill"
