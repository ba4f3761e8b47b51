"""`make bench`: every cidag benchmark, printed as tables with ratios and targets.

    python bench/run.py                 # everything (about 2 minutes on 2 cores)
    python bench/run.py --quick         # small sizes, 3 s deadline: a smoke test
    python bench/run.py --only dag      # one section: proposal, deadline, real, dag, startup, fleet
    python bench/run.py --update-readme # also rewrite the figures block of bench/README.md
    CIDAG_BENCH_UPDATE_README=1 make bench   # the same through make

Figures are measured in this one run and compared with each other; nothing here
asserts a timing. The raw numbers go to bench/out/latest.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `bench.noop:run` must import, in this process and in children
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

from bench import dag, scenarios, startup  # noqa: E402

OUT = REPO / "bench" / "out"
README = REPO / "bench" / "README.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
SECTIONS = ("proposal", "deadline", "real", "dag", "startup", "fleet")


def yes(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def s(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def report_proposal(res: dict, label: str = "proposal") -> tuple[str, list[tuple[str, bool, str]]]:
    one = res["one-step"]
    rows = []
    for name, r in res.items():
        rows.append([name, s(r["makespan_s"]), s(r["critical_path_s"]),
                     s(r["makespan_s"] / r["critical_path_s"], 2),
                     s(r["makespan_s"] / one["makespan_s"], 2),
                     f"{r['modules_ok']}/{r['modules']}", r["result"]])
    out = [table(["strategy", "makespan s", "critical path s", "makespan ÷ CP", "÷ one-step makespan",
                  "modules ok", "result"], rows)]
    cp = one["critical_path_s"]
    bound = 1.05 * cp + 0.05
    serial = res["serial"]["makespan_s"]
    out.append(f"\n- one-step makespan {s(one['makespan_s'])} s vs target 1.05 × {s(cp)} + 0.050 = {s(bound)} s: "
               f"{yes(one['makespan_s'] <= bound)}")
    out.append(f"- speed-up over serial: {s(serial / one['makespan_s'], 2)}× "
               f"(bound: serial ÷ one-step critical path = {s(serial / cp, 2)}×); "
               f"two-step ÷ one-step = {s(res['two-step']['makespan_s'] / one['makespan_s'], 2)}")
    for name, r in res.items():
        out.append(f"- {name} critical path: {' -> '.join(r['critical_path'])}")
        for mod, why in r["skipped"].items():
            out.append(f"- {name}: {mod} not ok: {why}")
    return "\n".join(out), [(f"{label}: one-step makespan ≤ 1.05 × CP + 50 ms", one["makespan_s"] <= bound,
                             f"{s(one['makespan_s'])} s ≤ {s(bound)} s")]


def report_deadline(res: dict, deadline_s: float) -> str:
    modes = list(res)
    mods = [m[0] for m in scenarios.MODULES]
    rows = [[m] + [s(res[k]["starts"].get(m) or 0.0, 2) for k in modes] for m in mods]
    out = [f"the most preferred source (openstack) fails at its {deadline_s:g} s deadline; "
           "configdrive answers in 0.3 s. Module start times (s):", "", table(["module", *modes], rows), ""]
    rows = [[k, s(r["modules_done_s"], 2), s(r["makespan_s"], 2), f"{r['modules_ok']}/{r['modules']}",
             (r["providers"].get("instance-id") or "-").split(":")[-1],
             (r["providers"].get("hostname") or "-").split(":")[-1]] for k, r in res.items()]
    out.append(table(["mode", "last module ended s", "makespan s", "modules ok", "instance-id from",
                      "hostname from"], rows))
    p, f = res["preferred"], res["first"]
    out.append(f"\n- select: first starts set-hostname at {s(f['starts']['set-hostname'], 2)} s instead of "
               f"{s(p['starts']['set-hostname'], 2)} s; network (network-config only from configdrive, per-boot) "
               f"starts at {s(p['starts']['network'], 2)} s even under preferred.")
    n = res.get("first, no post-password")
    if n:
        src = n["nodes"].get("source:openstack", {})
        how = f"the absent source ended {src.get('status')} at {s(src.get('end_s') or 0.0, 2)} s" + (
            f" ({src['reason']})" if src.get("reason") else "")
        if n["makespan_s"] - n["modules_done_s"] > 1.0:
            out.append(f"- with no module wanting post-password, every module has ended at {s(n['modules_done_s'], 2)} s "
                       f"but the run lasts {s(n['makespan_s'], 2)} s (result {n['result']}): it waits for the probe "
                       f"of a source whose capabilities are all settled already; {how}.")
        else:
            out.append(f"- with no module wanting post-password, the run ends with its last module at "
                       f"{s(n['makespan_s'], 2)} s (result {n['result']}): {how}.")
    return "\n".join(out)


def report_dag(res: list[dict]) -> tuple[str, list[tuple[str, bool, str]]]:
    rows = []
    for r in res:
        rows.append([r["nodes"], r["edges"], s(r["run_s"]), s(r["baseline_s"]), s(r["ratio"], 1),
                     s(r.get("plan_skips_s", float("nan"))), s(r.get("plan_loop_s", float("nan"))),
                     s(r["compile_s"]), s(r["check_subprocess_s"]), s(r.get("peak_mb", float("nan")), 0)])
    out = table(["modules", "edges", "cidag run s", "graphlib s", "run ÷ graphlib", "plan_skips s",
                 "plan loop s", "load+compile s", "cidag check s", "peak MiB (run process)"], rows)
    if all("yaml_s" in r for r in res):
        rows = [[r["nodes"], r["manifest_bytes"], s(r["yaml_s"]), s(r["env_s"]), s(r["validate_s"]),
                 s(r["graph_lint_s"])] for r in res]
        out += "\n\nload + compile by phase (one run each):\n\n" + table(
            ["modules", "modules.yaml bytes", "YAML + positions s", "${VAR} s", "validate + types s",
             "graph + lint s"], rows)
    big = next((r for r in res if r["nodes"] == 5000), max(res, key=lambda r: r["nodes"]))
    targets = [(f"dag: {big['nodes']}-node run ≤ 2 × graphlib", big["ratio"] <= 2, f"{s(big['ratio'], 1)}×"),
               (f"dag: {big['nodes']}-node load + compile + check < 1 s", big["compile_s"] < 1,
                f"{s(big['compile_s'])} s in-process, {s(big['check_subprocess_s'])} s as `cidag check`")]
    return out, targets


def report_startup(r: dict) -> tuple[str, list[tuple[str, bool, str]]]:
    rows = [["python -c pass", s(r["python_s"]), "1.00", "0"],
            [f"{r['command']} --help", s(r["help_s"]), s(r["help_ratio"], 2), r["help_exit"]],
            [f"{r['command']} check (shipped)", s(r["check_s"]), s(r["check_ratio"], 2), r["check_exit"]]]
    out = table([f"command (median of {r['runs']})", "seconds", "÷ python", "exit"], rows)
    for what in ("help", "check"):
        if r[f"{what}_exit"]:
            out += f"\n{what} exited {r[f'{what}_exit']}: {r[f'{what}_error']}"
    ok = r["help_ratio"] <= 3 and not r["help_exit"]
    targets = [("startup: cidag --help ≤ 3 × python -c pass", ok, f"{s(r['help_ratio'], 2)}×")]
    run = r.get("run")
    if run:
        heavy = sorted(set(run["imports"]) & {"networkx", "click"})
        out += "\n\n" + table(
            [f"warm `cidag run`, demo set-up (median of {run['runs']})", "seconds"],
            [["spawn to first probe", s(run["first_probe_s"])], ["spawn to exit", s(run["wall_s"])],
             ["-X importtime, all imports (best of 3)", s(run["import_s"])],
             ["networkx, click imported", ", ".join(heavy) or "neither"]])
        targets.append(("startup: a warm `cidag run` imports neither networkx nor click", not heavy,
                        ", ".join(heavy) or "neither"))
    return out, targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes 100 and 1000, 3 s deadline, fewer repeats")
    ap.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    ap.add_argument("--sizes", default=None, help="comma-separated DAG sizes (default 100,1000,5000,20000)")
    ap.add_argument("--deadline", type=float, default=None, help="deadline of the absent source (default 30)")
    ap.add_argument("--fleet-sizes", default=None, help="comma-separated fleet sizes (default 100,1000; quick 100)")
    ap.add_argument("--update-readme", action="store_true", help="rewrite the figures block of bench/README.md")
    args = ap.parse_args(argv)
    args.update_readme = args.update_readme or os.environ.get("CIDAG_BENCH_UPDATE_README") == "1"
    sections = args.only or list(SECTIONS)
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else ([100, 1000] if args.quick else [100, 1000, 5000, 20000])
    deadline_s = args.deadline if args.deadline is not None else (3.0 if args.quick else 30.0)
    repeats = 1 if args.quick else 3
    dag_repeats = 1 if args.quick else 5  # a 5,000-node run takes under a second now

    t0 = time.perf_counter()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    raw: dict = {"date": when, "machine": machine}
    parts: list[str] = []
    targets: list[tuple[str, bool, str]] = []

    def section(title: str, text: str) -> None:
        block = f"### {title}\n\n{text}\n"
        print(block, flush=True)
        parts.append(block)

    def guarded(name: str, fn) -> None:
        try:
            fn()
        except Exception as exc:  # report and go on: the other sections still stand
            import traceback

            traceback.print_exc()
            raw.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            section(f"{name}: FAILED", f"{type(exc).__name__}: {exc}")
            targets.append((f"{name}: section ran", False, f"{type(exc).__name__}"))

    print(f"cidag benchmarks — {when} — {machine}\n", flush=True)
    def do_proposal() -> None:
        res = scenarios.proposal(repeats)
        raw["proposal"] = {k: {x: y for x, y in v.items() if x != "nodes"} for k, v in res.items()}
        text, t = report_proposal(res)
        targets.extend(t)
        section(f"(a) proposal scenario, three strategies (-j 4, median of {repeats})", text)
        res = scenarios.proposal(1, openstack_first=True)
        raw["proposal_openstack_first"] = {k: {x: y for x, y in v.items() if x != "nodes"} for k, v in res.items()}
        text, t = report_proposal(res, "proposal, OpenStack first")
        targets.extend(t)
        section("(a1) the same with OpenStack most preferred, so serial does the same work (one run each)", text)

    def do_deadline() -> None:
        res = scenarios.deadline(deadline_s)
        raw["deadline"] = {k: {x: y for x, y in v.items() if x != "nodes"} for k, v in res.items()}
        section(f"(a2) absent preferred source, {deadline_s:g} s deadline: select preferred vs first",
                report_deadline(res, deadline_s))

    def do_real() -> None:
        from bench import real_sources  # the shipped manifests against the loopback simulator

        reps = 1 if args.quick else 3
        fig = real_sources.measure(1.0, reps)
        raw["real_sources"] = fig
        one = fig["one_step"]
        bound = 1.05 * one["critical_path_s"] + 0.05
        targets.append(("real sources: one-step makespan ≤ 1.05 × CP + 50 ms", one["makespan_s"] <= bound,
                        f"{s(one['makespan_s'])} s ≤ {s(bound)} s"))
        section(f"(a3) real sources: shipped manifests vs the loopback simulator (median of {reps}; "
                "bench/real_sources.py)", "```\n" + real_sources.report(fig) + "\n```")

    def do_dag() -> None:
        res = []
        for n in sizes:
            res.append(dag.bench_size(n, repeats=dag_repeats))
            print(f"  ... {n} nodes: run {s(res[-1]['run_s'])} s, graphlib {s(res[-1]['baseline_s'])} s", flush=True)
        raw["dag"] = res
        text, t = report_dag(res)
        targets.extend(t)
        section(f"(b) generated DAGs of no-op plugin modules (-j 4; best of {dag_repeats}, a run over 5 s once)", text)

    def do_startup() -> None:
        res = startup.startup(5 if args.quick else 10)
        res["run"] = startup.run_startup(3 if args.quick else 7)
        raw["startup"] = res
        text, t = report_startup(res)
        targets.extend(t)
        section("(c) start-up", text)
        from bench import generator  # the systemd generator every boot runs (docs/systemd.md)

        gen = generator.measure(10 if args.quick else 50)
        raw["generator"] = gen
        section("(c1) the systemd generator (bench/generator.py)", generator.report(gen))

    def do_fleet() -> None:
        import threading

        from bench import fleet

        threading.stack_size(512 << 10)  # a thousand guest threads: small stacks
        fleet_sizes = ([int(x) for x in args.fleet_sizes.split(",")] if args.fleet_sizes
                       else [100] if args.quick else [100, 1000])
        check = fleet.service_check(300 if args.quick else 1000)
        res = fleet.run_fleets(fleet_sizes, 3 if args.quick else 10)
        threading.stack_size(0)
        raw["fleet"] = {"service_check": check, "fleets": res}
        text, t = fleet.report(res)
        targets.extend(t)
        section(f"(d) a fleet booting at once against one metadata service (bench/fleet.py; sizes "
                f"{', '.join(map(str, fleet_sizes))})", fleet.service_line(check) + "\n\n" + text)

    steps = {"proposal": do_proposal, "deadline": do_deadline, "real": do_real, "dag": do_dag,
             "startup": do_startup, "fleet": do_fleet}
    for name in SECTIONS:
        if name in sections:
            guarded(name, steps[name])

    summary = table(["target", "status", "measured"], [[n, yes(ok), m] for n, ok, m in targets])
    section("targets", summary)
    total = time.perf_counter() - t0
    print(f"total bench time {total:.0f} s")
    raw["targets"] = [{"target": n, "met": ok, "measured": m} for n, ok, m in targets]
    raw["total_s"] = total
    OUT.mkdir(exist_ok=True)
    (OUT / "latest.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    how = "`make bench`" if os.environ.get("MAKELEVEL") else f"`python bench/run.py {' '.join(sys.argv[1:])}`".replace(" `", "`")
    figures = f"Measured {when} on {machine} by {how} (total {total:.0f} s).\n\n" + "\n".join(parts)
    (OUT / "latest.md").write_text(figures)
    if args.update_readme:
        text = README.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            README.write_text(f"{head}{BEGIN}\n{figures}\n{END}{tail}")
            print(f"updated {README.relative_to(REPO)}")
        else:
            print(f"{README} has no {BEGIN} ... {END} block; figures are in {OUT / 'latest.md'}")
    return 1 if raw.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
