"""The compiled graph as a Mermaid flowchart, which GitHub renders inside Markdown.

Sources are cylinders, capabilities stadiums, modules rounded boxes (coloured as
in `graph --dot`); hard edges solid, soft edges (wants, after) dashed.
"""
from __future__ import annotations

from typing import Any

SOFT_EDGES = frozenset({"wants", "after"})
LABELLED = frozenset({"wants", "depends_on", "after"})  # needs/exports/provides read from the shapes
SHAPES = {"source": ('[("', '")]'), "capability": ('(["', '"])'), "module": ('("', '")')}
CLASSES = {
    "source": "fill:#cfe2ff,stroke:#5b7db1,color:#000",
    "capability": "fill:#fff3cd,stroke:#b59f3b,color:#000",
    "module": "fill:#d1e7dd,stroke:#4f8a6b,color:#000",
}


def _text(value: Any) -> str:
    # Inside a quoted Mermaid label only '"' breaks out; entity codes keep the rest literal.
    return str(value).replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(graph: Any) -> str:
    """Return a `flowchart LR` for a compiled networkx.DiGraph (node attr `kind`, edge attr `kind`)."""
    ids: dict[str, str] = {}
    lines = ["flowchart LR"]
    members: dict[str, list[str]] = {kind: [] for kind in SHAPES}
    for i, (node, data) in enumerate(graph.nodes(data=True)):
        nid = ids[node] = f"n{i}"
        kind = data.get("kind") or {"source": "source", "cap": "capability"}.get(str(node).partition(":")[0], "module")
        name = data.get("name") or str(node).partition(":")[2] or str(node)
        label = _text(name)
        if kind != "capability" and data.get("type"):
            label += f"<br/>{_text(data['type'])}"
        left, right = SHAPES.get(kind, SHAPES["module"])
        lines.append(f"  {nid}{left}{label}{right}")
        members.setdefault(kind, []).append(nid)
    for u, v, data in graph.edges(data=True):
        kind = data.get("kind", "")
        arrow = "-.->" if kind in SOFT_EDGES else "-->"
        label = f"|{kind}|" if kind in LABELLED else ""
        lines.append(f"  {ids[u]} {arrow}{label} {ids[v]}")
    for kind, style in CLASSES.items():
        if members.get(kind):
            lines.append(f"  classDef {kind} {style}")
            lines.append(f"  class {','.join(members[kind])} {kind}")
    return "\n".join(lines) + "\n"
