"""A run record as Chrome trace events (the JSON Object Format that Perfetto and chrome://tracing open).

One track (tid) per worker from the record's `worker` field, one complete ("X")
span per node that ran, and one instant ("i") event per capability settlement on
a track of its own. Times are microseconds from the run's start.

Many records (a fleet's boots) make one trace with a process per run: its
tracks as above, its times shifted by when it started (`started_at`, wall
clock) after the first run of the set.
"""
from __future__ import annotations

from datetime import datetime

from .analysis import timeline

PID = 1
CAPS_TID = 0  # the capabilities track sorts first
FALLBACK_TID = 100000  # lanes for nodes whose record has no worker


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def to_trace(record: dict) -> dict:
    """Return the trace as a JSON-ready dict: {"traceEvents": [...], "displayTimeUnit": "ms", ...}."""
    tl = timeline(record)
    events: list[dict] = []
    lanes: dict[int, set[str]] = {}
    fallback_free: list[float] = []  # end time of the last span on each fallback lane
    for row in tl["rows"]:
        if row["start_s"] is None:
            continue
        start, end = row["start_s"], row["end_s"] if row["end_s"] is not None else row["start_s"]
        if isinstance(row["worker"], int):
            tid = row["worker"] + 1
        else:
            # No worker recorded: first lane free at our start, so spans on one track never overlap.
            lane = next((i for i, free in enumerate(fallback_free) if free <= start), len(fallback_free))
            if lane == len(fallback_free):
                fallback_free.append(end)
            fallback_free[lane] = end
            tid = FALLBACK_TID + lane
        lanes.setdefault(tid, set()).add(row["kind"])
        args = {"status": row["status"], "kind": row["kind"]}
        if row["reason"]:
            args["reason"] = row["reason"]
        if row["critical"]:
            args["critical_path"] = True
        events.append({
            "name": row["id"], "cat": row["kind"] + (",critical" if row["critical"] else ""), "ph": "X",
            "ts": _us(start), "dur": _us(max(0.0, end - start)), "pid": PID, "tid": tid, "args": args,
        })
    for cap in tl["caps"]:
        if cap["settled_s"] is None:
            continue
        args = {"status": cap["status"]}
        if cap["provider"]:
            args["provider"] = cap["provider"]
        events.append({
            "name": f"{cap['id']} {cap['status']}", "cat": "capability", "ph": "i", "s": "t",
            "ts": _us(cap["settled_s"]), "pid": PID, "tid": CAPS_TID, "args": args,
        })
    meta = [
        {"name": "process_name", "ph": "M", "pid": PID, "tid": 0,
         "args": {"name": " ".join(filter(None, ["cidag run", tl["started_at"], tl["result"]]))}},
        {"name": "thread_name", "ph": "M", "pid": PID, "tid": CAPS_TID, "args": {"name": "capabilities"}},
        {"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": CAPS_TID, "args": {"sort_index": -1}},
    ]
    for tid in sorted(lanes):
        kinds = lanes[tid]
        if tid >= FALLBACK_TID:
            name = f"lane {tid - FALLBACK_TID} (no worker recorded)"
        elif kinds == {"source"}:
            name = f"source lane {tid - 1}"
        else:
            name = f"worker {tid - 1}"
        meta.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": name}})
        meta.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid, "args": {"sort_index": tid}})
    events.sort(key=lambda e: (e["ts"], e["tid"]))
    skipped = [{"id": r["id"], "status": r["status"], "reason": r["reason"]} for r in tl["rows"] if r["start_s"] is None]
    return {
        "traceEvents": meta + events,
        "displayTimeUnit": "ms",
        "otherData": {
            "started_at": tl["started_at"],
            "result": tl["result"],
            "makespan_s": tl["makespan_s"],
            "critical_path_s": record.get("critical_path_s"),
            "critical_path": " -> ".join(record.get("critical_path") or []),
            "not_started": len(skipped),
        },
    }


def fleet_trace(records: list[tuple[str, dict]]) -> dict:
    """One trace of many runs: `records` is [(label, record)], each run a process named by its label."""
    starts = [_started(record) for _, record in records]
    known = [t for t in starts if t is not None]
    first = min(known, default=0.0)
    events: list[dict] = []
    runs = []
    for pid, ((label, record), start) in enumerate(zip(records, starts), 1):
        one = to_trace(record)
        shift = _us(start - first) if start is not None else 0.0
        for event in one["traceEvents"]:
            event = {**event, "pid": pid}
            if event["ph"] == "M":
                if event["name"] == "process_name":
                    event["args"] = {"name": " ".join(filter(None, [label, record.get("result")]))}
            else:
                event["ts"] = round(event["ts"] + shift, 3)
            events.append(event)
        events.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
        runs.append({"label": label, "result": one["otherData"]["result"], "started_s": (start - first) if start is not None else None,
                     "makespan_s": one["otherData"]["makespan_s"]})
    events.sort(key=lambda e: (e["ph"] != "M", e.get("ts", 0), e["pid"], e["tid"]))
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"runs": runs}}


def _started(record: dict) -> float | None:
    """Wall-clock seconds of the record's `started_at` (ISO 8601, UTC), or None when absent or unreadable."""
    text = record.get("started_at")
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
