"""Draw a compiled graph: Graphviz DOT and plain JSON (Mermaid lives in mermaid.py)."""
from __future__ import annotations

import json

import networkx as nx

from .compiler import SOFT_EDGES

_NODE_STYLE = {
    "source": 'shape=box, style="filled", fillcolor="#cfe2ff"',
    "capability": 'shape=ellipse, style="filled", fillcolor="#fff3cd"',
    "module": 'shape=box, style="rounded,filled", fillcolor="#d1e7dd"',
    "milestone": 'shape=octagon, style="filled", fillcolor="#e2d9f3"',
}
MILESTONE = "milestone:"


def _milestone_edges(milestones: dict[str, list[str]] | None) -> list[tuple[str, str]]:
    return [(f"module:{m}", MILESTONE + name) for name, members in (milestones or {}).items() for m in members]


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(g: nx.DiGraph, milestones: dict[str, list[str]] | None = None) -> str:
    """Sources as blue boxes, capabilities as yellow ellipses, modules as green rounded
    boxes, milestones as purple octagons; hard edges solid, soft edges (wants, after)
    dashed, a module's edge to its milestone dotted."""
    lines = [
        "digraph cidag {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for node, data in g.nodes(data=True):
        kind = data["kind"]
        label = data["name"] if kind == "capability" else f"{data['name']}\n({kind}: {data.get('type', '')})"
        lines.append(f"  {_q(node)} [label={_q(label)}, {_NODE_STYLE[kind]}];")
    for u, v, data in g.edges(data=True):
        kind = data["kind"]
        style = "dashed" if kind in SOFT_EDGES else "solid"
        label = f", label={_q(kind)}" if kind in ("wants", "depends_on", "after") else ""
        lines.append(f"  {_q(u)} -> {_q(v)} [style={style}{label}];")
    for name in milestones or {}:
        lines.append(f"  {_q(MILESTONE + name)} [label={_q(name + chr(10) + '(milestone)')}, {_NODE_STYLE['milestone']}];")
    for u, v in _milestone_edges(milestones):
        lines.append(f"  {_q(u)} -> {_q(v)} [style=dotted];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(g: nx.DiGraph, milestones: dict[str, list[str]] | None = None) -> str:
    """{"nodes": [{id, kind, name, type}], "edges": [{from, to, kind, file, line}]}; milestones
    are nodes of kind `milestone`, reached through edges of kind `reaches`."""
    nodes = [{"id": n, "kind": d["kind"], "name": d["name"], **({"type": d["type"]} if "type" in d else {})}
             for n, d in g.nodes(data=True)]
    edges = [{"from": u, "to": v, "kind": d["kind"], "file": d.get("file"), "line": d.get("line")}
             for u, v, d in g.edges(data=True)]
    nodes += [{"id": MILESTONE + name, "kind": "milestone", "name": name} for name in milestones or {}]
    edges += [{"from": u, "to": v, "kind": "reaches", "file": None, "line": None} for u, v in _milestone_edges(milestones)]
    return json.dumps({"nodes": nodes, "edges": edges}, indent=1) + "\n"
