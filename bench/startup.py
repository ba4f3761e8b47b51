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


def _median(argv: list[str], runs: int) -> tuple[float, int, str]:
    """Median wall time of `runs` runs, the last exit code, and its first output line if not 0."""
    times = []
    env = dict(os.environ)
    code, first = 0, ""
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, env=env, cwd=REPO, check=False)
        times.append(time.perf_counter() - t)
        code = proc.returncode
        if code:
            lines = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()
            first = lines[0][:200] if lines else ""
    return statistics.median(times), code, first


def startup(runs: int = 10) -> dict:
    cidag = cidag_argv()
    check = cidag + ["check", "--sources", str(REPO / "sources.yaml"), "--modules", str(REPO / "modules.yaml")]
    # Warm the page cache and .pyc files once, then measure.
    for argv in ([sys.executable, "-c", "pass"], cidag + ["--help"], check):
        subprocess.run(argv, capture_output=True, cwd=REPO, check=False)
    base, _, _ = _median([sys.executable, "-c", "pass"], runs)
    help_s, help_code, help_msg = _median(cidag + ["--help"], runs)
    # `check` exits 2 if the shipped manifests have an error (they may be mid-edit): the time
    # is still start-up + load, and the exit code is reported beside it.
    check_s, check_code, check_msg = _median(check, runs)
    return {"runs": runs, "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(cidag)),
            "python_s": base, "help_s": help_s, "check_s": check_s,
            "help_ratio": help_s / base, "check_ratio": check_s / base,
            "help_exit": help_code, "help_error": help_msg, "check_exit": check_code, "check_error": check_msg}


def import_offenders(argv_tail: list[str], top: int = 8) -> list[tuple[float, str]]:
    """The slowest imports (cumulative, seconds) of `python -X importtime -m cidag ARGS`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cidag", *argv_tail],
                          capture_output=True, text=True, cwd=REPO, check=False)
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
