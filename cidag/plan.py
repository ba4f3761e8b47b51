"""The scheduler: which node may start now, and what each capability resolved to (spec §3.2-3.4).

Pure bookkeeping, no threads and no I/O (ninja's `Plan`): the engine asks
`next_to_start()`, runs those nodes however it likes and reports each end
with `finished()`. Work per event is proportional to the edges it touches,
so a 5,000-node run costs little more than graphlib's.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Callable

from .compiler import CompiledGraph, longest_remaining

SOURCE_FINAL = frozenset({"available", "unavailable", "failed", "skipped", "interrupted"})
MODULE_FINAL = frozenset({"ok", "failed", "timeout", "skipped", "interrupted"})
FINAL = SOURCE_FINAL | MODULE_FINAL
STRATEGIES = ("one-step", "two-step", "serial")
OBSOLETE = "not needed any more: every capability it offers is settled"


@dataclass
class NodeState:
    """Where one source or module is: status, times, why, and (when it succeeded) its values."""

    id: str
    kind: str
    status: str = "waiting"  # waiting | ready | running | a final status
    start: float | None = None
    end: float | None = None
    reason: str = ""
    success: bool = False
    values: dict = field(default_factory=dict)
    pending: int = 0  # inputs not yet settled or ended
    seq: int = -1  # order in which it ended (select: first)

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass
class CapState:
    """A capability: pending, resolved to a provider, or unavailable (with why)."""

    name: str
    status: str = "pending"  # pending | resolved | unavailable
    provider: str | None = None
    settled: float | None = None
    reason: str = ""
    waited_for: list[str] = field(default_factory=list)


class Plan:
    """Tracks readiness of every node; see the module docstring for the life cycle."""

    def __init__(
        self,
        cg: CompiledGraph,
        *,
        select: str = "preferred",
        strategy: str = "one-step",
        jobs: int = 4,
        skip: dict[str, tuple[str, bool, dict]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`skip` maps node id -> (reason, success, values) for nodes settled before the
        run (not needed, outside --only, already ran); `success` with `values` lets a
        module that already ran still provide its capabilities."""
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}")
        if select not in ("preferred", "first"):
            raise ValueError(f"unknown select mode {select!r}")
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.cg, self.g = cg, cg.graph
        self.select, self.strategy, self.jobs = select, strategy, jobs
        self.clock = clock
        # Called when a node is about to start; may return (reason, values) to settle it
        # as already done instead (per-instance markers, known only once instance-id is).
        self.before_start: Callable[[str], tuple[str, dict] | None] | None = None
        self.nodes: dict[str, NodeState] = {
            n: NodeState(n, cg.specs[n].kind) for n in cg.specs
        }
        self.caps: dict[str, CapState] = {
            n[4:]: CapState(n[4:]) for n in self.g if n.startswith("cap:")
        }
        self._ready_sources: list[tuple] = []
        self._ready_modules: list[tuple] = []
        self._running = {"source": 0, "module": 0}
        self._ended = 0
        import networkx as nx

        self.order: list[str] = list(nx.topological_sort(self.g))  # also used by the record
        self._longest = longest_remaining(self.g, self.order)
        # (neighbour, edge kind) per node, built once: networkx edge views cost a lot per call.
        # g._pred/_succ are networkx's own dict-of-dicts: 5x faster to walk than its views.
        pred, succ = self.g._pred, self.g._succ
        self.inputs: dict[str, tuple] = {n: tuple((u, d["kind"]) for u, d in pred[n].items()) for n in pred}
        self.outputs: dict[str, tuple] = {n: tuple((v, d["kind"]) for v, d in succ[n].items()) for n in succ}
        self.obsolete: list[str] = []  # running sources that can no longer change anything
        self._gated: set[str] = set()  # modules waiting for every source (two-step, serial)
        self._sources_left = 0
        self._serial_sources: list[str] = []
        self._serial_selected: str | None = None
        self.start_order: list[str] = []
        self.end_order: list[str] = []  # every node as it reaches a final status
        self._init_inputs()
        self._init_strategy()
        for node, (reason, success, values) in (skip or {}).items():
            state = self.nodes[node]
            if not state.final:
                self._finish(state, "skipped", reason, success=success, values=values)

    # -- set-up ------------------------------------------------------------

    def _init_inputs(self) -> None:
        for node, state in self.nodes.items():
            state.pending = len(self.inputs[node])

    def _source_ancestors(self) -> set[str]:
        """Modules some source waits on (e.g. one providing network-online): they may run
        before the sources have all settled, or two-step and serial could never finish."""
        from .compiler import ancestors

        sources = [s.node_id for s in self.cg.manifests.sources]
        return {a for a in ancestors(self.g, sources) if a.startswith("module:")}

    def _init_strategy(self) -> None:
        if self.strategy == "one-step":
            return
        exempt = self._source_ancestors()
        sources = [s.node_id for s in self.cg.manifests.sources]
        self._sources_left = len(sources)
        for mod in self.cg.manifests.modules:
            if mod.node_id not in exempt:
                self._gated.add(mod.node_id)
                self.nodes[mod.node_id].pending += 1
        if self.strategy == "serial":
            # Probe one source at a time, in preference order (cloud-init today).
            self._serial_sources = sources
            for prev, node in zip(sources, sources[1:]):
                self.nodes[node].pending += 1
        if not sources:
            self._release_gate()

    def start(self) -> None:
        """Evaluate the nodes with no inputs; call once before the first next_to_start()."""
        for cap in self.caps.values():
            if not self.cg.providers.get(cap.name):
                self._try_settle(cap)  # nothing provides it: unavailable from the start
        for node, state in self.nodes.items():
            if state.status == "waiting" and state.pending == 0:
                self._evaluate(state)

    # -- queries -----------------------------------------------------------

    def is_active(self) -> bool:
        """True while some node has not reached a final status."""
        return self._ended < len(self.nodes)

    def has_ready(self) -> bool:
        """True when some node waits only for a free worker."""
        return bool(self._ready_sources or self._ready_modules)

    def next_to_start(self) -> list[str]:
        """Nodes to start now, in start order, within the worker limits; marks them running."""
        out: list[str] = []
        now = self.clock()
        total_limit = 1 if self.strategy == "serial" else None
        while True:
            if total_limit is not None and sum(self._running.values()) >= total_limit:
                break
            heap, kind = None, None
            if self._ready_sources:
                heap, kind = self._ready_sources, "source"
            elif self._ready_modules and self._running["module"] < self.jobs:
                heap, kind = self._ready_modules, "module"
            if heap is None:
                break
            node = heapq.heappop(heap)[-1]
            state = self.nodes[node]
            if kind == "source" and self._source_obsolete(node):
                self._finish(state, "skipped", OBSOLETE, success=False, values={})
                continue
            done_before = self.before_start(node) if self.before_start else None
            if done_before is not None:
                self._finish(state, "skipped", done_before[0], success=True, values=done_before[1])
                continue
            state.status, state.start = "running", now
            self._running[kind] += 1
            self.start_order.append(node)
            out.append(node)
        return out

    # -- events ------------------------------------------------------------

    def finished(self, node: str, status: str, *, reason: str = "", values: dict | None = None) -> None:
        """Record the end of a running node. `values` are the capabilities it delivered.

        Raises ValueError for a node that is not running or a status that is not final.
        """
        state = self.nodes[node]
        if state.status != "running":
            raise ValueError(f"{node} is not running (it is {state.status})")
        allowed = SOURCE_FINAL if state.kind == "source" else MODULE_FINAL
        if status not in allowed:
            raise ValueError(f"{status!r} is not a final status for a {state.kind}")
        self._running[state.kind] -= 1
        success = status in ("available", "ok")
        self._finish(state, status, reason, success=success, values=values or {})

    def skip(self, node: str, reason: str, *, success: bool = False, values: dict | None = None) -> None:
        """Settle a waiting, ready or running node without running it (or after abandoning it)."""
        state = self.nodes[node]
        if state.final:
            return
        if state.status == "running":
            self._running[state.kind] -= 1
        elif state.status == "ready":
            heap = self._ready_sources if state.kind == "source" else self._ready_modules
            heap[:] = [e for e in heap if e[-1] != node]
            heapq.heapify(heap)
        self._finish(state, "skipped", reason, success=success, values=values or {})

    def abandon(self, reason: str, status: str = "skipped") -> None:
        """End the run: every node not yet final is marked with `status` (running ones
        become 'interrupted' when status is 'interrupted')."""
        for node, state in self.nodes.items():
            if state.final:
                continue
            if state.status == "running":
                self._running[state.kind] -= 1
                state.status = "interrupted" if status == "interrupted" else "skipped"
                state.end = self.clock()
            else:
                state.status = "skipped"
            state.reason = reason
            self._ended += 1
            self.end_order.append(node)
        self._ready_sources.clear()
        self._ready_modules.clear()

    # -- internals ----------------------------------------------------------

    def _finish(self, state: NodeState, status: str, reason: str, *, success: bool, values: dict) -> None:
        if state.status == "running" or state.start is not None:
            state.end = self.clock()
        state.status, state.reason, state.success = status, reason, success
        state.values = values if success else {}
        state.seq = self._ended
        self._ended += 1
        self.end_order.append(state.id)
        node = state.id
        for succ, kind in self.outputs[node]:
            if kind in ("exports", "provides"):
                self._try_settle(self.caps[succ[4:]], finished=node)
            else:  # depends_on / after
                self._input_done(succ)
        if state.kind == "source" and self.strategy != "one-step":
            self._sources_left -= 1
            if self.strategy == "serial":
                self._serial_next(node, success)
            if self._sources_left == 0:
                self._release_gate()

    def _serial_next(self, node: str, success: bool) -> None:
        if success and self._serial_selected is None:
            self._serial_selected = node
        order = self._serial_sources
        i = order.index(node)
        if i + 1 >= len(order):
            return
        nxt = self.nodes[order[i + 1]]
        if self._serial_selected is not None:
            # Everything after the first available source is never probed.
            nxt.pending -= 1
            self._finish_unprobed(nxt, f"not probed: serial strategy uses {self._serial_selected[7:]}")
        else:
            self._input_done(nxt.id)

    def _finish_unprobed(self, state: NodeState, reason: str) -> None:
        if not state.final:
            if state.status == "ready":
                self._ready_sources[:] = [e for e in self._ready_sources if e[-1] != state.id]
                heapq.heapify(self._ready_sources)
            self._finish(state, "skipped", reason, success=False, values={})

    def _release_gate(self) -> None:
        gated, self._gated = self._gated, set()
        for node in sorted(gated):
            self._input_done(node)

    def _input_done(self, node: str) -> None:
        state = self.nodes[node]
        state.pending -= 1
        if state.pending == 0 and state.status == "waiting":
            self._evaluate(state)

    def _try_settle(self, cap: CapState, finished: str | None = None) -> None:
        if cap.status != "pending":
            return
        providers = self.cg.providers.get(cap.name, [])
        chosen, waited = None, []
        if self.select == "first":
            done = [p for p in providers if self.nodes[p].final]
            good = [p for p in done if self.nodes[p].success and cap.name in self.nodes[p].values]
            if good:
                chosen = min(good, key=lambda p: self.nodes[p].seq)
                waited = [chosen]
            elif len(done) < len(providers):
                return
            else:
                waited = list(providers)
        else:
            for p in providers:
                st = self.nodes[p]
                if not st.final:
                    return
                waited.append(p)
                if st.success and cap.name in st.values:
                    chosen = p
                    break
        cap.settled = self.clock()
        cap.waited_for = [p for p in waited if self.nodes[p].start is not None] or waited
        if chosen is not None:
            cap.status, cap.provider = "resolved", chosen
        else:
            cap.status = "unavailable"
            cap.reason = self._why_unavailable(cap.name, providers)
        for consumer, _ in self.outputs[f"cap:{cap.name}"]:
            self._input_done(consumer)
        for p in providers:
            if p.startswith("source:") and self.nodes[p].status == "running" and self._source_obsolete(p):
                self.obsolete.append(p)

    def _source_obsolete(self, source: str) -> bool:
        """A running source is obsolete when none of its capabilities is still pending for a
        node that may yet run: whatever it answers, nothing changes."""
        for cap, _ in self.outputs[source]:
            if self.caps[cap[4:]].status != "pending":
                continue
            if any(not self.nodes[c].final for c, _ in self.outputs[cap]):
                return False
        return True

    def _why_unavailable(self, cap: str, providers: list[str]) -> str:
        if not providers:
            return "no source or module provides it"
        parts = []
        for p in providers:
            st = self.nodes[p]
            name = p.split(":", 1)[1]
            if st.success:
                parts.append(f"{name} {st.status} but gave no {cap}")
            else:
                parts.append(f"{name} {st.status}" + (f" ({st.reason})" if st.reason else ""))
        return "; ".join(parts)

    def _evaluate(self, state: NodeState) -> None:
        node = state.id
        for u, kind in self.inputs[node]:
            if kind == "needs" and self.caps[u[4:]].status == "unavailable":
                cap = self.caps[u[4:]]
                self._finish(state, "skipped", f"capability {cap.name} unavailable: {cap.reason}",
                             success=False, values={})
                return
            if kind == "depends_on" and not self.nodes[u].success:
                dep = self.nodes[u]
                what = "was skipped" if dep.status == "skipped" else dep.status
                why = f" ({dep.reason})" if dep.reason else ""
                self._finish(state, "skipped", f"depends on {u[7:]}, which {what}{why}",
                             success=False, values={})
                return
        state.status = "ready"
        spec = self.cg.specs[node]
        if state.kind == "source":
            heapq.heappush(self._ready_sources, (spec.index, node))
        elif self.strategy == "serial":
            heapq.heappush(self._ready_modules, (spec.priority, spec.name, node))
        else:
            heapq.heappush(self._ready_modules, (spec.priority, -self._longest[node], spec.name, node))
