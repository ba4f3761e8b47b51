"""The run record (spec §5, docs/state-and-record.md) and the critical path of a run."""
from __future__ import annotations

from typing import Any

from .plan import Plan
from .state import EXIT_CODES, EXIT_INTERNAL  # noqa: F401 - re-exported; the state dir's contract

RECORD_VERSION = 1
OVERLAY_EDGES = frozenset({"gate", "fallback"})  # strategy edges: not the compiled graph
OUTPUT_CAP = 64 * 1024


def critical_path(plan: Plan) -> tuple[float, list[str]]:
    """The longest chain of measured durations through what each node really waited on.

    A capability waited on the providers in its `waited_for`; a node on the
    capabilities it needs and wants and the modules it depends on or runs after.
    Strategy gates (two-step, serial) are not edges: the result is what no
    schedule of this run could beat. Returns (seconds, node and capability ids).
    """
    length: dict[str, float] = {}
    best_in: dict[str, str | None] = {}
    caps, nodes, inputs_of = plan.caps, plan.nodes, plan.inputs
    unended = ("waiting", "ready", "running")
    end, end_at = None, 0.0  # the node (not capability) where the longest chain ends: the first
    for node in plan.order:
        # The first input with the longest chain (plain loops: max() with a key costs a call
        # per input, and this runs over every node and capability).
        prev, best = None, 0.0
        if node.startswith("cap:"):
            cap = caps[node[4:]]
            if cap.status == "pending":
                continue
            for u in cap.waited_for:
                at = length.get(u)
                if at is not None and (prev is None or at > best):
                    prev, best = u, at
            length[node] = best
            best_in[node] = prev
            continue
        st = nodes[node]
        if st.status in unended:
            continue
        for u, _ in inputs_of[node]:
            at = length.get(u)
            if at is not None and (prev is None or at > best):
                prev, best = u, at
        total = length[node] = best + ((st.end - st.start) if st.start is not None and st.end is not None else 0.0)
        best_in[node] = prev
        if end is None or total > end_at:
            end, end_at = node, total
    if end is None:
        return 0.0, []
    chain = [end]
    while best_in.get(chain[-1]) is not None:
        chain.append(best_in[chain[-1]])
    chain.reverse()
    return round(length[end], 6), chain


def result_of(plan: Plan, interrupted: bool, error: str | None = None) -> str:
    """ok / degraded / failed / interrupted, as documented in docs/state-and-record.md.

    `degraded` is for faults only: a capability some node of the run waited on
    came out different from what the metadata says because a provider failed
    (or timed out). A module skipped because what it needs is cleanly
    unavailable (no source offers it here) leaves the run `ok`.
    """
    if error:
        return "failed"
    if interrupted:
        return "interrupted"
    states = plan.nodes.values()
    if any(s.kind == "module" and s.status in ("failed", "timeout") for s in states):
        return "failed"
    if any(c.faulty and _used(plan, c.name) for c in plan.caps.values()):
        return "degraded"
    return "ok"


_NOT_IN_RUN = frozenset({"not-needed", "not-selected", "already-ran", "obsolete", "fallback"})


def _used(plan: Plan, cap: str) -> bool:
    """True when some node of the run read (or was skipped for) `cap`."""
    return any(plan.nodes[c].code not in _NOT_IN_RUN for c, _ in plan.outputs.get(f"cap:{cap}", ()))




def build_record(
    plan: Plan,
    *,
    started_at: str,
    makespan: float,
    interrupted: bool,
    instance_id: str | None,
    meta: dict,
    logs: dict[str, list[dict]],
    outputs: dict[str, str],
    workers: dict[str, int],
    scrub,
    counters: dict[str, dict] | None = None,
    error: str | None = None,
) -> dict:
    """The record of one run; `scrub` removes secret values from free text."""
    cp_s, cp_chain = critical_path(plan)
    result = result_of(plan, interrupted, error)
    nodes = []
    specs = plan.cg.specs
    for node, st in plan.nodes.items():
        kind = st.kind
        if kind == "gate":
            continue
        spec = specs[node]
        start, end = st.start, st.end
        entry: dict[str, Any] = {
            "id": node,
            "kind": kind,
            "name": spec.name,
            "type": spec.type,
            "status": st.status,
            "start_s": None if start is None else round(start, 6),
            "end_s": None if end is None else round(end, 6),
            "duration_s": round(end - start, 6) if start is not None and end is not None else None,
            "reason": scrub(st.reason) if st.reason else st.reason,
            "reason_code": st.code or None,
            "cause": st.cause,
            "worker": workers.get(node),
        }
        if kind == "module":
            entry["priority"], entry["frequency"] = spec.priority, spec.frequency
        elif st.success:
            entry["delivered"] = sorted(st.values)
        if logs and logs.get(node):
            entry["log"] = logs[node]
        if counters and counters.get(node):
            entry["counters"] = counters[node]  # what the node counted (HTTP requests, retries)
        if outputs and outputs.get(node):
            entry["output"] = scrub(outputs[node])[-OUTPUT_CAP:]
        nodes.append(entry)
    caps = {}
    for name, cap in sorted(plan.caps.items()):
        caps[name] = {
            "status": cap.status,
            "provider": cap.provider,
            "settled_s": _r(cap.settled),
            "waited_for": cap.waited_for,
        }
        if cap.reason:
            caps[name]["reason"] = scrub(cap.reason)
        if cap.faulty:
            caps[name]["faulty"] = True
    return {
        "version": RECORD_VERSION,
        "started_at": started_at,
        "makespan_s": _r(makespan),
        "critical_path_s": cp_s,
        "critical_path": cp_chain,
        "result": result,
        "exit_code": EXIT_INTERNAL if error else EXIT_CODES[result],
        **({"error": scrub(error)} if error else {}),
        "instance_id": instance_id,
        **meta,
        "nodes": nodes,
        "capabilities": caps,
        "edges": [[u, v, k] for u, outs in plan.outputs.items() for v, k in outs if k not in OVERLAY_EDGES],
    }


def node_outputs(contexts: dict[str, Any]) -> tuple[dict[str, str], dict[str, dict]]:
    """(outputs, counters) of the started nodes, from their contexts: the text each kept
    (its last MiB; build_record caps it further) and what each counted."""
    outputs = {}
    for node, ctx in contexts.items():
        if ctx.output:
            try:
                outputs[node] = "".join(list(ctx.output))[-(1 << 20):]
            except TypeError:
                outputs[node] = "".join(str(x) for x in list(ctx.output))[-(1 << 20):]
    counters = {node: dict(ctx.counters) for node, ctx in contexts.items() if ctx.counters}
    return outputs, counters


def instance_data(plan: Plan, policy: Any, instance_id: str | None) -> tuple[dict, dict]:
    """(public, sensitive): the resolved capabilities as instance-data.json and the 0600
    instance-data-sensitive.json keep them; what is secret is the policy's (values.SecretPolicy)."""
    public: dict = {}
    sensitive: dict = {}
    for name, cap in sorted(plan.caps.items()):
        if cap.status != "resolved":
            continue
        shown, kept = policy.kept_at_rest(name, plan.nodes[cap.provider].values.get(name))
        sensitive[name] = {"provider": cap.provider, "value": kept}
        public[name] = {"provider": cap.provider, "value": shown}
    return ({"instance_id": instance_id, "capabilities": public},
            {"instance_id": instance_id, "capabilities": sensitive})


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
