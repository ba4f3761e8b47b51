"""(a) The proposal's scenario under the three strategies, and the 30 s deadline scenario.

Manifests are generated into a temporary directory: `static` sources with a
`delay` stand in for the data sources, and modules are the `bench.noop:work`
plugin, which sleeps for a fixed time (so the makespan can be compared with the
critical path without process start-up noise). Module durations are rough
figures for what cloud-init's modules take on a small VM.
"""
from __future__ import annotations

import concurrent.futures
import tempfile
import time
from pathlib import Path

import yaml

WORK = "bench.noop:work"

# name, seconds, and the keys of its manifest entry (proposal: create-user 0, set-hostname 1,
# set-password needs admin-password, wants post-password, depends_on create-user).
MODULES = [
    ("create-user", 0.20, {"priority": 0, "wants": ["public-keys"], "provides": ["default-user"]}),
    ("set-hostname", 0.05, {"priority": 1, "needs": ["hostname"]}),
    ("ssh-keys", 0.80, {"priority": 5, "wants": ["public-keys"], "depends_on": ["create-user"]}),
    ("set-password", 0.10, {"needs": ["admin-password"], "wants": ["post-password"],
                            "depends_on": ["create-user"]}),
    ("write-files", 0.05, {"needs": ["user-data"]}),
    ("network", 0.50, {"priority": 10, "wants": ["network-config"], "provides": ["network-online"],
                       "frequency": "per-boot"}),
    ("runcmd", 0.30, {"priority": 90, "after": ["write-files", "set-hostname", "set-password"]}),
    ("final-message", 0.01, {"priority": 100, "frequency": "per-boot", "wants": ["instance-id"],
                             "after": ["create-user", "set-hostname", "ssh-keys", "set-password",
                                       "write-files", "network", "runcmd"]}),
]

CONFIGDRIVE_DATA = {
    "instance-id": "i-0bench", "hostname": "bench-host",
    "public-keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchKey bench@cidag"],
    "user-data": "#cloud-config\n", "network-config": {"version": 2},
}
OPENSTACK_DATA = {
    "instance-id": "i-0bench", "hostname": "bench-host-os",
    "public-keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchKey bench@cidag"],
    "user-data": "#cloud-config\n", "admin-password": "bench-Secret-Pa55",
    "post-password": "http://169.254.169.254/openstack/2013-04-04/password",
}


def _modules(drop_wants: tuple[str, ...] = ()) -> dict:
    out = []
    for name, seconds, keys in MODULES:
        entry = {"name": name, "type": WORK, **keys, "settings": {"seconds": seconds}}
        if "wants" in entry:
            entry["wants"] = [c for c in entry["wants"] if c not in drop_wants]
        out.append(entry)
    return {"version": 1, "modules": out}


def proposal_sources(openstack_first: bool = False) -> dict:
    """Config drive in 0.3 s, OpenStack HTTP in 2 s, EC2 unavailable, static fallback.
    With `openstack_first`, OpenStack is the most preferred (cloudbase-init's usual order),
    so that serial, which uses the first available source, does the same work as the others."""
    doc = {"version": 1, "select": "preferred", "sources": [
        {"name": "configdrive", "type": "static", "timeout": "10s",
         "capabilities": list(CONFIGDRIVE_DATA),
         "settings": {"delay": 0.3, "data": CONFIGDRIVE_DATA}},
        {"name": "openstack", "type": "static", "timeout": "2m",
         "capabilities": list(OPENSTACK_DATA),
         "settings": {"delay": 2.0, "data": OPENSTACK_DATA}},
        {"name": "ec2", "type": "static", "timeout": "5s",
         "capabilities": ["instance-id", "hostname", "public-keys", "user-data",
                          "availability-zone", "local-ipv4"],
         "settings": {"delay": 0.05, "available": False}},
        {"name": "fallback", "type": "static", "capabilities": ["instance-id", "hostname"],
         "settings": {"data": {"instance-id": "iid-datasource-none", "hostname": "localhost"}}},
    ]}
    if openstack_first:
        doc["sources"][0], doc["sources"][1] = doc["sources"][1], doc["sources"][0]
    return doc


def deadline_sources(deadline: float, fallback: bool = False) -> dict:
    """The most preferred source never answers and fails at its deadline; a config drive
    (0.3 s) offers everything but post-password, and alone offers network-config.
    With `fallback`, a zero-delay static source comes last (as in the shipped sources.yaml)."""
    drive = dict(CONFIGDRIVE_DATA, **{"admin-password": "bench-Secret-Pa55"})
    sources = [
        {"name": "openstack", "type": "static", "timeout": deadline,
         "capabilities": list(OPENSTACK_DATA),
         "settings": {"delay": deadline * 2, "data": OPENSTACK_DATA}},
        {"name": "configdrive", "type": "static", "timeout": "10s",
         "capabilities": list(drive), "settings": {"delay": 0.3, "data": drive}},
    ]
    if fallback:
        sources.append({"name": "fallback", "type": "static", "capabilities": ["instance-id", "hostname"],
                        "settings": {"data": {"instance-id": "iid-datasource-none", "hostname": "localhost"}}})
    return {"version": 1, "select": "preferred", "sources": sources}


def _compile(directory: Path, sources: dict, drop_wants: tuple[str, ...] = ()):
    from cidag.engine import load_and_compile

    directory.mkdir(parents=True, exist_ok=True)
    sp, mp = directory / "sources.yaml", directory / "modules.yaml"
    sp.write_text(yaml.safe_dump(sources, sort_keys=False))
    mp.write_text(yaml.safe_dump(_modules(drop_wants), sort_keys=False))
    return load_and_compile(str(sp), str(mp))


def _run(cg, root: Path, **opts) -> tuple[float, dict]:
    from cidag.engine import RunOptions, run

    root.mkdir(parents=True)
    t = time.perf_counter()
    res = run(cg, RunOptions(root=root, jobs=4, handle_signals=False, **opts))
    return time.perf_counter() - t, res.record


def _summary(wall: float, rec: dict) -> dict:
    nodes = {n["id"]: n for n in rec["nodes"]}
    mods = [n for n in rec["nodes"] if n["kind"] == "module"]
    ends = [n["end_s"] for n in mods if n["status"] == "ok" and n["end_s"] is not None]
    return {
        "wall_s": wall,
        "makespan_s": rec["makespan_s"],
        "critical_path_s": rec["critical_path_s"],
        "critical_path": rec.get("critical_path", []),
        "result": rec["result"],
        "modules_ok": sum(1 for n in mods if n["status"] == "ok"),
        "modules": len(mods),
        "modules_done_s": max(ends) if ends else 0.0,
        "skipped": {n["name"]: n["reason"] for n in mods if n["status"] != "ok"},
        "starts": {n["name"]: n["start_s"] for n in rec["nodes"]},
        "providers": {c: v.get("provider") for c, v in rec["capabilities"].items()},
        "nodes": nodes,
    }


def proposal(repeats: int = 3, openstack_first: bool = False) -> dict:
    """Per strategy, the run with the median makespan of `repeats` runs."""
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="cidag-bench-proposal-") as tmp:
        tmp = Path(tmp)
        cg = _compile(tmp, proposal_sources(openstack_first))
        for strategy in ("one-step", "two-step", "serial"):
            runs = []
            for r in range(repeats):
                wall, rec = _run(cg, tmp / f"{strategy}-{r}", strategy=strategy)
                runs.append(_summary(wall, rec))
            runs.sort(key=lambda s: s["makespan_s"])
            best = runs[len(runs) // 2]
            best["all_makespans_s"] = [s["makespan_s"] for s in runs]
            out[strategy] = best
    return out


DEADLINE_MODES = {  # label: (select, with the static fallback, capabilities no module wants)
    "preferred": ("preferred", False, ()),
    "first": ("first", False, ()),
    "first+fallback": ("first", True, ()),
    # Nobody waits for the absent source any more: does the run still wait for its deadline?
    "first, no post-password": ("first", False, ("post-password",)),
}


def deadline(deadline_s: float = 30.0) -> dict:
    """`select: preferred` vs `select: first` when the preferred source fails at its deadline,
    `first` with a zero-delay static fallback listed last, and `first` when set-password
    does not want post-password (so no module waits for the absent source).

    The modes run at once, one thread each (each run only sleeps), so the scenario
    costs one deadline of wall time, not four.
    """
    with tempfile.TemporaryDirectory(prefix="cidag-bench-deadline-") as tmp:
        tmp = Path(tmp)
        with concurrent.futures.ThreadPoolExecutor(len(DEADLINE_MODES)) as pool:
            futs = {}
            for i, (label, (select, fallback, drop)) in enumerate(DEADLINE_MODES.items()):
                cg = _compile(tmp / f"m-{i}", deadline_sources(deadline_s, fallback), drop)
                futs[label] = pool.submit(_run, cg, tmp / f"run-{i}", select=select)
            return {label: _summary(*f.result()) for label, f in futs.items()}
