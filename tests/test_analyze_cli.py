"""`cidag analyze blame|critical-chain|plot|trace` on hand-built and real run records."""
from __future__ import annotations

import json
import shutil
import struct
import sys
import subprocess
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cidag.cli import main
from record_factory import big_record, proposal_record, real_run, write_state

SVG = "{http://www.w3.org/2000/svg}"


def cli(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def state(tmp_path):
    return write_state(tmp_path / "state", proposal_record())


@pytest.fixture(scope="module")
def real_state(tmp_path_factory):
    return real_run(tmp_path_factory.mktemp("analyze"), sleep=0.3)


def test_blame_default_record_from_state_dir(state, capsys):
    rc, out, _ = cli(capsys, "analyze", "blame", "--state-dir", str(state))
    assert rc == 0
    first = out.splitlines()[0].split()
    assert first == ["2.050s", "source:openstack", "available"]
    assert "module:write-files" not in out


def test_critical_chain_text(state, capsys):
    rc, out, _ = cli(capsys, "analyze", "critical-chain", str(state / "last-run.json"))
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "critical chain: 2.28s of a 2.30s makespan (critical_path_s 2.28s)"
    chain = [line.split()[0] for line in lines[1:5]]
    assert chain == ["source:openstack", "cap:admin-password", "module:set-password", "module:final-message"]
    assert lines[3].split()[1:3] == ["@2.06s", "+0.20s"]
    assert lines[5].split() == ["total", "=2.28s"]
    assert "module:create-user" in out.split("slack")[1]


def test_critical_chain_json_total_is_critical_path_s(state, capsys):
    rc, out, _ = cli(capsys, "analyze", "critical-chain", "--format", "json", "--state-dir", str(state))
    data = json.loads(out)
    assert data["total_s"] == pytest.approx(data["critical_path_s"], abs=1e-6)


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("record", [proposal_record(), big_record(200)], ids=["proposal", "200-nodes"])
def test_plot_is_valid_svg_and_renders(tmp_path, capsys, record):
    write_state(tmp_path, record)
    svg = tmp_path / "t.svg"
    rc, _, err = cli(capsys, "analyze", "plot", "--state-dir", str(tmp_path), "-o", str(svg))
    assert rc == 0 and f"wrote {svg}" in err
    root = ET.parse(svg).getroot()
    assert root.tag == SVG + "svg"
    titles = [t.text for t in root.iter(SVG + "title")]
    started = [n for n in record["nodes"] if n["start_s"] is not None]
    assert sum(1 for t in titles if t and not t.startswith("cap:")) >= len(started)
    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        pytest.skip("rsvg-convert (librsvg2-bin) not installed")
    png = tmp_path / "t.png"
    subprocess.run([rsvg, str(svg), "-o", str(png)], check=True, timeout=60)
    width, height = _png_size(png)
    assert width >= 1000 and height >= 16 * len(record["nodes"])


def test_trace_events(state, tmp_path, capsys):
    out_file = tmp_path / "trace.json"
    rc, _, _ = cli(capsys, "analyze", "trace", "--state-dir", str(state), "-o", str(out_file))
    assert rc == 0
    trace = json.loads(out_file.read_text())
    events = trace["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["name"] for e in spans} == {
        "source:configdrive", "source:openstack", "source:ec2", "module:create-user",
        "module:set-hostname", "module:set-password", "module:final-message"}
    by = {e["name"]: e for e in spans}
    assert by["module:set-password"]["ts"] == pytest.approx(2.06e6)
    assert by["module:set-password"]["dur"] == pytest.approx(0.2e6)
    assert by["module:set-password"]["tid"] == 1  # worker 0
    instants = [e for e in events if e["ph"] == "i"]
    assert "cap:admin-password resolved" in {e["name"] for e in instants}
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names[0] == "capabilities" and names[1] == "worker 0" and names[3] == "source lane 2"
    _assert_tracks_do_not_overlap(spans)


def _assert_tracks_do_not_overlap(spans):
    tracks = {}
    for e in spans:
        tracks.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for lane in tracks.values():
        lane.sort()
        assert all(a[1] <= b[0] + 1e-3 for a, b in zip(lane, lane[1:]))


def test_trace_without_workers_gets_lanes():
    from cidag.trace import to_trace

    record = big_record(60)
    for node in record["nodes"]:
        node["worker"] = None
    spans = [e for e in to_trace(record)["traceEvents"] if e["ph"] == "X"]
    _assert_tracks_do_not_overlap(spans)


def test_real_run_chain_and_trace(real_state, tmp_path, capsys):
    record = json.loads((real_state / "last-run.json").read_text())
    rc, out, _ = cli(capsys, "analyze", "critical-chain", "--format", "json", "--state-dir", str(real_state))
    data = json.loads(out)
    assert rc == 0
    assert [r["id"] for r in data["chain"]] == record["critical_path"]
    assert data["total_s"] == pytest.approx(record["critical_path_s"], abs=1e-3)
    assert "module:slow" in record["critical_path"]
    # analysis.longest_chain (for records without a critical_path) agrees with the engine's
    from cidag.analysis import longest_chain

    chain, total = longest_chain(record)
    assert chain == record["critical_path"] and total == pytest.approx(record["critical_path_s"], abs=1e-5)
    rc, out, _ = cli(capsys, "analyze", "trace", "--state-dir", str(real_state), "-o", "-")
    spans = [e for e in json.loads(out)["traceEvents"] if e["ph"] == "X"]
    workers = {n["id"]: n["worker"] for n in record["nodes"] if n["start_s"] is not None}
    assert {e["name"]: e["tid"] - 1 for e in spans} == workers
    _assert_tracks_do_not_overlap(spans)


@pytest.mark.parametrize("sub", ["blame", "critical-chain"])
def test_missing_record_is_one_line(tmp_path, capsys, sub):
    rc, out, err = cli(capsys, "analyze", sub, "--state-dir", str(tmp_path))
    assert rc == 2 and out == ""
    assert err.strip() == f"{tmp_path / 'last-run.json'}: no run record (has cidag run yet? use --root or --state-dir, or give a RECORD path)"


def test_corrupt_record_is_one_line(tmp_path, capsys):
    bad = tmp_path / "r.json"
    bad.write_text('{"version": 1, "nodes": "x"}')
    rc, _, err = cli(capsys, "analyze", "plot", str(bad), "-o", str(tmp_path / "x.svg"))
    assert rc == 2 and "not a run record: 'nodes' must be a list" in err
    assert len(err.strip().splitlines()) == 1


def test_unwritable_output(state, tmp_path, capsys):
    rc, _, err = cli(capsys, "analyze", "plot", "--state-dir", str(state), "-o", str(tmp_path / "no/such/dir.svg"))
    assert rc == 2 and "cannot write" in err and "Traceback" not in err


PROPOSAL_SOURCES = """\
version: 1
sources:
  - name: configdrive
    type: static
    capabilities: [instance-id, hostname, public-keys]
    settings: {delay: 0.3, data: {instance-id: iid-p, hostname: h, public-keys: [k1]}}
  - name: openstack
    type: static
    capabilities: [instance-id, hostname, admin-password, post-password]
    settings: {delay: 1.0, data: {instance-id: iid-p, hostname: h2, admin-password: pw, post-password: op}}
  - name: ec2
    type: exec
    capabilities: [instance-id, user-data]
    settings: {command: "echo no ec2 >&2; exit 3"}
"""
PROPOSAL_MODULES = """\
version: 1
modules:
  - {name: create-user, type: exec, priority: 0, needs: [instance-id], wants: [public-keys],
     provides: [default-user], settings: {command: "sleep 0.1"}}
  - {name: set-hostname, type: exec, priority: 1, needs: [hostname], settings: {command: "true"}}
  - {name: set-password, type: exec, needs: [admin-password], wants: [post-password],
     depends_on: [create-user], settings: {command: "sleep 0.2"}}
  - {name: final-message, type: exec, depends_on: [set-password], after: [set-hostname],
     settings: {command: "true"}}
"""


def test_proposal_scenario_chain_is_the_one_drawn_by_hand(tmp_path, capsys):
    from record_factory import cidag_env

    (tmp_path / "s.yaml").write_text(PROPOSAL_SOURCES)
    (tmp_path / "m.yaml").write_text(PROPOSAL_MODULES)
    proc = subprocess.run([sys.executable, "-m", "cidag", "run", "--root", str(tmp_path / "root"), "-q",
                           "-j", "2", "--sources", str(tmp_path / "s.yaml"), "--modules", str(tmp_path / "m.yaml")],
                          capture_output=True, text=True, env=cidag_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    state = tmp_path / "root/var/lib/cidag"
    record = json.loads((state / "last-run.json").read_text())
    rc, out, _ = cli(capsys, "analyze", "critical-chain", "--format", "json", "--state-dir", str(state))
    data = json.loads(out)
    ids = [r["id"] for r in data["chain"]]
    assert ids[0] == "source:openstack" and ids[2:] == ["module:set-password", "module:final-message"]
    assert ids[1] in ("cap:admin-password", "cap:post-password")
    assert data["total_s"] == pytest.approx(record["critical_path_s"], abs=1e-3)
    slack = {r["id"]: r["slack_s"] for r in data["slack"]}
    assert slack["module:create-user"] > 0.3  # it had time to spare while OpenStack answered


_junk = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=3),
                  st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


@st.composite
def mangled_records(draw):
    """The proposal record with a few fields replaced by junk: what a corrupt or foreign file might hold."""
    record = proposal_record()
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["top", "node", "cap", "edge"]))
        if where == "top":
            record[draw(st.sampled_from(["nodes", "edges", "capabilities", "critical_path", "makespan_s",
                                         "critical_path_s", "result", "exit_code", "started_at"]))] = draw(_junk)
        elif where == "node" and isinstance(record.get("nodes"), list) and record["nodes"]:
            node = record["nodes"][draw(st.integers(0, len(record["nodes"]) - 1))]
            if isinstance(node, dict):
                node[draw(st.sampled_from(["id", "kind", "status", "start_s", "end_s", "duration_s", "reason",
                                           "worker"]))] = draw(_junk)
        elif where == "cap" and isinstance(record.get("capabilities"), dict) and record["capabilities"]:
            name = draw(st.sampled_from(sorted(record["capabilities"])))
            record["capabilities"][name] = draw(st.one_of(_junk, st.fixed_dictionaries(
                {"status": _junk, "provider": _junk, "settled_s": _junk, "waited_for": _junk})))
        elif where == "edge" and isinstance(record.get("edges"), list) and record["edges"]:
            record["edges"][draw(st.integers(0, len(record["edges"]) - 1))] = draw(_junk)
    return record


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=mangled_records())
def test_any_record_gets_an_answer_or_one_line_never_a_traceback(tmp_path, capsys, record):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record, allow_nan=True))
    runs = [["analyze", "blame", str(path)], ["analyze", "critical-chain", str(path)],
            ["analyze", "plot", str(path), "-o", str(tmp_path / "r.svg")],
            ["analyze", "trace", str(path), "-o", str(tmp_path / "r.json.trace")]]
    for args in runs:
        rc, _, err = cli(capsys, *args)
        assert rc in (0, 2), (args, err)
        if rc == 2:
            assert len(err.strip().splitlines()) == 1 and "internal error" not in err
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "last-run.json").write_text(path.read_text())
    rc, _, err = cli(capsys, "status", "--long", "--state-dir", str(state), "--root", str(tmp_path))
    assert "internal error" not in err and "Traceback" not in err
