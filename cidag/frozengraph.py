"""The compiled graph as `cidag run` needs it: plain dicts, no networkx (docs/engine.md, "The compiled-plan cache").

`FrozenGraph` keeps networkx's own layout (`_node`, `_pred`, `_succ`: dicts of
dicts, one attribute dict per edge shared by both sides), so the code that walks
`g._pred` / `g._succ` works on either, plus the read-only methods the run path
calls. It also holds what the planner derives from the graph alone: a
topological order and each node's longest remaining path. It is what the
compiled-plan cache stores (plancache.py); importing networkx costs more than a
boot's whole planning.
"""
from __future__ import annotations

from typing import Any, Iterator


class FrozenGraph:
    """A read-only directed graph with networkx's dict-of-dicts layout and a few of its methods."""

    def __init__(self, nodes: dict[str, dict], succ: dict[str, dict[str, dict]]) -> None:
        """`nodes`: node -> attributes, in insertion order; `succ`: u -> {v: edge attributes}."""
        self._node = nodes
        self._succ = {n: succ.get(n, {}) for n in nodes}
        self._pred: dict[str, dict[str, dict]] = {n: {} for n in nodes}
        for u, outs in self._succ.items():
            for v, data in outs.items():
                self._pred[v][u] = data
        self.topo_order: tuple[str, ...] = tuple(topological_order(self))
        self.remaining: dict[str, int] = longest_remaining(self, self.topo_order)
        self.inputs, self.outputs = adjacency(self)

    @classmethod
    def from_graph(cls, g: Any) -> FrozenGraph:
        """A copy of a networkx DiGraph (or of another FrozenGraph), keeping every order."""
        nodes = {n: dict(d) for n, d in g._node.items()}
        succ: dict[str, dict[str, dict]] = {}
        for u, outs in g._succ.items():
            succ[u] = {v: dict(d) for v, d in outs.items()}
        # networkx orders each node's predecessors by edge insertion; rebuilding them from
        # the successor lists could differ, so keep its order explicitly.
        out = cls.__new__(cls)
        out._node, out._succ = nodes, succ
        out._pred = {v: {u: succ[u][v] for u in g._pred[v]} for v in nodes}
        out.topo_order = tuple(topological_order(out))
        out.remaining = longest_remaining(out, out.topo_order)
        out.inputs, out.outputs = adjacency(out)
        return out

    # -- the part of networkx's DiGraph interface the run path and tools use --

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __contains__(self, node: object) -> bool:
        try:
            return node in self._node
        except TypeError:
            return False

    def __len__(self) -> int:
        return len(self._node)

    def __getitem__(self, node: str) -> dict[str, dict]:
        return self._succ[node]

    def is_directed(self) -> bool:
        return True

    def has_node(self, node: str) -> bool:
        return node in self

    def has_edge(self, u: str, v: str) -> bool:
        return u in self._succ and v in self._succ[u]

    def successors(self, node: str) -> Iterator[str]:
        return iter(self._succ[node])

    def predecessors(self, node: str) -> Iterator[str]:
        return iter(self._pred[node])

    neighbors = successors

    def in_degree(self, node: str) -> int:
        return len(self._pred[node])

    def out_degree(self, node: str) -> int:
        return len(self._succ[node])

    def number_of_nodes(self) -> int:
        return len(self._node)

    def number_of_edges(self) -> int:
        return sum(len(outs) for outs in self._succ.values())

    def in_edges(self, node: str, data: bool = False) -> list[tuple]:
        return [(u, node, d) if data else (u, node) for u, d in self._pred[node].items()]

    def out_edges(self, node: str, data: bool = False) -> list[tuple]:
        return [(node, v, d) if data else (node, v) for v, d in self._succ[node].items()]

    @property
    def nodes(self) -> _Nodes:
        """`g.nodes[n]` (attributes), `n in g.nodes`, `g.nodes(data=True)`, as in networkx."""
        return _Nodes(self._node)

    @property
    def edges(self) -> _Edges:
        """`g.edges[u, v]` (attributes), `g.edges(data=True)`, as in networkx."""
        return _Edges(self._succ)


class _Nodes:
    def __init__(self, node: dict[str, dict]) -> None:
        self._node = node

    def __getitem__(self, n: str) -> dict:
        return self._node[n]

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __contains__(self, n: object) -> bool:
        return n in self._node

    def __call__(self, data: bool = False) -> list:
        return list(self._node.items()) if data else list(self._node)


class _Edges:
    def __init__(self, succ: dict[str, dict[str, dict]]) -> None:
        self._succ = succ

    def __getitem__(self, edge: tuple[str, str]) -> dict:
        u, v = edge
        return self._succ[u][v]

    def __contains__(self, edge: object) -> bool:
        try:
            u, v = edge  # type: ignore[misc]
            return v in self._succ[u]
        except (TypeError, ValueError, KeyError):
            return False

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((u, v) for u, outs in self._succ.items() for v in outs)

    def __len__(self) -> int:
        return sum(len(outs) for outs in self._succ.values())

    def __call__(self, data: bool = False) -> list:
        return [(u, v, d) if data else (u, v) for u, outs in self._succ.items() for v, d in outs.items()]


def topological_order(g: Any) -> list[str]:
    """A topological order of a networkx DiGraph or a FrozenGraph: the same list
    `networkx.topological_sort` gives (Kahn's algorithm by generations, nodes and
    successors in insertion order), computed without importing networkx.
    Raises ValueError on a cycle."""
    order = getattr(g, "topo_order", None)
    if order is not None:
        return list(order)
    pred, succ = g._pred, g._succ
    indegree = {v: len(pred[v]) for v in succ if pred[v]}
    generation = [v for v in succ if not pred[v]]
    out: list[str] = []
    while generation:
        out.extend(generation)
        nxt = []
        for node in generation:
            for child in succ[node]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    nxt.append(child)
                    del indegree[child]
        generation = nxt
    if indegree:
        raise ValueError("the graph has a cycle")
    return out


def adjacency(g: Any) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(inputs, outputs): for each node, its (neighbour, edge kind) pairs in networkx's order.
    What the planner walks at every event; a FrozenGraph holds them, made at compile time."""
    inputs = getattr(g, "inputs", None)
    if inputs is not None:
        return inputs, g.outputs
    pred, succ = g._pred, g._succ
    return ({n: tuple((u, d["kind"]) for u, d in pred[n].items()) for n in pred},
            {n: tuple((v, d["kind"]) for v, d in succ[n].items()) for n in succ})


def longest_remaining(g: Any, order: list[str] | tuple[str, ...] | None = None) -> dict[str, int]:
    """For each node, the number of source/module nodes on the longest path from it to a sink
    (`order`: a topological order of g, if the caller has one)."""
    remaining = getattr(g, "remaining", None)
    if remaining is not None:
        return dict(remaining)
    out: dict[str, int] = {}
    succ = g._succ
    for node in reversed(order if order is not None else topological_order(g)):
        own = 0 if node.startswith("cap:") else 1
        out[node] = own + max((out[s] for s in succ[node]), default=0)
    return out
