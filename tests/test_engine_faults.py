"""Issue 9's faults, one test (at least) each: the engine must stay truthful under hostile runs."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cidag.engine import InternalError, RunOptions, run
from cidag.runner import HANG, FakeRunner
from conftest import cidag, cli_env, load_record, nodes_by_id, process_gone
from graphs import compile_text


def opts(tmp_path, **kw) -> RunOptions:
    kw.setdefault("handle_signals", False)
    return RunOptions(root=tmp_path / "root", **kw)


def static(name, caps, data=None, **kw):
    return {"name": name, "type": "static", "capabilities": caps,
            "settings": {"data": data if data is not None else {c: f"{name}-{c}" for c in caps}}, **kw}


def exec_mod(name, command, **kw):
    kw.setdefault("frequency", "per-boot")
    return {"name": name, "type": "exec", "settings": {"command": command}, **kw}


def plugin(name, ref, **kw):
    kw.setdefault("frequency", "per-boot")
    return {"name": name, "type": f"plugins_for_tests:{ref}", **kw}


def fake(script: dict, signals=()):
    """A FakeRunner answering each node from `script` (name -> (seconds, outcome)); the rest
    run their real call at once."""
    def answer(node, ctx):
        return script.get(node.split(":", 1)[1], (0.0, FakeRunner.CALL))
    return FakeRunner(answer, signals=list(signals))


# -- fault 1: serial with a not-needed source between two needed ones -------------------

def test_serial_first_available_source_serves_everything_even_past_a_skipped_one(tmp_path):
    cg = compile_text({"version": 1, "sources": [
        static("a", ["instance-id", "hostname"], data={"instance-id": "i-a"}),  # declares hostname, gives none
        static("b", ["zone"]),  # nobody needs it: not in the run
        static("c", ["hostname"]),
    ]}, {"version": 1, "modules": [exec_mod("m", "true", needs=["instance-id"], wants=["hostname"])]})
    runner = fake({})
    rec = run(cg, opts(tmp_path, strategy="serial", runner=runner)).record
    n = nodes_by_id(rec)
    assert n["source:b"]["reason"] == "not needed"
    assert n["source:c"]["status"] == "skipped"
    assert n["source:c"]["reason"] == "not probed: serial strategy uses a"
    assert [node for _, node in runner.started] == ["source:a", "module:m"]
    assert rec["capabilities"]["hostname"]["status"] == "unavailable"


# -- fault 2: an exception on the scheduler thread -------------------------------------

class _Boom:
    """An observer that raises once a given node has ended."""

    def __init__(self, when: str) -> None:
        self.when = when

    def node_started(self, node):
        pass

    def node_ended(self, node, status, seconds):
        if node == self.when:
            raise RuntimeError("observer broke")


def test_exception_in_the_loop_kills_running_commands_and_the_record_tells(tmp_path):
    pidfile = tmp_path / "child.pid"
    cg = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [
        exec_mod("long", f"sleep 60 & echo $! > {pidfile}; wait", priority=0),
        exec_mod("quick", f"while [ ! -s {pidfile} ]; do sleep 0.02; done", priority=1),
    ]})
    with pytest.raises(InternalError) as err:
        run(cg, opts(tmp_path, observer=_Boom("module:quick"), grace=0.5))
    assert "observer broke" in str(err.value)
    rec = load_record(tmp_path / "root/var/lib/cidag/last-run.json")
    n = nodes_by_id(rec)
    assert rec["result"] == "failed" and rec["exit_code"] == 70
    assert "observer broke" in rec["error"]
    assert n["module:quick"]["status"] == "ok"
    assert n["module:long"]["status"] == "interrupted"
    assert n["module:long"]["reason"].startswith("cidag internal error")
    assert all(node["status"] not in ("running", "waiting", "ready") for node in rec["nodes"])
    assert process_gone(int(pidfile.read_text())), "a command outlived the failed run"
    assert not (tmp_path / "root/var/lib/cidag/running.json").exists()


def test_thread_that_cannot_start_ends_the_run_truthfully(tmp_path, monkeypatch):
    cg = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [exec_mod("m", "true")]})

    def no_threads(self):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(threading.Thread, "start", no_threads)
    with pytest.raises(InternalError):
        run(cg, opts(tmp_path))
    monkeypatch.undo()
    rec = load_record(tmp_path / "root/var/lib/cidag/last-run.json")
    assert rec["result"] == "failed" and "can't start new thread" in rec["error"]
    assert nodes_by_id(rec)["module:m"]["status"] in ("interrupted", "skipped")


def test_a_marker_that_cannot_be_written_is_a_fault_not_a_crash(tmp_path):
    cg = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [
        exec_mod("once-only", "true", frequency="once"), exec_mod("other", "true")]})
    state = tmp_path / "root/var/lib/cidag"
    state.mkdir(parents=True)
    (state / "once").write_text("a file where the marker directory should be")
    rec = run(cg, opts(tmp_path)).record
    n = nodes_by_id(rec)
    assert n["module:once-only"]["status"] == "ok" and n["module:other"]["status"] == "ok"
    assert rec["result"] == "degraded"
    assert "marker not written" in rec["faults"][0]
    assert "it will run again next boot" in n["module:once-only"]["log"][0]["message"]


# -- fault 3 and 10: hostile values and user-data ----------------------------------------

def _user_data_run(tmp_path, user_data: str):
    s = tmp_path / "sources.yaml"
    m = tmp_path / "modules.yaml"
    s.write_text(json.dumps({"version": 1, "sources": [static("seed", ["instance-id", "user-data"],
                                                               data={"instance-id": "i-1", "user-data": user_data})]}))
    m.write_text(json.dumps({"version": 1, "modules": [
        {"name": "user-data", "type": "user-data", "frequency": "per-boot", "wants": ["user-data"],
         "provides": ["cloud-config", "user-scripts"]},
        {"name": "final", "type": "exec", "frequency": "per-boot", "wants": ["cloud-config"],
         "settings": {"command": "true"}}]}))
    return cidag("run", "--sources", str(s), "--modules", str(m), "--root", str(tmp_path / "root"), "-q")


@pytest.mark.parametrize("doc", [
    "#cloud-config\nfoo: &a [*a]\n",
    "#cloud-config\n" + "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10)),
    "#cloud-config\nx: " + "[" * 3000 + "]" * 3000 + "\n",
])
def test_hostile_user_data_is_one_error_never_a_crash(tmp_path, doc):
    proc = _user_data_run(tmp_path, doc)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr
    rec = load_record(tmp_path / "root/var/lib/cidag/last-run.json")
    assert nodes_by_id(rec)["module:final"]["status"] == "ok"
    data = tmp_path / "root/var/lib/cidag/instance-data-sensitive.json"
    assert data.stat().st_size < 1 << 20


def test_a_value_that_refers_to_itself_is_the_nodes_failure(tmp_path):
    cg = compile_text({"version": 1, "sources": [static("s", ["instance-id"])]}, {"version": 1, "modules": [
        plugin("loop", "returns_recursive", provides=["blob"]),
        exec_mod("reader", "true", wants=["blob"])]})
    rec = run(cg, opts(tmp_path)).record
    n = nodes_by_id(rec)
    assert n["module:loop"]["status"] == "failed"
    assert n["module:loop"]["reason"] == "capability blob: value refers to itself"
    assert n["module:reader"]["status"] == "ok"


@pytest.mark.parametrize("entry, message", [
    ("timeout: 1" + "0" * 400, "duration too large"),
    ("priority: 1" + "0" * 400, "priority must be between"),
    ("settings: " + "[" * 600 + "]" * 600, "nested deeper than 64 levels"),
])
def test_hostile_manifest_values_are_one_line_exit_2(tmp_path, entry, message):
    s = tmp_path / "sources.yaml"
    m = tmp_path / "modules.yaml"
    s.write_text("version: 1\nsources: []\n")
    m.write_text("version: 1\nmodules:\n  - name: m\n    type: exec\n    frequency: per-boot\n    " + entry + "\n")
    proc = cidag("check", str(s), str(m))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert message in out and "Traceback" not in out


def test_aliased_dollar_strings_are_bounded(tmp_path):
    s = tmp_path / "sources.yaml"
    m = tmp_path / "modules.yaml"
    s.write_text("version: 1\nsources: []\n")
    big = "$$" * 200_000
    levels = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 5))
    m.write_text(f"version: 1\nl0: &l0 \"{big}\"\n{levels}modules: []\n")
    t = time.monotonic()
    proc = cidag("check", str(s), str(m))
    assert proc.returncode == 2
    assert "document too large" in proc.stdout + proc.stderr
    assert "MemoryError" not in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - t < 20


# -- fault 4: a module that finishes while SIGINT is handled ------------------------------

def test_module_that_returns_ok_during_the_interrupt_is_ok_and_keeps_its_marker(tmp_path):
    cg = compile_text({"version": 1, "sources": [static("s", ["instance-id"])]}, {"version": 1, "modules": [
        exec_mod("finishing", "true", frequency="per-instance"),
        exec_mod("hanging", "true"),
        exec_mod("later", "true", depends_on=["finishing"])]})
    runner = fake({"finishing": (1.5, {}), "hanging": (0.0, HANG)}, signals=[(1.0, signal.SIGINT)])
    result = run(cg, opts(tmp_path, runner=runner))
    n = nodes_by_id(result.record)
    assert result.exit_code == 130 and result.record["result"] == "interrupted"
    assert n["module:finishing"]["status"] == "ok"
    assert n["module:hanging"]["status"] == "interrupted"
    assert n["module:later"]["status"] == "skipped"
    assert (tmp_path / "root/var/lib/cidag/instances/s-instance-id/markers/finishing.json").exists()


def test_a_signal_while_the_record_is_written_does_not_kill_the_run(tmp_path, monkeypatch):
    from cidag import state as state_mod

    cg = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [exec_mod("m", "true")]})
    real = state_mod.StateDir.write_record

    def write_record(self, *a, **kw):
        os.kill(os.getpid(), signal.SIGINT)  # handled: the engine's handlers are still in place
        time.sleep(0.05)
        return real(self, *a, **kw)
    monkeypatch.setattr(state_mod.StateDir, "write_record", write_record)
    result = run(cg, opts(tmp_path, handle_signals=True))
    assert result.record["result"] == "ok"
    assert (tmp_path / "root/var/lib/cidag/last-run.json").exists()


# -- fault 5 and 12: one secret policy -----------------------------------------------------

SECRET = "tok-3a7f-very-secret"


def test_secrets_never_in_markers_and_runs_with_secrets_are_0600(tmp_path):
    cg = compile_text({"version": 1, "sources": [static("s", ["instance-id"])]}, {"version": 1, "modules": [
        {"name": "mint", "type": "exec", "provides": ["api-token", "plain"], "secrets": ["api-token"],
         "settings": {"command": f"echo '{{\"api-token\": \"{SECRET}\", \"plain\": \"p\"}}'"}},
        exec_mod("use", 'echo "token is $CIDAG_CAP_API_TOKEN"', wants=["api-token", "plain"])]})
    first = run(cg, opts(tmp_path))
    state = tmp_path / "root/var/lib/cidag"
    marker = state / "instances/s-instance-id/markers/mint.json"
    assert SECRET not in marker.read_text()
    assert json.loads(marker.read_text())["provides"] == {"plain": "p"}
    assert stat.S_IMODE(first.record_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "last-run.json").stat().st_mode) == 0o600
    for path in state.rglob("*.json"):
        if path.name != "instance-data-sensitive.json":
            assert SECRET not in path.read_text(), path
    # Second boot: the marker gives no secret, so nothing can print it.
    second = run(cg, opts(tmp_path))
    n = nodes_by_id(second.record)
    assert n["module:mint"]["status"] == "skipped"
    assert "token is \n" in n["module:use"]["output"]
    assert SECRET not in json.dumps(second.record)


def test_a_plugins_own_log_line_before_it_returns_is_scrubbed(tmp_path, caplog):
    cg = compile_text({"version": 1, "sources": [
        {"name": "vault", "type": "plugins_for_tests:logs_own_secret", "capabilities": ["instance-id", "admin-password"]}]},
        {"version": 1, "modules": [exec_mod("m", "true", needs=["admin-password"])]})
    import logging
    with caplog.at_level(logging.DEBUG, logger="cidag"):
        rec = run(cg, opts(tmp_path)).record
    assert "pw-9d8c7b6a" not in caplog.text
    assert "got <secret> from the vault" in caplog.text
    assert nodes_by_id(rec)["source:vault"]["log"][0]["message"] == "got <secret> from the vault"


def test_exec_source_can_declare_a_secret(tmp_path):
    cg = compile_text({"version": 1, "sources": [
        {"name": "probe", "type": "exec", "capabilities": ["instance-id", "token"], "secrets": ["token"],
         "settings": {"command": f"echo '{{\"instance-id\": \"i-1\", \"token\": \"{SECRET}\"}}'"}}]},
        {"version": 1, "modules": [exec_mod("m", 'echo "seen $CIDAG_CAP_TOKEN"', wants=["token"])]})
    rec = run(cg, opts(tmp_path)).record
    assert nodes_by_id(rec)["module:m"]["output"] == "seen <secret>\n"
    public = json.loads((tmp_path / "root/var/lib/cidag/instance-data.json").read_text())
    assert public["capabilities"]["token"]["value"] == "<secret>"


# -- fault 6: one value, live and from a marker ---------------------------------------------

def test_a_value_looks_the_same_live_and_from_a_marker(tmp_path):
    cg = compile_text({"version": 1, "sources": [static("s", ["instance-id"])]}, {"version": 1, "modules": [
        plugin("bytes", "returns_bytes", frequency="per-instance", provides=["blob", "text"]),
        plugin("seen", "records_what_it_sees", wants=["blob", "text"])]})
    run(cg, opts(tmp_path))
    live = json.loads((tmp_path / "root/out/seen").read_text())
    run(cg, opts(tmp_path))
    again = json.loads((tmp_path / "root/out/seen").read_text())
    assert live == again
    assert live["text"] == ["str", "h\u00e9llo"]
    assert live["blob"] == ["dict", {"data": "/wA=", "encoding": "base64"}]


# -- fault 7: output of a command killed at its timeout or by a signal ------------------------

def test_output_of_a_command_killed_at_its_timeout_is_in_the_record(tmp_path):
    cg = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [
        exec_mod("slow", "echo before-the-kill; sleep 30", timeout="0.5s")]})
    rec = run(cg, opts(tmp_path)).record
    n = nodes_by_id(rec)["module:slow"]
    assert n["status"] == "timeout"
    assert "before-the-kill" in n["output"]


def test_output_of_a_command_killed_by_sigint_is_in_the_record(tmp_path, manifests):
    started = tmp_path / "started"
    s, m = manifests("version: 1\nsources: []\n", f"""
        version: 1
        modules:
          - name: long
            type: exec
            frequency: per-boot
            settings: {{command: "echo said-before; touch {started}; sleep 60"}}
        """)
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, "-m", "cidag", "run", "--sources", s, "--modules", m, "--root", str(root)],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode == 130
    n = nodes_by_id(load_record(root / "var/lib/cidag/last-run.json"))["module:long"]
    assert n["status"] == "interrupted" and "said-before" in n["output"]


# -- fault 8: the cycle error is the same whatever the hash seed ------------------------------

def test_cycle_error_does_not_depend_on_the_hash_seed(tmp_path, manifests):
    s, m = manifests("version: 1\nsources: []\n", """
        version: 1
        modules:
          - {name: z, type: exec, frequency: per-boot, settings: {command: 'true'}, provides: [zz], needs: [aa]}
          - {name: b, type: exec, frequency: per-boot, settings: {command: 'true'}, depends_on: [z], after: [c]}
          - {name: c, type: exec, frequency: per-boot, settings: {command: 'true'}, depends_on: [b]}
          - {name: a, type: exec, frequency: per-boot, settings: {command: 'true'}, provides: [aa], needs: [zz]}
        """)
    outs = {cidag("check", s, m, env={"PYTHONHASHSEED": str(seed)}).stdout for seed in range(6)}
    assert len(outs) == 1, outs
    assert "dependency cycle: module:z" in outs.pop()


# -- fault 11: early SIGTERM, a root that does not exist, a FIFO -------------------------------

def _caught(pid: int, sig: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line for line in text.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(mask & (1 << (sig - 1)))


def test_sigterm_right_after_start_still_gives_a_record_and_130(tmp_path, manifests):
    s, m = manifests("version: 1\nsources: []\n", "version: 1\nmodules:\n  - {name: m, type: exec, frequency: per-boot, settings: {command: 'true'}}\n")
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, "-m", "cidag", "run", "--sources", s, "--modules", m, "--root", str(root)],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not _caught(proc.pid, signal.SIGTERM):  # cidag's first statement; imports come after
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    rec = load_record(root / "var/lib/cidag/last-run.json")
    assert rec["result"] == "interrupted"
    assert nodes_by_id(rec)["module:m"]["reason"] == "not started: run interrupted by SIGTERM"


def test_a_root_that_does_not_exist_yet_is_made_before_modules_start(tmp_path):
    cg = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [
        exec_mod("writes", 'echo hi > "$CIDAG_ROOT/hello"', priority=0)]})
    root = tmp_path / "new/root"
    rec = run(cg, RunOptions(root=root, state_dir=tmp_path / "state", handle_signals=False)).record
    assert nodes_by_id(rec)["module:writes"]["status"] == "ok"
    assert (root / "hello").read_text() == "hi\n"


def test_write_files_append_onto_a_fifo_is_refused_at_once(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.mkfifo(root / "etc/pipe")
    cg = compile_text({"version": 1, "sources": [static("s", ["cloud-config"], data={"cloud-config": {
        "write_files": [{"path": "/etc/pipe", "content": "x", "append": True}]}})]},
        {"version": 1, "modules": [{"name": "wf", "type": "write-files", "frequency": "per-boot",
                                    "wants": ["cloud-config"], "timeout": "20s"}]})
    t = time.monotonic()
    rec = run(cg, opts(tmp_path)).record
    assert time.monotonic() - t < 5
    n = nodes_by_id(rec)["module:wf"]
    assert n["status"] == "failed" and "not a regular file" in n["reason"]


# -- fault 13: status --wait and a clock step --------------------------------------------------

def test_status_knows_a_live_run_after_a_wall_clock_step(tmp_path):
    from cidag.commands import status as status_mod
    from cidag.state import process_identity as _process_identity

    state = tmp_path / "state"
    state.mkdir()
    # Written by a run started "an hour later" than the clock now says: the clock was stepped back.
    (state / "running.json").write_text(json.dumps({
        "pid": os.getpid(), "started_at": "1999-01-01T00:00:00.000000Z", "record": str(state / "runs/x.json"),
        **_process_identity()}))
    st = status_mod.current_status(state, tmp_path, cmdline=tmp_path / "no-cmdline")
    assert st["status"] == "running"
    # And a pid reused by another process (other start ticks) is not the run.
    ident = _process_identity()
    ident["start_ticks"] += 1
    (state / "running.json").write_text(json.dumps({"pid": os.getpid(), "started_at": "x", **ident}))
    assert status_mod.current_status(state, tmp_path, cmdline=tmp_path / "no-cmdline")["status"] == "killed"


def test_the_end_of_one_run_kills_only_its_own_commands(tmp_path):
    """Two runs in one process (a library user, the bench): the first to end must not kill
    the other's commands when it cleans up after itself."""
    slow = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [
        exec_mod("slow", 'sleep 1; echo done > "$CIDAG_ROOT/slow"')]})
    quick = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [exec_mod("quick", "true")]})
    out = {}
    t = threading.Thread(target=lambda: out.update(rec=run(slow, RunOptions(root=tmp_path / "a", handle_signals=False)).record))
    t.start()
    deadline = time.monotonic() + 10
    while not list((tmp_path / "a/var/lib/cidag").glob("running.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the slow command is running now
    assert run(quick, RunOptions(root=tmp_path / "b", handle_signals=False)).record["result"] == "ok"
    t.join(20)
    assert nodes_by_id(out["rec"])["module:slow"]["status"] == "ok"
    assert (tmp_path / "a/slow").read_text() == "done\n"
