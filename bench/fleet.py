"""(e) A fleet boots at once against one metadata service of capacity C.

The service is `cidag.simulator` with a `Capacity` (CONCURRENCY requests at
once, SERVICE_TIME plus jitter each, a queue of QUEUE, then 503 with
`Retry-After: 1`), in a process of its own so that it does not share an
interpreter lock with the guests. Its rate C = concurrency ÷ mean service time.

Guests, all released at the same instant:
- SAMPLE of them are whole `python -m cidag run` processes (an OpenStack HTTP
  source with the shipped settings and timeout, and one module needing its
  capabilities); time to settled capabilities comes from their run records;
- the rest are in-process guests: threads of this process, each calling the
  real `openstack-http` probe (cidag.sources.openstack.probe, the real HTTP
  client) with the shipped settings and deadline. Each connects from its own
  loopback address (127.x.y.z), so the service tells the guests apart.

The baseline guests retry the way cloud-init's url_helper does for OpenStack
(checked against cloudinit/url_helper.py and DataSourceOpenStack.py):
`wait_for_url` on `/openstack` sleeps exactly `Retry-After` after a 503
(else `loop_n // 5 + 1` s, linear), then `readurl` reads each document one
after another, 6 tries each with a fixed 1 s between them; a new connection
per request; no jitter. The same 60 s deadline as the cidag source.

Per fleet: time to settled capabilities (p50, p99, max), guests that failed,
requests sent (refused ones included), the peak request rate in any 100 ms
window (all requests, and without each guest's first request: the boot wave
itself, which no client can spread without delaying its boot), and the
completion time against the physical limit = requests needed ÷ C.

Run: python3 bench/fleet.py [--sizes 100,1000] [--sample 10] [--quick]
     python3 bench/fleet.py --issue   # the issue's case: 60 guests, 4 at once, 0.5 s each, no queue, 120 s
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cidag import http as cidag_http  # noqa: E402
from cidag.simulator import Capacity, Simulator, load_fixture  # noqa: E402
from cidag.testing import make_context  # noqa: E402

CONCURRENCY = 8
SERVICE_TIME = 0.030
SERVICE_JITTER = 0.020
QUEUE = 32
DEADLINE = 60.0  # the shipped openstack source's timeout
DOCUMENTS = ("meta_data.json", "user_data", "vendor_data.json", "network_data.json")
REQUESTS_PER_GUEST = 1 + len(DOCUMENTS)  # the version listing, then the documents
WINDOW = 0.1


# -- the service, in its own process


def _serve(conn, capacity: dict) -> None:
    sim = Simulator(load_fixture(None), capacity=Capacity.from_dict(capacity)).start()
    conn.send(sim.port)
    conn.recv()  # "stop"
    sim.stop()
    conn.send({"requests": sim.requests, "clients": sim.clients, "connections": sim.connections,
               "peak_connections": sim.peak_connections, "peak_busy": sim.gate.peak_busy,
               "peak_waiting": sim.gate.peak_waiting})


class Service:
    """The simulator in a child process; `stop()` returns what it saw."""

    def __init__(self, capacity: dict) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, capacity), daemon=True)
        self.proc.start()
        self.url = f"http://127.0.0.1:{self.conn.recv()}"

    def stop(self) -> dict:
        self.conn.send("stop")
        seen = self.conn.recv()
        self.proc.join(10)
        return seen


# -- guests


def _address(i: int) -> str:
    return f"127.{1 + i // 62500}.{i // 250 % 250}.{1 + i % 250}"


_guest = threading.local()
_from_settings = cidag_http.Client.from_settings.__func__


def _with_own_address(cls, url, settings, ctx):
    """The real Client.from_settings, connecting from this guest's own loopback address."""
    client = _from_settings(cls, url, settings, ctx)
    address = getattr(_guest, "address", None)
    client.source_address = (address, 0) if address else None
    return client


def cidag_guest(url: str, i: int, start: dict, go: threading.Event, out: list) -> None:
    settings = {"url": url, "platform_check": False, **shipped_http_settings()}
    ctx, probe = make_context("source", "openstack-http", settings, timeout=DEADLINE, name=f"guest{i}")
    _guest.address = _address(i)
    go.wait()
    t0 = start["t0"]
    ctx.deadline = t0 + DEADLINE
    try:
        caps = probe(ctx)
        ok = "instance-id" in caps
        out[i] = {"ok": ok, "t": time.monotonic() - t0, "retries": ctx.counters.get("retries", 0)}
    except Exception as exc:
        out[i] = {"ok": False, "t": time.monotonic() - t0, "error": str(exc)[:200],
                  "retries": ctx.counters.get("retries", 0)}


def baseline_guest(url: str, i: int, start: dict, go: threading.Event, out: list) -> None:
    """cloud-init's url_helper for OpenStack: wait_for_url, then readurl per document."""
    host, port = url.split("//")[1].split(":")
    address = (_address(i), 0)

    def get(path: str) -> tuple[int, str | None]:
        # requests opens a connection per readurl call: one connection per request.
        timeout = max(0.01, min(10.0, deadline - time.monotonic()))
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout, source_address=address)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("Retry-After")
        except OSError:
            return 0, None
        finally:
            conn.close()

    go.wait()
    t0 = start["t0"]
    deadline = t0 + DEADLINE
    loop_n = 0
    try:
        while True:  # wait_for_url
            status, retry_after = get("/openstack")
            if status == 200:
                break
            if status == 503:
                sleep = float(retry_after or 1)  # _handle_error: Retry-After, exactly
            else:
                sleep = loop_n // 5 + 1
            if time.monotonic() + sleep > deadline:
                raise RuntimeError("metadata service not found in time")
            loop_n += 1
            time.sleep(sleep)
        for name in DOCUMENTS:  # readurl, retries=5, sec_between=1
            for attempt in range(6):
                status, _ = get(f"/openstack/latest/{name}")
                if status in (200, 404):
                    break
                if attempt == 5 or time.monotonic() + 1 > deadline:
                    raise RuntimeError(f"{name}: HTTP {status} after {attempt + 1} tries")
                time.sleep(1)
        out[i] = {"ok": True, "t": time.monotonic() - t0}
    except RuntimeError as exc:
        out[i] = {"ok": False, "t": time.monotonic() - t0, "error": str(exc)}


def shipped_http_settings() -> dict:
    """The client settings of the shipped openstack source (retries and the like), without env paths."""
    import yaml

    shipped = yaml.safe_load((REPO / "sources.yaml").read_text())
    entry = next(s for s in shipped["sources"] if s["type"] == "openstack-http")
    return {k: v for k, v in (entry.get("settings") or {}).items() if k in cidag_http.CLIENT_SETTINGS}


def process_guest_files(tmp: Path, url: str) -> tuple[Path, Path]:
    import yaml

    settings = {"url": url, "platform_check": False, **shipped_http_settings()}
    sources = {"version": 1, "sources": [
        {"name": "openstack", "type": "openstack-http", "timeout": f"{DEADLINE:g}s",
         "capabilities": ["instance-id", "hostname", "public-keys", "user-data"], "settings": settings}]}
    modules = {"version": 1, "modules": [
        {"name": "settled", "type": "exec", "frequency": "per-boot",
         "needs": ["instance-id", "hostname", "public-keys", "user-data"], "settings": {"command": "true"}}]}
    (tmp / "sources.yaml").write_text(yaml.safe_dump(sources))
    (tmp / "modules.yaml").write_text(yaml.safe_dump(modules))
    return tmp / "sources.yaml", tmp / "modules.yaml"


def process_result(root: Path, spawned_wall: float, proc: subprocess.Popen) -> dict:
    proc.wait(DEADLINE + 30)
    try:
        rec = json.loads((root / "var/lib/cidag/last-run.json").read_text())
    except (OSError, ValueError):
        return {"ok": False, "t": DEADLINE, "error": f"no run record (exit {proc.returncode})"}
    node = next(n for n in rec["nodes"] if n["id"] == "source:openstack")
    settled = [c["settled_s"] for c in rec["capabilities"].values() if c.get("settled_s") is not None]
    started = datetime.fromisoformat(rec["started_at"].replace("Z", "+00:00")).timestamp()
    t = started - spawned_wall + max(settled, default=0.0)
    return {"ok": node["status"] == "available", "t": t, "error": node.get("reason", ""),
            "retries": (node.get("counters") or {}).get("retries", 0), "process": True}


# -- one fleet


def fleet(kind: str, n: int, sample: int, capacity: dict) -> dict:
    """Boot n guests of `kind` (cidag or baseline) at once; the figures of that fleet."""
    service = Service(capacity)
    out: list = [None] * n
    go = threading.Event()
    procs = []
    tmp = Path(tempfile.mkdtemp(prefix="cidag-fleet-"))
    n_proc = min(sample, n) if kind == "cidag" else 0
    try:
        if n_proc:
            s, m = process_guest_files(tmp, service.url)
            env = {**os.environ, "PYTHONPATH": str(REPO)}
        target = cidag_guest if kind == "cidag" else baseline_guest
        start: dict = {}
        threads = [threading.Thread(target=target, args=(service.url, i, start, go, out), daemon=True)
                   for i in range(n_proc, n)]
        for th in threads:
            th.start()  # each sets up, then waits for `go`
        time.sleep(0.5 + n / 2000)  # let them reach the start line
        t0 = start["t0"] = time.monotonic()
        wall0 = time.time()
        for i in range(n_proc):
            root = tmp / f"guest{i}"
            procs.append((i, root, subprocess.Popen(
                [sys.executable, "-m", "cidag", "run", "--sources", str(s), "--modules", str(m),
                 "--root", str(root), "-q"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        go.set()
        for th in threads:
            th.join(DEADLINE + 30)
        for i, root, proc in procs:
            out[i] = process_result(root, wall0, proc)
    finally:
        seen = service.stop()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return figures(kind, n, n_proc, out, seen, t0, capacity)


def figures(kind: str, n: int, n_proc: int, out: list, seen: dict, t0: float, capacity: dict) -> dict:
    rate = Capacity.from_dict(capacity).rate
    done = [o for o in out if o is not None]
    times = sorted(o["t"] for o in done if o["ok"])
    arrivals = sorted(t - t0 for t, *_ in seen["requests"])
    firsts: set[int] = set()
    seen_clients: set[str] = set()
    for idx, client in enumerate(seen["clients"]):
        if client not in seen_clients:
            seen_clients.add(client)
            firsts.add(idx)
    later = sorted(seen["requests"][i][0] - t0 for i in range(len(seen["requests"])) if i not in firsts)
    needed = n * REQUESTS_PER_GUEST
    limit = needed / rate
    completion = max(times) if len(times) == n else max((o["t"] for o in done), default=0.0)
    refused = sum(1 for r in seen["requests"] if r[3] in (429, 503))
    errors = sorted({o.get("error", "")[:120] for o in done if not o["ok"]})
    return {
        "kind": kind, "n": n, "processes": n_proc, "capacity_rps": round(rate, 1),
        "p50_s": _pct(times, 50), "p99_s": _pct(times, 99), "max_s": times[-1] if times else None,
        "process_p50_s": _pct(sorted(o["t"] for o in done if o.get("process") and o["ok"]), 50),
        "failed": n - len(times), "requests": len(seen["requests"]), "refused": refused,
        "needed": needed, "limit_s": round(limit, 3), "completion_s": round(completion, 3),
        "completion_x_limit": round(completion / limit, 2) if limit else None,
        "peak_rps": _peak(arrivals), "peak_rps_after_first": _peak(later),
        "retries_p50": _pct(sorted(o.get("retries", 0) for o in done), 50),
        "retries_max": max((o.get("retries", 0) for o in done), default=0),
        "connections": seen["connections"], "peak_connections": seen["peak_connections"],
        "peak_busy": seen["peak_busy"], "peak_waiting": seen["peak_waiting"],
        "errors": errors[:3],
    }


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
    return round(values[k], 3)


def _peak(times: list[float]) -> float:
    """Most requests in any WINDOW-long interval, as requests per second."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - WINDOW:
            lo += 1
        best = max(best, hi - lo + 1)
    return round(best / WINDOW, 1)


def service_check(n: int) -> dict:
    """Can the service hold n concurrent clients? n real Clients connect at once, each from its
    own address, send one request and keep the connection open until all have had their answer."""
    service = Service({})  # no capacity limit: this measures the server itself
    answered: list[float] = []
    ended = threading.Semaphore(0)
    go, release = threading.Barrier(n + 1), threading.Event()

    def one(i: int) -> None:
        with cidag_http.Client(service.url, deadline=time.monotonic() + DEADLINE,
                               source_address=(_address(i), 0), retries=0) as client:
            go.wait()
            try:
                if client.get("openstack").status == 200:
                    answered.append(time.monotonic())
            except Exception:  # not answered: counted below
                pass
            ended.release()
            release.wait(DEADLINE)  # the connection stays open until every client is done

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    go.wait()
    t0 = time.monotonic()
    for _ in range(n):
        ended.acquire()
    release.set()
    for th in threads:
        th.join(10)
    seen = service.stop()
    done = sorted(a - t0 for a in answered)
    return {"clients": n, "answered": len(done), "all_answered_s": round(done[-1], 3) if done else None,
            "p50_s": _pct(done, 50), "peak_connections": seen["peak_connections"]}


def service_line(check: dict) -> str:
    return (f"Service check: {check['clients']} concurrent keep-alive clients, {check['answered']} answered "
            f"(p50 {check['p50_s']} s, all by {check['all_answered_s']} s), "
            f"{check['peak_connections']} connections open at once (thread per connection).")


def default_capacity() -> dict:
    return {"concurrency": CONCURRENCY, "service_time": SERVICE_TIME, "service_jitter": SERVICE_JITTER,
            "queue": QUEUE, "status": 503, "retry_after": 1}


# Issue 11's measurement: one OpenStack service serving 4 requests at a time, 0.5 s each,
# 503 with Retry-After: 1 beyond that, and a 120 s source timeout.
ISSUE_CAPACITY = {"concurrency": 4, "service_time": 0.5, "queue": 0, "status": 503, "retry_after": 1}


def run_fleets(sizes: list[int], sample: int, capacity: dict | None = None) -> list[dict]:
    cidag_http.Client.from_settings = classmethod(_with_own_address)
    results = []
    for n in sizes:
        for kind in ("cidag", "baseline"):
            results.append(fleet(kind, n, sample, capacity or default_capacity()))
    return results


def report(results: list[dict]) -> tuple[str, list[tuple[str, bool, str]]]:
    """The fleet table and the issue's goals at the largest N."""
    rows = []
    for r in results:
        f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        rows.append([r["n"], r["kind"] + (f" ({r['processes']} proc.)" if r["processes"] else ""),
                     f(r["p50_s"]), f(r["p99_s"]), f(r["max_s"]), r["failed"], r["requests"], r["refused"],
                     f"{r['peak_rps']:.0f}", f"{r['peak_rps_after_first']:.0f}",
                     f"{r['peak_rps_after_first'] / r['capacity_rps']:.2f}",
                     f(r["limit_s"]), f(r["completion_s"]), f"{r['completion_x_limit']:.2f}",
                     r["peak_connections"]])
    headers = ["N", "client", "p50 s", "p99 s", "max s", "failed", "requests", "refused",
               "peak req/s", "peak req/s after 1st", "÷ C", "limit s", "completion s", "÷ limit",
               "open conns (peak)"]
    lines = []
    sep = "|" + "|".join("---" for _ in headers) + "|"
    lines.append("| " + " | ".join(headers) + " |")
    lines.append(sep)
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    c = results[0]["capacity_rps"] if results else 0
    lines.append("")
    lines.append(f"Service: {CONCURRENCY} at once, {SERVICE_TIME * 1000:.0f} ms + U[0, "
                 f"{SERVICE_JITTER * 1000:.0f}] ms each, queue {QUEUE}, then 503 Retry-After: 1; "
                 f"C = {c:.0f} requests/s. Limit = N × {REQUESTS_PER_GUEST} requests ÷ C.")
    targets = []
    big = [r for r in results if r["kind"] == "cidag" and r["n"] >= 1000]  # the goals are set at N = 1,000
    if big:
        r = max(big, key=lambda r: r["n"])
        n = r["n"]
        targets += [
            (f"fleet N={n}: no guest fails", r["failed"] == 0, f"{r['failed']} failed"),
            (f"fleet N={n}: completion ≤ 1.3 × limit", (r["completion_x_limit"] or 99) <= 1.3,
             f"{r['completion_x_limit']:.2f}×"),
            (f"fleet N={n}: peak ≤ 1.5 × C after the boot wave", r["peak_rps_after_first"] <= 1.5 * r["capacity_rps"],
             f"{r['peak_rps_after_first'] / r['capacity_rps']:.2f}× (with the boot wave "
             f"{r['peak_rps'] / r['capacity_rps']:.1f}×)"),
            (f"fleet N={n}: p99 ≤ 2 × p50", r["p99_s"] is not None and r["p99_s"] <= 2 * r["p50_s"],
             f"p99 {r['p99_s']} s, p50 {r['p50_s']} s"),
        ]
    return "\n".join(lines), targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="comma-separated fleet sizes (default 100,1000)")
    ap.add_argument("--sample", type=int, default=None, help="guests run as whole cidag processes (default 10)")
    ap.add_argument("--quick", action="store_true", help="sizes 100 and 300, 3 processes")
    ap.add_argument("--clients", type=int, default=1000, help="concurrent clients of the service check (default 1000)")
    ap.add_argument("--issue", action="store_true",
                    help="issue 11's case: 60 guests, 4 requests at once, 0.5 s each, no queue, 120 s timeout")
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = ap.parse_args(argv)
    if args.issue:
        global DEADLINE
        DEADLINE = 120.0
        threading.stack_size(512 << 10)
        text, _ = report(run_fleets([60], args.sample if args.sample is not None else 10, ISSUE_CAPACITY))
        print(text.split("\n\nService:")[0])
        print("\nService: 4 at once, 0.5 s each, no queue, then 503 Retry-After: 1; C = 8 requests/s; "
              "source timeout 120 s.")
        return 0
    sizes = [int(x) for x in (args.sizes or ("100,300" if args.quick else "100,1000")).split(",")]
    sample = args.sample if args.sample is not None else (3 if args.quick else 10)
    threading.stack_size(512 << 10)  # thousands of guest threads: small stacks
    check = service_check(args.clients)
    print(service_line(check))
    results = run_fleets(sizes, sample)
    text, targets = report(results)
    print(text)
    for name, ok, detail in targets:
        print(f"- {name}: {'met' if ok else 'NOT met'} ({detail})")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
