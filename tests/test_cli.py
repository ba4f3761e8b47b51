"""The command line as a user meets it: graph, run output, lookup order, entry-point plugins."""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest

from conftest import REPO, cidag, load_record

SOURCES = """
version: 1
sources:
  - {name: cd, type: static, capabilities: [instance-id, hostname], settings: {data: {instance-id: i-9, hostname: h9}}}
"""
MODULES = """
version: 1
modules:
  - {name: host, type: exec, needs: [hostname], settings: {command: 'printf %s "$CIDAG_CAP_HOSTNAME" > hostname'}}
  - {name: motd, type: exec, wants: [public-keys], after: [host], settings: {command: 'true'}}
"""


def test_shipped_manifests_check_clean():
    proc = cidag("check", "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok: ") and "warning" not in proc.stdout


def test_help_and_python_dash_m():
    proc = cidag("--help")
    assert proc.returncode == 0
    for name in ("run", "check", "graph", "status", "analyze", "query"):
        assert f"  {name} " in proc.stdout


def test_graph_dot_renders_with_graphviz(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    proc = cidag("graph", "--dot", "--sources", s, "--modules", m)
    assert proc.returncode == 0
    dot = proc.stdout
    assert '"source:cd" [label="cd\\n(source: static)", shape=box' in dot
    assert '"cap:hostname" [label="hostname", shape=ellipse' in dot
    assert '"module:host" -> "module:motd" [style=dashed, label="after"];' in dot
    assert '"cap:hostname" -> "module:host" [style=solid];' in dot
    if shutil.which("dot") is None:
        pytest.skip("Graphviz not installed (CI installs it)")
    svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True).stdout
    assert "<svg" in svg and "module:host" in svg


def test_graph_json(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    data = json.loads(cidag("graph", "--json", "--sources", s, "--modules", m).stdout)
    kinds = {(e["from"], e["to"]): e["kind"] for e in data["edges"]}
    assert kinds[("cap:instance-id", "module:host")] == "needs"  # implicit, per-instance
    assert kinds[("cap:public-keys", "module:motd")] == "wants"
    assert kinds[("source:cd", "cap:hostname")] == "exports"


def test_run_text_summary_and_exit_code(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    root = tmp_path / "root"
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert (root / "hostname").read_text() == "h9"
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NODE", "STATUS", "TIME", "REASON"]
    assert any(l.startswith("module:host") and " ok " in l for l in lines)
    assert any(l.startswith("result: ok") and "instance i-9" in l for l in lines)
    rec = load_record(root / "var/lib/cidag/last-run.json")
    assert rec["version"] == 1 and rec["instance_id"] == "i-9"
    for key in ("started_at", "makespan_s", "critical_path_s", "result", "nodes", "capabilities"):
        assert key in rec


def test_run_json_and_record_file(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    out = tmp_path / "record.json"
    proc = cidag("run", "--format", "json", "--record", str(out), "--sources", s, "--modules", m,
                 "--root", str(tmp_path / "r"))
    printed = json.loads(proc.stdout)
    assert printed == load_record(out)


def test_dry_run_cli(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    proc = cidag("run", "--dry-run", "--sources", s, "--modules", m, "--root", str(tmp_path / "r"))
    assert proc.stdout.split() == ["1.", "source:cd", "2.", "module:host", "3.", "module:motd"]
    assert not (tmp_path / "r").exists()


def test_failed_module_exit_1(tmp_path, manifests):
    s, m = manifests(SOURCES, "version: 1\nmodules:\n  - {name: bad, type: exec, settings: {command: 'exit 7'}}\n")
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(tmp_path / "r"))
    assert proc.returncode == 1
    assert any(l.startswith("module:bad") and "exit 7" in l for l in proc.stdout.splitlines())


def test_disabled_by_file_runs_nothing(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    root = tmp_path / "r"
    (root / "etc/cidag").mkdir(parents=True)
    (root / "etc/cidag/cidag.disabled").write_text("")
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root))
    assert proc.returncode == 0 and "disabled" in proc.stderr
    assert not (root / "hostname").exists()


def test_config_dir_lookup_order(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES, name="a")
    other_s, other_m = manifests(SOURCES.replace("h9", "from-env"), MODULES, name="b")
    r1 = cidag("check", "--config-dir", str(tmp_path / "a"), env={"CIDAG_CONFIG_DIR": str(tmp_path / "b")})
    assert f"ok: {tmp_path}/a/sources.yaml, {tmp_path}/a/modules.yaml" in r1.stdout
    r2 = cidag("check", env={"CIDAG_CONFIG_DIR": str(tmp_path / "b")})
    assert f"ok: {tmp_path}/b/sources.yaml" in r2.stdout
    # --sources alone wins for that file; modules.yaml still comes from the lookup.
    r3 = cidag("check", "--sources", s, env={"CIDAG_CONFIG_DIR": str(tmp_path / "b")})
    assert f"ok: {s}, {tmp_path}/b/modules.yaml" in r3.stdout


def test_check_tells_sources_from_modules_by_their_key(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    proc = cidag("check", m, s)
    assert proc.returncode == 0 and f"ok: {s}, {m}" in proc.stdout


def test_entry_point_plugin(tmp_path, manifests):
    """A pip-installed package adds a type under the entry-point group cidag.modules."""
    site = tmp_path / "site"
    (site / "hellopkg").mkdir(parents=True)
    (site / "hellopkg/__init__.py").write_text(textwrap.dedent("""
        SETTINGS = {"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]}
        def run(ctx):
            (ctx.root / "hello").write_text("hello " + ctx.settings["who"])
    """))
    dist = site / "hellopkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hellopkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cidag.modules]\nhello = hellopkg\n")
    s, m = manifests(SOURCES, "version: 1\nmodules:\n  - {name: hi, type: hello, settings: {who: world}}\n")
    env = {"PYTHONPATH": f"{REPO}:{site}"}
    root = tmp_path / "r"
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (root / "hello").read_text() == "hello world"
    bad = cidag("check", s, manifests(SOURCES, "version: 1\nmodules:\n  - {name: hi, type: hello, settings: {whom: x}}\n",
                                      name="bad")[1], env=env)
    assert bad.returncode == 2
    assert "hello: settings: unknown setting 'whom' (did you mean 'who'?)" in bad.stdout


def test_check_one_file_pairs_it_with_its_sibling(tmp_path, manifests):
    s, m = manifests(SOURCES, MODULES)
    proc = cidag("check", m)
    assert proc.returncode == 0 and f"ok: {s}, {m}" in proc.stdout
