"""Fuzzing: hostile manifests and user-data (hypothesis). The invariant: the outcome is a
result, never a crash: manifests give a compiled graph or one-line diagnostics (exit 2),
runs end with a record that tells the truth (exit 0, 1 or 2), memory stays bounded.

In-process, so a few thousand cases fit in the normal run; `make fuzz` sets
CIDAG_FUZZ_EXAMPLES for many more.
"""
from __future__ import annotations

import os
import resource
import string

import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from cidag.engine import RunOptions, run
from cidag.errors import CidagError, ManifestError
from cidag.runner import FakeRunner
from cidag.userdata import parse
from cidag.values import ValueRefused, canonical
from cidag.yamldoc import load_text
from conftest import cidag, mount_tmpfs

EXAMPLES = int(os.environ.get("CIDAG_FUZZ_EXAMPLES", "0"))
MEMORY_LIMIT_KB = 1_500_000  # a case that grew the process past this is a memory bug


def fuzz_settings(default: int):
    return settings(max_examples=EXAMPLES or default, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- YAML text: mutated manifests, aliases, nesting, numbers ----------------------------------

SCALARS = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "-_.${}:$ ", max_size=20),
    st.integers(min_value=-10**30, max_value=10**30),
    st.sampled_from(["1" + "0" * 400, "1e999", "-.inf", ".nan", "~", "true", "500ms", "2m", "10s", "0",
                     "$$", "${HOME}", "${NOPE:-x}", "${NOPE}", "&a x", "*a", "!!python/object:os.system x",
                     "[*a]", "{a: *a}", "<<: *a"]),
)

KEYS = st.sampled_from(["version", "select", "sources", "modules", "name", "type", "capabilities", "timeout",
                        "needs", "wants", "provides", "depends_on", "after", "priority", "frequency",
                        "settings", "secrets", "command", "data", "delay", "nope"])


def yaml_values(depth: int):
    if depth <= 0:
        return SCALARS
    inner = yaml_values(depth - 1)
    return st.one_of(SCALARS, st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4))


BASE_SOURCES = {"version": 1, "sources": [
    {"name": "a", "type": "static", "capabilities": ["instance-id", "hostname"],
     "settings": {"data": {"instance-id": "i-1", "hostname": "h"}}},
    {"name": "b", "type": "static", "capabilities": ["hostname", "user-data"]}]}
BASE_MODULES = {"version": 1, "modules": [
    {"name": "m1", "type": "exec", "settings": {"command": "true"}, "wants": ["hostname"]},
    {"name": "m2", "type": "exec", "frequency": "per-boot", "settings": {"command": "true"},
     "depends_on": ["m1"], "needs": ["hostname"]}]}


@st.composite
def mutated(draw, base):
    """`base` with a few values replaced, keys added or removed, anywhere in the tree."""
    doc = yaml.safe_load(yaml.safe_dump(base))
    for _ in range(draw(st.integers(1, 4))):
        paths = []

        def walk(node, path):
            paths.append(path)
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, path + (k,))
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, path + (i,))
        walk(doc, ())
        path = draw(st.sampled_from(paths))
        value = draw(yaml_values(2))
        if not path:
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = value
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = value
        else:
            parent.append(value)
    return yaml.safe_dump(doc, sort_keys=False)


TRICKS = st.sampled_from([
    "", "x: &a [*a]\n", "- " * 300 + "x\n", "[" * 200 + "]" * 200 + "\n", "a: !!python/object/apply:os.system [ls]\n",
    "a: &a ['$$$$$$$$', '$$$$$$$$']\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c]\n",
    "version: 1\nversion: 2\n", "\t- tab\n", "%YAML 1.1\n---\na: 1\n---\nb: 2\n", "? [a]\n: b\n",
    "timeout: " + "9" * 500 + "\n", "a: 1e99999\n", "\x85\u2028\n",
])


def run_manifests(tmp_path, sources_text: str, modules_text: str):
    """Load, compile and run in fake time; returns the record or the diagnostics."""
    from cidag.compiler import compile_manifests
    from cidag.manifest import load_manifests

    s, m = tmp_path / "sources.yaml", tmp_path / "modules.yaml"
    s.write_text(sources_text)
    m.write_text(modules_text)
    try:
        cg = compile_manifests(load_manifests(str(s), str(m), env={"HOME": "/root"}))
    except ManifestError as exc:
        for d in exc.diagnostics:
            line = d.format()
            assert "\n" not in line and "Traceback" not in line and len(line) < 2000, line
        return None
    def fake_runner() -> FakeRunner:
        return FakeRunner(lambda node, ctx: (0.01, FakeRunner.CALL) if node.startswith("source:") else (0.01, {}))

    try:
        result = run(cg, RunOptions(root=tmp_path / "root", handle_signals=False, runner=fake_runner()))
    except CidagError as exc:  # a usage error (e.g. the state dir): one line
        assert "\n" not in str(exc)
        return None
    rec = result.record
    assert result.exit_code in (0, 1), rec["result"]
    assert all(n["status"] not in ("waiting", "ready", "running", "held") for n in rec["nodes"])
    # What `cidag run` loads from the compiled-plan cache (a pickled CompiledGraph with a
    # FrozenGraph) runs exactly as the networkx graph it was made from.
    import pickle

    from cidag.plancache import freeze

    cached = pickle.loads(pickle.dumps(freeze(cg)))
    again = run(cached, RunOptions(root=tmp_path / "root2", handle_signals=False, runner=fake_runner())).record
    assert _outcome(again) == _outcome(rec)
    return rec


def _outcome(rec: dict) -> tuple:
    return ([(n["id"], n["status"], n["reason"], n["start_s"], n["end_s"]) for n in rec["nodes"]],
            rec["capabilities"], rec["edges"], rec["critical_path"])


@fuzz_settings(600)
@given(st.data())
def test_mutated_manifests_compile_or_fail_in_one_line_and_runs_tell_the_truth(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("fuzz")
    sources = data.draw(mutated(BASE_SOURCES))
    modules = data.draw(mutated(BASE_MODULES))
    if data.draw(st.booleans()):
        modules = modules + data.draw(TRICKS)
    run_manifests(tmp, sources, modules)
    assert peak_kb() < MEMORY_LIMIT_KB


@fuzz_settings(600)
@given(st.text(max_size=300) | TRICKS)
def test_any_yaml_text_loads_or_is_one_diagnostic(text):
    try:
        load_text(text, "fuzz.yaml")
    except ManifestError as exc:
        assert len(exc.diagnostics) == 1 and "\n" not in exc.diagnostics[0].message
    assert peak_kb() < MEMORY_LIMIT_KB


# -- user-data -----------------------------------------------------------------------------------

USER_DATA_PIECES = st.sampled_from([
    "#cloud-config\n", "#!/bin/sh\necho hi\n", "Content-Type: multipart/mixed; boundary=X\nMIME-Version: 1.0\n\n--X\n"
    "Content-Type: text/cloud-config\n\nfoo: 1\n--X--\n", "foo: &a [*a]\n", "a: &a [x, x, x, x, x, x, x, x, x]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
    "[" * 1500 + "]" * 1500, "write_files: [{path: /etc/x, content: y}]\n", "users: [default, {name: u}]\n",
    "\x1f\x8b\x08\x00", "runcmd: [[ls, -l], 'echo $x']\n", "!!binary AAAA\n", "x: 1e99999\n",
])


@fuzz_settings(600)
@given(st.lists(USER_DATA_PIECES | st.text(max_size=60), min_size=1, max_size=5), st.booleans())
def test_user_data_never_crashes_and_stays_bounded(pieces, as_bytes):
    text = "".join(pieces)
    ud = parse(text.encode("utf-8", "surrogatepass") if as_bytes else text)
    for line in ud.errors + ud.warnings:
        assert "\n" not in line.strip() or line.count("\n") <= 1
    canonical(ud.cloud_config)  # what reached the run is within the value limits
    assert peak_kb() < MEMORY_LIMIT_KB


@fuzz_settings(600)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.binary(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5) | st.integers(), c, max_size=4),
                    max_leaves=40))
def test_canonical_values_are_json_or_refused(value):
    import json

    try:
        out = canonical(value)
    except ValueRefused as exc:
        assert "\n" not in str(exc)
        return
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert canonical(out) == out  # canonical is a fixed point: a marker gives back the same value


# -- disks and state files: a real `cidag run` on a small tmpfs ------------------------------------

DISK_SOURCES = """version: 1
sources:
  - {name: s, type: static, capabilities: [instance-id, hostname], settings: {data: {instance-id: i-1, hostname: h}}}
"""


@st.composite
def disk_cases(draw):
    """A tmpfs (size, inode limit), modules that write bytes or make files on it, and odd
    things already in its state dir; the run goes once or twice."""
    size = draw(st.sampled_from(["192k", "512k", "1m", "2m"]))
    inodes = draw(st.sampled_from([None, 24, 32, 48, 80, 400]))
    modules = []
    for i in range(draw(st.integers(1, 5))):
        work = draw(st.sampled_from(["bytes", "files", "nothing"]))
        n = draw(st.sampled_from([1, 10, 100, 2000])) if work == "files" else draw(
            st.sampled_from([0, 4096, 200_000, 3_000_000]))
        command = {"bytes": f'head -c {n} /dev/zero > "$CIDAG_ROOT/b{i}"',
                   "files": f'mkdir -p "$CIDAG_ROOT/d{i}" && for k in $(seq 1 {n}); do : > "$CIDAG_ROOT/d{i}/$k" || exit 1; done',
                   "nothing": "true"}[work]
        modules.append({"name": f"m{i}", "type": "exec", "settings": {"command": command},
                        "frequency": draw(st.sampled_from(["per-instance", "once", "per-boot"])),
                        "wants": ["hostname"]})
    odd = draw(st.sampled_from([None, "marker-fifo", "marker-dir", "running-dir", "reserve-fifo", "runs-file",
                                "last-run-dir", "instance-data-fifo"]))
    return size, inodes, {"version": 1, "modules": modules}, odd, draw(st.integers(1, 2))


ODD_DISK_STATE = {
    "marker-fifo": ("instances/i-1/markers/m0.json", lambda p: os.mkfifo(p)),
    "marker-dir": ("once/m0.json", lambda p: p.mkdir()),
    "running-dir": ("running.json", lambda p: p.mkdir()),
    "reserve-fifo": (".record-reserve", lambda p: os.mkfifo(p)),
    "runs-file": ("runs", lambda p: p.write_text("x")),
    "last-run-dir": ("last-run.json", lambda p: p.mkdir()),
    "instance-data-fifo": ("instance-data.json", lambda p: os.mkfifo(p)),
}


def records_in(root) -> set:
    from pathlib import Path

    runs = Path(root) / "var/lib/cidag/runs"
    return {p.name for p in runs.glob("*.json")} if runs.is_dir() else set()


def check_disk_run(proc, root, modules: dict, odd_paths, before: set = frozenset()) -> None:
    """The invariants of a run on a small disk: one-line errors, exit 0/1/2 (never 70), no
    traceback, no half-written state file, and a record that is true or clearly absent."""
    import json
    from pathlib import Path

    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and proc.returncode in (0, 1, 2), out
    said = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    errors = [ln for ln in said if "WARNING" not in ln]
    assert len(errors) <= 1, said
    state = Path(root) / "var/lib/cidag"
    if proc.returncode == 2:
        assert len(errors) == 1 and errors[0].startswith("cidag: "), said  # e.g. the state dir cannot be made
        return
    # Nothing half-written: no temp file left; every state file cidag keeps is whole JSON.
    assert not [p for p in state.rglob("*.tmp")], list(state.rglob("*.tmp"))
    for p in state.rglob("*.json"):
        if any(p == o or o in p.parents for o in odd_paths) or not p.is_file():
            continue
        json.loads(p.read_bytes())  # raises on a torn file
    lost = [ln for ln in errors if "record could not be written" in ln]
    last = state / "last-run.json"
    if lost:
        # Clearly absent: the one line says so, and no record of this run claims otherwise;
        # its running file (when it could be written) stays, so `status` says a run ended
        # without its record instead of showing an older run as the last.
        assert proc.returncode == 1
        assert records_in(root) <= set(before)
        return
    assert not (state / "running.json").is_file()
    kept = [ln for ln in said if "this run's record is" in ln]
    record_path = Path(kept[0].rsplit(" ", 1)[1]) if kept else last
    record = json.loads(record_path.read_text())
    assert record["exit_code"] == proc.returncode, (record["result"], proc.returncode, said)
    nodes = {n["id"]: n for n in record["nodes"]}
    faults = " ".join(record.get("faults", []))
    for name, spec in modules.items():
        node = nodes[f"module:{name}"]
        assert node["status"] in ("ok", "failed", "skipped", "timeout"), node
        marker = (state / "once" / f"{name}.json") if spec.get("frequency") == "once" else (
            state / "instances/i-1/markers" / f"{name}.json")
        if node["status"] == "ok" and spec.get("frequency") != "per-boot":
            # True: an ok module has its marker, or the record says why not.
            assert marker.exists() or f"module:{name}: marker not written" in faults, (name, faults)
        if node["status"] == "failed":
            assert not marker.is_file() or marker in odd_paths  # a marker only after an ok end


# Found by a run of make test: the first run cannot write its record (a file where runs/
# belongs), the second cannot start (its files took the last inodes); status still shows the
# first, truthfully.
FULL_AFTER_A_LOST_RECORD = ("192k", 24, {"version": 1, "modules": [{
    "name": "m0", "type": "exec", "frequency": "per-instance", "wants": ["hostname"], "settings": {
        "command": 'mkdir -p "$CIDAG_ROOT/d0" && for k in $(seq 1 10); do : > "$CIDAG_ROOT/d0/$k" || exit 1; done'}}]},
    "runs-file", 2)


@fuzz_settings(12)
@given(disk_cases())
@example(FULL_AFTER_A_LOST_RECORD)
def test_runs_on_small_disks_tell_the_truth(tmp_path_factory, case):
    import json

    size, inodes, modules_doc, odd, runs = case
    tmp = tmp_path_factory.mktemp("disk")
    (tmp / "sources.yaml").write_text(DISK_SOURCES)
    (tmp / "modules.yaml").write_text(json.dumps(modules_doc))  # JSON is YAML
    modules = {m["name"]: m for m in modules_doc["modules"]}
    with mount_tmpfs(tmp / "mnt", size=size, nr_inodes=inodes) as disk:
        root = disk / "root"
        odd_path = None
        if odd is not None:
            rel, make = ODD_DISK_STATE[odd]
            odd_path = root / "var/lib/cidag" / rel
            try:
                odd_path.parent.mkdir(parents=True, exist_ok=True)
                make(odd_path)
            except OSError:  # the disk is too small for the setup itself
                odd_path = None
        lost = False  # an earlier run of this case said its record could not be written
        for _ in range(runs):
            before = records_in(root)
            proc = cidag("run", "--sources", str(tmp / "sources.yaml"), "--modules", str(tmp / "modules.yaml"),
                         "--root", str(root), timeout=120)
            check_disk_run(proc, root, modules, [odd_path] if odd_path else [], before)
            status = cidag("status", "--root", str(root), timeout=60)
            assert "Traceback" not in status.stderr and status.returncode in (0, 1, 2, 3, 130), status.stderr
            if status.returncode == 130:
                # Only for a run that said it could not write its record: this one, or an earlier
                # one when this one could not start at all (a full state dir: exit 2, nothing written).
                assert "record could not be written" in proc.stderr or (lost and proc.returncode == 2), (
                    proc.stderr, status.stdout)
                assert "ended without writing its record" in status.stdout, status.stdout
            lost = lost or "record could not be written" in proc.stderr


ODD_KINDS = {
    "directory": lambda p: p.mkdir(),
    "fifo": lambda p: os.mkfifo(p),
    "garbage": lambda p: p.write_bytes(b"\x00\xff{not json"),
    "empty": lambda p: p.write_bytes(b""),
    "dangling-symlink": lambda p: p.symlink_to("/nonexistent/cidag-fuzz"),
    "device": lambda p: p.symlink_to("/dev/zero"),
    "deep-json": lambda p: p.write_text("[" * 100_000 + "]" * 100_000),
    "too-big": lambda p: p.write_bytes(b" " * (5 << 20)),
}
STATE_PATHS = ["last-run.json", "running.json", "instance-data.json", "instance-data-sensitive.json",
               ".record-reserve", ".record-reserve-inode", "runs", "once", "instances", "instances/i-1",
               "instances/i-1/markers", "instances/i-1/markers/m0.json", "once/m1.json"]
STATE_MODULES = {"version": 1, "modules": [
    {"name": "m0", "type": "exec", "settings": {"command": 'touch "$CIDAG_ROOT/m0"'}},
    {"name": "m1", "type": "exec", "frequency": "once", "settings": {"command": 'touch "$CIDAG_ROOT/m1"'}},
    {"name": "m2", "type": "exec", "frequency": "per-boot", "wants": ["hostname"],
     "settings": {"command": 'touch "$CIDAG_ROOT/m2"'}}]}


@fuzz_settings(15)
@given(st.lists(st.tuples(st.sampled_from(STATE_PATHS), st.sampled_from(sorted(ODD_KINDS))), min_size=1, max_size=3,
                unique_by=lambda t: t[0]), st.integers(1, 2))
def test_odd_state_files_never_hang_crash_or_lie(tmp_path_factory, odd, runs):
    """Odd things at any state file's path, several at once: every command ends in bounded
    time with one line at most and never a traceback; a run does its work and its record
    is true or clearly absent (check_disk_run)."""
    import json

    tmp = tmp_path_factory.mktemp("state")
    (tmp / "sources.yaml").write_text(DISK_SOURCES)
    (tmp / "modules.yaml").write_text(json.dumps(STATE_MODULES))
    root = tmp / "root"
    state = root / "var/lib/cidag"
    odd_paths = []
    for rel, kind in sorted(odd, key=lambda t: t[0].count("/")):
        path = state / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            ODD_KINDS[kind](path)
        except OSError:  # a parent is itself odd: this one cannot be made
            continue
        odd_paths.append(path)
    modules = {m["name"]: m for m in STATE_MODULES["modules"]}
    for _ in range(runs):
        before = records_in(root)
        proc = cidag("run", "--sources", str(tmp / "sources.yaml"), "--modules", str(tmp / "modules.yaml"),
                     "--root", str(root), timeout=60)  # TimeoutExpired: a hang
        check_disk_run(proc, root, modules, odd_paths, before)
        assert (root / "m2").exists()  # the per-boot module always runs
        for args in (("status",), ("query", "hostname"), ("analyze", "blame"), ("wait", "done")):
            reader = cidag(*args, "--root", str(root), timeout=60)
            assert "Traceback" not in reader.stderr and len(reader.stderr.strip().splitlines()) <= 1, reader.stderr
            assert reader.returncode in (0, 1, 2, 3, 130), (args, reader.returncode, reader.stderr)
