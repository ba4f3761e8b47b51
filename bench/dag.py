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
    from cidag import yamldoc
    from cidag.compiler import compile_manifests
    from cidag.manifest import load_manifests

    yamldoc._cache.clear()  # each measurement parses the files, as a new process would
    t = time.perf_counter()
    cg = compile_manifests(load_manifests(str(sp), str(mp)))
    return time.perf_counter() - t, cg


def compile_phases(sp: Path, mp: Path) -> dict:
    """The same load + compile, phase by phase (internal API; best effort): YAML with
    positions, ${VAR} expansion, validation and type loading, graph + lint."""
    from cidag import compiler, manifest, yamldoc

    yamldoc._cache.clear()
    t0 = time.perf_counter()
    ds, dm = yamldoc.load_file(str(sp)), yamldoc.load_file(str(mp))
    t1 = time.perf_counter()
    manifest.expand_env(ds)
    manifest.expand_env(dm)
    t2 = time.perf_counter()
    select, sources, _ = manifest.parse_sources(ds)
    modules, _ = manifest.parse_modules(dm)
    t3 = time.perf_counter()
    compiler.build_graph(manifest.Manifests(select, sources, modules, str(sp), str(mp)))
    t4 = time.perf_counter()
    return {"yaml_s": t1 - t0, "env_s": t2 - t1, "validate_s": t3 - t2, "graph_lint_s": t4 - t3}


def frozen(cg):
    """`cg` as `cidag run` runs it, from the compiled-plan cache or not (plancache.freeze):
    its graph a FrozenGraph, holding the topological order and adjacency made at compile time."""
    from cidag.plancache import freeze

    return freeze(cg)


def cidag_run_time(cg, root: Path) -> tuple[float, dict]:
    from cidag.engine import RunOptions, run

    t = time.perf_counter()
    res = run(cg, RunOptions(root=root, jobs=JOBS, handle_signals=False))
    wall = time.perf_counter() - t
    if res.exit_code != 0:
        raise RuntimeError(f"cidag run of the generated DAG exited {res.exit_code}: {res.record.get('result')}")
    return wall, res.record


class _Ctx:
    settings: dict | None = None


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
                          env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode not in (0,):
        raise RuntimeError(f"cidag check exited {proc.returncode}: {(proc.stdout + proc.stderr).strip()[:500]}")
    return wall


def peak_memory_mb(sp: Path, mp: Path, root: Path) -> float:
    """Peak resident memory (MiB) of one `cidag run` process over these manifests (load,
    compile, run, record), from the kernel's rusage of that child alone."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "cidag", "run", "-q", "--sources", str(sp), "--modules", str(mp),
                             "--root", str(root), "-j", str(JOBS)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"cidag run exited {proc.returncode}")
    return usage.ru_maxrss / 1024.0


def breakdown(cg, root: Path) -> dict:
    """Where a run's time goes, without threads: `plan_skips()` (what is needed), and the
    Plan's own bookkeeping driven synchronously (every node ends at once, -j 4)."""
    from cidag.engine import RunOptions, plan_skips
    from cidag.plan import Plan
    from cidag.skips import dry_walk

    t = time.perf_counter()
    skips = plan_skips(cg, RunOptions(root=root, jobs=JOBS, handle_signals=False), None)
    t1 = time.perf_counter()
    dry_walk(Plan(cg, select=cg.manifests.select, jobs=JOBS, skip=skips), cg)
    t2 = time.perf_counter()
    return {"plan_skips_s": t1 - t, "plan_loop_s": t2 - t1}


def bench_size(n: int, repeats: int = 3, slow_s: float = 5.0) -> dict:
    """Best of `repeats` for each measurement (the least disturbed run); a cidag run
    slower than `slow_s` is run once only, to keep `make bench` short."""
    with tempfile.TemporaryDirectory(prefix=f"cidag-bench-{n}-") as tmp:
        tmp = Path(tmp)
        sp, mp = write_manifests(tmp, n)
        compiles, runs, bases = [], [], []
        cg = None
        for _ in range(repeats):
            c, cg = compile_time(sp, mp)
            compiles.append(c)
        cg = frozen(cg)  # what `cidag run` runs; the baseline walks the same graph
        for r in range(repeats):
            bases.append(baseline_time(cg))
            if runs and runs[0] > slow_s:
                continue
            root = tmp / f"root{r}"
            root.mkdir()
            runs.append(cidag_run_time(cg, root)[0])
        try:
            parts = breakdown(cg, tmp / "root-breakdown")
            parts.update(compile_phases(sp, mp))
        except Exception as exc:  # internal API moved: the headline figures still stand
            parts = {"breakdown_error": f"{type(exc).__name__}: {exc}"}
        check_s = check_subprocess_time(sp, mp)
        peak = peak_memory_mb(sp, mp, tmp / "root-memory")
        return {"peak_mb": peak, "nodes": n, "graph_nodes": cg.graph.number_of_nodes(), "edges": cg.graph.number_of_edges(),
                "compile_s": min(compiles), "run_s": min(runs), "run_repeats": len(runs),
                "baseline_s": min(bases), "ratio": min(runs) / min(bases),
                "check_subprocess_s": check_s, "manifest_bytes": mp.stat().st_size, **parts}


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    for n in (100, 1000, 5000):
        print(bench_size(n))
