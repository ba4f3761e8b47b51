"""The engine with real threads and processes: parallel probes, the facade, timeouts, make -k.

The scheduling scenarios (proposal timing, select modes, strategies) run on the fake runner
in test_engine_fake.py; the proposal scenario runs for real in test_sources_scenario.py."""
from __future__ import annotations

import time


from cidag.engine import RunOptions, run
from conftest import nodes_by_id, process_gone
from graphs import compile_text


def opts(tmp_path, **kw) -> RunOptions:
    kw.setdefault("handle_signals", False)
    return RunOptions(root=tmp_path / "root", **kw)


def static(name, caps, delay=0, available=True, data=None, **kw):
    return {"name": name, "type": "static", "capabilities": caps,
            "settings": {"delay": delay, "available": available, "data": data or {c: f"{name}-{c}" for c in caps}}, **kw}


def exec_mod(name, command, **kw):
    kw.setdefault("frequency", "per-boot")
    return {"name": name, "type": "exec", "settings": {"command": command}, **kw}


def test_a_want_on_a_slow_source_does_not_wait_for_an_unrelated_slow_source(tmp_path):
    cg = compile_text({"version": 1, "sources": [
        static("unrelated", ["instance-id"], delay=3),
        static("keys", ["public-keys"], delay=0.2),
    ]}, {"version": 1, "modules": [exec_mod("ssh", "true", wants=["public-keys"])]})
    rec = run(cg, opts(tmp_path)).record
    n = nodes_by_id(rec)
    assert n["module:ssh"]["end_s"] < 2.0
    assert n["source:unrelated"]["status"] == "skipped"  # nobody needs instance-id
    assert n["source:unrelated"]["reason"] == "not needed"


def test_sources_nobody_needs_are_not_probed(tmp_path):
    marker = tmp_path / "probed"
    cg = compile_text({"version": 1, "sources": [
        static("a", ["hostname"]),
        {"name": "b", "type": "exec", "capabilities": ["local-ipv4"],
         "settings": {"command": f"touch {marker}; echo '{{}}'"}},
    ]}, {"version": 1, "modules": [exec_mod("m", "true", needs=["hostname"])]})
    rec = run(cg, opts(tmp_path)).record
    assert nodes_by_id(rec)["source:b"]["status"] == "skipped"
    assert not marker.exists()


def test_module_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pids"
    cg = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [
        exec_mod("hang", f"sleep 60 & echo $! > {pidfile}; sleep 60", timeout="1s"),
        exec_mod("other", "true"),
    ]})
    t0 = time.monotonic()
    result = run(cg, opts(tmp_path))
    assert time.monotonic() - t0 < 10
    n = nodes_by_id(result.record)
    assert n["module:hang"]["status"] == "timeout"
    assert n["module:hang"]["reason"] == "timeout after 1s"
    assert n["module:other"]["status"] == "ok"  # make -k
    assert result.exit_code == 1 and result.record["result"] == "failed"
    assert process_gone(int(pidfile.read_text())), "the background child of a timed-out module survived"


def test_source_timeout_is_failed_with_reason(tmp_path):
    cg = compile_text({"version": 1, "sources": [
        {"name": "stall", "type": "exec", "capabilities": ["hostname"], "timeout": "500ms",
         "settings": {"command": "sleep 30"}},
    ]}, {"version": 1, "modules": [exec_mod("m", "true", needs=["hostname"])]})
    rec = run(cg, opts(tmp_path)).record
    n = nodes_by_id(rec)
    assert n["source:stall"]["status"] == "failed"
    assert n["source:stall"]["reason"] == "timeout after 0.5s"
    assert n["module:m"]["reason"] == "capability hostname unavailable: stall failed (timeout after 0.5s)"
    assert rec["result"] == "degraded"


def test_make_k_and_fail_fast(tmp_path):
    modules = {"version": 1, "modules": [
        exec_mod("bad", "echo broken >&2; exit 3", priority=0),
        exec_mod("after-bad", "true", depends_on=["bad"]),
        exec_mod("independent", "sleep 0.2", priority=5),
        exec_mod("late", "true", priority=9),
    ]}
    cg = compile_text({"version": 1, "sources": []}, modules)
    rec = run(cg, opts(tmp_path, jobs=1)).record
    n = nodes_by_id(rec)
    assert n["module:bad"]["status"] == "failed" and n["module:bad"]["reason"] == "exit 3: broken"
    assert n["module:after-bad"]["reason"] == "depends on bad, which failed (exit 3: broken)"
    assert n["module:independent"]["status"] == "ok" and n["module:late"]["status"] == "ok"
    rec = run(cg, opts(tmp_path, jobs=1, fail_fast=True)).record
    n = nodes_by_id(rec)
    assert n["module:independent"]["status"] == "skipped"
    assert n["module:late"]["reason"] == "not started: --fail-fast after module:bad failed"


def test_only_runs_a_module_and_what_it_needs(tmp_path):
    cg = compile_text({"version": 1, "sources": [static("a", ["hostname"]), static("b", ["public-keys"])]},
                      {"version": 1, "modules": [
                          exec_mod("net", "echo '{}'", provides=["network-online"]),
                          exec_mod("host", "true", needs=["hostname", "network-online"]),
                          exec_mod("keys", "true", needs=["public-keys"]),
                          exec_mod("final", "true", after=["host"])]})
    rec = run(cg, opts(tmp_path, only=("host",))).record
    status = {k: v["status"] for k, v in nodes_by_id(rec).items()}
    assert status == {"source:a": "available", "source:b": "skipped", "module:net": "ok",
                      "module:host": "ok", "module:keys": "skipped", "module:final": "skipped"}


def test_dry_run_prints_the_start_order_and_runs_nothing(tmp_path):
    cg = compile_text({"version": 1, "sources": [static("a", ["hostname"], delay=5)]},
                      {"version": 1, "modules": [exec_mod("w", f"touch {tmp_path}/ran", needs=["hostname"], priority=2),
                                                 exec_mod("v", "true", priority=1)]})
    t0 = time.monotonic()
    result = run(cg, opts(tmp_path, dry_run=True, jobs=1))
    assert time.monotonic() - t0 < 2
    assert result.start_order == ["source:a", "module:v", "module:w"]
    assert not (tmp_path / "ran").exists() and not (tmp_path / "root").exists()


def test_facade_reads_each_capability_from_its_provider(tmp_path):
    cg = compile_text({"version": 1, "sources": [
        static("one", ["hostname"]), static("two", ["hostname", "public-keys"])]},
        {"version": 1, "modules": [{"name": "w", "type": "plugins_for_tests:write_text", "frequency": "per-boot",
                                    "needs": ["hostname"], "wants": ["public-keys"], "settings": {"text": "hi"}}]})
    run(cg, opts(tmp_path))
    assert (tmp_path / "root/out/w").read_text() == "hi [('hostname', 'one-hostname'), ('public-keys', 'two-public-keys')]"


def test_plugin_errors_are_the_nodes_not_the_runs(tmp_path):
    cg = compile_text({"version": 1, "sources": [static("a", ["hostname"])]}, {"version": 1, "modules": [
        {"name": "undeclared", "type": "plugins_for_tests:read_undeclared", "frequency": "per-boot"},
        {"name": "boom", "type": "plugins_for_tests:boom", "frequency": "per-boot"},
        {"name": "list", "type": "plugins_for_tests:returns_list", "frequency": "per-boot"},
        exec_mod("fine", "true", needs=["hostname"])]})
    result = run(cg, opts(tmp_path))
    n = nodes_by_id(result.record)
    assert n["module:undeclared"]["reason"] == ("module:undeclared reads capability "
                                                "'hostname' without declaring it in needs or wants")
    assert n["module:boom"]["reason"] == "ValueError: the widget is broken"
    assert n["module:list"]["reason"] == "run returned list, not a mapping or None"
    assert n["module:fine"]["status"] == "ok"
    assert result.exit_code == 1


def test_secrets_never_reach_the_record_or_logs(tmp_path, caplog):
    secret = "Sup3r-Secret-Pa55"
    cg = compile_text({"version": 1, "sources": [static("os", ["instance-id", "admin-password"],
                                                        data={"instance-id": "i-1", "admin-password": secret})]},
                      {"version": 1, "modules": [{"name": "pw", "type": "plugins_for_tests:log_secret",
                                                  "needs": ["admin-password"]}]})
    import logging
    caplog.set_level(logging.DEBUG)
    result = run(cg, opts(tmp_path, record_path=tmp_path / "rec.json"))
    n = nodes_by_id(result.record)
    assert n["module:pw"]["log"][0]["message"] == "setting password <secret> for user"
    assert n["module:pw"]["output"] == "chpasswd: <secret>\n"
    assert secret not in caplog.text
    state = tmp_path / "root/var/lib/cidag"
    for path in [tmp_path / "rec.json", *state.rglob("*.json")]:
        if path.name == "instance-data-sensitive.json":
            assert oct(path.stat().st_mode & 0o777) == "0o600"
            continue
        assert secret not in path.read_text(), path


def test_class_and_dotted_plugins(tmp_path):
    cg = compile_text({"version": 1, "sources": [{"name": "c", "type": "plugins_for_tests:ClassSource",
                                                  "capabilities": ["instance-id"], "settings": {"iid": "i-xyz"}}]},
                      {"version": 1, "modules": [exec_mod("m", 'printf %s "$CIDAG_INSTANCE_ID" > iid',
                                                          frequency="per-instance")]})
    rec = run(cg, opts(tmp_path)).record
    assert rec["instance_id"] == "i-xyz"
    assert (tmp_path / "root/iid").read_text() == "i-xyz"


def test_exec_module_gets_capabilities_as_environment(tmp_path):
    cg = compile_text({"version": 1, "sources": [static("s", ["public-keys", "network-config", "local-ipv4"], data={
        "public-keys": ["k1", "k2"], "network-config": {"version": 2}, "local-ipv4": "10.0.0.5"})]},
        {"version": 1, "modules": [exec_mod("env", "env | grep ^CIDAG_ | sort > env.txt",
                                            needs=["public-keys", "network-config", "local-ipv4"])]})
    run(cg, opts(tmp_path))
    env = dict(line.split("=", 1) for line in (tmp_path / "root/env.txt").read_text().splitlines())
    assert env["CIDAG_CAP_PUBLIC_KEYS"] == '["k1", "k2"]'
    assert env["CIDAG_CAP_NETWORK_CONFIG"] == '{"version": 2}'
    assert env["CIDAG_CAP_LOCAL_IPV4"] == "10.0.0.5"
    assert env["CIDAG_ROOT"] == str(tmp_path / "root")


def test_exec_module_stdout_json_gives_its_provides(tmp_path):
    cg = compile_text({"version": 1, "sources": []}, {"version": 1, "modules": [
        exec_mod("user", """echo '{"default-user": "ubuntu"}'""", provides=["default-user"]),
        exec_mod("use", 'printf %s "$CIDAG_CAP_DEFAULT_USER" > who', needs=["default-user"])]})
    rec = run(cg, opts(tmp_path)).record
    assert (tmp_path / "root/who").read_text() == "ubuntu"
    assert rec["capabilities"]["default-user"]["provider"] == "module:user"




def test_every_node_gets_a_whole_context(tmp_path):
    """Each field of api.Context is set on what a plugin receives (the engine builds contexts
    without the dataclass's __init__, for speed), and mutable ones are the node's own."""
    import dataclasses
    import sys
    import types

    from cidag.api import Context

    seen = {}

    def look(ctx):
        seen[ctx.name] = ({f.name: getattr(ctx, f.name) for f in dataclasses.fields(Context)}, ctx)

    mod = types.ModuleType("cidag_test_look")
    mod.run = look
    sys.modules["cidag_test_look"] = mod
    try:
        cg = compile_text({"version": 1, "sources": [{"name": "seed", "type": "static", "capabilities": ["instance-id"],
                                                      "settings": {"data": {"instance-id": "i-1"}}}]},
                          {"version": 1, "modules": [{"name": n, "type": "cidag_test_look:run", "wants": ["instance-id"]}
                                                     for n in ("a", "b")]})
        run(cg, RunOptions(root=tmp_path / "root", handle_signals=False))
    finally:
        sys.modules.pop("cidag_test_look", None)
    (a, actx), (b, bctx) = seen["a"], seen["b"]
    assert a["kind"] == "module" and a["instance_id"] == "i-1" and a["root"] == tmp_path / "root"
    assert a["log"].name.endswith("module:a") and a["caps"]["instance-id"] == "i-1"
    assert 0 < actx.remaining() <= 600 and a["env"]["CIDAG_NODE"] == "module:a"
    for name in ("output", "counters", "unprovided", "faults"):
        assert a[name] == b[name] and a[name] is not b[name], name  # empty, and each node's own
    assert not actx.cancelled.is_set() and actx.cancelled is not bctx.cancelled
