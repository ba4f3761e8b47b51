"""Values that become names (issue 15, item 7): an instance-id or host name a source returns
with a NUL, a control character or an absurd length fails that source in one line naming it
and why; the next source serves the capability and the run goes on (values.check_name_value).
Real runs: the CLI in a subprocess, exec sources as real processes, the shipped modules."""
from __future__ import annotations

import json

import pytest

from cidag.values import MAX_NAME_VALUE, ValueRefused, check_name_value
from conftest import REPO, cidag, load_record, nodes_by_id

# The value an exec probe prints as JSON (json.dumps escapes them: "\u0000", "\ud800"...).
BAD_IDS = {
    "nul": "i-\0x",
    "newline": "i-1\ni-2",
    "tab": "i-\t1",
    "space": "i- 1",
    "bidi-override": "i-\u202e1",
    "zero-width": "i-\u200b1",
    "surrogate": "i-\ud8001",
    "line-separator": "i-\u20281",
    "too-long": "i-" + "x" * 5000,
    "empty": "",
    "a-list": ["i-1"],
    "a-mapping": {"id": "i-1"},
    "a-boolean": True,
}


def sources_yaml(tmp_path, bad_value, cap: str = "instance-id") -> str:
    """`bad` (an exec probe, preferred) gives `bad_value` as `cap`; `good` (static) gives sane values."""
    probe = tmp_path / "probe.json"
    probe.write_text(json.dumps({"instance-id": "i-bad", "hostname": "bad", cap: bad_value}))
    path = tmp_path / "sources.yaml"
    path.write_text(f"""version: 1
sources:
  - name: bad
    type: exec
    capabilities: [instance-id, hostname]
    settings: {{command: [cat, {json.dumps(str(probe))}]}}
  - name: good
    type: static
    capabilities: [instance-id, hostname]
    settings: {{data: {{instance-id: i-good, hostname: good-host}}}}
""")
    return str(path)


@pytest.mark.parametrize("case", list(BAD_IDS))
def test_a_bad_instance_id_fails_its_source_and_the_next_one_serves(tmp_path, case):
    """Before: a NUL reached create-user's environment ("embedded null byte") and it failed,
    taking ssh-keys, chpasswd and the rest with it."""
    root = tmp_path / "root"
    proc = cidag("run", "--sources", sources_yaml(tmp_path, BAD_IDS[case]),
                 "--modules", str(REPO / "modules.yaml"), "--root", str(root),
                 env={"CIDAG_NETWORK_WAIT_ONLINE": "false"})
    assert "Traceback" not in proc.stderr and "embedded null byte" not in proc.stdout + proc.stderr
    record = load_record(root / "var/lib/cidag/last-run.json")
    nodes = nodes_by_id(record)
    bad = nodes["source:bad"]
    assert bad["status"] == "failed"
    assert bad["reason"].startswith("capability instance-id: ") and "\n" not in bad["reason"]
    assert len(bad["reason"]) < 200  # a 5,000-character id is not repeated in full
    assert record["instance_id"] == "i-good"
    assert record["capabilities"]["instance-id"]["provider"] == "source:good"
    for module in ("create-user", "ssh-keys", "set-hostname"):
        assert nodes[f"module:{module}"]["status"] == "ok", nodes[f"module:{module}"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / "var/lib/cidag/instances/i-good/markers/create-user.json").is_file()
    assert (root / "etc/hostname").read_text().strip() == "good-host"


@pytest.mark.parametrize("value", ["web\0evil", "web\n127.0.0.1 evil", "h" * 5000, "a\u202eb"])
def test_a_bad_hostname_fails_its_source_and_never_reaches_etc(tmp_path, value):
    root = tmp_path / "root"
    proc = cidag("run", "--sources", sources_yaml(tmp_path, value, cap="hostname"),
                 "--modules", str(REPO / "modules.yaml"), "--root", str(root), "--only", "set-hostname",
                 env={"CIDAG_NETWORK_WAIT_ONLINE": "false"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nodes = nodes_by_id(load_record(root / "var/lib/cidag/last-run.json"))
    assert nodes["source:bad"]["status"] == "failed"
    assert nodes["source:bad"]["reason"].startswith("capability hostname: ")
    assert (root / "etc/hostname").read_text() == "good-host\n"
    assert "evil" not in (root / "etc/hosts").read_text() if (root / "etc/hosts").exists() else True


def test_the_only_source_with_a_nul_instance_id_skips_what_needs_it_in_one_line(tmp_path, manifests):
    s, m = manifests("""
    version: 1
    sources:
      - {name: only, type: exec, capabilities: [instance-id],
         settings: {command: 'printf %s "{\\"instance-id\\": \\"i-\\\\u0000x\\"}"'}}
    """, """
    version: 1
    modules:
      - {name: work, type: exec, settings: {command: 'touch "$CIDAG_ROOT/ran"'}}
    """)
    root = tmp_path / "root"
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root))
    assert "Traceback" not in proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("source:only"))
    assert "failed" in line and "capability instance-id: 'i-\\x00x' holds a NUL byte at offset 2" in line
    skipped = next(ln for ln in proc.stdout.splitlines() if ln.startswith("module:work"))
    assert "skipped" in skipped and "capability instance-id unavailable: only failed" in skipped
    assert not (root / "ran").exists()


def test_a_nul_in_another_capability_is_left_out_of_the_environment(tmp_path, manifests):
    """The environment of a command cannot carry a NUL: the variable is absent, the command runs."""
    s, m = manifests("""
    version: 1
    sources:
      - {name: s, type: static, capabilities: [instance-id, zone],
         settings: {data: {instance-id: i-1, zone: "a\\0b"}}}
    """, """
    version: 1
    modules:
      - {name: work, type: exec, wants: [zone], settings: {command: 'echo "zone=${CIDAG_CAP_ZONE-absent}"'}}
    """)
    root = tmp_path / "root"
    proc = cidag("run", "--sources", s, "--modules", m, "--root", str(root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    node = nodes_by_id(load_record(root / "var/lib/cidag/last-run.json"))["module:work"]
    assert node["status"] == "ok" and "zone=absent" in node["output"]


@pytest.mark.parametrize("value", ["i-0123456789abcdef0", "6c1f2a7e-3b1d-4c5e-9f0a-8d2b7c4e1a90", "1234567890123",
                                   1234567890123, "iid-local01", "i." * 100, "ünïcode-id"])
def test_ordinary_instance_ids_pass(value):
    assert check_name_value("instance-id", value) == value


def test_limits_and_other_capabilities():
    assert check_name_value("instance-id", "x" * MAX_NAME_VALUE)
    with pytest.raises(ValueRefused, match="256 characters long"):
        check_name_value("instance-id", "x" * (MAX_NAME_VALUE + 1))
    assert check_name_value("hostname", "My Host") == "My Host"  # the hostname module judges labels
    assert check_name_value("user-data", "#!/bin/sh\n\0") == "#!/bin/sh\n\0"  # documents are not names


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_static_source_with_a_bad_instance_id_is_a_manifest_error(tmp_path, manifests, command):
    """Static data is manifest input: `check` (and `run`, before anything runs) says where,
    file:line:col, exit 2, as for any bad setting."""
    s, m = manifests("""
    version: 1
    sources:
      - name: s
        type: static
        capabilities: [instance-id, hostname]
        settings:
          data: {instance-id: "i-\\0x", hostname: "ok"}
    """, """
    version: 1
    modules:
      - {name: work, type: exec, settings: {command: 'touch "$CIDAG_ROOT/ran"'}}
    """)
    args = [s, m] if command == "check" else ["--sources", s, "--modules", m, "--root", str(tmp_path / "root")]
    proc = cidag(command, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert f"{s}:7:27: static: settings: " in out and "instance-id 'i-\\x00x' holds a NUL byte at offset 2" in out
    assert "Traceback" not in out and not (tmp_path / "root/ran").exists()
