"""`make bench-boot`: cidag against Debian's cloud-init on real boots of one guest image.

    python bench/boot.py                  # every scenario, both tools, and the bare guest
    python bench/boot.py --only openstack # one scenario
    python bench/boot.py --json out.json

The same bookworm image, the same seed disk or metadata service and the same
QEMU machine (TCG, 2 vCPUs) for each tool; only the provisioning tool differs
(`tests/vm/guest_image.py` builds the variants). Per boot, from the host:

- provisioned: seconds from QEMU's start until the tool's report unit wrote
  `cidag status --wait` / `cloud-init status --wait` on ttyS1;
- first login: seconds from QEMU's start until ssh with the key the
  cloud-config gave succeeds (tried every 0.5 s);
- the tool's own run: its systemd units from start to exit, and their CPU time
  (CPUUsageNSec, children included), read in the guest by the report unit;
- uptime: the guest's uptime when the report was written.

The bare guest (no provisioning tool; host keys baked in) gives the boot's
floor. cidag's cost per boot is measured on a reboot of a provisioned instance
(its per-instance work done), against the bare guest. Nothing is asserted;
the figures go to bench/README.md by hand.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "vm"))

import guest_image  # noqa: E402
import machine  # noqa: E402
from conftest import _simulator, seed_iso, write_fixture  # noqa: E402

SCENARIOS = ("openstack", "configdrive-unreachable-http", "nocloud-none")


def _user_data(key: str) -> str:
    doc = {"users": ["default", {"name": "alice", "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                                 "ssh_authorized_keys": [key]}],
           "write_files": [{"path": "/etc/bench-hello", "content": "hi\n"}],
           "runcmd": [["touch", "/var/tmp/bench-runcmd"]]}
    return "#cloud-config\n" + json.dumps(doc)


def _first_login(g: machine.Guest, key: Path, timeout: float = 600) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        g._alive()
        if g.sshd_banner(1.0) and g.ssh(key, "alice", "true", timeout=30).returncode == 0:
            return time.monotonic() - g.started
        time.sleep(0.5)
    raise TimeoutError("no login")


def _unit_seconds(report: machine.Report) -> tuple[float, float]:
    """(the tool's units from first start to last exit, their CPU seconds)."""
    starts = [u["start_us"] for u in report.units.values() if u["start_us"]]
    exits = [u["exit_us"] for u in report.units.values() if u["exit_us"]]
    cpu = sum(u["cpu_ns"] for u in report.units.values()) / 1e9
    span = (max(exits) - min(starts)) / 1e6 if starts and exits else 0.0
    return span, cpu


def boot(variant: str, scenario: str, work: Path, key: tuple[Path, str], reboot: bool = False) -> dict:
    """One boot of `variant` in `scenario`; with `reboot`, also the second boot of the instance."""
    img = guest_image.image(variant)
    work.mkdir(parents=True)
    inst = {"instance-id": f"iid-bench-{scenario}", "hostname": "bench", "public-keys": [key[1]],
            "user-data": _user_data(key[1]), "vendor-data": ""}
    fixture = write_fixture(work / "fixture.yaml", inst, openstack={"enabled": True}, ec2={"enabled": False})
    disks, port, dmi, sim = [], None, "qemu", None
    if scenario == "openstack":
        sim = _simulator(str(fixture), "--port", "0", "-q")
        port = int(sim.stdout.readline().strip().rsplit(":", 1)[1])
        dmi = "openstack"
    elif scenario == "configdrive-unreachable-http":
        disks = [seed_iso(work, fixture, "configdrive")]
        dmi = "openstack"  # an OpenStack guest whose metadata service does not answer
    try:
        g = machine.Guest(img, work / "g", disks=disks, metadata_port=port, dmi=dmi).start()
        try:
            out: dict = {"variant": variant, "scenario": scenario}
            if variant == "bare":
                out["sshd_s"] = g.wait_sshd(600)
                rep = g.wait_report(1, 600)
            else:
                rep = g.wait_report(1, 900)
                if scenario != "nocloud-none":
                    out["first_login_s"] = _first_login(g, key[0])
                else:
                    try:  # with no cloud, cloud-init disables itself: no host keys, so no sshd
                        out["sshd_s"] = g.wait_sshd(180)
                    except TimeoutError:
                        out["sshd_s"] = None
            out["provisioned_s"] = rep.host_seconds
            out["uptime_s"] = rep.uptime
            out["tool_run_s"], out["tool_cpu_s"] = _unit_seconds(rep)
            if variant != "bare" and scenario != "nocloud-none":
                # Where the boot's time went, for bench/README.md.
                out["systemd_analyze"] = g.root(key[0], "alice", "systemd-analyze; systemd-analyze blame | head -12;"
                                                " systemd-analyze critical-chain vm-report.service")
            if reboot:
                g.root(key[0], "alice", "systemctl reboot")
                t0 = time.monotonic()
                rep2 = g.wait_report(2, 900)
                out["reboot_provisioned_s"] = time.monotonic() - t0
                out["reboot_uptime_s"] = rep2.uptime
                out["reboot_tool_run_s"], out["reboot_tool_cpu_s"] = _unit_seconds(rep2)
            return out
        finally:
            g.kill()
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=SCENARIOS, action="append")
    ap.add_argument("--variants", default="cidag,cloud-init", help="tools to boot (comma-separated)")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare guest")
    ap.add_argument("--json", type=Path, default=REPO / "bench/out/boot.json")
    args = ap.parse_args()
    missing = guest_image.missing_tools()
    if missing:
        print("bench-boot needs: " + ", ".join(missing), file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cidag-bench-boot-"))
    rows = []
    try:
        key = machine.keypair(tmp, "bench")
        if not args.no_bare:
            rows.append(boot("bare", "nocloud-none", tmp / "bare", key))
            print(json.dumps(rows[-1]), flush=True)
        for scenario in args.only or SCENARIOS:
            for variant in args.variants.split(","):
                row = boot(variant, scenario, tmp / f"{variant}-{scenario}", key,
                           reboot=scenario == "configdrive-unreachable-http")
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    print(render(rows))
    return 0


def render(rows: list[dict]) -> str:
    """The comparison table: one line per scenario, cidag beside cloud-init, with ratios."""
    by = {(r["variant"], r["scenario"]): r for r in rows}
    bare = by.get(("bare", "nocloud-none"), {})
    lines = ["| scenario | figure | cidag | cloud-init | cloud-init ÷ cidag |", "|---|---|---|---|---|"]
    for scenario in SCENARIOS:
        c, k = by.get(("cidag", scenario)), by.get(("cloud-init", scenario))
        if not c or not k:
            continue
        for label, field in (("provisioned (s from QEMU start)", "provisioned_s"),
                             ("first ssh login (s)", "first_login_s"), ("sshd answers (s)", "sshd_s"),
                             ("tool's own run (s)", "tool_run_s"), ("tool's CPU (s)", "tool_cpu_s"),
                             ("reboot: provisioned (s from reboot)", "reboot_provisioned_s"),
                             ("reboot: tool's own run (s)", "reboot_tool_run_s"),
                             ("reboot: tool's CPU (s)", "reboot_tool_cpu_s")):
            if field in c and field in k:
                if k[field] is None or c[field] is None:
                    cells = [f"{v:.1f}" if v is not None else "never" for v in (c[field], k[field])]
                    lines.append(f"| {scenario} | {label} | {cells[0]} | {cells[1]} | |")
                    continue
                ratio = k[field] / c[field] if c[field] else float("nan")
                lines.append(f"| {scenario} | {label} | {c[field]:.1f} | {k[field]:.1f} | {ratio:.2f}× |")
    if bare:
        lines.append(f"| bare guest (no tool) | sshd answers (s) / uptime at report | {bare['sshd_s']:.1f} | "
                     f"uptime {bare['uptime_s']:.1f} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
