"""The engine's loop on the fake runner and a fake clock: timeouts, signals, fail-fast, obsolete
sources, markers and strategies in milliseconds of real time (test_engine.py runs the same
engine once more with threads and processes)."""
from __future__ import annotations

import logging
import signal
import threading
import time

import pytest

from cidag.api import Context
from cidag.engine import RunOptions, run
from cidag.errors import DeadlineReached
from cidag.runner import HANG, FakeRunner
from conftest import nodes_by_id
from graphs import compile_text


def src(name, caps, **kw):
    return {"name": name, "type": "static", "capabilities": caps,
            "settings": {"data": {c: f"{name}-{c}" for c in caps}}, **kw}


def mod(name, **kw):
    kw.setdefault("frequency", "per-boot")
    return {"name": name, "type": "exec", "settings": {"command": "true"}, **kw}


def fake(times: dict, outcomes: dict | None = None, signals=()):
    """Sources answer after `times[name]` fake seconds with their static data (or
    `outcomes[name]`); modules after `times.get(name, 0)` with {} (their real command is
    not run)."""
    outcomes = outcomes or {}

    def answer(node, ctx):
        name = node.split(":", 1)[1]
        if name in outcomes:
            return times.get(name, 0.0), outcomes[name]
        if node.startswith("source:"):
            return times.get(name, 0.0), dict(ctx.settings["data"])
        return times.get(name, 0.0), {}
    return FakeRunner(answer, signals=list(signals))


def go(tmp_path, sources, modules, runner, **kw):
    cg = compile_text({"version": 1, "sources": sources}, {"version": 1, "modules": modules})
    kw.setdefault("handle_signals", False)
    result = run(cg, RunOptions(root=tmp_path / "root", runner=runner, **kw))
    return result, nodes_by_id(result.record)


def test_proposal_scenario_in_fake_time(tmp_path):
    runner = fake({"configdrive": 0.3, "openstack": 1.5, "ec2": 0.1, "set-hostname": 0.1, "create-user": 0.2},
                  {"ec2": None})
    result, n = go(tmp_path, [
        src("configdrive", ["instance-id", "hostname", "public-keys"]),
        src("openstack", ["instance-id", "hostname", "admin-password", "post-password"]),
        src("ec2", ["instance-id", "local-ipv4"]),
    ], [
        mod("create-user", priority=0, wants=["public-keys"], provides=["default-user"], frequency="per-instance"),
        mod("set-hostname", priority=1, needs=["hostname"]),
        mod("set-password", needs=["admin-password"], wants=["post-password"], depends_on=["create-user"]),
    ], runner)
    rec = result.record
    assert rec["result"] == "ok"
    assert {n[s]["start_s"] for s in ("source:configdrive", "source:openstack", "source:ec2")} == {0.0}
    assert n["module:set-hostname"]["end_s"] == 0.4  # configdrive at 0.3, then 0.1
    assert n["module:create-user"]["end_s"] == 0.5
    assert n["module:set-password"]["start_s"] == 1.5
    assert rec["capabilities"]["hostname"]["provider"] == "source:configdrive"
    assert rec["capabilities"]["post-password"]["provider"] == "source:openstack"
    assert rec["makespan_s"] == 1.5 and rec["critical_path_s"] == 1.5
    assert n["source:ec2"]["status"] == "unavailable"


def test_module_and_source_timeouts(tmp_path):
    runner = fake({"stall": 0, "hang": 0, "fine": 2.0}, {"stall": HANG, "hang": HANG})
    result, n = go(tmp_path, [src("stall", ["hostname"], timeout="500ms")], [
        mod("needs-host", needs=["hostname"]),
        mod("hang", timeout="1s"),
        mod("fine")], runner)
    assert n["source:stall"]["status"] == "failed" and n["source:stall"]["reason"] == "timeout after 0.5s"
    assert n["source:stall"]["end_s"] == 0.5
    assert n["module:needs-host"]["reason"] == "capability hostname unavailable: stall failed (timeout after 0.5s)"
    assert n["module:hang"]["status"] == "timeout" and n["module:hang"]["end_s"] == 1.0
    assert n["module:hang"]["reason_code"] == "timeout"
    assert n["module:fine"]["status"] == "ok"
    assert result.exit_code == 1


def test_a_late_answer_after_the_timeout_changes_nothing(tmp_path):
    runner = fake({"slow": 3.0})
    result, n = go(tmp_path, [], [mod("slow", timeout="1s", provides=["x"]), mod("reader", wants=["x"])], runner)
    assert n["module:slow"]["status"] == "timeout"
    assert result.record["capabilities"]["x"]["status"] == "unavailable"
    assert n["module:reader"]["status"] == "ok" and n["module:reader"]["start_s"] == 1.0


def test_fail_fast_starts_nothing_after_the_first_failure(tmp_path):
    runner = fake({"bad": 0.1, "slow": 1.0}, {"bad": RuntimeError("exit 3: broken")})
    result, n = go(tmp_path, [], [mod("bad", priority=0), mod("slow", priority=1), mod("later", priority=9)],
                   runner, jobs=2, fail_fast=True)
    assert n["module:bad"]["status"] == "failed" and n["module:bad"]["reason"] == "exit 3: broken"
    assert n["module:slow"]["status"] == "ok"  # already running: it finishes
    assert n["module:later"]["reason"] == "not started: --fail-fast after module:bad failed"
    assert n["module:later"]["reason_code"] == "fail-fast"


def test_sigterm_interrupts_in_fake_time(tmp_path):
    runner = fake({"long": 60.0}, signals=[(0.5, signal.SIGTERM)])
    result, n = go(tmp_path, [], [mod("long"), mod("after", depends_on=["long"])], runner)
    assert result.exit_code == 130
    assert n["module:long"]["status"] == "interrupted"
    assert n["module:long"]["reason"] == "interrupted by SIGTERM"
    assert n["module:after"]["reason"] == "depends on long, which was interrupted (interrupted by SIGTERM)"
    assert runner.aborted == [] or runner.aborted == ["module:long"]


def test_a_slow_source_is_cancelled_once_what_it_offers_is_settled(tmp_path):
    runner = fake({"local": 0.2, "http": 60.0})
    result, n = go(tmp_path, [src("local", ["instance-id", "hostname"]), src("http", ["instance-id", "hostname"])],
                   [mod("m", needs=["hostname"])], runner)
    assert n["source:http"]["status"] == "skipped"
    assert n["source:http"]["reason_code"] == "obsolete"
    assert result.record["makespan_s"] == 0.2
    assert result.record["result"] == "ok"


def test_select_first_preferred_and_serial(tmp_path):
    sources = [src("slow", ["hostname"]), src("fast", ["hostname"])]
    modules = [mod("h", needs=["hostname"])]
    for select, expected, makespan in (("first", "source:fast", 0.05), ("preferred", "source:slow", 1.0)):
        result, _ = go(tmp_path, sources, modules, fake({"slow": 1.0, "fast": 0.05}), select=select)
        assert result.record["capabilities"]["hostname"]["provider"] == expected
        assert result.record["makespan_s"] == makespan
    result, n = go(tmp_path, sources, modules, fake({"slow": 1.0, "fast": 0.05}), strategy="serial")
    assert n["source:fast"]["reason"] == "not probed: serial strategy uses slow"
    assert n["source:fast"]["reason_code"] == "fallback" and n["source:fast"]["cause"] == "source:slow"


def test_two_step_waits_for_every_source(tmp_path):
    runner = fake({"fast": 0.1, "slow": 2.0})
    result, n = go(tmp_path, [src("fast", ["x"]), src("slow", ["y"])],
                   [mod("uses-x", needs=["x"]), mod("uses-y", wants=["y"])], runner, strategy="two-step")
    assert n["module:uses-x"]["start_s"] == 2.0
    assert "gate:sources" not in n
    assert not any(e[2] in ("gate", "fallback") for e in result.record["edges"])
    assert result.record["critical_path_s"] == 2.0


def test_per_instance_markers_are_judged_when_instance_id_settles(tmp_path):
    sources = [src("cd", ["instance-id", "hostname"])]
    modules = [mod("once-per-instance", frequency="per-instance", wants=["hostname"], provides=["done"]),
               mod("reader", needs=["done"])]
    result, n = go(tmp_path, sources, modules, fake({"cd": 0.1}))
    assert n["module:once-per-instance"]["status"] == "ok"
    result, n = go(tmp_path, sources, modules, fake({"cd": 0.1}))
    assert n["module:once-per-instance"]["status"] == "skipped"
    assert n["module:once-per-instance"]["reason"] == "already ran for instance cd-instance-id"
    assert n["module:once-per-instance"]["start_s"] is None  # never started
    assert n["module:reader"]["status"] == "ok"  # the marker still provides `done`
    result, n = go(tmp_path, sources, modules, fake({"cd": 0.1}), force=("once-per-instance",))
    assert n["module:once-per-instance"]["status"] == "ok"


def test_remaining_is_on_the_runners_clock(tmp_path):
    """A 600 s module that has run 100 s (fake time) has 500 s left, whatever the real
    monotonic clock says (before: Context.remaining() read time.monotonic and saw 0.0)."""
    runner = FakeRunner(lambda node, ctx: (100.0, FakeRunner.CALL))
    cg = compile_text({"version": 1, "sources": [src("seed", ["instance-id"])]}, {"version": 1, "modules": [
        {"name": "long", "type": "plugins_for_tests:reports_remaining", "frequency": "per-boot",
         "timeout": "600s", "provides": ["left"]},
        {"name": "reader", "type": "plugins_for_tests:records_what_it_sees", "frequency": "per-boot",
         "needs": ["left"]}]})
    result = run(cg, RunOptions(root=tmp_path / "root", runner=runner, handle_signals=False))
    assert result.exit_code == 0
    seen = (tmp_path / "root" / "out" / "reader").read_text()
    assert seen == '{"left": ["float", 500.0]}'


def test_interrupted_secret_source_keeps_its_log_lines(tmp_path):
    """What a source that can give a secret logs is held until it ends; interrupted, it
    still ends, and its lines reach the record (before: they were lost)."""
    def answer(node, ctx):
        if node == "source:vault":
            ctx.log.warning("asking the vault")
            return 0.0, HANG
        return 0.0, dict(ctx.settings["data"])
    runner = FakeRunner(answer, signals=[(1.0, signal.SIGINT)])
    result, n = go(tmp_path, [
        {"name": "vault", "type": "static", "capabilities": ["instance-id", "admin-password"],
         "settings": {"data": {"instance-id": "i-1"}}},
    ], [mod("set-password", needs=["admin-password"])], runner, grace=0.0)
    assert result.exit_code == 130
    assert n["source:vault"]["status"] == "interrupted"
    assert [line["message"] for line in n["source:vault"].get("log", [])] == ["asking the vault"]


def test_a_node_failing_at_its_deadline_keeps_its_own_reason(tmp_path):
    """A source that raises just as its deadline passes is a timeout, and says why it raised
    (it used to read only "timeout after 0.5s", the reset lost)."""
    runner = fake({"reset": 0.5, "gone": 0.7}, {"reset": ConnectionResetError("connection reset at http://169.254.169.254/"),
                                                "gone": RuntimeError("")})
    _, n = go(tmp_path, [src("reset", ["hostname"], timeout="500ms"), src("gone", ["public-keys"], timeout="700ms")],
              [mod("m", wants=["hostname", "public-keys"])], runner)
    assert n["source:reset"]["status"] == "failed" and n["source:reset"]["reason_code"] == "timeout"
    assert n["source:reset"]["reason"] == "timeout after 0.5s: connection reset at http://169.254.169.254/"
    assert n["source:gone"]["reason"] == "timeout after 0.7s: RuntimeError"  # no text: its class


def test_a_node_killed_at_its_deadline_reads_the_same_whoever_sees_it_first(tmp_path):
    """A command killed at the node's deadline (DeadlineReached) is the timeout and nothing
    more, also when its answer reaches the engine before the engine's own expiry, or a
    little before the deadline on the engine's clock (the record of `sleep 30` under a 0.5 s
    timeout read "timeout after 0.5s: killed" or "timeout after 0.5s" by the machine's load)."""
    runner = fake({"at": 0.5, "early": 0.45}, {"at": DeadlineReached(), "early": DeadlineReached()})
    _, n = go(tmp_path, [src("at", ["hostname"], timeout="500ms"), src("early", ["public-keys"], timeout="500ms")],
              [mod("m", wants=["hostname", "public-keys"])], runner)
    for name in ("at", "early"):
        assert n[f"source:{name}"]["status"] == "failed" and n[f"source:{name}"]["reason_code"] == "timeout"
        assert n[f"source:{name}"]["reason"] == "timeout after 0.5s"


def test_the_exec_types_say_a_command_outlived_the_deadline(tmp_path):
    """The exec source and module raise DeadlineReached for a command killed at the deadline
    (a real process, killed)."""
    from cidag.modules import exec as exec_module
    from cidag.sources import exec as exec_source

    for call in (exec_source.probe, exec_module.run):
        ctx = Context(name="x", kind="source", settings={"command": "sleep 30"}, caps={}, root=tmp_path,
                      instance_id=None, log=logging.getLogger("test"), deadline=time.monotonic() + 0.3,
                      cancelled=threading.Event(), state_dir=tmp_path)
        t0 = time.monotonic()
        with pytest.raises(DeadlineReached):
            call(ctx)
        assert time.monotonic() - t0 < 10
