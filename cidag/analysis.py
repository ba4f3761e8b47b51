"""Pure functions over a run record (docs/state-and-record.md): blame, critical chain, slack, timeline.

Nothing here reads files except `load_record`; every other function takes the
record as a dict, so the engine and the tests can call them directly.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

# Float sums of measured durations differ in the last bits; below this they are equal.
EPS = 1e-6
SOFT_EDGES = frozenset({"wants", "after"})


RECORD_LIMIT = 256 << 20  # a 20,000-node run's record is a few tens of MiB


def load_record(path: str | Path) -> dict:
    """Read a run record; raise UsageError with one line if it is missing or not a record."""
    from .errors import UsageError
    from .state import load_json_file

    path = Path(path)
    record = load_json_file(path, RECORD_LIMIT, kind="run record",
                            missing="no run record (has cidag run yet? use --root or --state-dir, or give a RECORD path)")
    problem = check_record(record)
    if problem:
        # One line, whatever the record holds (an id may hold a newline or U+2028).
        problem = "".join(c if c.isprintable() else repr(c)[1:-1] for c in problem)
        raise UsageError(f"{path}: not a run record: {problem}")
    return record


def check_record(record: Any) -> str:
    """Return what makes `record` unusable as a run record, or '' if it is usable."""
    if not isinstance(record, dict):
        return "expected a JSON object"
    if record.get("version") != 1:
        return f"unsupported version {record.get('version')!r} (expected 1)"
    nodes = record.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("id"), str) for n in nodes):
        return "'nodes' must be a list of objects with an 'id'"
    for n in nodes:
        for key in ("start_s", "end_s", "duration_s"):
            if not _number_or_none(n.get(key)):
                return f"node {n['id']}: {key} must be a number or null, not {n.get(key)!r}"
        for key in ("kind", "status", "reason"):
            if not isinstance(n.get(key, ""), (str, type(None))):
                return f"node {n['id']}: {key} must be a string"
        worker = n.get("worker")
        if worker is not None and (not isinstance(worker, int) or isinstance(worker, bool)):
            return f"node {n['id']}: worker must be an integer or null"
    edges = record.get("edges", [])
    if not isinstance(edges, list) or not all(
            isinstance(e, list) and len(e) >= 2 and all(isinstance(x, str) for x in e) for e in edges):
        return "'edges' must be a list of [from, to, kind]"
    caps = record.get("capabilities", {})
    if not isinstance(caps, dict) or not all(isinstance(c, dict) for c in caps.values()):
        return "'capabilities' must map names to objects"
    for name, cap in caps.items():
        if not _number_or_none(cap.get("settled_s")):
            return f"capability {name}: settled_s must be a number or null"
        if not all(isinstance(cap.get(k), (str, type(None))) for k in ("status", "provider")):
            return f"capability {name}: status and provider must be strings"
        waited = cap.get("waited_for")
        if waited is not None and (not isinstance(waited, list) or not all(isinstance(x, str) for x in waited)):
            return f"capability {name}: waited_for must be a list of ids"
    path = record.get("critical_path", [])
    if path is not None and (not isinstance(path, list) or not all(isinstance(x, str) for x in path)):
        return "'critical_path' must be a list of ids"
    for key in ("makespan_s", "critical_path_s"):
        if not _number_or_none(record.get(key)):
            return f"'{key}' must be a number"
    for key in ("result", "started_at", "instance_id"):
        if not isinstance(record.get(key), (str, type(None))):
            return f"'{key}' must be a string"
    code = record.get("exit_code")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        return "'exit_code' must be an integer"
    return ""


def _number_or_none(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def duration(node: dict) -> float:
    """Measured seconds a node ran; 0 for a node that never started."""
    if node.get("duration_s") is not None:
        return float(node["duration_s"])
    start, end = node.get("start_s"), node.get("end_s")
    if start is None or end is None:
        return 0.0
    return max(0.0, float(end) - float(start))


def started(node: dict) -> bool:
    """True if the node started (it has a start time)."""
    return node.get("start_s") is not None


def blame(record: dict) -> list[dict]:
    """Nodes that started, longest first (ties by id): id, kind, status, start_s, duration_s."""
    rows = [
        {
            "id": n["id"],
            "kind": n.get("kind") or _kind_of(n["id"]),
            "status": n.get("status") or "",
            "start_s": float(n["start_s"]),
            "duration_s": duration(n),
        }
        for n in record.get("nodes", [])
        if started(n)
    ]
    rows.sort(key=lambda r: (-r["duration_s"], r["id"]))
    return rows


def _kind_of(node_id: str) -> str:
    prefix = node_id.partition(":")[0]
    return {"cap": "capability"}.get(prefix, prefix)


def _predecessors(record: dict) -> dict[str, list[str]]:
    """Who each node waited on, from `edges`; a capability waited only on its `waited_for`."""
    caps = record.get("capabilities") or {}
    preds: dict[str, list[str]] = {}
    for node in record.get("nodes", []):
        preds.setdefault(node["id"], [])
    for name in caps:
        preds.setdefault(f"cap:{name}", [])
    for edge in record.get("edges") or []:
        u, v = edge[0], edge[1]
        preds.setdefault(u, [])
        preds.setdefault(v, [])
        if v.startswith("cap:"):
            waited = (caps.get(v[4:]) or {}).get("waited_for")
            # With select: first a capability settles on the winner alone; waited_for says which.
            if isinstance(waited, list) and u not in waited:
                continue
        if u not in preds[v]:
            preds[v].append(u)
    return preds


def schedule(record: dict) -> dict[str, dict]:
    """Critical-path method over `edges` with measured durations.

    For each node: dur, es (earliest start if every node started the moment its
    inputs were done), ef, ls (latest start that would not lengthen the longest
    chain) and slack (ls - es). Raises ValueError if the edges have a cycle.
    """
    from graphlib import CycleError, TopologicalSorter

    preds = _predecessors(record)
    durations = {nid: 0.0 for nid in preds}
    for node in record.get("nodes", []):
        durations[node["id"]] = duration(node)
    try:
        order = list(TopologicalSorter(preds).static_order())
    except CycleError as exc:
        raise ValueError(f"edges form a cycle: {' -> '.join(exc.args[1])}") from None
    info: dict[str, dict] = {}
    for nid in order:
        es = max((info[p]["ef"] for p in preds[nid]), default=0.0)
        info[nid] = {"dur": durations[nid], "es": es, "ef": es + durations[nid]}
    length = max((i["ef"] for i in info.values()), default=0.0)
    succs: dict[str, list[str]] = {nid: [] for nid in preds}
    for nid, ps in preds.items():
        for p in ps:
            succs[p].append(nid)
    for nid in reversed(order):
        lf = min((info[s]["ls"] for s in succs[nid]), default=length)
        info[nid]["ls"] = lf - info[nid]["dur"]
        info[nid]["slack"] = max(0.0, info[nid]["ls"] - info[nid]["es"])
    return info


def longest_chain(record: dict) -> tuple[list[str], float]:
    """The chain of measured durations no schedule of this run could beat: (ids, seconds).

    The engine may call this to fill `critical_path` and `critical_path_s`.
    """
    info = schedule(record)
    if not info:
        return [], 0.0
    ends = {n["id"]: n.get("end_s") or 0.0 for n in record.get("nodes", [])}
    preds = _predecessors(record)
    soft = {(e[0], e[1]) for e in record.get("edges") or [] if len(e) > 2 and e[2] in SOFT_EDGES}
    # The last node to finish; ties go to the one that really ended last (it set the makespan).
    last = max(info, key=lambda n: (info[n]["ef"], ends.get(n, 0.0), n))
    chain = [last]
    while True:
        cur = chain[-1]
        tight = [p for p in preds[cur] if abs(info[p]["ef"] - info[cur]["es"]) <= EPS]
        if not tight:
            break
        # Prefer a predecessor that took time, then the one that ended last, then a hard edge.
        tight.sort(key=lambda p: (-(info[p]["dur"] > 0), -(ends.get(p) or 0.0), (p, cur) in soft, p))
        chain.append(tight[0])
    chain.reverse()
    # Leading zero-length nodes (a skipped node at t=0) explain nothing.
    while len(chain) > 1 and info[chain[0]]["dur"] == 0 and info[chain[0]]["es"] <= EPS and not chain[0].startswith("cap:"):
        chain.pop(0)
    return chain, info[last]["ef"]


def critical_chain(record: dict) -> dict:
    """The chain that set the makespan, with each node's start offset and duration, and slack.

    Uses the record's `critical_path` when it has one (the engine measured it),
    else `longest_chain`. Returns {"chain": [...], "total_s", "makespan_s",
    "critical_path_s", "slack": [...]} where `total_s` is the sum of the chain's
    durations and `slack` lists the nodes that ran off the chain, least slack first.
    """
    info = schedule(record)
    by_id = {n["id"]: n for n in record.get("nodes", [])}
    caps = record.get("capabilities") or {}
    ids = record.get("critical_path")
    if not isinstance(ids, list) or not ids or not all(i in info for i in ids):
        ids, _ = longest_chain(record)
    chain = []
    for nid in ids:
        node = by_id.get(nid, {})
        if nid.startswith("cap:") and nid not in by_id:
            cap = caps.get(nid[4:]) or {}
            start = cap.get("settled_s")
            chain.append({"id": nid, "kind": "capability", "status": cap.get("status") or "",
                          "start_s": start, "duration_s": 0.0, "provider": cap.get("provider")})
            continue
        chain.append({"id": nid, "kind": node.get("kind") or _kind_of(nid), "status": node.get("status") or "",
                      "start_s": node.get("start_s"), "duration_s": duration(node)})
    total = sum(row["duration_s"] for row in chain)
    on_chain = set(ids)
    slack = [
        {"id": nid, "kind": by_id[nid].get("kind") or _kind_of(nid), "status": by_id[nid].get("status") or "",
         "slack_s": info[nid]["slack"], "duration_s": info[nid]["dur"]}
        for nid in info
        if nid not in on_chain and nid in by_id and started(by_id[nid])
    ]
    slack.sort(key=lambda r: (r["slack_s"], r["id"]))
    return {
        "chain": chain,
        "total_s": total,
        "critical_path_s": record.get("critical_path_s", total),
        "makespan_s": record.get("makespan_s", max((n.get("end_s") or 0.0 for n in by_id.values()), default=0.0)),
        "slack": slack,
    }


def timeline(record: dict) -> dict:
    """Rows and marks for drawing a run: what svg_timeline and trace need.

    rows: every source and module, started ones by start time, then the others
    by id; each with id, kind, status, start_s, end_s, reason, worker, critical.
    caps: each capability with status, provider and settled_s, by settled time.
    """
    critical = set(record.get("critical_path") or [])
    if not critical:
        try:
            critical = set(longest_chain(record)[0])
        except ValueError:
            critical = set()
    rows = []
    for n in record.get("nodes", []):
        start = n.get("start_s")
        end = n.get("end_s")
        if start is not None and end is None:
            end = start + duration(n)
        rows.append({
            "id": n["id"],
            "kind": n.get("kind") or _kind_of(n["id"]),
            "status": n.get("status") or "",
            "start_s": None if start is None else float(start),
            "end_s": None if end is None else float(end),
            "reason": n.get("reason") or "",
            "worker": n.get("worker"),
            "critical": n["id"] in critical,
        })
    rows.sort(key=lambda r: (r["start_s"] is None, r["start_s"] or 0.0, r["end_s"] or 0.0, r["id"]))
    caps = []
    for name, cap in sorted((record.get("capabilities") or {}).items()):
        cap = cap or {}
        caps.append({
            "id": f"cap:{name}",
            "name": name,
            "status": cap.get("status") or "",
            "provider": cap.get("provider"),
            "settled_s": cap.get("settled_s"),
            "critical": f"cap:{name}" in critical,
        })
    caps.sort(key=lambda c: (c["settled_s"] is None, c["settled_s"] or 0.0, c["name"]))
    ends = [r["end_s"] for r in rows if r["end_s"] is not None] + [c["settled_s"] for c in caps if c["settled_s"] is not None]
    makespan = record.get("makespan_s")
    if makespan is None:
        makespan = max(ends, default=0.0)
    return {"rows": rows, "caps": caps, "makespan_s": float(makespan), "result": record.get("result", ""),
            "started_at": record.get("started_at", "")}


def count_statuses(nodes: Iterable[dict]) -> dict[str, int]:
    """Number of nodes per status, in first-seen order."""
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.get("status") or ""] = counts.get(n.get("status") or "", 0) + 1
    return counts


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile of `values` (nearest rank: a value that occurred); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fleet_blame(records: list[dict]) -> dict:
    """Blame over many runs (a fleet's boots): per node and per capability, percentiles.

    nodes: one row per node id that started in some run: runs (how many it
    started in), p50_s, p90_s, p99_s, max_s of its duration, statuses {status:
    count}, and retries (sum of its `counters.retries`, 0 if none); by p99, longest first.
    caps: per capability, when it settled (settled_s percentiles) over the runs that settled it.
    """
    durations: dict[str, list[float]] = {}
    statuses: dict[str, dict[str, int]] = {}
    retries: dict[str, float] = {}
    settled: dict[str, list[float]] = {}
    for record in records:
        for n in record.get("nodes", []):
            status = n.get("status") or ""
            counts = statuses.setdefault(n["id"], {})
            counts[status] = counts.get(status, 0) + 1
            if started(n):
                durations.setdefault(n["id"], []).append(duration(n))
            counted = (n.get("counters") or {}).get("retries")
            if isinstance(counted, (int, float)):
                retries[n["id"]] = retries.get(n["id"], 0) + counted
        for name, cap in (record.get("capabilities") or {}).items():
            if isinstance(cap, dict) and cap.get("settled_s") is not None:
                settled.setdefault(name, []).append(float(cap["settled_s"]))
    rows = [
        {"id": nid, "runs": len(values), "p50_s": percentile(values, 50), "p90_s": percentile(values, 90),
         "p99_s": percentile(values, 99), "max_s": max(values), "statuses": statuses[nid],
         "retries": retries.get(nid, 0)}
        for nid, values in durations.items()
    ]
    rows.sort(key=lambda r: (-r["p99_s"], r["id"]))
    caps = [
        {"id": f"cap:{name}", "runs": len(values), "p50_s": percentile(values, 50), "p90_s": percentile(values, 90),
         "p99_s": percentile(values, 99), "max_s": max(values)}
        for name, values in settled.items()
    ]
    caps.sort(key=lambda r: (-r["p99_s"], r["id"]))
    return {"runs": len(records), "nodes": rows, "caps": caps}
