"""Every bad-input case gets exactly one clear line `file:line:col: message`, exit 2, no traceback."""
from __future__ import annotations

import pytest

from conftest import cidag

GOOD_MODULES = "version: 1\nmodules: []\n"
GOOD_SOURCES = "version: 1\nsources:\n  - {name: s, type: static, capabilities: [x], settings: {data: {x: 1}}}\n"


def check_one_line(tmp_path, sources: str | bytes, modules: str = GOOD_MODULES, cmd: str = "check"):
    s, m = tmp_path / "sources.yaml", tmp_path / "modules.yaml"
    (s.write_bytes if isinstance(sources, bytes) else s.write_text)(sources)
    m.write_text(modules)
    args = [cmd, "--sources", str(s), "--modules", str(m)]
    if cmd == "run":
        args += ["--root", str(tmp_path / "root")]
    proc = cidag(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [l for l in (proc.stdout + proc.stderr).splitlines()
             if l.startswith(str(tmp_path)) and ": warning: " not in l]
    return lines


@pytest.mark.parametrize("sources, expected", [
    ("version: 1\nsources:\n  - name: a\n    type: static\n    capabilites: [x]\n",
     "sources.yaml:5:5: unknown key 'capabilites' (did you mean 'capabilities'?)"),
    ("", "sources.yaml:1:1: file is empty"),
    (b"\x00\x01\x02binary", "sources.yaml:1:1: not a text file (contains NUL bytes)"),
    (b"version: 1\n\xff\xfe", "sources.yaml:2:1: not UTF-8 text (bad byte at offset 11)"),
    ("- a\n- b\n", "sources.yaml:1:1: a manifest must be a mapping, not a list"),
    ("version: 1\nsources: !!python/object:os.system {}\n",
     "sources.yaml:2:10: unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system' (only plain YAML is allowed)"),
    ("version: 1\nsources: [\n", "sources.yaml:3:1: YAML: did not find expected node content"),
    ("version: 2\nsources: []\n", "sources.yaml:1:10: unsupported version 2 (this cidag reads version 1)"),
    ("version: 1\nsources:\n  - {name: a, type: static, capabilities: [x], timeout: 5x}\n",
     "sources.yaml:3:57: not a duration: '5x' (use seconds or e.g. '500ms', '10s', '2m')"),
    ("version: 1\nsources:\n  - {name: A_b, type: static, capabilities: [x]}\n",
     "sources.yaml:3:12: invalid source name 'A_b': use lower case letters, digits, '.', '_' and '-', starting with a letter or digit"),
    ("version: 1\nsources:\n  - {name: a, type: statik, capabilities: [x]}\n",
     "sources.yaml:3:21: unknown source type 'statik' (did you mean 'static'?): not built in, not 'package.module:attr', no entry point in cidag.sources"),
    ("version: 1\nsources:\n  - name: a\n    type: static\n    capabilities: [x]\n    settings: {dely: 1}\n",
     "sources.yaml:6:16: static: settings: unknown setting 'dely' (did you mean 'delay'?)"),
    ("version: 1\nsources:\n  - {name: a, type: exec, capabilities: [x]}\n",
     "sources.yaml:3:5: exec: settings: missing required setting 'command'"),
    ("version: 1\nsources:\n  - {name: a, type: static, capabilities: [x]}\n  - {name: a, type: static, capabilities: [y]}\n",
     "sources.yaml:4:12: duplicate name 'a' (already a source at sources.yaml:3); names are unique across sources and modules"),
    ("version: 1\nsources:\n  - {name: a, type: static, capabilities: [x], x: 1, name: b}\n",
     "sources.yaml:3:54: duplicate key 'name'"),
    ("version: 1\nselect: fastest\nsources: []\n",
     "sources.yaml:2:9: select must be one of preferred, first, not 'fastest'"),
    ("version: 1\nsources:\n  - {name: a, type: 'nosuchpkg.mod:probe', capabilities: [x]}\n",
     "sources.yaml:3:21: type 'nosuchpkg.mod:probe': cannot import 'nosuchpkg.mod': No module named 'nosuchpkg'"),
    ("version: 1\nsources:\n  - {name: a, type: static, capabilities: [x], settings: {data: {x: '${CIDAG_TEST_UNSET_VAR}'}}}\n",
     "sources.yaml:3:69: environment variable CIDAG_TEST_UNSET_VAR is not set (write ${CIDAG_TEST_UNSET_VAR:-default} for a default)"),
])
def test_bad_sources_one_line(tmp_path, sources, expected):
    lines = check_one_line(tmp_path, sources)
    assert lines == [f"{tmp_path}/{expected}"]


def test_bad_input_in_run_is_the_same_line(tmp_path):
    lines = check_one_line(tmp_path, "version: 1\nsources:\n  - name: a\n    type: static\n    capabilites: [x]\n", cmd="run")
    assert lines == [f"{tmp_path}/sources.yaml:5:5: unknown key 'capabilites' (did you mean 'capabilities'?)"]


def test_huge_file_is_refused_without_reading_it_all(tmp_path):
    s = tmp_path / "sources.yaml"
    with open(s, "wb") as fh:
        fh.truncate(50 << 20)  # sparse: 50 MB of NULs
    (tmp_path / "modules.yaml").write_text(GOOD_MODULES)
    proc = cidag("check", "--sources", str(s), "--modules", str(tmp_path / "modules.yaml"))
    assert proc.returncode == 2
    assert f"{s}:1:1: file is too large (over 8 MiB)" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_missing_file(tmp_path):
    (tmp_path / "modules.yaml").write_text(GOOD_MODULES)
    proc = cidag("check", "--sources", str(tmp_path / "nope.yaml"), "--modules", str(tmp_path / "modules.yaml"))
    assert proc.returncode == 2
    assert f"{tmp_path}/nope.yaml:1:1: cannot read: No such file or directory" in proc.stdout


@pytest.mark.parametrize("modules, expected", [
    ("version: 1\nmodules:\n  - {name: m, type: exec, settings: {command: 'true'}, priority: high}\n",
     "modules.yaml:3:66: priority must be an integer, not 'high'"),
    ("version: 1\nmodules:\n  - {name: m, type: exec, settings: {command: 'true'}, frequency: hourly}\n",
     "modules.yaml:3:67: frequency must be one of per-instance, per-boot, once, not 'hourly'"),
    ("version: 1\nmodules:\n  - {name: m, type: exec, settings: {command: 'true'}, needs: [x, x]}\n",
     "modules.yaml:3:67: 'x' is listed twice in needs"),
    ("version: 1\nmodules:\n  - {name: m, type: exec, settings: {command: 'true'}, frequency: per-boot, needs: [nope]}\n",
     "modules.yaml:3:85: module 'm' needs 'nope', which no source or module provides"),
    ("version: 1\nmodules:\n  - {name: m, type: exec, settings: {command: 'true'}, depends_on: [mm], frequency: per-boot}\n",
     "modules.yaml:3:69: depends_on: 'mm' is not a module (did you mean 'm'?)"),
    ("version: 1\nmodules:\n  - {name: s, type: exec, settings: {command: 'true'}, frequency: per-boot}\n",
     "modules.yaml:3:12: duplicate name 's' (already a source at sources.yaml:3); names are unique across sources and modules"),
    ("version: 1\nmodules:\n  - {name: m, type: exec, settings: {command: 'true'}}\n",
     "modules.yaml:3:12: module 'm' is per-instance and so needs 'instance-id', which no source or module provides (add one, or set frequency: per-boot)"),
])
def test_bad_modules_one_line(tmp_path, modules, expected):
    lines = check_one_line(tmp_path, GOOD_SOURCES, modules)
    assert lines == [f"{tmp_path}/{expected}"]


def test_cycle_names_every_edge_with_its_line(tmp_path):
    modules = (
        "version: 1\nmodules:\n"
        "  - {name: a, type: exec, settings: {command: 'true'}, frequency: per-boot, depends_on: [b]}\n"
        "  - {name: b, type: exec, settings: {command: 'true'}, frequency: per-boot, needs: [y]}\n"
        "  - {name: c, type: exec, settings: {command: 'true'}, frequency: per-boot, provides: [y], after: [a]}\n"
    )
    lines = check_one_line(tmp_path, GOOD_SOURCES, modules)
    assert len(lines) == 1
    line = lines[0]
    assert "dependency cycle:" in line
    for piece in ("module:b -[depends_on at modules.yaml:3]", "module:c -[provides at modules.yaml:5]",
                  "cap:y -[needs at modules.yaml:4]", "module:a -[after at modules.yaml:5]"):
        assert piece in line, line


def test_unprovided_want_is_a_warning_and_strict_makes_it_an_error(tmp_path, manifests):
    s, m = manifests(GOOD_SOURCES, "version: 1\nmodules:\n  - {name: m, type: exec, settings: {command: 'true'}, frequency: per-boot, wants: [nope]}\n")
    proc = cidag("check", s, m)
    assert proc.returncode == 0
    assert f"{m}:3:85: warning: module 'm' wants 'nope', which no source or module provides" in proc.stdout
    assert cidag("check", "--strict", s, m).returncode == 2


def test_module_that_can_never_run_is_a_warning(tmp_path, manifests):
    s, m = manifests(GOOD_SOURCES, """
        version: 1
        modules:
          - {name: a, type: exec, settings: {command: 'true'}, frequency: per-boot, needs: [nope]}
          - {name: b, type: exec, settings: {command: 'true'}, frequency: per-boot, depends_on: [a]}
        """)
    proc = cidag("check", "--format", "json", s, m)
    import json
    diags = [d for d in json.loads(proc.stdout) if d["code"] != "unused-source"]
    assert {(d["severity"], d["code"]) for d in diags} == {("error", "unprovided-need"), ("warning", "never-runs")}
    never = [d for d in diags if d["code"] == "never-runs"][0]
    assert never["message"] == "module 'b' can never run: what it needs can never be provided"


def test_github_format(tmp_path, manifests):
    s, m = manifests("version: 1\nsources:\n  - {name: a, type: static, capabilites: [x]}\n", GOOD_MODULES)
    proc = cidag("check", "--format", "github", s, m)
    assert proc.returncode == 2
    assert f"::error file={s},line=3,col=29::unknown key 'capabilites' (did you mean 'capabilities'?)" in proc.stdout


def test_verbose_shows_a_traceback(tmp_path, manifests):
    s, m = manifests("version: 1\nsources: [\n", GOOD_MODULES)
    root = str(tmp_path / "root")
    quiet = cidag("run", "--root", root, "--sources", s, "--modules", m)
    loud = cidag("run", "-v", "--root", root, "--sources", s, "--modules", m)
    assert "Traceback" not in quiet.stderr
    assert loud.returncode == 2 and "Traceback" in loud.stderr
    # check reports a file it cannot parse as a finding (on stdout, for CI), -v or not
    found = cidag("check", "-v", s, m)
    assert found.returncode == 2 and f"{s}:3:1: YAML:" in found.stdout


def test_unknown_option_is_usage_error_exit_2():
    proc = cidag("run", "--no-such-option")
    assert proc.returncode == 2
    assert "No such option" in proc.stderr and "Traceback" not in proc.stderr


def test_one_name_limit_for_check_and_run(tmp_path, manifests):
    """A name that passes check runs and gets its marker (it is the marker's file name);
    one character more is refused by both, one line each (issue 15, item 7)."""
    longest = "m" * 200
    src = """
    version: 1
    sources:
      - {name: s, type: static, capabilities: [instance-id], settings: {data: {instance-id: i-1}}}
    """
    s, m = manifests(src, f"""
    version: 1
    modules:
      - {{name: {longest}, type: exec, settings: {{command: "true"}}}}
    """)
    assert cidag("check", s, m).returncode == 0
    root = tmp_path / "root"
    assert cidag("run", "-q", "--sources", s, "--modules", m, "--root", str(root)).returncode == 0
    assert (root / f"var/lib/cidag/instances/i-1/markers/{longest}.json").is_file()
    s, m = manifests(src, f"""
    version: 1
    modules:
      - {{name: {longest}x, type: exec, settings: {{command: "true"}}}}
    """, name="too-long")
    for args in (("check", s, m), ("run", "--sources", s, "--modules", m, "--root", str(root))):
        proc = cidag(*args)
        assert proc.returncode == 2 and "is 201 characters long; at most 200" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
