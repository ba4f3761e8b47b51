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


MARKED_SOURCES = """
version: 1
sources:
  - {name: cd, type: static, capabilities: [instance-id, hostname], settings: {data: {instance-id: i-9, hostname: h9}}}
  - {name: spare, type: static, capabilities: [vendor-data], settings: {data: {vendor-data: x}}}
"""
MARKED_MODULES = """
version: 1
modules:
  - {name: host, type: exec, needs: [hostname], provides: [named], settings: {command: 'echo "{\\\\"named\\\\": 1}"'}}
  - {name: motd, type: exec, wants: [named], after: [host], settings: {command: 'true'}}
  - {name: first, type: exec, frequency: once, settings: {command: 'true'}}
  - {name: every, type: exec, frequency: per-boot, needs: [named], settings: {command: 'true'}}
"""


def _dry(s, m, root, *extra):
    proc = cidag("run", "--dry-run", "--format", "json", "--sources", s, "--modules", m, "--root", str(root), *extra)
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout)
    return out["start_order"], {n["id"]: n["reason"] for n in out["skipped"]}


def test_dry_run_lists_what_markers_would_skip(tmp_path, manifests):
    s, m = manifests(MARKED_SOURCES, MARKED_MODULES)
    root = tmp_path / "root"
    order, skipped = _dry(s, m, root)
    assert order == ["source:cd", "module:first", "module:host", "module:every", "module:motd"]
    assert skipped == {"source:spare": "not needed"}
    assert not root.exists()  # a dry run writes nothing
    assert cidag("run", "-q", "--sources", s, "--modules", m, "--root", str(root)).returncode == 0
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    order, skipped = _dry(s, m, root)
    # the sources are still probed (a real run learns the instance-id from them); `every`
    # is per-boot and gets `named` from host's marker
    assert order == ["source:cd", "module:every"]
    assert skipped["module:host"] == skipped["module:motd"] == "already ran for instance i-9 (the last run's instance-id)"
    assert skipped["module:first"] == "already ran once on this machine"
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    order, skipped = _dry(s, m, root, "--force", "host")
    assert order == ["source:cd", "module:host", "module:every"] and "module:host" not in skipped
    order, _ = _dry(s, m, root, "--force-all")
    assert len(order) == 5
    text = cidag("run", "--dry-run", "--sources", s, "--modules", m, "--root", str(root)).stdout.splitlines()
    assert text[:2] == ["  1. source:cd", "  2. module:every"] and text[2] == "skipped:"
    assert any(line.split()[:2] == ["module:first", "already"] for line in text[3:])


def test_commands_that_read_state_take_root_and_cidag_root(tmp_path, manifests):
    s, m = manifests(SOURCES.replace("[hostname]", "[instance-id, hostname]").replace("{hostname: h9}",
                                                                                     "{instance-id: i-7, hostname: h9}"),
                     MODULES)
    root = tmp_path / "root"
    assert cidag("run", "-q", "--sources", s, "--modules", m, "--root", str(root)).returncode == 0
    reads = [("status",), ("query", "hostname"), ("analyze", "blame"), ("analyze", "critical-chain"),
             ("analyze", "plot", "-o", str(tmp_path / "t.svg")), ("analyze", "trace", "-o", str(tmp_path / "t.json"))]
    for args in reads:
        by_option = cidag(*args, "--root", str(root))
        by_env = cidag(*args, env={"CIDAG_ROOT": str(root)})
        assert by_option.returncode == by_env.returncode == 0, (args, by_option.stderr, by_env.stderr)
        assert by_option.stdout == by_env.stdout
    assert cidag("query", "hostname", env={"CIDAG_ROOT": str(root)}).stdout == "h9\n"
    # --state-dir still wins, and the error says where it looked
    other = tmp_path / "elsewhere"
    proc = cidag("analyze", "blame", "--state-dir", str(other), env={"CIDAG_ROOT": str(root)})
    assert proc.returncode == 2 and proc.stderr.startswith(f"{other}/last-run.json: no run record")
    # cidag run itself honours CIDAG_ROOT: a second root gets its own state
    second = tmp_path / "second"
    assert cidag("run", "-q", "--sources", s, "--modules", m, env={"CIDAG_ROOT": str(second)}).returncode == 0
    assert (second / "var/lib/cidag/last-run.json").is_file()
