"""(c) Start-up: `cidag --help` and `cidag check` (shipped manifests) vs `python -c pass`.

Each command runs `runs` times; the median wall time is reported. The `cidag`
script beside the running interpreter is used (the venv's under `make bench`),
so a pyenv or other shim's own start-up is not counted.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cidag_argv() -> list[str]:
    script = Path(sys.executable).parent / "cidag"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cidag"]


def _median(argv: list[str], runs: int, ok=(0,)) -> tuple[float, list[float]]:
    times = []
    env = dict(os.environ)
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
        times.append(time.perf_counter() - t)
        if proc.returncode not in ok:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: "
                               f"{(proc.stdout + proc.stderr).decode(errors='replace').strip()[:300]}")
    return statistics.median(times), times


def startup(runs: int = 10) -> dict:
    cidag = cidag_argv()
    check = cidag + ["check", "--sources", str(REPO / "sources.yaml"), "--modules", str(REPO / "modules.yaml")]
    # Warm the page cache and .pyc files once, then measure.
    for argv in ([sys.executable, "-c", "pass"], cidag + ["--help"], check):
        subprocess.run(argv, capture_output=True, cwd=REPO)
    base, _ = _median([sys.executable, "-c", "pass"], runs)
    help_s, _ = _median(cidag + ["--help"], runs)
    # A warning (exit 0) or --strict-free finding never fails the bench; an error would.
    check_s, _ = _median(check, runs, ok=(0, 1))
    return {"runs": runs, "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(cidag)),
            "python_s": base, "help_s": help_s, "check_s": check_s,
            "help_ratio": help_s / base, "check_ratio": check_s / base}


def import_offenders(argv_tail: list[str], top: int = 8) -> list[tuple[float, str]]:
    """The slowest imports (cumulative, seconds) of `python -X importtime -m cidag ARGS`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cidag", *argv_tail],
                          capture_output=True, text=True, cwd=REPO)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = line.split(":", 1)[1].split("|")
        rows.append((int(cum_us) / 1e6, name.strip()))
    rows.sort(reverse=True)
    return rows[:top]


if __name__ == "__main__":
    print(startup())
    print(import_offenders(["--help"]))
