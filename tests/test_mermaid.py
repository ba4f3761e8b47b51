"""cidag.mermaid.to_mermaid on a DiGraph built by hand, shaped like the compiler's."""
from __future__ import annotations

import networkx as nx

from cidag.mermaid import to_mermaid


def graph() -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node("source:configdrive", kind="source", name="configdrive", type="configdrive")
    g.add_node("cap:hostname", kind="capability", name="hostname")
    g.add_node("cap:public-keys", kind="capability", name="public-keys")
    g.add_node("module:create-user", kind="module", name="create-user", type='my.pkg:Users"x')
    g.add_node("module:set-hostname", kind="module", name="set-hostname", type="hostname")
    g.add_edge("source:configdrive", "cap:hostname", kind="exports")
    g.add_edge("source:configdrive", "cap:public-keys", kind="exports")
    g.add_edge("cap:hostname", "module:set-hostname", kind="needs")
    g.add_edge("cap:public-keys", "module:create-user", kind="wants")
    g.add_edge("module:create-user", "module:set-hostname", kind="after")
    g.add_edge("module:set-hostname", "cap:public-keys", kind="provides")  # any kind draws
    return g


def test_shapes_edges_and_classes():
    text = to_mermaid(graph())
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  n0[("configdrive<br/>configdrive")]' in lines
    assert '  n1(["hostname"])' in lines
    assert '  n3("create-user<br/>my.pkg:Users#quot;x")' in lines
    assert "  n0 --> n1" in lines
    assert "  n1 --> n4" in lines  # needs: solid, no label
    assert "  n2 -.->|wants| n3" in lines  # soft: dashed
    assert "  n3 -.->|after| n4" in lines
    assert "  n4 --> n2" in lines
    assert "  class n0 source" in lines and "  class n1,n2 capability" in lines
    assert "  class n3,n4 module" in lines
    assert text.endswith("\n") and to_mermaid(graph()) == text  # deterministic


def test_depends_on_is_solid_and_labelled():
    g = nx.DiGraph()
    g.add_node("module:a", kind="module", name="a")
    g.add_node("module:b", kind="module", name="b")
    g.add_edge("module:a", "module:b", kind="depends_on")
    assert "  n0 -->|depends_on| n1" in to_mermaid(g).splitlines()


def test_empty_graph():
    assert to_mermaid(nx.DiGraph()) == "flowchart LR\n"
