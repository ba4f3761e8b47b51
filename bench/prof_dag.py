"""Where a generated DAG's run spends its time: cProfile of the main thread.

    python3 bench/prof_dag.py [N] [--sort tottime|cumulative] [--top 30]

Generates the same N-module DAG as `run.py` (default 5,000), compiles it, then
profiles one `run()` (the loop runs on the main thread; worker threads only call
the no-op). Also prints wall time, the main thread's CPU time and the graphlib
baseline, so a change to the engine can be checked in one command.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import dag  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, default=5000)
    ap.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    from cidag.engine import RunOptions, run

    with tempfile.TemporaryDirectory(prefix="cidag-prof-") as tmp:
        tmp = Path(tmp)
        sp, mp = dag.write_manifests(tmp, args.n)
        compile_s, cg = dag.compile_time(sp, mp)
        cg = dag.frozen(cg)
        base = min(dag.baseline_time(cg) for _ in range(3))
        # One unprofiled run for the wall time, then a profiled one.
        cpu0, t0 = time.thread_time(), time.perf_counter()
        run(cg, RunOptions(root=tmp / "plain", jobs=dag.JOBS, handle_signals=False))
        wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        prof = cProfile.Profile()
        prof.enable()
        run(cg, RunOptions(root=tmp / "profiled", jobs=dag.JOBS, handle_signals=False))
        prof.disable()
        print(f"{args.n} modules: load+compile {compile_s:.3f} s; run {wall:.3f} s wall, "
              f"{cpu:.3f} s main-thread CPU; graphlib baseline {base:.3f} s; ratio {wall / base:.1f}x\n")
        pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
