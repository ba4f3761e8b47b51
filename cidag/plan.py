"""The scheduler: which node may start now, and what each capability resolved to (spec §3.2-3.4).

Pure bookkeeping, no threads and no I/O (ninja's `Plan`): the engine asks
`next_to_start()`, runs those nodes however it likes and reports each end
with `finished()`. Work per event is proportional to the edges it touches,
so a 5,000-node run costs little more than graphlib's.

The plan knows no strategy: two-step and serial are extra nodes and edges
(`strategies.py`) laid over the compiled graph. Edge kinds it adds to the
graph's own: `gate` (wait until the input has ended; a `gate:` node ends as
soon as all its inputs have) and `fallback` (wait until the input has ended;
skip this source if that one was available).
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Callable

from .compiler import CompiledGraph
from .frozengraph import adjacency, longest_remaining, topological_order

SOURCE_FINAL = frozenset({"available", "unavailable", "failed", "skipped", "interrupted"})
MODULE_FINAL = frozenset({"ok", "failed", "timeout", "skipped", "interrupted"})
FINAL = SOURCE_FINAL | MODULE_FINAL | {"done"}
OBSOLETE = "not needed any more: every capability it offers is settled"
NOT_NEEDED = "not needed"
IID = "instance-id"

# Reason codes (NodeState.code): what the result, `status` and tools match on; the text is for people.
NOT_NEEDED_CODE = "not-needed"
OBSOLETE_CODE = "obsolete"
CAP_UNAVAILABLE = "capability-unavailable"
DEPENDENCY = "dependency"
FALLBACK = "fallback"
ALREADY_RAN = "already-ran"
NOT_SELECTED = "not-selected"
FAIL_FAST = "fail-fast"
INTERRUPTED = "interrupted"
TIMEOUT = "timeout"
INTERNAL = "internal-error"

# How a dependency's end reads after "depends on X, which ...".
_WHICH = {"failed": "failed", "timeout": "timed out", "skipped": "was skipped", "interrupted": "was interrupted"}


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
    code: str = ""  # machine-readable reason (see the *_CODE constants)
    cause: str | None = None  # the node or capability the reason is about

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
    faulty: bool = False  # a provider it waited on failed: its result is not what the metadata says


@dataclass
class Overlay:
    """Nodes and edges laid over the compiled graph for a run (strategies, deferred sources)."""

    gates: list[str] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    lanes: int | None = None  # nodes running at once, sources included (None: no limit)
    order: str = "critical"  # ready modules: (priority, longest path, name) or "name": (priority, name)
    fallback_text: str = "not probed: {} is available"
    held: frozenset = frozenset()  # sources that start only once instance-id needs them or has settled


class Plan:
    """Tracks readiness of every node; see the module docstring for the life cycle."""

    def __init__(
        self,
        cg: CompiledGraph,
        *,
        select: str = "preferred",
        jobs: int = 4,
        skip: dict[str, tuple] | None = None,
        clock: Callable[[], float] = time.monotonic,
        overlay: Overlay | None = None,
    ) -> None:
        """`skip` maps node id -> (reason, success, values[, code]) for nodes settled before the
        run (not needed, outside --only, already ran); `success` with `values` lets a
        module that already ran still provide its capabilities. `overlay`: extra nodes and
        edges (a strategy's, from strategies.overlay_for; milestones' gates); the plan itself
        knows no strategy. Raises ValueError for an unknown select mode or jobs < 1."""
        if select not in ("preferred", "first"):
            raise ValueError(f"unknown select mode {select!r}")
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.overlay = overlay = overlay or Overlay()
        self.cg, self.g = cg, cg.graph
        self.select, self.jobs = select, jobs
        self.clock = clock
        # Called once instance-id has settled, for each per-instance module still waiting:
        # may return (reason, values) to settle it as already done (its marker).
        self.done_for_instance: Callable[[str, str], tuple[str, dict] | None] | None = None
        self.nodes: dict[str, NodeState] = {n: NodeState(n, cg.specs[n].kind) for n in cg.specs}
        for gate in overlay.gates:
            self.nodes[gate] = NodeState(gate, "gate")
        self.caps: dict[str, CapState] = {n[4:]: CapState(n[4:]) for n in self.g if n.startswith("cap:")}
        self._ready_sources: list[tuple] = []
        self._ready_modules: list[tuple] = []
        self._running = {"source": 0, "module": 0, "gate": 0}
        self._ended = 0
        # networkx's topological_sort order (frozengraph.py), precomputed in a FrozenGraph.
        self.order: list[str] = topological_order(self.g)  # also used by the record
        self._longest = longest_remaining(self.g, self.order)
        # (neighbour, edge kind) per node: networkx edge views cost a lot per call. A FrozenGraph
        # (what `cidag run` runs) holds them from compile time; they are shared, never changed.
        self.inputs, self.outputs = adjacency(self.g)
        if overlay.edges or overlay.gates:
            self.inputs, self.outputs = dict(self.inputs), dict(self.outputs)
            extra_in: dict[str, list] = {g: [] for g in overlay.gates}
            extra_out: dict[str, list] = {g: [] for g in overlay.gates}
            for u, v, kind in overlay.edges:
                extra_out.setdefault(u, []).append((v, kind))
                extra_in.setdefault(v, []).append((u, kind))
            for n, extra in extra_in.items():
                self.inputs[n] = self.inputs.get(n, ()) + tuple(extra)
            for n, extra in extra_out.items():
                self.outputs[n] = self.outputs.get(n, ()) + tuple(extra)
        self.obsolete: list[str] = []  # running sources that can no longer change anything
        # Sources declaring instance-id: once it resolves to one of them, the others are
        # other platforms' sources for what that one declares (docs/engine.md).
        self._iid_sources = {p for p in cg.providers.get(IID, []) if p.startswith("source:")}
        if len(self._iid_sources) < 2:
            self._iid_sources = set()  # one platform at most: nothing to tell apart
        self.start_order: list[str] = []
        self.end_order: list[str] = []  # every node as it reaches a final status
        # Held sources (docs/engine.md "A reboot of the same instance"): ready ones wait here.
        self.held = set(overlay.held)
        self._held_ready: set[str] = set()
        for node, state in self.nodes.items():
            state.pending = len(self.inputs.get(node, ()))
        for node, entry in (skip or {}).items():
            reason, success, values = entry[:3]
            code = entry[3] if len(entry) > 3 else ""
            state = self.nodes[node]
            if not state.final:
                self._finish(state, "skipped", reason, success=success, values=values, code=code)

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Evaluate the nodes with no inputs; call once before the first next_to_start()."""
        for cap in self.caps.values():
            if not self.cg.providers.get(cap.name):
                self._try_settle(cap)  # nothing provides it: unavailable from the start
        for node, state in list(self.nodes.items()):
            if state.status == "waiting" and state.pending == 0:
                self._evaluate(state)
        if self.held and IID in self.caps:
            self._try_settle(self.caps[IID])  # releases the held source instance-id waits for

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
        lanes = self.overlay.lanes
        while True:
            if lanes is not None and self._running["source"] + self._running["module"] >= lanes:
                break
            if self._ready_sources:
                heap, kind = self._ready_sources, "source"
            elif self._ready_modules and self._running["module"] < self.jobs:
                heap, kind = self._ready_modules, "module"
            else:
                break
            node = heapq.heappop(heap)[-1]
            state = self.nodes[node]
            if kind == "source" and self._source_obsolete(node):
                # What it offers was settled while it waited (e.g. its consumers already ran).
                self._finish(state, "skipped", NOT_NEEDED, success=False, values={}, code=NOT_NEEDED_CODE)
                continue
            state.status, state.start = "running", now
            self._running[kind] += 1
            self.start_order.append(node)
            out.append(node)
        return out

    def finished(self, node: str, status: str, *, reason: str = "", values: dict | None = None,
                 code: str = "") -> None:
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
        self._finish(state, status, reason, success=success, values=values or {}, code=code)

    def skip(self, node: str, reason: str, *, success: bool = False, values: dict | None = None,
             code: str = "") -> None:
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
        self._finish(state, "skipped", reason, success=success, values=values or {}, code=code)

    def abandon(self, reason: str, status: str = "skipped", code: str = "") -> None:
        """End the run: every node not yet final is marked with `status` (running ones
        become 'interrupted' when status is 'interrupted')."""
        now = self.clock()
        for node, state in self.nodes.items():
            if state.final:
                continue
            if state.status == "running":
                self._running[state.kind] -= 1
                state.status = "interrupted" if status == "interrupted" else "skipped"
                state.end = now
            else:
                state.status = "done" if state.kind == "gate" else "skipped"
            state.reason, state.code = reason, code
            self._ended += 1
            self.end_order.append(node)
        self._ready_sources.clear()
        self._ready_modules.clear()

    # -- internals ----------------------------------------------------------

    def _finish(self, state: NodeState, status: str, reason: str, *, success: bool, values: dict,
                code: str = "", cause: str | None = None) -> None:
        if state.status == "running" or state.start is not None:
            state.end = self.clock()
        state.status, state.reason, state.success = status, reason, success
        state.code, state.cause = code, cause
        state.values = values if success else {}
        state.seq = self._ended
        self._ended += 1
        self.end_order.append(state.id)
        caps = self.caps
        for succ, kind in self.outputs.get(state.id, ()):
            if kind == "exports" or kind == "provides":
                self._try_settle(caps[succ[4:]], finished=state.id)
            else:  # depends_on / after / gate / fallback
                self._input_done(succ, doomed=kind == "depends_on" and not success)
        if state.kind == "module" and not success and state.start is None:
            self._drop_unread_sources(state.id)

    def _input_done(self, node: str, doomed: bool = False) -> None:
        """One input of `node` ended or settled; `doomed`: it was a failed hard input.

        A node with a hard input that failed (a `needs` unavailable, a `depends_on` not ok)
        is skipped at once, not when its last soft input settles (spec §3.3): what it
        still waited for may be a stalled source that nothing else needs.
        """
        state = self.nodes[node]
        state.pending -= 1
        if state.status != "waiting":
            return
        # Every failed hard input comes through here doomed, and skips its node at once: a
        # node whose last input settles is never doomed by an earlier one (_evaluate trusts it).
        if doomed and self._skip_if_doomed(state):
            return
        if state.pending == 0:
            self._evaluate(state)

    def _drop_unread_sources(self, node: str) -> None:
        """`node` will never run: a running source that only it was waiting for is obsolete."""
        for u, kind in self.inputs.get(node, ()):
            if kind not in ("needs", "wants") or self.caps[u[4:]].status != "pending":
                continue
            for p in self.cg.providers.get(u[4:], ()):
                self._mark_if_obsolete(p)

    def _mark_if_obsolete(self, p: str) -> None:
        """Queue `p` for cancelling if it is a running source nothing can use any more."""
        if (p.startswith("source:") and self.nodes[p].status == "running" and p not in self.obsolete
                and self._source_obsolete(p)):
            self.obsolete.append(p)

    def _other_instance(self, cap: str, p: str, earlier: list[str]) -> bool | None:
        """Whether provider `p` of `cap` is another platform's source for it: instance-id
        resolved to a source S that declares `cap`, and `p` is a different source that
        also declares instance-id (under preferred: one after S). None: not known yet."""
        if cap == IID or p not in self._iid_sources:
            return False
        iid = self.caps.get(IID)
        if iid is None or iid.status == "unavailable":
            return False
        if iid.status == "pending":
            if self.select == "first":
                return False
            # Only an earlier source that gave instance-id can turn out to be S with p after it.
            gave = any(self.nodes[e].success and IID in self.nodes[e].values for e in earlier
                       if e in self._iid_sources)
            return None if gave else False
        s = iid.provider
        if s == p or s not in self._iid_sources or cap not in self.cg.specs[s].capabilities:
            return False
        return self.select == "first" or self.cg.specs[p].index > self.cg.specs[s].index

    def _try_settle(self, cap: CapState, finished: str | None = None) -> None:
        if cap.status != "pending":
            return
        name = cap.name
        providers = self.cg.providers.get(name, ())
        nodes = self.nodes
        chosen, waited = None, []
        if self.select == "first":
            pending = False
            pending_all_held = True
            for p in providers:
                st = nodes[p]
                if p in self._iid_sources and self._other_instance(name, p, ()):
                    continue
                if not st.final:
                    pending = True
                    pending_all_held = pending_all_held and p in self.held
                    continue
                waited.append(p)
                if st.success and name in st.values and (chosen is None or st.seq < nodes[chosen].seq):
                    chosen = p
            if chosen is None and pending:
                if name == IID and pending_all_held and self.held:
                    for p in providers:
                        self._release(p)  # nothing else can give it: ask them now
                return
            if chosen is not None:
                waited = [chosen]
        else:
            for p in providers:
                st = nodes[p]
                if self._iid_sources and p in self._iid_sources:
                    other = self._other_instance(name, p, waited)
                    if other:
                        continue
                    if other is None:
                        return  # settle once instance-id has: it decides whether p counts
                if not st.final:
                    if name == IID and p in self.held:
                        self._release(p)  # instance-id waits for it: it is needed after all
                    return
                waited.append(p)
                if st.success and name in st.values:
                    chosen = p
                    break
        cap.settled = self.clock()
        cap.waited_for = [p for p in waited if nodes[p].start is not None] or waited
        cap.faulty = any(nodes[p].status == "failed" for p in waited)
        if chosen is not None:
            cap.status, cap.provider = "resolved", chosen
        else:
            cap.status = "unavailable"
            cap.reason = self._why_unavailable(name, providers)
        if name == IID:
            self._instance_settled(cap)  # before its consumers see it: markers settle them cheaply
        unavailable = cap.status == "unavailable"
        for consumer, kind in self.outputs.get(f"cap:{name}", ()):
            self._input_done(consumer, doomed=unavailable and kind == "needs")
        for p in providers:
            self._mark_if_obsolete(p)

    def _release(self, node: str) -> None:
        """A held source may start (it is checked for being needed when it would start)."""
        self.held.discard(node)
        if node in self._held_ready:
            self._held_ready.discard(node)
            state = self.nodes[node]
            if state.status != "held":
                return
            state.status = "ready"
            heapq.heappush(self._ready_sources, (self.cg.specs[node].index, node))

    def _instance_settled(self, cap: CapState) -> None:
        """instance-id just settled: judge per-instance markers now, release the held sources
        (each starts only if some node still needs it), and let capabilities that waited to
        learn the instance's source settle."""
        if cap.status == "resolved" and self.done_for_instance is not None:
            iid = self.nodes[cap.provider].values.get(IID)
            for node, spec in self.cg.specs.items():
                state = self.nodes[node]
                if spec.kind != "module" or spec.frequency != "per-instance" or state.final or state.status == "running":
                    continue
                done = self.done_for_instance(node, iid)
                if done is not None:
                    self.skip(node, done[0], success=True, values=done[1], code=ALREADY_RAN)
        for node in list(self.held):
            self._release(node)
        if self._iid_sources:
            # Every capability that waited to learn the instance's source, not only those the
            # instance's source declares: one only other platforms' sources offer is now settled.
            for c in list(self.caps.values()):
                if c.status == "pending":
                    self._try_settle(c)

    def _source_obsolete(self, source: str) -> bool:
        """A source is obsolete when none of its capabilities is still pending for a node
        that may yet run: whatever it answers, nothing changes."""
        for cap, kind in self.outputs[source]:
            if kind != "exports" or self.caps[cap[4:]].status != "pending":
                continue
            if any(not self.nodes[c].final for c, _ in self.outputs[cap]):
                return False
        return True

    def _why_unavailable(self, cap: str, providers) -> str:
        if not providers:
            return "no source or module provides it"
        parts = []
        iid = self.caps.get(IID)
        for p in providers:
            st = self.nodes[p]
            name = p.split(":", 1)[1]
            if self._other_instance(cap, p, []):
                parts.append(f"{name} not asked ({iid.provider.split(':', 1)[1]} is this instance's source)")
            elif st.success:
                parts.append(f"{name}: {st.reason}" if st.reason else f"{name} {st.status} but gave no {cap}")
            else:
                parts.append(f"{name} {st.status}" + (f" ({st.reason})" if st.reason else ""))
        return "; ".join(parts)

    def _skip_if_doomed(self, state: NodeState) -> bool:
        """Skip `state` if a hard input has failed (the first in input order names the cause)."""
        for u, kind in self.inputs[state.id]:
            if kind == "needs" and self.caps[u[4:]].status == "unavailable":
                cap = self.caps[u[4:]]
                self._finish(state, "skipped", f"capability {cap.name} unavailable: {cap.reason}",
                             success=False, values={}, code=CAP_UNAVAILABLE, cause=u)
                return True
            if kind == "depends_on" and self.nodes[u].final and not self.nodes[u].success:
                dep = self.nodes[u]
                what = _WHICH.get(dep.status, dep.status)
                why = f" ({dep.reason})" if dep.reason else ""
                self._finish(state, "skipped", f"depends on {u[7:]}, which {what}{why}",
                             success=False, values={}, code=DEPENDENCY, cause=u)
                return True
        return False

    def _evaluate(self, state: NodeState) -> None:
        node = state.id
        if state.kind == "gate":
            self._finish(state, "done", "", success=True, values={})
            return
        if state.kind == "source":  # only a source has fallback inputs (strategies.py)
            for u, kind in self.inputs[node]:
                if kind == "fallback":
                    prev = self.nodes[u]
                    if prev.success or prev.code == FALLBACK:
                        chosen = u if prev.success else prev.cause
                        self._finish(state, "skipped", self.overlay.fallback_text.format(chosen.split(":", 1)[1]),
                                     success=False, values={}, code=FALLBACK, cause=chosen)
                        return
        if node in self.held and self.caps[IID].status == "pending":
            state.status = "held"
            self._held_ready.add(node)
            return
        state.status = "ready"
        spec = self.cg.specs[node]
        if state.kind == "source":
            heapq.heappush(self._ready_sources, (spec.index, node))
        elif self.overlay.order == "name":
            heapq.heappush(self._ready_modules, (spec.priority, spec.name, node))
        else:
            heapq.heappush(self._ready_modules, (spec.priority, -self._longest[node], spec.name, node))
