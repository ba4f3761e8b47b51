"""Small things a new user trips on: conflicting output flags, a run without an instance-id,
--dry-run and markers, --root for every command that reads state."""
from __future__ import annotations

from conftest import cidag

SOURCES = """
version: 1
sources:
  - {name: cd, type: static, capabilities: [hostname], settings: {data: {hostname: h9}}}
"""
MODULES = """
version: 1
modules:
  - {name: host, type: exec, frequency: per-boot, needs: [hostname], settings: {command: 'true'}}
"""


def test_graph_refuses_two_formats(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    proc = cidag("graph", "--dot", "--mermaid", "--sources", s, "--modules", m)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "cidag: --dot and --mermaid: choose one output format\n"
    assert cidag("graph", "--json", "--dot", "--sources", s, "--modules", m).returncode == 2
    assert cidag("graph", "--mermaid", "--sources", s, "--modules", m).stdout.startswith("flowchart")


def test_summary_of_a_run_without_instance_id(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    root = tmp_path / "root"
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    last = [line for line in proc.stdout.splitlines() if line.startswith("result:")][0]
    assert last.endswith("no instance-id") and "None" not in proc.stdout
    status = cidag("status", "--root", str(root))
    assert "None" not in status.stdout and "no instance-id" in status.stdout
