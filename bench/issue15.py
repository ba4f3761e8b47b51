"""Issue 15's performance figures, measured in one run (nothing asserted):

    python3 bench/issue15.py [--repeats 5] [--markdown]

- 5,000 no-op modules (dag.py's seeded graph): `run()` on the frozen graph `cidag run`
  runs, -j 4, against a bare graphlib + ThreadPoolExecutor(4) loop over the same graph
  (dag.baseline_time) and against the same run under `--strategy serial`; each run's
  makespan against its critical path. Best of `repeats`, baseline and runs interleaved.
- `cidag check` of 10,000 modules as a process (start-up included): dag.py's graph and
  a plain chain (each module depends_on the one before).
- `cidag run` of the 10,000-module chain as a process: cold (no compiled-plan cache:
  parse, compile, write the cache, run) and warm (the cache written by the cold run).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

from bench import dag  # noqa: E402


def write_chain(directory: Path, n: int) -> tuple[Path, Path]:
    """n no-op modules, each depending on the one before; one static source."""
    mods = []
    for i in range(n):
        m: dict = {"name": f"m{i:05d}", "type": "bench.noop:run", "frequency": "per-boot"}
        if i:
            m["depends_on"] = [f"m{i - 1:05d}"]
        mods.append(m)
    mods[0]["wants"] = ["instance-id"]
    src = {"version": 1, "sources": [{"name": "seed", "type": "static", "capabilities": ["instance-id"],
                                      "settings": {"data": {"instance-id": "i-bench"}}}]}
    sp, mp = directory / "sources.yaml", directory / "modules.yaml"
    sp.write_text(yaml.safe_dump(src, sort_keys=False))
    mp.write_text(yaml.safe_dump({"version": 1, "modules": mods}, sort_keys=False, width=200))
    return sp, mp


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {proc.returncode}: {(proc.stdout + proc.stderr)[-400:]}")
    return wall


def noop_dag(n: int, repeats: int, tmp: Path) -> dict:
    from cidag.engine import RunOptions, run

    sp, mp = dag.write_manifests(tmp, n)
    _, cg = dag.compile_time(sp, mp)
    cg = dag.frozen(cg)
    best: dict = {"one-step": None, "serial": None}
    records: dict = {}
    bases = []
    for r in range(repeats):
        bases.append(dag.baseline_time(cg))
        for strategy in best:
            t = time.perf_counter()
            res = run(cg, RunOptions(root=tmp / f"{strategy}-{r}", jobs=dag.JOBS, strategy=strategy,
                                     handle_signals=False))
            wall = time.perf_counter() - t
            if best[strategy] is None or wall < best[strategy]:
                best[strategy], records[strategy] = wall, res.record
    base = min(bases)
    out = {"nodes": n, "graphlib_s": base}
    for strategy, wall in best.items():
        rec = records[strategy]
        out[strategy] = {"wall_s": wall, "ratio_to_graphlib": wall / base, "makespan_s": rec["makespan_s"],
                         "critical_path_s": rec["critical_path_s"],
                         "makespan_to_cp": rec["makespan_s"] / rec["critical_path_s"] if rec["critical_path_s"] else None}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--markdown", action="store_true", help="print the README table too")
    args = ap.parse_args()
    py = sys.executable
    res: dict = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="cidag-issue15-") as tmp:
        tmp = Path(tmp)
        (tmp / "dag5k").mkdir()
        res["dag5k"] = noop_dag(5000, args.repeats, tmp / "dag5k")
        (tmp / "dag10k").mkdir()
        (tmp / "chain10k").mkdir()
        dsp, dmp = dag.write_manifests(tmp / "dag10k", 10000)
        csp, cmp_ = write_chain(tmp / "chain10k", 10000)
        check = [py, "-m", "cidag", "check", "--sources"]
        res["check_dag10k_s"] = min(timed(check + [str(dsp), "--modules", str(dmp)]) for _ in range(3))
        res["check_chain10k_s"] = min(timed(check + [str(csp), "--modules", str(cmp_)]) for _ in range(3))
        cold, warm = [], []
        for r in range(max(2, args.repeats // 2)):
            root = tmp / f"chain-root{r}"
            argv = [py, "-m", "cidag", "run", "-q", "--sources", str(csp), "--modules", str(cmp_),
                    "--root", str(root), "-j", str(dag.JOBS)]
            cold.append(timed(argv))
            warm.append(timed(argv))
            rec = json.loads((root / "var/lib/cidag/last-run.json").read_text())
        res["chain10k_run"] = {"cold_s": min(cold), "warm_s": min(warm), "makespan_s": rec["makespan_s"],
                               "critical_path_s": rec["critical_path_s"]}
    print(json.dumps(res, indent=1))
    if args.markdown:
        d = res["dag5k"]
        one, ser = d["one-step"], d["serial"]
        c = res["chain10k_run"]
        print(f"""
| figure | value |
|---|---|
| 5,000 no-op modules: graphlib + ThreadPoolExecutor(4) | {d['graphlib_s']:.3f} s |
| cidag run, one-step -j 4 (wall) | {one['wall_s']:.3f} s = **{one['ratio_to_graphlib']:.2f}×** graphlib |
| cidag run, serial (wall) | {ser['wall_s']:.3f} s = {ser['ratio_to_graphlib']:.2f}× graphlib, {ser['wall_s'] / one['wall_s']:.2f}× one-step |
| one-step makespan ÷ critical path | {one['makespan_s']:.3f} ÷ {one['critical_path_s']:.3f} s = {one['makespan_to_cp']:.2f} |
| serial makespan ÷ critical path | {ser['makespan_s']:.3f} ÷ {ser['critical_path_s']:.3f} s = {ser['makespan_to_cp']:.2f} |
| `cidag check`, 10,000 modules (dag.py graph), process | {res['check_dag10k_s']:.2f} s |
| `cidag check`, 10,000-module chain, process | {res['check_chain10k_s']:.2f} s |
| `cidag run`, 10,000-module chain, cold (compile + cache write + run) | {c['cold_s']:.2f} s |
| `cidag run`, 10,000-module chain, warm (compiled-plan cache) | {c['warm_s']:.2f} s |
| chain makespan ÷ critical path | {c['makespan_s']:.2f} ÷ {c['critical_path_s']:.2f} s |
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
