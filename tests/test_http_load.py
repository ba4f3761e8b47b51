"""The HTTP client against a loaded service (the simulator's Capacity), with small N.

Retry-After, the retry budget, keep-alive, stalled connections, name lookups
inside the deadline, and the service's own limits (slots, queue, token bucket).
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from cidag.engine import RunOptions, load_and_compile, run
from cidag.http import Client, HTTPFailure
from cidag.simulator import Capacity, Simulator, load_fixture


def serve(**capacity) -> Simulator:
    return Simulator(load_fixture(None), capacity=Capacity.from_dict(capacity)).start()


def client(url: str, deadline: float = 10.0, **kw) -> Client:
    kw.setdefault("backoff", 0.05)
    return Client(url, deadline=time.monotonic() + deadline, **kw)


def at_once(n: int, func) -> list:
    """Call func(i) on n threads released together; the results in order."""
    out: list = [None] * n
    go = threading.Barrier(n)

    def one(i: int) -> None:
        go.wait()
        try:
            out[i] = func(i)
        except Exception as exc:  # the test looks at it
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_slots_and_queue_refuse_the_rest_with_retry_after():
    # A long service time, so that all six have arrived before a slot frees even on a loaded machine.
    with serve(concurrency=2, queue=1, service_time=1.5, retry_after=3) as sim:
        resps = at_once(6, lambda i: client(sim.url).get("openstack", retry=False))
        statuses = sorted(r.status for r in resps)
        assert statuses == [200, 200, 200, 503, 503, 503]
        refused = [r for r in resps if r.status == 503]
        assert all(r.headers["retry-after"] == "3" for r in refused)
        assert sim.gate.peak_busy == 2 and sim.gate.peak_waiting == 1


def test_429_status_for_a_service_that_says_so():
    with serve(concurrency=1, queue=0, service_time=1.5, status=429) as sim:
        resps = at_once(3, lambda i: client(sim.url).get("openstack", retry=False))
        assert sorted(r.status for r in resps) == [200, 429, 429]


def test_token_bucket_per_client_throttles_a_chatty_client():
    with serve(client_rate=0.5, client_burst=3) as sim:
        c = client(sim.url)
        statuses = [c.get("openstack", retry=False).status for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        time.sleep(2.1)  # one token back
        assert c.get("openstack", retry=False).status == 200


def test_retry_after_is_honoured_then_the_request_succeeds(monkeypatch):
    import cidag.http as mod

    windows = []
    uniform = mod.random.uniform
    monkeypatch.setattr(mod.random, "uniform", lambda lo, hi: windows.append((lo, hi)) or uniform(lo, hi))
    with serve(concurrency=1, queue=0, service_time=0.5, retry_after=1) as sim:
        stats = [{}, {}]
        resps = at_once(2, lambda i: client(sim.url, stats=stats[i], max_backoff=0.5).get("openstack"))
        assert [r.status for r in resps] == [200, 200]
        times = [t for t, _, _, status in sim.requests if status == 503]
        assert len(times) == 1
        retried = next(t for t, _, _, status in sim.requests if status == 200 and t > times[0])
        assert retried - times[0] >= 1.0  # not before Retry-After
        assert windows == [(0, 0.5)]  # Retry-After + U[0, min(max_backoff, 2 x Retry-After)]
        assert sorted(s.get("retries", 0) for s in stats) == [0, 1]
        assert sorted(s.get("throttled", 0) for s in stats) == [0, 1]


def test_retry_after_past_the_deadline_fails_at_once():
    with serve(concurrency=1, queue=0, service_time=1.0, retry_after=30) as sim:
        t0 = time.monotonic()
        out = at_once(2, lambda i: client(sim.url, deadline=5).get("openstack"))
        failures = [o for o in out if isinstance(o, HTTPFailure)]
        assert len(failures) == 1
        assert "Retry-After 30s would pass the deadline" in str(failures[0])
        assert time.monotonic() - t0 < 3  # the refused one did not sleep to its deadline
        assert len(sim.requests) == 2


def test_the_retry_budget_is_shared_by_the_requests_of_a_source():
    with Simulator(load_fixture(None)) as sim:
        sim.add_fault("/openstack/latest/meta_data.json", status=500, first=2)
        sim.add_fault("/openstack/latest/user_data", status=500)
        c = client(sim.url, retries=3)
        assert c.get("openstack/latest/meta_data.json").status == 200  # 2 retries spent
        with pytest.raises(HTTPFailure, match=r"HTTP 500 .*retry budget of the source \(3\) spent"):
            c.get("openstack/latest/user_data")  # 1 left: 2 tries, then refused
        statuses = [status for _, _, path, status in sim.requests if path.endswith("user_data")]
        assert statuses == [500, 500]
        assert c.stats["retries"] == 3 and c.stats["requests"] == 5


def test_one_connection_is_kept_alive_for_a_sources_requests():
    with Simulator(load_fixture(None)) as sim:
        with client(sim.url) as c:
            for name in ("openstack", "openstack/latest/meta_data.json", "openstack/latest/user_data"):
                assert c.get(name).status == 200
        assert sim.connections == 1
        assert c.stats == {"connections": 1, "requests": 3}


def test_a_stalled_connection_is_not_asked_again():
    with Simulator(load_fixture(None)) as sim:
        sim.add_fault("/openstack/latest/user_data", stall=True, first=1)
        with client(sim.url, timeout=0.5) as c:
            assert c.get("openstack").status == 200
            assert c.get("openstack/latest/user_data").status == 200  # timeout, then a retry
        # openstack + the stalled try share one connection; the retry needs a new one.
        assert sim.connections == 2
        assert c.stats["retries"] == 1


def test_a_keep_alive_connection_closed_by_the_service_is_replaced_without_a_retry():
    with Simulator(load_fixture(None)) as sim:
        with client(sim.url) as c:
            assert c.get("openstack").status == 200
            for conn in c._idle:  # as a service does when its idle timeout passes
                conn.sock.shutdown(socket.SHUT_RDWR)
            assert c.get("openstack").status == 200
        assert "retries" not in c.stats and c.stats["connections"] == 2


def test_name_lookup_is_bounded_by_the_deadline(monkeypatch):
    release = threading.Event()

    def slow_lookup(*args, **kw):
        release.wait(30)  # a resolver that does not answer
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    try:
        t0 = time.monotonic()
        with pytest.raises(HTTPFailure, match="timeout .*name lookup of 'metadata.internal' timed out"):
            client("http://metadata.internal", deadline=0.5).get("openstack")
        assert time.monotonic() - t0 < 1.5
        cancelled = threading.Event()
        threading.Timer(0.3, cancelled.set).start()
        t0 = time.monotonic()
        with pytest.raises(HTTPFailure, match="cancelled"):
            client("http://metadata.internal", deadline=30, cancelled=cancelled).get("openstack")
        assert time.monotonic() - t0 < 1.5
    finally:
        release.set()


def test_the_run_record_counts_a_sources_requests_and_retries(tmp_path):
    with serve(concurrency=1, queue=0, service_time=0.05, retry_after=0) as sim:
        sim.add_fault("/openstack", status=500, first=1)
        sources = tmp_path / "sources.yaml"
        sources.write_text(f"""
version: 1
sources:
  - name: openstack
    type: openstack-http
    timeout: 20s
    capabilities: [instance-id, hostname]
    settings: {{url: "{sim.url}", platform_check: false, backoff: 10ms, max_parallel: 4}}
""")
        modules = tmp_path / "modules.yaml"
        modules.write_text("version: 1\nmodules:\n  - {name: uses, type: exec, needs: [hostname], "
                           "frequency: per-boot, settings: {command: 'true'}}\n")
        result = run(load_and_compile(str(sources), str(modules)),
                     RunOptions(root=tmp_path / "root", handle_signals=False))
        node = next(n for n in result.record["nodes"] if n["id"] == "source:openstack")
        assert node["status"] == "available"
        # 1 listing refused by the fault + 1 listing + 4 documents, some refused by the 1-slot service.
        refused = sum(1 for r in sim.requests if r[3] in (500, 503))
        assert node["counters"]["requests"] == len(sim.requests) == 6 + refused - 1
        assert node["counters"]["retries"] == refused
        assert node["counters"]["connections"] == sim.connections


def test_serve_metadata_capacity_options_on_the_command_line():
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, "-m", "cidag", "serve-metadata", "--capacity", "1",
                             "--service-time", "1500ms", "--queue", "0", "--busy-status", "429",
                             "--retry-after", "7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        resps = at_once(2, lambda i: client(url).get("openstack", retry=False))
        assert sorted((r.status, r.headers.get("retry-after")) for r in resps) == [(200, None), (429, "7")]
    finally:
        proc.terminate()
        proc.wait(10)
    assert "capacity: 1 at once, queue 0, then 429 (Retry-After 7)" in proc.stderr.read()
    bad = subprocess.run([sys.executable, "-m", "cidag", "serve-metadata", "--retry-after", "soon"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--retry-after: expected whole seconds or 'none', not 'soon'" in bad.stderr


def test_retry_after_zero_still_backs_off_and_the_budget_lasts():
    # `Retry-After: 0` (or a date in the past) while the slot is busy for 1.5 s: before, the
    # refused client sent its 11 requests in 0.03 s and gave up with its budget spent.
    with serve(concurrency=1, queue=0, service_time=1.5, retry_after=0) as sim:
        stats = [{}, {}]
        resps = at_once(2, lambda i: client(sim.url, stats=stats[i], backoff=0.2, retries=10).get("openstack"))
        assert [r.status for r in resps] == [200, 200]
        refused = [t for t, _, _, status in sim.requests if status == 503]
        assert refused and len(refused) <= 8
        gaps = [b - a for a, b in zip(refused, refused[1:])]
        assert all(g >= 0.19 for g in gaps), gaps  # never sooner than the backoff's base
