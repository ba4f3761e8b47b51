"""Compile validated manifests into one networkx DAG and lint it (spec §3.1).

networkx is imported only where a graph is built or linted: `cidag run` with a
warm compiled-plan cache gets a FrozenGraph (frozengraph.py) and never imports it.

Nodes are `source:NAME`, `cap:NAME`, `module:NAME` with attribute `kind`;
each edge has `kind` (needs, wants, depends_on, after, provides, exports) and
the file, line and column that declared it, so a cycle names its edges.
"""
from __future__ import annotations

import contextlib
import difflib
import gc
import itertools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .errors import Diagnostic, ManifestError
from .frozengraph import longest_remaining, topological_order  # noqa: F401 - re-exported
from .manifest import Manifests, ModuleSpec, SourceSpec

if TYPE_CHECKING:
    import networkx as nx

SOFT_EDGES = frozenset({"wants", "after"})


@dataclass
class CompiledGraph:
    """The DAG plus what the planner reads often: specs by node and providers by capability.

    `graph` is a networkx DiGraph as compiled, or its FrozenGraph copy (frozengraph.py) in
    what `cidag run` loads (plancache.py): the run path reads only what both have."""

    graph: Any  # nx.DiGraph | FrozenGraph
    manifests: Manifests
    specs: dict[str, SourceSpec | ModuleSpec]
    providers: dict[str, list[str]]  # capability -> provider node ids, most preferred first
    diagnostics: list[Diagnostic] = field(default_factory=list)


def cap_id(name: str) -> str:
    return f"cap:{name}"


def compile_manifests(m: Manifests) -> CompiledGraph:
    """Build the graph; raise ManifestError if it has errors (cycles, unprovided needs).

    Warnings are kept in `.diagnostics` (with the manifests' own warnings).
    """
    cg = build_graph(m)
    errors = [d for d in cg.diagnostics if d.severity == "error"]
    if errors:
        raise ManifestError(errors + [d for d in cg.diagnostics if d.severity != "error"])
    return cg


def build_graph(m: Manifests) -> CompiledGraph:
    """Build the graph and collect every diagnostic without raising."""
    import networkx as nx

    g = nx.DiGraph()
    specs: dict[str, SourceSpec | ModuleSpec] = {}
    diags: list[Diagnostic] = list(m.warnings)
    modules_by_name = {mod.name: mod for mod in m.modules}
    hints_left = 100
    # Nodes and edges are collected, then added in two calls: networkx's add_node/add_edge
    # cost a few microseconds each (a third of `check` on 10,000 modules). The order is the
    # one adding them one by one gave: sources, modules, then each capability where an edge
    # first names it; an edge given twice keeps its first place and its last attributes.
    nodes: list[tuple[str, dict]] = []
    edges: list[tuple[str, str, dict]] = []
    caps: dict[str, str] = {}  # capability node -> name, in order of first use
    pairs: set[tuple[str, str]] = set()  # module -> module edges so far

    def where(spec, path: tuple) -> dict:
        doc = spec.doc
        at = doc.marks.get(spec.path + path)  # every list item has its own mark: the usual case
        line, col = at if at is not None else doc.where(spec.path + path)
        return {"file": doc.file, "line": line, "col": col}

    def add_cap(name: str) -> str:
        node = cap_id(name)
        if node not in caps:
            caps[node] = name
        return node

    for spec in (*m.sources, *m.modules):
        nid = spec.node_id
        nodes.append((nid, {"kind": spec.kind, "name": spec.name, "type": spec.type, **where(spec, ())}))
        specs[nid] = spec

    for s in m.sources:
        sid = s.node_id
        for i, cap in enumerate(s.capabilities):
            edges.append((sid, add_cap(cap), {"kind": "exports", **where(s, ("capabilities", i))}))
        for i, cap in enumerate(s.needs):
            edges.append((add_cap(cap), sid, {"kind": "needs", **where(s, ("needs", i))}))
    for mod in m.modules:
        mid = mod.node_id
        for i, cap in enumerate(mod.provides):
            edges.append((mid, add_cap(cap), {"kind": "provides", **where(mod, ("provides", i))}))
        for key in ("needs", "wants"):
            for i, cap in enumerate(getattr(mod, key)):
                edges.append((add_cap(cap), mid, {"kind": key, **where(mod, (key, i))}))
        if mod.frequency == "per-instance" and "instance-id" not in mod.needs:
            # A per-instance module cannot know whether it already ran without the instance id.
            at = ("frequency",) if "frequency" in mod.doc.data["modules"][mod.index] else ("name",)
            edges.append((add_cap("instance-id"), mid, {"kind": "needs", "implicit": True, **where(mod, at)}))
        for key in ("depends_on", "after"):
            for i, other in enumerate(getattr(mod, key)):
                target = modules_by_name.get(other)
                if target is None:
                    hints_left -= 1  # past a hundred unknown names a hint helps no one
                    hint = suggest(other, modules_by_name) if hints_left >= 0 else None
                    tail = f" (did you mean {hint!r}?)" if hint else ""
                    what = "a source; use needs on one of its capabilities" if any(s.name == other for s in m.sources) else "not a module"
                    diags.append(mod.doc.diag(mod.path + (key, i), f"{key}: {other!r} is {what}{tail}", code="unknown-module"))
                    continue
                pair = (target.node_id, mid)
                if pair in pairs:
                    continue  # depends_on wins over after for the same pair
                pairs.add(pair)
                edges.append((pair[0], mid, {"kind": key, **where(mod, (key, i))}))
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    for node, name in caps.items():
        g._node[node].update(kind="capability", name=name)

    providers: dict[str, list[str]] = {}
    for s in m.sources:
        for cap in s.capabilities:
            providers.setdefault(cap, []).append(s.node_id)
    for mod in m.modules:
        for cap in mod.provides:
            providers.setdefault(cap, []).append(mod.node_id)

    cg = CompiledGraph(g, m, specs, providers, diags)
    diags.extend(_cycles(g))
    diags.extend(_unprovided(cg))
    diags.extend(_never_run(cg))
    diags.extend(_unused_sources(cg))
    return cg


def _edge_where(g: nx.DiGraph, u: str, v: str) -> str:
    d = g.edges[u, v]
    return f"{os.path.basename(d['file'])}:{d['line']}"


def _cycles(g: nx.DiGraph) -> list[Diagnostic]:
    """One diagnostic per strongly connected component that holds a cycle, in file order and
    each starting at its first node in file order: the same text whatever PYTHONHASHSEED is."""
    import networkx as nx

    if _acyclic(g):
        return []  # the usual case, found in one pass (strongly_connected_components costs more)
    rank = {n: i for i, n in enumerate(g)}  # insertion order: sources, modules, then capabilities
    out = []
    comps = [sorted(c, key=rank.__getitem__) for c in nx.strongly_connected_components(g)]
    for comp in sorted(comps, key=lambda c: rank[c[0]]):
        if len(comp) == 1 and not g.has_edge(comp[0], comp[0]):
            continue
        members = set(comp)
        start = next((n for n in comp if not n.startswith("cap:")), comp[0])
        edges = _cycle_from(g, start, members, rank)
        u0, v0 = edges[0]
        d0 = g.edges[u0, v0]
        chain = " -> ".join(
            f"{u} -[{g.edges[u, v]['kind']} at {_edge_where(g, u, v)}]" for u, v in edges
        ) + f" -> {edges[0][0]}"
        out.append(Diagnostic(d0["file"], d0["line"], d0["col"],
                              f"dependency cycle: {chain}", code="cycle"))
    return out


def _acyclic(g: nx.DiGraph) -> bool:
    """True when `g` has no cycle: Kahn's walk reaches every node."""
    pred, succ = g._pred, g._succ
    left = {n: len(p) for n, p in pred.items()}
    ready = [n for n, k in left.items() if k == 0]
    seen = 0
    while ready:
        n = ready.pop()
        seen += 1
        for v in succ[n]:
            left[v] -= 1
            if left[v] == 0:
                ready.append(v)
    return seen == len(left)


def _cycle_from(g: nx.DiGraph, start: str, members: set, rank: dict) -> list[tuple[str, str]]:
    """The shortest cycle through `start` inside its component, ties broken by file order
    (breadth-first over successors sorted by rank)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for u in frontier:
            for v in sorted((v for v in g._succ[u] if v in members), key=rank.__getitem__):
                if v == start:
                    path = [u]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    path.reverse()
                    return list(zip(path, path[1:] + [start]))
                if v not in parent:
                    parent[v] = u
                    nxt.append(v)
        frontier = nxt
    raise AssertionError("a strongly connected component without a cycle")


# Capabilities the spec names (§1) and the built-in source types export: a `needs` on one of
# them that no source here offers is this cloud's choice, not a typo.
WELL_KNOWN = frozenset({
    "instance-id", "hostname", "public-keys", "user-data", "vendor-data", "network-config",
    "admin-password", "post-password", "availability-zone", "local-ipv4",
})


def known_capabilities() -> frozenset[str]:
    """WELL_KNOWN plus what every built-in source type declares (imported only when asked)."""
    import importlib

    from .sources import BUILTIN_SOURCES

    out = set(WELL_KNOWN)
    for modname in set(BUILTIN_SOURCES.values()):
        try:
            mod = importlib.import_module(modname.partition(":")[0])
        except Exception:  # noqa: BLE001 - a broken type is reported where it is used
            continue
        out.update(c for c in getattr(mod, "CAPABILITIES", ()) if " " not in c)
    return frozenset(out)


def _unprovided(cg: CompiledGraph) -> list[Diagnostic]:
    out = []
    g = cg.graph
    known: frozenset[str] | None = None
    for node in g:
        if not node.startswith("cap:") or cg.providers.get(node[4:]):
            continue
        cap = node[4:]
        for _, consumer, d in g.out_edges(node, data=True):
            spec = cg.specs[consumer]
            who = f"{spec.kind} {spec.name!r}"
            if d["kind"] == "needs":
                if d.get("implicit"):
                    msg = (f"module {spec.name!r} is per-instance and so needs 'instance-id', which no source "
                           "or module provides (add one, or set frequency: per-boot)")
                    out.append(Diagnostic(d["file"], d["line"], d["col"], msg, "error", "unprovided-need"))
                    continue
                if known is None:
                    known = known_capabilities()
                if cap in known:
                    # Not a typo: this cloud's sources simply do not offer it (an EC2-only
                    # sources.yaml and set-password's admin-password).
                    msg = (f"{who} needs {cap!r}, which no source or module here provides: "
                           "it will always be skipped")
                    out.append(Diagnostic(d["file"], d["line"], d["col"], msg, "warning", "unprovided-need"))
                else:
                    msg = f"{who} needs {cap!r}, which no source or module provides"
                    out.append(Diagnostic(d["file"], d["line"], d["col"], msg, "error", "unprovided-need"))
            else:
                out.append(Diagnostic(d["file"], d["line"], d["col"],
                                      f"{who} wants {cap!r}, which no source or module provides",
                                      "warning", "unprovided-want"))
    return out


def _never_run(cg: CompiledGraph) -> list[Diagnostic]:
    """Modules that can never run: a need whose every provider can never succeed, or a
    depends_on on such a module. One worklist pass: linear in the edges."""
    g = cg.graph
    succ, pred = g._succ, g._pred
    dead: set[str] = set()
    live_providers = {cap: len(p) for cap, p in cg.providers.items()}
    work = [n for n in cg.specs
            if any(d["kind"] == "needs" and not cg.providers.get(u[4:]) for u, d in pred[n].items())]
    dead.update(work)
    while work:
        node = work.pop()
        for v, d in succ[node].items():
            kind = d["kind"]
            if kind == "depends_on" and v not in dead:
                dead.add(v)
                work.append(v)
            elif kind in ("provides", "exports"):
                cap = v[4:]
                live_providers[cap] -= 1
                if live_providers[cap] == 0:
                    for c, dc in succ[v].items():
                        if dc["kind"] == "needs" and c not in dead:
                            dead.add(c)
                            work.append(c)
    out = []
    for node in sorted(dead, key=lambda n: (cg.specs[n].doc.file, cg.specs[n].kind, cg.specs[n].index)):
        spec = cg.specs[node]
        blocked = [u for u, d in pred[node].items() if d["kind"] == "needs" and not cg.providers.get(u[4:])]
        if blocked and spec.kind == "module":
            continue  # already reported: unprovided need
        out.append(spec.doc.diag(spec.path + ("name",),
                                 f"{spec.kind} {spec.name!r} can never run: what it needs can never be provided",
                                 severity="warning", code="never-runs"))
    return out


def suggest(word: str, known, limit: int = 200) -> str | None:
    """A close name from `known` for a misspelt `word`, or None. Compares with at most
    `limit` names of similar length (an index built once per `known`), so 2,000 unknown
    names among 10,000 stay fast."""
    if len(word) > 100:
        return None
    index = _index_for(known)
    near: list[str] = []
    for length in sorted(range(len(word) - 3, len(word) + 4), key=lambda n: abs(n - len(word))):
        near.extend(index.get((length, word[:1]), ()))
        if len(near) >= limit:
            break
    for length in range(len(word) - 3, len(word) + 4):
        if len(near) >= limit:
            break
        near.extend(itertools.islice((n for n in index.get(length, ()) if n[:1] != word[:1]), limit - len(near)))
    hint = difflib.get_close_matches(word, near[: limit * 2], n=1)
    return hint[0] if hint else None


_INDEX: tuple | None = None


def _index_for(known) -> dict:
    """Names by length and by (length, first letter); kept for the last `known` seen."""
    global _INDEX
    if _INDEX is not None and _INDEX[0] == id(known) and _INDEX[2] == len(known):
        return _INDEX[1]
    index: dict = {}
    for name in known:
        index.setdefault(len(name), []).append(name)
        index.setdefault((len(name), name[:1]), []).append(name)
    _INDEX = (id(known), index, len(known))
    return index


def _unused_sources(cg: CompiledGraph) -> list[Diagnostic]:
    g = cg.graph
    out = []
    for s in cg.manifests.sources:
        used = any(g.out_degree(cap_id(c)) for c in s.capabilities)
        if s.capabilities and not used:
            out.append(s.doc.diag(s.path + ("name",),
                                  f"source {s.name!r} serves no capability any module needs or wants; it will not be probed",
                                  severity="warning", code="unused-source"))
    return out


def ancestors(g: nx.DiGraph, starts, skip_kinds: frozenset = frozenset()) -> set[str]:
    """Every node some node of `starts` depends on, in one walk (not one per start);
    edges whose kind is in `skip_kinds` are not followed."""
    seen: set[str] = set()
    stack = list(starts)
    pred = g._pred  # networkx's own dict-of-dicts: much faster than its views
    while stack:
        node = stack.pop()
        for u, data in pred[node].items():
            if u not in seen and data["kind"] not in skip_kinds:
                seen.add(u)
                stack.append(u)
    return seen


def load_and_compile(sources: str | None = None, modules: str | None = None,
                     config_dir: str | None = None, env: Mapping[str, str] | None = None) -> CompiledGraph:
    """Find, load and compile the manifests (the lookup order of spec §2); `env` is what their
    ${VAR}s read (default os.environ). `cidag run` goes through plancache.load_for_run."""
    from .manifest import find_manifests, load_manifests  # not at the top: they import yaml

    s, m = find_manifests(sources, modules, config_dir)
    with collector_paused():
        return compile_manifests(load_manifests(s, m, env))


@contextlib.contextmanager
def collector_paused(freeze: bool = False) -> Iterator[None]:
    """No garbage collection inside: loading and compiling allocate many containers and free
    few, so each collection walks an ever larger heap for nothing (half of `check`'s time
    on 10,000 modules). `freeze`: what exists now is left out of later collections too."""
    enabled = gc.isenabled()
    if freeze:
        gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            # What was made inside goes to the oldest generation without a collection: the
            # first allocation after gc.enable() would otherwise walk all of it at once (a
            # tenth of a 5,000-node run), when most of it lives as long as the caller's result.
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()
