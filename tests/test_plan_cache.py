"""The compiled-plan cache and the click-free `cidag run` (docs/engine.md, "The compiled-plan cache")."""
from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest

import cidag.types
from cidag.compiler import build_graph
from cidag.engine import load_and_compile
from cidag.frozengraph import FrozenGraph, longest_remaining, topological_order
from cidag.plancache import CACHE_NAME, cache_dir, load_for_run
from conftest import REPO, cli_env

SOURCES = """
version: 1
sources:
  - {name: cd, type: static, capabilities: [instance-id, hostname],
     settings: {data: {instance-id: "i-${CACHE_TEST_IID:-default}", hostname: h9}}}
"""
MODULES = """
version: 1
modules:
  - {name: host, type: exec, needs: [hostname], settings: {command: 'printf %s "$CIDAG_CAP_HOSTNAME" > hostname'}}
  - {name: probe, type: "cachetest_plugin:run", after: [host], priority: 7, frequency: per-boot}
"""
# A module type that writes which of networkx and click the running process has imported.
PLUGIN = '''
import json, sys

def run(ctx):
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("networkx", "click"))
    (ctx.root / "imported.json").write_text(json.dumps(heavy))
'''


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A config dir with both manifests, the plugin on PYTHONPATH, a target root."""
    conf, plug = tmp_path / "conf", tmp_path / "plug"
    conf.mkdir()
    plug.mkdir()
    (conf / "sources.yaml").write_text(textwrap.dedent(SOURCES).lstrip())
    (conf / "modules.yaml").write_text(textwrap.dedent(MODULES).lstrip())
    (plug / "cachetest_plugin.py").write_text(PLUGIN)
    # Not at sys.path[0], which the key leaves out (the script's directory).
    monkeypatch.setattr(sys, "path", sys.path[:1] + [str(plug)] + sys.path[1:])
    monkeypatch.delenv("CACHE_TEST_IID", raising=False)
    sys.modules.pop("cachetest_plugin", None)
    monkeypatch.setattr(cidag.types, "_cache", {})  # types loaded by an earlier test's plugin module
    return conf, plug, tmp_path / "root"


def load(conf: Path, root: Path, **kw):
    return load_for_run(str(conf / "sources.yaml"), str(conf / "modules.yaml"), None,
                        cache=cache_dir(root), **kw)


def cache_file(root: Path) -> Path:
    return cache_dir(root) / CACHE_NAME


def written(root: Path) -> tuple:
    """Identity of the cache file: a compile writes a new one (temporary file, rename)."""
    st = os.stat(cache_file(root))
    return st.st_ino, st.st_mtime_ns


# -- the click-free run path ----------------------------------------------------------------------

def _run_env(conf: Path, plug: Path, root: Path, **extra) -> dict:
    env = cli_env({"CIDAG_CONFIG_DIR": str(conf), "CIDAG_ROOT": str(root), **extra})
    env["PYTHONPATH"] = os.pathsep.join([str(plug), env["PYTHONPATH"]])
    return env


@pytest.mark.parametrize("how", ["script", "guest"])
def test_warm_run_imports_neither_networkx_nor_click(setup, how):
    conf, plug, root = setup
    script = Path(sys.executable).parent / "cidag"
    if how == "script" and not script.exists():
        pytest.skip("no cidag script beside the interpreter")
    # The two ways the unit's `/usr/bin/cidag run` exists: the pip script, and the VM guest's
    # `from cidag.cli import main; sys.exit(main())`.
    argv = ([str(script), "run"] if how == "script" else
            [sys.executable, "-c", "import sys\nfrom cidag.cli import main\nsys.exit(main())", "run"])
    env = _run_env(conf, plug, root)
    cold = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert cold.returncode == 0, cold.stderr
    assert json.loads((root / "imported.json").read_text())  # compiling imports networkx
    assert cache_file(root).exists()
    warm = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert warm.returncode == 0, warm.stderr
    assert json.loads((root / "imported.json").read_text()) == []
    assert "result: ok" in warm.stdout and "module:probe" in warm.stdout


def test_importing_cli_imports_no_click():
    code = "import sys, cidag.cli; print(sorted(m for m in sys.modules if m.startswith(('click', 'networkx'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True)
    assert out.stdout.strip() == "[]"


def test_fast_path_reports_like_the_click_command(setup, tmp_path):
    """`cidag run` (no option: click-free) and `cidag run --root R` (click): same output, exit codes."""
    conf, plug, root = setup
    env = _run_env(conf, plug, root)
    argv = [sys.executable, "-m", "cidag", "run"]
    fast = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    slow = subprocess.run(argv + ["--root", str(tmp_path / "other")], capture_output=True, text=True,
                          env=env, timeout=60)
    assert fast.returncode == slow.returncode == 0
    table = [line.split()[:2] for line in fast.stdout.splitlines() if line.startswith(("source:", "module:"))]
    assert table == [line.split()[:2] for line in slow.stdout.splitlines() if line.startswith(("source:", "module:"))]
    assert table and all(status == "ok" or status == "available" for _, status in table)
    # A manifest error: the same one line and exit 2 both ways, no traceback.
    (conf / "modules.yaml").write_text("version: 1\nmodules:\n  - {name: x, type: nosuch}\n")
    fast = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    slow = subprocess.run(argv + ["--root", str(root)], capture_output=True, text=True, env=env, timeout=60)
    assert fast.returncode == slow.returncode == 2
    assert fast.stderr == slow.stderr
    assert fast.stderr.startswith(f"{conf / 'modules.yaml'}:3:") and "Traceback" not in fast.stderr
    # Options still go through click (with its own errors).
    bad = subprocess.run(argv + ["--jobs", "0"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "--jobs" in bad.stderr


def test_disabled_fast_path(setup):
    conf, plug, root = setup
    (root / "etc/cidag").mkdir(parents=True)
    (root / "etc/cidag/cidag.disabled").write_text("")
    proc = subprocess.run([sys.executable, "-m", "cidag", "run"], capture_output=True, text=True,
                          env=_run_env(conf, plug, root), timeout=60)
    assert proc.returncode == 0 and proc.stderr.startswith("cidag: disabled (")


# -- what invalidates the cache ---------------------------------------------------------------------

def test_hit_then_manifest_edit_recompiles(setup):
    conf, _, root = setup
    first = load(conf, root)
    assert isinstance(first.graph, FrozenGraph)
    stamp = written(root)
    sys.modules.pop("cachetest_plugin", None)  # as in a new process
    cidag.types._cache.clear()
    again = load(conf, root)
    assert written(root) == stamp  # a hit writes nothing
    assert again.specs["module:probe"].priority == 7 and again.specs["module:probe"].call is not None
    assert "cachetest_plugin" not in sys.modules  # a hit imports a type's code only when its node runs
    (conf / "modules.yaml").write_text((conf / "modules.yaml").read_text().replace("priority: 7", "priority: 8"))
    edited = load(conf, root)
    assert edited.specs["module:probe"].priority == 8
    assert written(root) != stamp


def test_env_var_change_recompiles(setup, monkeypatch):
    conf, _, root = setup
    assert load(conf, root).specs["source:cd"].settings["data"]["instance-id"] == "i-default"
    stamp = written(root)
    monkeypatch.setenv("CACHE_TEST_IID", "42")
    assert load(conf, root).specs["source:cd"].settings["data"]["instance-id"] == "i-42"
    assert written(root) != stamp
    stamp = written(root)
    assert load(conf, root).specs["source:cd"].settings["data"]["instance-id"] == "i-42"
    assert written(root) == stamp
    monkeypatch.setenv("UNRELATED_VARIABLE", "x")  # not read by the manifests: still a hit
    load(conf, root)
    assert written(root) == stamp


def test_plugin_change_recompiles(setup, monkeypatch):
    conf, plug, root = setup
    load(conf, root)
    stamp = written(root)
    # The plugin's module file changed (size and mtime).
    (plug / "cachetest_plugin.py").write_text(PLUGIN + "\n# edited\n")
    sys.modules.pop("cachetest_plugin", None)
    cidag.types._cache.clear()  # a new process would import it afresh
    load(conf, root)
    assert written(root) != stamp
    stamp = written(root)
    # A distribution with a cidag entry point installed on sys.path.
    dist = plug / "someplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "entry_points.txt").write_text("[cidag.modules]\nsomething = someplugin:run\n")
    load(conf, root)
    assert written(root) != stamp
    stamp = written(root)
    load(conf, root)
    assert written(root) == stamp


def test_a_root_reads_its_own_cache(setup, tmp_path):
    conf, _, root = setup
    load(conf, root)
    other = tmp_path / "other-root"
    load(conf, other)
    assert cache_file(other).exists() and cache_file(root).exists()
    assert cache_dir(other) == other / "var/cache/cidag"


def test_dry_run_reads_but_writes_no_cache(setup):
    conf, _, root = setup
    load(conf, root, write=False)
    assert not cache_file(root).exists()


# -- caches not to be trusted -----------------------------------------------------------------------

def test_corrupt_cache_is_ignored_and_rewritten(setup):
    conf, _, root = setup
    load(conf, root)
    for junk in (b"", b"not a pickle", cache_file(root).read_bytes()[:100],
                 pickle.dumps({"format": 1, "key": "x"}) + b"garbage"):
        cache_file(root).write_bytes(junk)
        cg = load(conf, root)
        assert cg.specs["module:probe"].priority == 7
        stamp = written(root)
        load(conf, root)
        assert written(root) == stamp  # rewritten whole: a hit again


def test_world_writable_cache_is_ignored_and_rewritten(setup):
    conf, _, root = setup
    load(conf, root)
    os.chmod(cache_file(root), 0o666)
    load(conf, root)
    assert cache_file(root).stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file someone else's needs root")
def test_foreign_cache_is_ignored_and_rewritten(setup):
    conf, _, root = setup
    load(conf, root)
    # A foreign pickle that would run code if loaded.
    evil = root / "pwned"
    cache_file(root).write_bytes(pickle.dumps({"format": 1}) + _evil_pickle(evil))
    os.chown(cache_file(root), 65534, 65534)
    cg = load(conf, root)
    assert not evil.exists()
    assert cg.specs["module:probe"].priority == 7
    assert cache_file(root).stat().st_uid == os.geteuid()


def test_cache_in_a_directory_others_can_write_is_not_used(setup):
    conf, _, root = setup
    load(conf, root)
    os.chmod(cache_dir(root), 0o777)
    evil = root / "pwned"
    cache_file(root).write_bytes(_evil_pickle(evil))
    cg = load(conf, root)
    assert not evil.exists() and cg.specs["module:probe"].priority == 7


def _evil_pickle(marker: Path) -> bytes:
    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    return pickle.dumps(Evil())


# -- same results with and without the cache ----------------------------------------------------------

def _shipped_env(tmp_path: Path) -> dict:
    (tmp_path / "cmdline").write_text("")
    return cli_env({"CIDAG_CONFIGDRIVE_PATH": str(tmp_path / "none"), "CIDAG_NOCLOUD_PATH": str(tmp_path / "none"),
                    "CIDAG_OPENSTACK_URL": "http://127.0.0.1:1", "CIDAG_EC2_URL": "http://127.0.0.1:1",
                    "CIDAG_SYSFS": str(tmp_path / "sys"), "CIDAG_CMDLINE": str(tmp_path / "cmdline"),
                    "CIDAG_NETWORK_WAIT_ONLINE": "false"})


def test_shipped_manifests_same_results_with_and_without_cache(tmp_path):
    env = _shipped_env(tmp_path)
    py = [sys.executable, "-m", "cidag"]
    manifests = ["--sources", str(REPO / "sources.yaml"), "--modules", str(REPO / "modules.yaml")]
    warm = tmp_path / "warm"
    comp = subprocess.run(py + ["compile", "--root", str(warm), *manifests], capture_output=True, text=True, env=env)
    assert comp.returncode == 0, comp.stderr
    assert comp.stdout.strip() == f"compiled plan: {warm / 'var/cache/cidag' / CACHE_NAME}"
    stamp = written(warm)
    records = {}
    for name, extra in (("warm", []), ("cold", ["--no-cache"])):
        proc = subprocess.run(py + ["run", "--root", str(tmp_path / name), *manifests, *extra,
                                    "--format", "json"], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        records[name] = json.loads(proc.stdout)
    assert written(warm) == stamp  # the warm run used the cache `compile` wrote
    assert not (tmp_path / "cold/var/cache").exists()

    def outcome(rec):
        return ([(n["id"], n["status"], n["reason_code"]) for n in rec["nodes"]],
                {k: (c["status"], c["provider"]) for k, c in rec["capabilities"].items()}, rec["edges"])

    assert outcome(records["warm"]) == outcome(records["cold"])
    dry = {}
    for name, extra in (("warm", []), ("cold", ["--no-cache"])):
        proc = subprocess.run(py + ["run", "--dry-run", "--format", "json", "--root", str(tmp_path / name),
                                    *manifests, *extra], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        dry[name] = json.loads(proc.stdout)
    assert dry["warm"] == dry["cold"] and dry["warm"]["start_order"]


# -- the frozen graph -------------------------------------------------------------------------------

def _random_dag(rng: random.Random, n: int) -> nx.DiGraph:
    g = nx.DiGraph()
    names = [f"{rng.choice(['source', 'module', 'cap'])}:{i}" for i in range(n)]
    rng.shuffle(names)
    for name in names:
        g.add_node(name, kind="x")
    for _ in range(n * 2):
        if n < 2:
            break
        a, b = sorted(rng.sample(range(n), 2))
        g.add_edge(names[a], names[b], kind=rng.choice(["needs", "wants", "after"]))
    return g


def test_topological_order_is_networkx_order():
    rng = random.Random(7)
    for n in (1, 2, 5, 30, 200):
        for _ in range(20):
            g = _random_dag(rng, n)
            want = list(nx.topological_sort(g))
            assert topological_order(g) == want
            fg = FrozenGraph.from_graph(g)
            assert list(fg.topo_order) == want
            assert longest_remaining(fg) == longest_remaining(g, want)


def test_frozen_graph_keeps_networkx_layout_and_orders():
    cg = load_and_compile(str(REPO / "sources.yaml"), str(REPO / "modules.yaml"))
    g = cg.graph
    fg = pickle.loads(pickle.dumps(FrozenGraph.from_graph(g)))
    assert list(fg) == list(g)
    for n in g:
        assert list(fg._pred[n].items()) == list(g._pred[n].items())
        assert list(fg._succ[n].items()) == list(g._succ[n].items())
        assert fg.nodes[n] == g.nodes[n]
        assert list(fg.successors(n)) == list(g.successors(n))
        assert fg.out_degree(n) == g.out_degree(n) and fg.in_degree(n) == g.in_degree(n)
    assert fg.number_of_edges() == g.number_of_edges()
    assert fg.edges(data=True) == list(g.edges(data=True))
    assert "cap:instance-id" in fg and "nope" not in fg
    with pytest.raises(ValueError):
        cyc = build_graph(cg.manifests).graph.copy()
        cyc.add_edge("module:final-message", "source:configdrive", kind="after")
        topological_order(cyc)


def test_manifests_holding_a_secret_are_not_cached(setup, monkeypatch, tmp_path):
    """A password in the manifests (here from the environment) is never copied to the cache."""
    conf, plug, root = setup
    monkeypatch.setenv("CACHE_TEST_PW", "s3cret-Pw-from-env")
    (conf / "sources.yaml").write_text(textwrap.dedent(SOURCES).lstrip() + (
        '  - {name: pw, type: static, capabilities: [admin-password],\n'
        '     settings: {data: {admin-password: "${CACHE_TEST_PW}"}}}\n'))
    cg = load(conf, root)
    assert cg.specs["source:pw"].settings["data"]["admin-password"] == "s3cret-Pw-from-env"
    assert not cache_dir(root).exists()
    proc = subprocess.run([sys.executable, "-m", "cidag", "compile", "--root", str(root)], capture_output=True,
                          text=True, env=_run_env(conf, plug, root, CACHE_TEST_PW="x"))
    assert proc.returncode == 2 and proc.stderr.startswith("cidag: the manifests hold a secret")
    assert not cache_dir(root).exists()


def test_the_key_survives_an_image_that_keeps_no_nanoseconds():
    """`mkfs.ext4 -d` packs the guest image with whole-second mtimes: the cache made at image
    build time must still be valid on the first boot (it was missed there)."""
    import cidag
    from cidag import plancache

    target = Path(cidag.__file__).parent / "durations.py"
    st = target.stat()
    before = list(plancache._package_files())
    try:
        os.utime(target, ns=(st.st_atime_ns, int(st.st_mtime) * 10**9))  # what the image keeps
        assert list(plancache._package_files()) == before
    finally:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
