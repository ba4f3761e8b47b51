"""Issue 15's performance figures, measured in one run (nothing asserted):

    python3 bench/issue15.py [--repeats 5] [--markdown] [--before DIR]

`--before DIR`: also measure the cidag package of another checkout (e.g. `git archive
0a3d604 | tar -x -C DIR`), interleaved with this one, so both see the same machine load.
Each measurement runs in a child process whose `cidag` is the tree measured.

- 5,000 no-op modules (dag.py's seeded graph): `run()` on the frozen graph `cidag run`
  runs, -j 4, against a bare graphlib + ThreadPoolExecutor(4) loop over the same graph
  (dag.baseline_time) and against the same run under `--strategy serial`; each run's
  makespan against its critical path. Best of `repeats`, each repeat a new process.
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


def timed(argv: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd="/")
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
    cpus: dict = {}
    bases = []
    for r in range(repeats):
        bases.append(dag.baseline_time(cg))
        for strategy in best:
            cpu, t = time.thread_time(), time.perf_counter()
            res = run(cg, RunOptions(root=tmp / f"{strategy}-{r}", jobs=dag.JOBS, strategy=strategy,
                                     handle_signals=False))
            wall, cpu = time.perf_counter() - t, time.thread_time() - cpu
            if best[strategy] is None or wall < best[strategy]:
                best[strategy], records[strategy] = wall, res.record
            cpus[strategy] = min(cpus.get(strategy, cpu), cpu)
    base = min(bases)
    out = {"nodes": n, "graphlib_s": base}
    for strategy, wall in best.items():
        rec = records[strategy]
        out[strategy] = {"wall_s": wall, "ratio_to_graphlib": wall / base, "main_cpu_s": cpus[strategy],
                         "makespan_s": rec["makespan_s"],
                         "critical_path_s": rec["critical_path_s"],
                         "makespan_to_cp": rec["makespan_s"] / rec["critical_path_s"] if rec["critical_path_s"] else None}
    return out


def child_env(code: Path) -> dict:
    """The environment of a child that imports `cidag` from `code` (bench.noop from either)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), str(REPO)]))


def measure(codes: dict[str, Path], repeats: int, tmp: Path) -> dict:
    """Every figure for the cidag package of each tree in `codes` (label -> checkout);
    each repeat of each figure runs every tree in turn, so they share the machine's load."""
    py = sys.executable
    res: dict = {label: {"code": str(code)} for label, code in codes.items()}
    dags: dict = {label: [] for label in codes}
    for _ in range(repeats):
        for label, code in codes.items():
            out = subprocess.run([py, str(REPO / "bench" / "issue15.py"), "--child-dag", str(code), "--repeats", "1"],
                                 capture_output=True, text=True, check=True).stdout
            dags[label].append(json.loads(out))
    # The baseline is the same code whichever tree is measured: the best of all its runs.
    base = min(r["graphlib_s"] for runs in dags.values() for r in runs)
    for label in codes:
        runs = dags[label]
        best = {k: min(runs, key=lambda r: r[k]["wall_s"])[k] for k in ("one-step", "serial")}
        for k, v in best.items():
            v["ratio_to_graphlib"] = v["wall_s"] / base
            v["main_cpu_s"] = min(r[k]["main_cpu_s"] for r in runs)
        res[label]["dag5k"] = {"nodes": 5000, "graphlib_s": base, **best}
    checks = {"check_dag10k_s": tmp / "dag10k", "check_chain10k_s": tmp / "chain10k"}
    for key, d in checks.items():
        times: dict = {label: [] for label in codes}
        for _ in range(3):
            for label, code in codes.items():
                times[label].append(timed([py, "-m", "cidag", "check", "--sources", str(d / "sources.yaml"),
                                           "--modules", str(d / "modules.yaml")], child_env(code)))
        for label in codes:
            res[label][key] = min(times[label])
    csp, cmp_ = tmp / "chain10k" / "sources.yaml", tmp / "chain10k" / "modules.yaml"
    cold: dict = {label: [] for label in codes}
    warm: dict = {label: [] for label in codes}
    recs: dict = {}
    with tempfile.TemporaryDirectory(prefix="cidag-issue15-chain-") as roots:
        for r in range(max(2, repeats // 2)):
            for label, code in codes.items():
                root = Path(roots) / f"{label}{r}"
                argv = [py, "-m", "cidag", "run", "-q", "--sources", str(csp), "--modules", str(cmp_),
                        "--root", str(root), "-j", str(dag.JOBS)]
                cold[label].append(timed(argv, child_env(code)))
                warm[label].append(timed(argv, child_env(code)))
                recs[label] = json.loads((root / "var/lib/cidag/last-run.json").read_text())
    for label in codes:
        res[label]["chain10k_run"] = {"cold_s": min(cold[label]), "warm_s": min(warm[label]),
                                      "makespan_s": recs[label]["makespan_s"],
                                      "critical_path_s": recs[label]["critical_path_s"]}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--markdown", action="store_true", help="print the README table too")
    ap.add_argument("--before", type=Path, help="another checkout whose cidag is measured too")
    ap.add_argument("--child-dag", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_dag is not None:
        # bench.dag is this checkout's (imported above); cidag is the measured tree's.
        sys.path.insert(0, str(args.child_dag))
        import cidag
        assert Path(cidag.__file__).resolve().is_relative_to(args.child_dag.resolve()), cidag.__file__
        with tempfile.TemporaryDirectory(prefix="cidag-issue15-dag-") as tmp:
            print(json.dumps(noop_dag(5000, args.repeats, Path(tmp))))
        return 0
    res: dict = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="cidag-issue15-") as tmp:
        tmp = Path(tmp)
        (tmp / "dag10k").mkdir()
        (tmp / "chain10k").mkdir()
        dag.write_manifests(tmp / "dag10k", 10000)
        write_chain(tmp / "chain10k", 10000)
        codes = {"before": args.before} if args.before is not None else {}
        codes["after"] = REPO
        res.update(measure(codes, args.repeats, tmp))
    res["load_average_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if args.markdown:
        print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    """The README table: one column per tree measured."""
    cols = [k for k in ("before", "after") if k in res]

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(res[k]) for k in cols) + " |"

    lines = ["| figure | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [
        row("5,000 no-op modules: graphlib + ThreadPoolExecutor(4), s (best of all)", lambda r: f"{r['dag5k']['graphlib_s']:.3f}"),
        row("cidag run one-step -j 4, s (÷ graphlib)",
            lambda r: f"{r['dag5k']['one-step']['wall_s']:.3f} (**{r['dag5k']['one-step']['ratio_to_graphlib']:.2f}×**)"),
        row("cidag run one-step: CPU time of the loop's thread, s",
            lambda r: f"{r['dag5k']['one-step']['main_cpu_s']:.3f}"),
        row("cidag run serial, s (÷ graphlib; ÷ one-step)",
            lambda r: f"{r['dag5k']['serial']['wall_s']:.3f} ({r['dag5k']['serial']['ratio_to_graphlib']:.2f}×; "
                      f"{r['dag5k']['serial']['wall_s'] / r['dag5k']['one-step']['wall_s']:.2f}×)"),
        row("one-step makespan ÷ critical path",
            lambda r: f"{r['dag5k']['one-step']['makespan_s']:.3f} ÷ {r['dag5k']['one-step']['critical_path_s']:.3f} s"
                      f" = {r['dag5k']['one-step']['makespan_to_cp']:.2f}"),
        row("serial makespan ÷ critical path",
            lambda r: f"{r['dag5k']['serial']['makespan_s']:.3f} ÷ {r['dag5k']['serial']['critical_path_s']:.3f} s"
                      f" = {r['dag5k']['serial']['makespan_to_cp']:.2f}"),
        row("`cidag check`, 10,000 modules (dag.py graph), process, s", lambda r: f"{r['check_dag10k_s']:.2f}"),
        row("`cidag check`, 10,000-module chain, process, s", lambda r: f"{r['check_chain10k_s']:.2f}"),
        row("`cidag run`, 10,000-module chain, cold (compile, write cache, run), s",
            lambda r: f"**{r['chain10k_run']['cold_s']:.2f}**"),
        row("`cidag run`, 10,000-module chain, warm (compiled-plan cache), s",
            lambda r: f"{r['chain10k_run']['warm_s']:.2f}"),
        row("chain makespan ÷ critical path",
            lambda r: f"{r['chain10k_run']['makespan_s']:.2f} ÷ {r['chain10k_run']['critical_path_s']:.2f} s"),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
