"""Threads are bounded by -j (issue 15): 10,000 static sources died with "can't start new
thread". The runner keeps at most runner.thread_limit(j) worker threads; a node started
when all are busy waits for one, and its timeout counts from when it really starts.
Real runs on the ThreadRunner (real threads, real processes for the exec cases)."""
from __future__ import annotations

import threading
import time

from cidag.engine import RunOptions, run
from cidag.runner import ThreadRunner, thread_limit
from conftest import nodes_by_id
from graphs import compile_text


def static(name, delay):
    return {"name": name, "type": "static", "capabilities": [name], "timeout": "1s",
            "settings": {"delay": delay, "data": {name: "v"}}}


class PeakThreads:
    """Samples threading.active_count() on a thread of its own while a run goes."""

    def __init__(self) -> None:
        self.peak, self.workers, self._stop = 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, threading.active_count())
            self.workers = max(self.workers, sum(t.name.startswith("cidag-worker-") for t in threading.enumerate()))

    def __enter__(self) -> "PeakThreads":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_many_slow_sources_run_on_at_most_the_thread_limit(tmp_path):
    n, delay = 1500, 0.05
    names = [f"s{i}" for i in range(n)]
    cg = compile_text({"version": 1, "sources": [static(s, delay) for s in names]},
                      {"version": 1, "modules": [{"name": "m", "type": "exec", "frequency": "per-boot",
                                                  "wants": names, "settings": {"command": "true"}}]})
    before = threading.active_count()
    with PeakThreads() as threads:
        rec = run(cg, RunOptions(root=tmp_path / "root", jobs=2, handle_signals=False)).record
    limit = thread_limit(2)
    # Before: one thread per source, 1,500 here. Besides the workers: the sampler, and the
    # pipe readers of the exec module's command.
    assert threads.workers == limit, (threads.workers, limit)
    assert threads.peak - before <= limit + 4, (threads.peak, before, limit)
    nodes = nodes_by_id(rec)
    # 1,500 probes of 50 ms on 66 threads take over a second: past each source's 1 s timeout
    # if waiting for a thread counted against it. It does not: every one is available.
    assert [nd["reason"] for nd in nodes.values() if nd["status"] != "available" and nd["kind"] == "source"] == []
    assert nodes["module:m"]["status"] == "ok"
    assert rec["makespan_s"] >= n * delay / limit * 0.9


def test_a_hung_node_does_not_hold_a_thread_against_the_limit(tmp_path):
    """A source that never returns (past its timeout the engine gives up on it) keeps its
    thread; the others still get threads, the limit being 2 here."""
    gate = threading.Event()

    def hang(ctx):
        gate.wait(30)  # never answers within the run
        return {"x": 1}

    import sys
    import types

    mod = types.ModuleType("cidag_test_hang")
    mod.probe = hang
    sys.modules["cidag_test_hang"] = mod
    try:
        cg = compile_text({"version": 1, "sources": [
            {"name": "h1", "type": "cidag_test_hang:probe", "capabilities": ["x"], "timeout": "200ms"},
            {"name": "h2", "type": "cidag_test_hang:probe", "capabilities": ["y"], "timeout": "200ms"},
            *[static(f"s{i}", 0.01) for i in range(6)],
        ]}, {"version": 1, "modules": [{"name": "m", "type": "exec", "frequency": "per-boot",
                                        "wants": ["x", "y", *[f"s{i}" for i in range(6)]],
                                        "settings": {"command": "true"}}]})
        runner = ThreadRunner(max_threads=2)
        t0 = time.monotonic()
        rec = run(cg, RunOptions(root=tmp_path / "root", jobs=1, handle_signals=False, runner=runner)).record
        took = time.monotonic() - t0
    finally:
        gate.set()
        sys.modules.pop("cidag_test_hang", None)
    nodes = nodes_by_id(rec)
    assert nodes["source:h1"]["reason"] == "timeout after 0.2s" and nodes["source:h2"]["reason"] == "timeout after 0.2s"
    assert all(nodes[f"source:s{i}"]["status"] == "available" for i in range(6))
    assert nodes["module:m"]["status"] == "ok" and took < 5


def test_thread_limit_grows_with_j():
    assert thread_limit(1) == 65 and thread_limit(4) == 68 and thread_limit(16) == 16 + 128


def test_a_node_cancelled_while_it_waits_for_a_thread_never_starts():
    from types import SimpleNamespace

    from cidag.runner import CancelEvent

    runner = ThreadRunner(max_threads=1)
    release, ran = threading.Event(), []

    def ctx():
        return SimpleNamespace(deadline=time.monotonic() + 10.0, cancelled=CancelEvent())

    a, b = ctx(), ctx()
    runner.start("a", lambda c: release.wait(10) and {"a": 1}, a)
    runner.start("b", lambda c: ran.append("b"), b)
    assert b.deadline > time.monotonic() + 1000  # waiting: out of the engine's reach
    b.cancelled.set()
    release.set()
    events = []
    while len(events) < 2:
        events += runner.wait(5)
    runner.abort()
    assert ("b", "raised", None, "cancelled before it started") in events and ran == []
    assert runner.peak_threads == 1


def test_a_run_leaves_no_worker_thread_behind(tmp_path):
    """Every worker goes once the run has ended, idle or busy then: here one still runs a
    probe the engine gave up on (it ignores its cancel) and returns after the run. A process
    that runs the engine many times (tests, a plugin host) must not collect threads."""
    import sys
    import types

    gate = threading.Event()
    mod = types.ModuleType("cidag_test_late")
    mod.probe = lambda ctx: gate.wait(30) and {"late": 1}
    sys.modules["cidag_test_late"] = mod
    names = [f"s{i}" for i in range(40)]
    sources = [static(s, 0.01) for s in names]
    sources.append({"name": "late", "type": "cidag_test_late:probe", "capabilities": ["late"], "timeout": "200ms"})
    cg = compile_text({"version": 1, "sources": sources},
                      {"version": 1, "modules": [{"name": f"m{i}", "type": "exec", "frequency": "per-boot",
                                                  "wants": [s], "settings": {"command": "true"}}
                                                 for i, s in enumerate(names + ["late"])]})

    def workers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("cidag-worker-")]

    try:
        for i in range(3):
            gate.clear()
            run(cg, RunOptions(root=tmp_path / f"root{i}", jobs=3, handle_signals=False))
            gate.set()  # the late probe returns now, after its run
    finally:
        gate.set()
        sys.modules.pop("cidag_test_late", None)
    deadline = time.monotonic() + 10
    while workers() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert workers() == []
