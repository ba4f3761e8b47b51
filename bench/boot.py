"""`make bench-boot`: cidag against cloud-init and the bare guest on real boots of one guest image.

    python bench/boot.py                                # every scenario, every tool (~40 min on 2 cores)
    python bench/boot.py --scenarios configdrive,reboot --tools cidag,bare
    python bench/boot.py --update-readme                # also write the table into bench/README.md and README.md

The same QEMU machine (TCG, 2 vCPUs, 1 GiB), the same seed disk or metadata
service and the same cloud-config (a user `alice` with a key, a file, a command)
for each tool; only the image differs (`tests/vm/guest_image.py` builds the
variants): cidag from this checkout and Debian 12's cloud-init 22.4.2 on
bookworm, cloud-init 25.x on Debian 13 (trixie), cidag on trixie, and the bare
guests (no tool; host keys, a DHCP .network file and the user baked in) as the
floor. Per boot, on the host's monotonic clock, in seconds from QEMU's start:

- sshd answers: the first SSH banner on the forwarded port (probed every 0.25 s);
- login works: the first `ssh -o BatchMode=yes alice@guest true` with the
  cloud-config's key that exits 0 (tried every 0.25 s from QEMU's start, in its
  own thread, independently of the report);
- provisioning done: the report unit (after cidag.target / cloud-final.service)
  wrote `cidag status --wait` / `cloud-init status --wait` on ttyS1;
- ok: the tool's own verdict (cidag: result ok; cloud-init: status exit 0);
- tool's run / CPU: its systemd units from first start to last exit, and their
  CPUUsageNSec, read in the guest by the report unit.

Nothing is asserted: a scenario a tool cannot do shows as `never` / `no`.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "vm"))

import guest_image  # noqa: E402
import machine  # noqa: E402
from conftest import _simulator, seed_iso, write_fixture  # noqa: E402

MAC = "52:54:00:12:34:56"
# The address slirp's DHCP gives the first guest (its ssh forward points there), set statically.
STATIC_NETWORK_DATA = {
    "links": [{"id": "nic0", "type": "phy", "ethernet_mac_address": MAC, "mtu": 1500}],
    "networks": [{"id": "net0", "type": "ipv4", "link": "nic0", "ip_address": "169.254.2.15",
                  "netmask": "255.255.0.0", "routes": [], "network_id": "bench-net"}],
    "services": [],
}
RUNCMD_SLEEP = 40
REPORT_TIMEOUT = 600.0  # per boot; a tool that never reports shows as `never`
LOGIN_GRACE = 120.0  # after the report, how long a login may still take to work


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    seed: str | None = None  # "configdrive": a config drive with the instance
    http: bool = False  # the OpenStack metadata service at 169.254.169.254
    net: str = "dhcp"  # machine.Guest.net: dhcp, onlink, hostroute
    static_net: bool = False  # the config drive's network_data: static address, no gateway
    runcmd_sleep: int = 0
    reboot: bool = False  # the second boot of the configdrive instance
    bare: bool = False  # also boot the bare guests (no tool) here


# In the order a run does them, the comparisons that matter most first (rows are saved after each boot).
SCENARIOS = {s.name: s for s in (
    Scenario("configdrive", "config drive (metadata service unreachable)", seed="configdrive", bare=True),
    Scenario("openstack", "OpenStack HTTP at 169.254.169.254, no config drive", http=True),
    Scenario("runcmd-40s", f"config drive, `runcmd: [sleep {RUNCMD_SLEEP}]`", seed="configdrive",
             runcmd_sleep=RUNCMD_SLEEP),
    Scenario("reboot", "reboot of the config drive instance (poweroff, boot again)", seed="configdrive",
             reboot=True, bare=True),
    Scenario("configdrive-nogw", "no default route, config drive (static address, no gateway)",
             seed="configdrive", static_net=True),
    Scenario("onlink-nogw", "no default route, metadata on-link (OpenStack HTTP)", http=True, net="onlink"),
    Scenario("hostroute-nogw", "no default route, host route to 169.254.169.254 (OpenStack HTTP)", http=True,
             net="hostroute"),
)}
TOOLS = ("cidag", "cloud-init", "cloud-init-trixie", "cidag-trixie", "bare", "bare-trixie")


def user_data(key: str, sleep: int) -> str:
    runcmd: list = [["touch", "/var/tmp/bench-runcmd"]]
    if sleep:
        runcmd.append(["sleep", str(sleep)])
    doc = {"users": ["default", {"name": "alice", "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                                 "ssh_authorized_keys": [key]}],
           "write_files": [{"path": "/etc/bench-hello", "content": "hi\n"}],
           "runcmd": runcmd}
    return "#cloud-config\n" + json.dumps(doc)


@dataclass
class Boot:
    """One QEMU process from start to report (or to giving up)."""

    sshd_s: float | None = None
    login_s: float | None = None
    provisioned_s: float | None = None
    uptime_s: float | None = None
    ok: bool | None = None
    tool_run_s: float | None = None
    tool_cpu_s: float | None = None
    default_route: bool | None = None
    status_at_login: str | None = None
    recoverable: bool = False  # cloud-init status exit 2: done, with recoverable errors
    timeline: dict = field(default_factory=dict)  # guest monotonic seconds: see _timeline
    notes: list[str] = field(default_factory=list)


def _unit_seconds(report: machine.Report) -> tuple[float | None, float | None]:
    """(the tool's units from first start to last exit, their CPU seconds)."""
    starts = [u["start_us"] for u in report.units.values() if u["start_us"]]
    exits = [u["exit_us"] for u in report.units.values() if u["exit_us"]]
    cpu = sum(u["cpu_ns"] for u in report.units.values()) / 1e9
    span = (max(exits) - min(starts)) / 1e6 if starts and exits else None
    return span, (cpu if report.units else None)


def _timeline(tool: str, report: machine.Report) -> dict:
    """Where the boot's time went, on the guest's monotonic clock (seconds since the kernel
    started): basic.target and network.target reached, the tool's first unit started, for cidag
    its run's start and `login` milestone, sshd up."""
    marks = report.marks
    out = {k: marks.get(k) for k in ("basic", "network", "ssh")}
    starts = [u["start_us"] for u in report.units.values() if u["start_us"]]
    out["unit"] = min(starts) / 1e6 if starts else None
    if tool == "cidag" and "clock" in marks:
        try:
            st = json.loads(report.status)
            began = datetime.fromisoformat(st["started_at"].replace("Z", "+00:00")).timestamp()
            wall, mono = marks["clock"]
            out["run"] = began - wall + mono
            login = (st.get("milestones") or {}).get("login")
            out["login"] = out["run"] + login if isinstance(login, (int, float)) else None
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    return {k: (round(v, 1) if isinstance(v, (int, float)) else None) for k, v in out.items()}


def _verdict(tool: str, report: machine.Report) -> bool:
    if tool == "bare":
        return True
    if tool == "cloud-init":
        # 2: done with "recoverable errors" (warnings such as a datasource that did not answer):
        # provisioned, as cidag's `degraded` is; the table says so.
        return report.rc in (0, 2)
    try:
        st = json.loads(report.status)
    except ValueError:
        return False
    return st.get("status") == "done" and st.get("result") == "ok"


def _status_now(g: machine.Guest, key: Path, tool: str) -> str | None:
    """The tool's status right after the first login (is provisioning still running?)."""
    if tool == "cidag":
        res = g.ssh(key, "alice", "sudo -n cidag status --format json", timeout=30)
        try:
            return json.loads(res.stdout).get("status")
        except ValueError:
            return None
    if tool == "cloud-init":
        res = g.ssh(key, "alice", "cloud-init status", timeout=30)
        m = re.search(r"status: (\S+)", res.stdout)
        return m.group(1) if m else None
    return None


def _login_watch(g: machine.Guest, key: Path, tool: str, probe: machine.LoginProbe, out: Boot) -> None:
    """Ask the tool's status the moment the first login works (is provisioning still running?)."""
    if probe.wait_login(REPORT_TIMEOUT) is not None:
        out.status_at_login = _status_now(g, key, tool)


def run_boot(g: machine.Guest, tool: str, key: Path, check_route: bool, watch: bool = False) -> Boot:
    """Start `g` and measure it until its report and first login (or until giving up); leave it running.

    `watch`: ask the tool's status as soon as the first login works."""
    out = Boot()
    g.start()
    probe = machine.LoginProbe(g, key, "alice").start()
    watcher = threading.Thread(target=_login_watch, args=(g, key, tool, probe, out), daemon=True)
    if watch:
        watcher.start()
    try:
        try:
            rep = g.wait_report(1, REPORT_TIMEOUT)
            out.provisioned_s, out.uptime_s, out.ok = rep.host_seconds, rep.uptime, _verdict(tool, rep)
            out.tool_run_s, out.tool_cpu_s = _unit_seconds(rep)
            out.timeline = _timeline(tool, rep)
            if not out.ok or (tool == "cloud-init" and rep.rc == 2):
                out.recoverable = bool(out.ok)
                out.notes.append("status: " + " ".join(rep.status.split())[:300])
        except (TimeoutError, RuntimeError) as exc:
            out.notes.append(f"no report: {str(exc).splitlines()[0]}")
        probe.wait_login(LOGIN_GRACE)
    finally:
        probe.stop()
        if watch:
            watcher.join(35)
    out.sshd_s, out.login_s = probe.sshd_s, probe.login_s
    if out.login_s is None:
        out.notes.append(f"no login after {probe.attempts} tries; last: {probe.last_error}")
    if out.login_s is not None and check_route:
        res = g.ssh(key, "alice", "ip -4 route; ip -4 route get 169.254.169.254", timeout=30)
        out.default_route = any(line.startswith("default") for line in res.stdout.splitlines())
        out.notes.append("routes: " + "; ".join(line.strip() for line in res.stdout.strip().splitlines()))
    return out


def boot(variant: str, scenario: Scenario, work: Path, key: tuple[Path, str], then_reboot: bool = False) -> list[dict]:
    """The figures of `variant` (a guest_image variant) in `scenario`: one row, or with
    `then_reboot` two (the scenario, then its instance's second boot as the `reboot` row)."""
    tool = guest_image.tool_of(variant)
    img = guest_image.image(variant)
    work.mkdir(parents=True)
    inst = {"instance-id": f"iid-bench-{scenario.name}", "hostname": "bench", "public-keys": [key[1]],
            "user-data": user_data(key[1], scenario.runcmd_sleep), "vendor-data": ""}
    openstack: dict = {"enabled": True}
    if scenario.static_net:
        openstack["network_data"] = STATIC_NETWORK_DATA
    fixture = write_fixture(work / "fixture.yaml", inst, openstack=openstack, ec2={"enabled": False})
    # The config drive on virtio, which the harness's initrd drives: every tool sees it from the
    # start. On a SATA CD-ROM (the VM tests' case) only udev's coldplug in the real root loads its
    # driver; cloud-init 25.x's ds-identify then misses it and the guest boots on DataSourceNone
    # (bench/README.md), which measures no login to compare.
    disks = [seed_iso(work, fixture, "configdrive")] if scenario.seed == "configdrive" else []
    sim, port = None, None
    if scenario.http:
        sim = _simulator(str(fixture), "--port", "0", "-q")
        port = int(sim.stdout.readline().strip().rsplit(":", 1)[1])
    rows = []
    # An OpenStack guest throughout; with a config drive, its metadata service does not answer.
    try:
        g = machine.Guest(img, work / "g", disks=disks, metadata_port=port, dmi="openstack", mac=MAC,
                          net="static" if scenario.static_net else scenario.net)
        try:
            check_route = scenario.net != "dhcp" or scenario.static_net
            first = run_boot(g, tool, key[0], check_route, watch=scenario.runcmd_sleep > 0)
            if not scenario.reboot:
                rows.append({"variant": variant, "tool": tool, "scenario": scenario.name, **vars(first)})
            if scenario.reboot or then_reboot:
                row = {"variant": variant, "tool": tool, "scenario": "reboot"}
                if first.login_s is None:
                    rows.append({**row, "notes": ["first boot: no login, no reboot"] + first.notes})
                    return rows
                # Same instance, second boot: a clean poweroff, then QEMU again on the same disk.
                res = g.ssh(key[0], "alice", "sudo -n systemctl poweroff", timeout=30)
                if res.returncode not in (0, 255):  # 255: the connection went down with the guest
                    raise RuntimeError(f"poweroff refused: {res.stderr.strip()[:200]}")
                g.wait_exit(300)
                rows.append({**row, **vars(run_boot(g, tool, key[0], False))})
            return rows
        finally:
            g.kill()
    finally:
        if sim is not None:
            sim.terminate()
            sim.wait(10)


def _fmt(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f}"


def _cell(row: dict | None) -> str:
    """sshd / login / done (ok) for one tool in one scenario."""
    if row is None:
        return ""
    if row["tool"] == "bare":
        return (f"{_fmt(row.get('sshd_s'))} / {_fmt(row.get('login_s'))} / ({_fmt(row.get('provisioned_s'))})"
                + _range(row))
    ok = {True: "ok", False: "NOT ok", None: "?"}[row.get("ok")]
    if row.get("recoverable"):
        ok = "ok (exit 2: recoverable errors)"
    cell = f"{_fmt(row.get('sshd_s'))} / {_fmt(row.get('login_s'))} / {_fmt(row.get('provisioned_s'))} {ok}"
    if row.get("default_route"):
        cell += ", HAD a default route"
    return cell + _range(row)


def _range(row: dict) -> str:
    got = row.get("login_range")
    return f" (login {got[0]:.1f}-{got[1]:.1f}, {got[2]} boots)" if got else ""


def _median_row(group: list[dict]) -> dict | None:
    """One row standing for a cell's boots: the median of each figure; ok only if every boot was;
    with several boots, `login_range` (fastest, slowest login)."""
    if not group:
        return None
    if len(group) == 1:
        return group[0]
    out = dict(group[0])
    for key in ("sshd_s", "login_s", "provisioned_s"):
        values = [r[key] for r in group if r.get(key) is not None]
        out[key] = statistics.median(values) if len(values) == len(group) else None
    oks = [r.get("ok") for r in group]
    out["ok"] = None if None in oks else all(oks)
    out["recoverable"] = any(r.get("recoverable") for r in group)
    out["default_route"] = any(r.get("default_route") for r in group)
    logins = [r["login_s"] for r in group if r.get("login_s") is not None]
    out["login_range"] = (min(logins), max(logins), len(group)) if logins else None
    return out


def render(rows: list[dict], tools: list[str]) -> str:
    """One table: a line per scenario, a column per tool: sshd answers / login works / provisioning
    done (the median of the cell's boots, with the range of its logins when it had several)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["scenario"]), []).append(r)
    by = {k: _median_row(v) for k, v in groups.items()}
    head = "| scenario | " + " | ".join(tools) + " |"
    lines = [head, "|---" * (len(tools) + 1) + "|"]
    for name, sc in SCENARIOS.items():
        cells = [_cell(by.get((t, name))) for t in tools]
        if any(cells):
            lines.append(f"| {sc.title} | " + " | ".join(cells) + " |")
    extra = []
    for r in rows:
        if r["scenario"] == "runcmd-40s" and r["tool"] != "bare":
            if r.get("login_s") is not None and r.get("provisioned_s") is not None:
                extra.append(f"- runcmd-40s, {r['variant']}: login {r['provisioned_s'] - r['login_s']:.1f} s "
                             f"before provisioning ended (status at login: {r.get('status_at_login')})")
        t = r.get("timeline") or {}
        if any(t.values()):
            names = (("basic", "basic.target"), ("network", "network.target"), ("unit", "tool's unit started"),
                     ("run", "cidag's run began"), ("login", "login milestone"), ("ssh", "sshd up"))
            extra.append(f"- {r['scenario']}, {r['variant']}{_round(r)}, guest clock (s from kernel start): "
                         + ", ".join(f"{label} {t[k]:.1f}" for k, label in names if t.get(k) is not None))
        if r.get("tool_run_s") is not None:
            extra.append(f"- {r['scenario']}, {r['variant']}{_round(r)}: tool's units ran {r['tool_run_s']:.1f} s, "
                         f"CPU {r['tool_cpu_s']:.1f} s; uptime at report {_fmt(r.get('uptime_s'))} s")
    return "\n".join(lines) + ("\n\n" + "\n".join(extra) if extra else "")


def _round(row: dict) -> str:
    return f" #{row['round']}" if row.get("round") else ""


def update_readmes(table: str, stamp: str) -> None:
    """Replace the text between the boot-figures markers in bench/README.md and README.md."""
    block = f"<!-- boot-figures:begin -->\n{stamp}\n\n{table}\n<!-- boot-figures:end -->"
    for path in (REPO / "bench/README.md", REPO / "README.md"):
        text = path.read_text()
        new, n = re.subn(r"<!-- boot-figures:begin -->.*?<!-- boot-figures:end -->", lambda _: block, text,
                         flags=re.S)
        if n:
            path.write_text(new)
        else:
            print(f"{path}: no boot-figures markers, not updated", file=sys.stderr)


def _names(text: str, known, what: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"bench-boot: unknown {what}: {', '.join(bad)} (known: {', '.join(known)})")
    return names


def _terminated(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # so that every guest and service is stopped on the way out


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of: " + ", ".join(SCENARIOS))
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, of: " + ", ".join(TOOLS))
    ap.add_argument("--json", type=Path, default=REPO / "bench/out/boot.json")
    ap.add_argument("--keep", type=Path, help="keep each boot's files (console.log, ttyS1.log) under this directory")
    ap.add_argument("--update-readme", action="store_true", help="write the table into bench/README.md and README.md")
    ap.add_argument("--repeat", type=int, default=1,
                    help="boot each cell this many times, in rounds over the cells (early boot varies by "
                         "seconds between boots of one image); the table gives medians")
    args = ap.parse_args()
    try:
        scenarios = _names(args.scenarios, SCENARIOS, "scenario")
        tools = _names(args.tools, TOOLS, "tool")
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    missing = guest_image.missing_tools()
    if missing:
        print("bench-boot needs: " + ", ".join(missing), file=sys.stderr)
        return 2
    started, t0 = time.strftime("%Y-%m-%d %H:%M", time.gmtime()), time.monotonic()
    for variant in tools:  # build every image first: no build inside the measured part
        guest_image.image(variant)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cidag-bench-boot-", dir=args.keep))
    rows: list[dict] = []
    args.json.parent.mkdir(parents=True, exist_ok=True)
    try:
        key = guest_image.login_key()
        cells = [(r, name, variant) for r in range(1, max(1, args.repeat) + 1) for name in scenarios
                 for variant in tools]
        for rnd, name, variant in cells:
            if name == "reboot" and "configdrive" in scenarios:
                continue  # done with configdrive: the same instance booted again
            sc = SCENARIOS[name]
            if guest_image.tool_of(variant) == "bare" and not sc.bare:
                continue  # the bare guest ignores seeds and metadata: one boot is its floor
            b = time.monotonic()
            try:
                got = boot(variant, sc, tmp / f"{variant}-{name}-{rnd}", key,
                           then_reboot=name == "configdrive" and "reboot" in scenarios)
            except Exception as exc:  # one broken boot does not lose the rest of the run
                got = [{"variant": variant, "tool": guest_image.tool_of(variant), "scenario": name,
                        "sshd_s": None, "login_s": None, "provisioned_s": None, "ok": None,
                        "notes": [f"harness error: {type(exc).__name__}: {exc}"[:400]]}]
            for row in got:
                row["wall_s"] = round(time.monotonic() - b, 1)
                if args.repeat > 1:
                    row["round"] = rnd
                rows.append(row)
                print(json.dumps(row), flush=True)
            args.json.write_text(json.dumps(rows, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    minutes = (time.monotonic() - t0) / 60
    table = render(rows, tools)
    stamp = (f"Measured {started} UTC, one run of `python bench/boot.py"
             f"{'' if args.scenarios == ','.join(SCENARIOS) else ' --scenarios ' + args.scenarios}"
             f"{'' if args.tools == ','.join(TOOLS) else ' --tools ' + args.tools}"
             f"{'' if args.repeat <= 1 else f' --repeat {args.repeat}'}` ({minutes:.0f} min). "
             "Cells: sshd answers / login works / provisioning done, seconds from QEMU's start "
             "(bare guest: its report, in brackets)"
             + (f"; the median of {args.repeat} boots, in rounds over the cells." if args.repeat > 1 else "."))
    print(stamp + "\n\n" + table)
    if args.update_readme:
        update_readmes(table, stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
