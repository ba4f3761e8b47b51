"""The generator's cost at boot (docs/systemd.md, *The generator*): `sh cidag-generator` on fake
roots, each path it can take, against `sh -c :` (the shell's own start-up).

Each case runs `runs` times; the median wall time is reported. The "nothing found" case runs
this machine's real `blkid` (it probes the host's disks, as at a boot).
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "cidag" / "data" / "cidag-generator"


def _root(base: Path, *, detect: bool, vendor: str) -> Path:
    root = base / f"{'detect' if detect else 'plain'}-{vendor.replace(' ', '-')}"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cmdline").write_text("root=LABEL=root ro quiet\n")
    dmi = root / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text(vendor + "\n")
    (dmi / "product_name").write_text("Standard PC (Q35 + ICH9, 2009)\n")
    (root / "etc/cidag").mkdir(parents=True)
    if detect:
        (root / "etc/cidag/cidag.detect").write_text("")
    (root / "var/lib/cidag").mkdir(parents=True)
    return root


def _median(argv: list[str], env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(runs: int = 50) -> dict:
    """Seconds per run (median) of each case, and the shell's own start-up."""
    out: dict = {"runs": runs, "blkid": shutil.which("blkid") is not None}
    with tempfile.TemporaryDirectory(prefix="cidag-bench-gen.") as tmp:
        base = Path(tmp)
        dirs = [str(base / "gen" / d) for d in ("normal", "early", "late")]
        cases = {
            "switch off (the default)": _root(base, detect=False, vendor="QEMU"),
            "switch on, a cloud in DMI (EC2)": _root(base, detect=True, vendor="Amazon EC2"),
            "switch on, nothing found: cidag left out": _root(base, detect=True, vendor="QEMU"),
        }
        out["sh_s"] = _median(["sh", "-c", ":"], dict(os.environ), runs)
        out["cases"] = {}
        for name, root in cases.items():
            env = {**os.environ, "CIDAG_GENERATOR_ROOT": str(root)}
            out["cases"][name] = _median(["sh", str(GENERATOR), *dirs], env, runs)
            shutil.rmtree(base / "gen", ignore_errors=True)
    return out


def report(res: dict) -> str:
    rows = [f"| `sh -c :` (the shell alone) | {res['sh_s'] * 1000:.2f} |"]
    for name, secs in res["cases"].items():
        rows.append(f"| {name} | {secs * 1000:.2f} |")
    head = f"| cidag-generator (median of {res['runs']}) | ms |\n|---|---|\n"
    note = "" if res["blkid"] else "\n(no blkid here: the last case stops at \"cannot tell\")"
    return head + "\n".join(rows) + note
