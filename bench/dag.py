"""(b) Generated DAGs of no-op plugin modules: cidag's run overhead vs a bare
graphlib.TopologicalSorter + ThreadPoolExecutor loop over the same graph, and the
time to load + compile + check the manifests.

The graph is random but seeded: module i depends_on up to 3 of the 40 modules
before it, one in five modules provides a capability `c-i`, and a later module
needs or wants up to 2 of those. Every module is `frequency: per-boot` (no
instance-id, no markers) and runs `bench.noop:run`, which returns None at once.
"""
from __future__ import annotations

import concurrent.futures
import graphlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
JOBS = 4


def generate(n: int, seed: int = 1) -> tuple[dict, dict]:
    """The sources and modules documents of an n-module DAG (plain data, dumped as YAML)."""
    rnd = random.Random(seed * 1_000_003 + n)
    modules: list[dict] = []
    provided: list[tuple[int, str]] = []  # (index of provider, capability)
    for i in range(n):
        m: dict = {"name": f"m{i:05d}", "type": "bench.noop:run", "frequency": "per-boot"}
        lo = max(0, i - 40)
        if i:
            k = rnd.randint(0, min(3, i - lo))
            deps = sorted(rnd.sample(range(lo, i), k))
            if deps:
                m["depends_on"] = [f"m{j:05d}" for j in deps]
        usable = [c for j, c in provided[-40:] if j < i]
        if usable:
            picks = rnd.sample(usable, rnd.randint(0, min(2, len(usable))))
            for c in picks:
                m.setdefault("needs" if rnd.random() < 0.5 else "wants", []).append(c)
        if rnd.random() < 0.2:
            m["provides"] = [f"c-{i}"]
            provided.append((i, f"c-{i}"))
        modules.append(m)
    sources = {"version": 1, "sources": [
        {"name": "seed", "type": "static", "capabilities": ["instance-id"],
         "settings": {"data": {"instance-id": "i-bench"}}}]}
    # One module wants instance-id so the source is probed, as on a real boot.
    modules[0]["wants"] = ["instance-id"]
    return sources, {"version": 1, "modules": modules}


def write_manifests(directory: Path, n: int) -> tuple[Path, Path]:
    src, mod = generate(n)
    sp, mp = directory / "sources.yaml", directory / "modules.yaml"
    sp.write_text(yaml.safe_dump(src, sort_keys=False))
    mp.write_text(yaml.safe_dump(mod, sort_keys=False, width=200))
    return sp, mp


def compile_time(sp: Path, mp: Path) -> tuple[float, object]:
    """Seconds to load + validate + compile + lint both manifests (what `cidag check` does)."""
    from cidag.compiler import compile_manifests
    from cidag.manifest import load_manifests

    t = time.perf_counter()
    cg = compile_manifests(load_manifests(str(sp), str(mp)))
    return time.perf_counter() - t, cg


def cidag_run_time(cg, root: Path) -> tuple[float, dict]:
    from cidag.engine import RunOptions, run

    t = time.perf_counter()
    res = run(cg, RunOptions(root=root, jobs=JOBS, handle_signals=False))
    wall = time.perf_counter() - t
    if res.exit_code != 0:
        raise RuntimeError(f"cidag run of the generated DAG exited {res.exit_code}: {res.record.get('result')}")
    return wall, res.record


class _Ctx:
    settings: dict = {}


def baseline_time(cg) -> float:
    """The same graph (sources, capabilities, modules) on graphlib + a 4-thread pool,
    calling the same no-op for every module and the same probe for the source."""
    from bench import noop

    g = cg.graph
    preds = {n: list(g.predecessors(n)) for n in g}
    t = time.perf_counter()
    ts = graphlib.TopologicalSorter(preds)
    ts.prepare()
    ctx = _Ctx()
    with concurrent.futures.ThreadPoolExecutor(JOBS) as pool:
        pending: dict = {}
        while ts.is_active():
            for node in ts.get_ready():
                if node.startswith("module:"):
                    pending[pool.submit(noop.run, ctx)] = node
                elif node.startswith("source:"):
                    pending[pool.submit(noop.probe, ctx)] = node
                else:
                    ts.done(node)  # a capability: settled when its providers are
            if not pending:
                continue
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                fut.result()
                ts.done(pending.pop(fut))
    return time.perf_counter() - t


def check_subprocess_time(sp: Path, mp: Path) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cidag", "check", "--sources", str(sp), "--modules", str(mp)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode not in (0,):
        raise RuntimeError(f"cidag check exited {proc.returncode}: {(proc.stdout + proc.stderr).strip()[:500]}")
    return wall


def bench_size(n: int, repeats: int = 3) -> dict:
    """Best of `repeats` for each measurement (the least disturbed run)."""
    with tempfile.TemporaryDirectory(prefix=f"cidag-bench-{n}-") as tmp:
        tmp = Path(tmp)
        sp, mp = write_manifests(tmp, n)
        compiles, runs, bases = [], [], []
        cg = None
        for _ in range(repeats):
            c, cg = compile_time(sp, mp)
            compiles.append(c)
        for r in range(repeats):
            root = tmp / f"root{r}"
            root.mkdir()
            w, rec = cidag_run_time(cg, root)
            runs.append(w)
            bases.append(baseline_time(cg))
        check_s = check_subprocess_time(sp, mp)
        edges = cg.graph.number_of_edges()
        return {"nodes": n, "graph_nodes": cg.graph.number_of_nodes(), "edges": edges,
                "compile_s": min(compiles), "run_s": min(runs), "baseline_s": min(bases),
                "ratio": min(runs) / min(bases), "check_subprocess_s": check_s,
                "manifest_bytes": mp.stat().st_size}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    for n in (100, 1000, 5000):
        print(bench_size(n))
