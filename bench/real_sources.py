"""(c) The proposal scenario with real sources: the shipped manifests against the simulator.

A config drive written to a temporary directory (answers at once), the
OpenStack HTTP API on `cidag serve-metadata` answering each GET after DELAY
seconds, EC2 unreachable (connection refused on 127.0.0.1:1), and the shipped
modules acting on a temporary root. Reported, as medians over REPEAT runs:

- cidag one-step and two-step: makespan, critical path and their ratio; when the
  config-drive-only modules were done, and when the HTTP probe ended;
- `--strategy serial` (cidag's model of cloud-init: the first available source
  serves everything, so post-password is lost);
- a cloud-init-style serial discovery of the same sources with the same delays:
  each source probed after the previous one, its documents read one after
  another (max_parallel: 1), then the modules one at a time (their measured
  durations from the serial run). Ratio: that total over the one-step makespan.

Run: python3 bench/real_sources.py [--delay 1.0] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cidag.engine import RunOptions, load_and_compile, run  # noqa: E402
from cidag.simulator import Simulator, load_fixture  # noqa: E402
from cidag.testing import make_context  # noqa: E402

CONFIG_DRIVE_ONLY = ("module:set-hostname", "module:create-user", "module:write-files")


def _world(tmp: Path, delay: float) -> tuple[Simulator, dict]:
    sim = Simulator(load_fixture(None)).start()
    sim.add_fault("/openstack*", method="GET", delay=delay)
    sim.write_configdrive(tmp / "config-2")
    sim.write_sysfs(tmp / "sys")
    (tmp / "cmdline").write_text("")
    env = {"CIDAG_CONFIGDRIVE_PATH": str(tmp / "config-2"), "CIDAG_NOCLOUD_PATH": str(tmp / "no-seed"),
           "CIDAG_OPENSTACK_URL": sim.url, "CIDAG_EC2_URL": "http://127.0.0.1:1",
           "CIDAG_SYSFS": str(tmp / "sys"), "CIDAG_CMDLINE": str(tmp / "cmdline"),
           "CIDAG_NETWORK_WAIT_ONLINE": "false"}
    return sim, env


def engine_run(strategy: str, delay: float) -> dict:
    """One run of the shipped manifests with `strategy`; returns figures from its record."""
    with tempfile.TemporaryDirectory(prefix="cidag-bench-") as d:
        tmp = Path(d)
        sim, env = _world(tmp, delay)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            cg = load_and_compile(str(REPO / "sources.yaml"), str(REPO / "modules.yaml"))
            result = run(cg, RunOptions(root=tmp / "root", jobs=4, strategy=strategy, handle_signals=False))
        finally:
            sim.stop()
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        rec = result.record
        nodes = {n["id"]: n for n in rec["nodes"]}
        ends = [nodes[n]["end_s"] for n in CONFIG_DRIVE_ONLY if nodes.get(n, {}).get("end_s") is not None]
        modules = [n for n in rec["nodes"] if n["kind"] == "module" and n["start_s"] is not None]
        post = rec["capabilities"].get("post-password", {})
        return {
            "makespan_s": rec["makespan_s"],
            "critical_path_s": rec["critical_path_s"],
            "http_probe_end_s": nodes["source:openstack"]["end_s"],
            "config_drive_modules_done_s": max(ends) if ends else None,
            "module_work_s": sum(n["end_s"] - n["start_s"] for n in modules),
            "post_password_from": post.get("provider"),
            "passwords_posted": len(sim.passwords),
            "result": rec["result"],
        }


def serial_discovery(delay: float) -> dict:
    """Probe the shipped sources one after another, documents one at a time (cloud-init's way)."""
    import yaml

    sources = yaml.safe_load((REPO / "sources.yaml").read_text())["sources"]
    with tempfile.TemporaryDirectory(prefix="cidag-bench-") as d:
        tmp = Path(d)
        sim, env = _world(tmp, delay)
        per_source = {}
        try:
            t0 = time.monotonic()
            for entry in sources:
                settings = json.loads(os.path.expandvars(json.dumps(entry.get("settings") or {})))
                settings = _expand_defaults(settings, env)
                if entry["type"] in ("openstack-http", "ec2", "nocloud"):
                    settings["max_parallel"] = 1
                ctx, call = make_context("source", entry["type"], settings, timeout=60, name=entry["name"])
                s0 = time.monotonic()
                try:
                    call(ctx)
                    outcome = "available"
                except Exception as exc:  # unavailable or failed: cloud-init moves on to the next
                    outcome = type(exc).__name__
                per_source[entry["name"]] = (round(time.monotonic() - s0, 3), outcome)
            total = time.monotonic() - t0
        finally:
            sim.stop()
    return {"discovery_s": total, "per_source": per_source}


def _expand_defaults(value, env: dict):
    """Apply ${VAR:-default} the way the manifest loader does, with `env` first."""
    import re

    if isinstance(value, dict):
        return {k: _expand_defaults(v, env) for k, v in value.items()}
    if isinstance(value, str):
        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}",
                      lambda m: env.get(m.group(1)) or os.environ.get(m.group(1)) or (m.group(2) or ""), value)
    return value


def measure(delay: float, repeat: int) -> dict:
    """Median figures over `repeat` runs of each variant."""
    def median_of(runs: list[dict]) -> dict:
        out = {}
        for key, value in runs[0].items():
            if isinstance(value, (int, float)) and value is not None and not isinstance(value, bool):
                out[key] = round(statistics.median(r[key] for r in runs), 3)
            else:
                out[key] = value
        return out

    one = median_of([engine_run("one-step", delay) for _ in range(repeat)])
    two = median_of([engine_run("two-step", delay) for _ in range(repeat)])
    serial = median_of([engine_run("serial", delay) for _ in range(repeat)])
    disc = [serial_discovery(delay) for _ in range(repeat)]
    discovery_s = round(statistics.median(d["discovery_s"] for d in disc), 3)
    cloud_init_total = round(discovery_s + serial["module_work_s"], 3)
    return {
        "delay_per_request_s": delay,
        "repeat": repeat,
        "one_step": one,
        "two_step": two,
        "serial_strategy": serial,
        "cloud_init_style": {"discovery_s": discovery_s, "modules_s": serial["module_work_s"],
                             "total_s": cloud_init_total, "per_source": disc[-1]["per_source"]},
        "ratios": {
            "one_step_makespan_over_critical_path": round(one["makespan_s"] / one["critical_path_s"], 3),
            "cloud_init_style_over_one_step": round(cloud_init_total / one["makespan_s"], 3),
            "two_step_over_one_step": round(two["makespan_s"] / one["makespan_s"], 3),
        },
    }


def report(fig: dict) -> str:
    one, two, ser, ci = fig["one_step"], fig["two_step"], fig["serial_strategy"], fig["cloud_init_style"]
    r = fig["ratios"]
    lines = [
        f"real sources: config drive + OpenStack HTTP ({fig['delay_per_request_s']:g} s per GET) + EC2 refused; "
        f"shipped manifests; median of {fig['repeat']}",
        f"  one-step   makespan {one['makespan_s']:6.2f}s  critical path {one['critical_path_s']:6.2f}s  "
        f"ratio {r['one_step_makespan_over_critical_path']:.2f}",
        f"             config-drive modules done at {one['config_drive_modules_done_s']:.2f}s, "
        f"HTTP probe ended at {one['http_probe_end_s']:.2f}s, post-password from {one['post_password_from']}",
        f"  two-step   makespan {two['makespan_s']:6.2f}s  ({r['two_step_over_one_step']:.2f}x one-step)",
        f"  serial     makespan {ser['makespan_s']:6.2f}s  (first available source only: "
        f"post-password {'from ' + ser['post_password_from'] if ser['post_password_from'] else 'lost'})",
        f"  cloud-init-style serial discovery of the same sources {ci['discovery_s']:.2f}s "
        f"+ modules one at a time {ci['modules_s']:.2f}s = {ci['total_s']:.2f}s "
        f"({r['cloud_init_style_over_one_step']:.2f}x one-step)",
        "    per source: " + ", ".join(f"{k} {v[0]:.2f}s {v[1]}" for k, v in ci["per_source"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=1.0, help="seconds the OpenStack API takes per GET")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    fig = measure(args.delay, args.repeat)
    print(report(fig))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
