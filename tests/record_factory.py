"""Run records built by hand, following docs/state-and-record.md (for analyze/status tests)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def make_record(nodes, caps=None, edges=(), *, critical_path=None, result="ok", jobs=2, **extra) -> dict:
    """nodes: (id, status, start, end, worker[, reason]); caps: name -> (status, provider, settled, waited_for)."""
    out_nodes = []
    for spec in nodes:
        nid, status, start, end, worker = spec[:5]
        reason = spec[5] if len(spec) > 5 else ""
        kind, _, name = nid.partition(":")
        out_nodes.append({
            "id": nid, "kind": kind, "name": name, "type": "exec", "status": status,
            "start_s": start, "end_s": end,
            "duration_s": None if start is None else round(end - start, 6),
            "reason": reason, "worker": worker, "priority": 50, "log": [], "output": "",
        })
    capabilities = {
        name: {"status": st, "provider": prov, "settled_s": settled, "waited_for": list(waited)}
        for name, (st, prov, settled, waited) in (caps or {}).items()
    }
    record = {
        "version": 1,
        "started_at": "2026-11-27T11:40:00.123456Z",
        "makespan_s": max([n["end_s"] for n in out_nodes if n["end_s"] is not None], default=0.0),
        "result": result,
        "exit_code": {"ok": 0, "degraded": 0, "failed": 1, "interrupted": 130}[result],
        "instance_id": "iid-123",
        "strategy": "one-step", "select": "preferred", "jobs": jobs,
        "root": "/tmp/x", "state_dir": "/tmp/x/var/lib/cidag",
        "manifests": {"sources": "sources.yaml", "modules": "modules.yaml"},
        "nodes": out_nodes,
        "capabilities": capabilities,
        "edges": [list(e) for e in edges],
    }
    if critical_path is not None:
        record["critical_path"] = list(critical_path)
        by_id = {n["id"]: n for n in out_nodes}
        record["critical_path_s"] = round(sum((by_id[i]["duration_s"] or 0.0) for i in critical_path if i in by_id), 6)
    record.update(extra)
    return record


def proposal_record(with_critical_path: bool = True) -> dict:
    """The proposal scenario: a config drive in 0.31 s, OpenStack HTTP in 2.05 s, EC2 unavailable."""
    nodes = [
        ("source:configdrive", "available", 0.0, 0.31, 2),
        ("source:openstack", "available", 0.0, 2.05, 3),
        ("source:ec2", "unavailable", 0.0, 0.05, 4, "HTTP 404 from the metadata service"),
        ("module:create-user", "ok", 0.32, 0.52, 0),
        ("module:set-hostname", "ok", 0.32, 0.40, 1),
        ("module:set-password", "ok", 2.06, 2.26, 0),
        ("module:final-message", "ok", 2.27, 2.30, 1),
        ("module:write-files", "skipped", None, None, None, "capability user-data unavailable: ec2 unavailable"),
    ]
    caps = {
        "instance-id": ("resolved", "source:configdrive", 0.31, ["source:configdrive"]),
        "hostname": ("resolved", "source:configdrive", 0.31, ["source:configdrive"]),
        "public-keys": ("resolved", "source:configdrive", 0.31, ["source:configdrive"]),
        "admin-password": ("resolved", "source:openstack", 2.05, ["source:openstack"]),
        "post-password": ("resolved", "source:openstack", 2.05, ["source:openstack"]),
        "user-data": ("unavailable", None, 0.05, ["source:ec2"]),
        "default-user": ("resolved", "module:create-user", 0.52, ["module:create-user"]),
    }
    edges = [
        ("source:configdrive", "cap:instance-id", "exports"),
        ("source:configdrive", "cap:hostname", "exports"),
        ("source:configdrive", "cap:public-keys", "exports"),
        ("source:openstack", "cap:instance-id", "exports"),
        ("source:openstack", "cap:admin-password", "exports"),
        ("source:openstack", "cap:post-password", "exports"),
        ("source:ec2", "cap:user-data", "exports"),
        ("cap:instance-id", "module:create-user", "needs"),
        ("cap:public-keys", "module:create-user", "wants"),
        ("module:create-user", "cap:default-user", "provides"),
        ("cap:hostname", "module:set-hostname", "needs"),
        ("cap:admin-password", "module:set-password", "needs"),
        ("cap:post-password", "module:set-password", "wants"),
        ("module:create-user", "module:set-password", "depends_on"),
        ("module:set-password", "module:final-message", "depends_on"),
        ("module:set-hostname", "module:final-message", "after"),
        ("cap:user-data", "module:write-files", "needs"),
    ]
    cp = ["source:openstack", "cap:admin-password", "module:set-password", "module:final-message"]
    return make_record(nodes, caps, edges, critical_path=cp if with_critical_path else None, result="degraded")


def big_record(n: int = 200, jobs: int = 4) -> dict:
    """A synthetic n-node run: 8 sources, the rest modules in layers; a few failed and skipped."""
    import random

    rnd = random.Random(5)
    nodes, caps, edges = [], {}, []
    t_end = {}
    for i in range(8):
        nid = f"source:src-{i:02d}"
        dur = round(rnd.uniform(0.05, 2.5), 3)
        status = "unavailable" if i in (5, 6) else "available"
        nodes.append((nid, status, 0.0, dur, jobs + i))
        t_end[nid] = dur
        for c in range(3):
            cap = f"cap-{i}-{c}"
            edges.append((nid, f"cap:{cap}", "exports"))
            caps[cap] = ("resolved" if status == "available" else "unavailable",
                         nid if status == "available" else None, dur, [nid])
            t_end[f"cap:{cap}"] = dur
    free = [0.0] * jobs
    mods = []
    for i in range(n - 8):
        nid = f"module:step-{i:03d}-{rnd.choice(['users', 'hostname', 'write-files', 'packages', 'runcmd'])}"
        deps = []
        cap = f"cap-{rnd.randrange(8)}-{rnd.randrange(3)}"
        deps.append(f"cap:{cap}")
        edges.append((f"cap:{cap}", nid, "needs"))
        if mods and rnd.random() < 0.6:
            dep = rnd.choice(mods[-20:])
            deps.append(dep)
            edges.append((dep, nid, "depends_on"))
        ready = max(t_end[d] for d in deps)
        w = min(range(jobs), key=lambda k: free[k])
        start = round(max(ready, free[w]) + 0.001, 3)
        dur = round(rnd.expovariate(1 / 0.15), 3)
        if caps[cap][0] == "unavailable":
            nodes.append((nid, "skipped", None, None, None, f"capability {cap} unavailable"))
            t_end[nid] = ready
            mods.append(nid)
            continue
        status = "failed" if rnd.random() < 0.03 else "ok"
        nodes.append((nid, status, start, round(start + dur, 3), w, "exit 1" if status == "failed" else ""))
        free[w] = start + dur
        t_end[nid] = start + dur
        mods.append(nid)
    record = make_record(nodes, caps, edges, result="failed", jobs=jobs)
    from cidag.analysis import longest_chain

    chain, total = longest_chain(record)
    record["critical_path"], record["critical_path_s"] = chain, total
    return record


def write_state(state_dir: Path, record: dict | None = None, running: dict | None = None) -> Path:
    """Lay out a state dir as `cidag run` leaves it: runs/, last-run.json, maybe running.json."""
    state_dir = Path(state_dir)
    (state_dir / "runs").mkdir(parents=True, exist_ok=True)
    if record is not None:
        text = json.dumps(record, indent=1)
        (state_dir / "runs" / f"20261127T114000.123456Z-{os.getpid()}.json").write_text(text)
        (state_dir / "last-run.json").write_text(text)
    if running is not None:
        (state_dir / "running.json").write_text(json.dumps(running))
    return state_dir


SOURCES_YAML = """\
version: 1
sources:
  - name: seed
    type: static
    capabilities: [instance-id, hostname, admin-password, public-keys]
    settings:
      data: {instance-id: iid-test, hostname: box1, admin-password: hunter2, public-keys: [ssh-ed25519 AAAA k1]}
      delay: 0.05
  - name: absent
    type: static
    capabilities: [user-data]
    settings: {available: false}
"""

MODULES_YAML = """\
version: 1
modules:
  - name: slow
    type: exec
    needs: [hostname]
    settings: {command: "sleep %(sleep)s"}
  - name: quick
    type: exec
    needs: [instance-id]
    settings: {command: "true"}
  - name: use-data
    type: exec
    needs: [user-data]
    settings: {command: "true"}
  - name: last
    type: exec
    depends_on: [slow]
    after: [quick]
    settings: {command: "true"}
"""


def write_manifests(tmp: Path, sleep: float = 0.2) -> tuple[Path, Path]:
    """Small static/exec manifests: a module that sleeps, one skipped for a missing capability."""
    sources, modules = Path(tmp) / "sources.yaml", Path(tmp) / "modules.yaml"
    sources.write_text(SOURCES_YAML)
    modules.write_text(MODULES_YAML % {"sleep": sleep})
    return sources, modules


def run_args(tmp: Path, sleep: float = 0.2) -> list[str]:
    """argv for `python -m cidag run` on those manifests inside TMP/root (state in TMP/root/var/lib/cidag)."""
    import sys

    sources, modules = write_manifests(tmp, sleep)
    return [sys.executable, "-m", "cidag", "run", "--root", str(Path(tmp) / "root"),
            "--sources", str(sources), "--modules", str(modules), "-j", "2", "-q"]


def real_run(tmp: Path, sleep: float = 0.2) -> Path:
    """Run cidag for real; return the state dir."""
    import subprocess

    proc = subprocess.run(run_args(tmp, sleep), capture_output=True, text=True, timeout=60,
                          env=cidag_env())
    assert proc.returncode in (0, 1), proc.stderr
    return Path(tmp) / "root" / "var/lib/cidag"


def cidag_env() -> dict:
    """The environment for a cidag subprocess, with this checkout importable."""
    env = dict(os.environ)
    top = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = top + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
