"""(c) Start-up: `cidag --help` and `cidag check` (shipped manifests) vs `python -c pass`.

Each command runs `runs` times; the median wall time is reported. The `cidag`
script beside the running interpreter is used (the venv's under `make bench`),
so a pyenv or other shim's own start-up is not counted.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timezone
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


# -- `cidag run` on the demo's set-up: start-up to the first probe, and what it imports ----------

def _demo_env(work: Path, url: str) -> dict:
    """The environment scripts/demo.sh gives `cidag run` (the shipped manifests' ${VAR}s)."""
    (work / "cmdline").write_text("")
    env = dict(os.environ)
    env.update(CIDAG_CONFIGDRIVE_PATH=str(work / "config-2"), CIDAG_NOCLOUD_PATH=str(work / "no-nocloud-seed"),
               CIDAG_OPENSTACK_URL=url, CIDAG_EC2_URL="http://127.0.0.1:1", CIDAG_SYSFS=str(work / "sys"),
               CIDAG_CMDLINE=str(work / "cmdline"), CIDAG_NETWORK_WAIT_ONLINE="false",
               CIDAG_ROOT=str(work / "root"))
    env.pop("CIDAG_CONFIG_DIR", None)
    return env


def _first_probe_s(record_path: Path, spawned: float) -> float | None:
    """Seconds from `spawned` (wall clock) to the first node's start, from the run record."""
    from datetime import datetime

    rec = json.loads(record_path.read_text())
    starts = [n["start_s"] for n in rec["nodes"] if n.get("start_s") is not None]
    if not starts:
        return None
    t0 = datetime.strptime(rec["started_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    return t0 + min(starts) - spawned


def _importtime(argv: list[str], env: dict, cwd: Path) -> tuple[float, dict[str, float], list[tuple[float, str]]]:
    """Total import time, the cumulative time of a few packages of interest, and the top imports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                          cwd=cwd, env=env, check=False)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = line.split(":", 1)[1].split("|")
        depth = len(name) - len(name.lstrip())
        rows.append((int(cum_us) / 1e6, name.strip(), depth))
    total = sum(cum for cum, _, depth in rows if depth == 1)
    watch = {name: cum for cum, name, _ in rows if name in ("networkx", "click", "yaml", "cidag.engine")}
    return total, watch, sorted(((c, n) for c, n, _ in rows), reverse=True)[:8]


def run_startup(runs: int = 5, pythonpath: str | None = None) -> dict:
    """`cidag run` (no options, as the systemd unit starts it) against the loopback simulator
    with the demo's environment, warm (second and later runs): the median (and best) wall
    time from spawning the process to the first node's start, and `-X importtime` of such a
    run (the best of three). `pythonpath`: run the cidag found there (`python -m cidag`,
    e.g. an older checkout) instead of the installed one. Commands run in a scratch
    directory: `python -m` puts the current one first on sys.path."""
    argv = [sys.executable, "-m", "cidag"] if pythonpath else cidag_argv()
    with tempfile.TemporaryDirectory(prefix="cidag-bench-startup-") as tmp:
        work = Path(tmp)
        sim = subprocess.Popen([*cidag_argv(), "serve-metadata", "-q", "--write-configdrive", str(work / "config-2"),
                                "--write-sysfs", str(work / "sys")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        try:
            url = sim.stdout.readline().strip()
            env = _demo_env(work, url)
            if pythonpath:
                env["PYTHONPATH"] = pythonpath
            record = work / "root/var/lib/cidag/last-run.json"
            subprocess.run([*argv, "run"], capture_output=True, env=env, cwd=work, check=False)  # warm
            firsts, walls = [], []
            for _ in range(runs):
                spawned = time.time()
                t = time.perf_counter()
                subprocess.run([*argv, "run"], capture_output=True, env=env, cwd=work, check=False)
                walls.append(time.perf_counter() - t)
                firsts.append(_first_probe_s(record, spawned))
            total, watch, top = min((_importtime(["-m", "cidag", "run"], env, work) for _ in range(3)),
                                    key=lambda r: r[0])
        finally:
            sim.terminate()
            sim.wait()
    got = [f for f in firsts if f is not None]
    return {"runs": runs, "first_probe_s": statistics.median(got) if got else None,
            "first_probe_best_s": min(got) if got else None,
            "wall_s": statistics.median(walls), "import_s": total, "imports": watch, "top_imports": top}


if __name__ == "__main__":
    print(startup())
    print(import_offenders(["--help"]))
    print(run_startup())
