"""`--strategy` as nodes and edges laid over the compiled graph (spec §3.4), so the plan knows none.

- `one-step`: nothing added.
- `two-step`: a `gate:sources` node waits for every source in the run; every
  module waits for the gate, except the modules some source waits on (e.g. one
  providing `network-online` to an HTTP source), which would otherwise deadlock.
- `serial`: the same gate; the sources in the run form a `fallback` chain in
  preference order (each starts once the one before has ended, and is skipped
  when an earlier one was available: the first available source serves every
  capability); one node at a time; ready modules in (priority, name) order.
"""
from __future__ import annotations

from .compiler import CompiledGraph, ancestors
from .plan import Overlay

GATE = "gate:sources"


def overlay_for(cg: CompiledGraph, strategy: str, skip: dict) -> Overlay:
    """The overlay of `strategy` for a run whose nodes in `skip` are settled before it starts."""
    if strategy == "one-step":
        return Overlay()
    sources = [s.node_id for s in cg.manifests.sources if s.node_id not in skip]
    modules = [m.node_id for m in cg.manifests.modules if m.node_id not in skip]
    exempt = {a for a in ancestors(cg.graph, sources) if a.startswith("module:")}
    edges = [(s, GATE, "gate") for s in sources]
    edges += [(GATE, m, "gate") for m in modules if m not in exempt]
    if strategy == "two-step":
        return Overlay(gates=[GATE], edges=edges)
    if strategy == "serial":
        edges += [(a, b, "fallback") for a, b in zip(sources, sources[1:])]
        return Overlay(gates=[GATE], edges=edges, lanes=1, order="name",
                       fallback_text="not probed: serial strategy uses {}")
    raise ValueError(f"unknown strategy {strategy!r}")
