"""cidag.analysis: blame, critical chain, slack and timeline over hand-built run records."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cidag import analysis
from cidag.errors import UsageError
from record_factory import big_record, make_record, proposal_record

PROPOSAL_CHAIN = ["source:openstack", "cap:admin-password", "module:set-password", "module:final-message"]


def test_blame_longest_first_and_only_started_nodes():
    rows = analysis.blame(proposal_record())
    assert [r["id"] for r in rows[:3]] == ["source:openstack", "source:configdrive", "module:create-user"]
    assert "module:write-files" not in {r["id"] for r in rows}  # skipped, never started
    durations = [r["duration_s"] for r in rows]
    assert durations == sorted(durations, reverse=True)


def test_longest_chain_is_the_one_a_person_draws():
    chain, total = analysis.longest_chain(proposal_record(with_critical_path=False))
    assert chain == PROPOSAL_CHAIN
    assert total == pytest.approx(2.28)


def test_critical_chain_total_equals_record_critical_path_s():
    record = proposal_record()
    cc = analysis.critical_chain(record)
    assert [r["id"] for r in cc["chain"]] == record["critical_path"]
    assert cc["total_s"] == pytest.approx(record["critical_path_s"], abs=1e-6)
    assert cc["makespan_s"] == pytest.approx(2.30)
    starts = {r["id"]: r["start_s"] for r in cc["chain"]}
    assert starts["module:set-password"] == 2.06
    assert starts["cap:admin-password"] == 2.05  # a capability's offset is when it settled


def test_slack_of_nodes_off_the_chain():
    cc = analysis.critical_chain(proposal_record())
    slack = {r["id"]: r["slack_s"] for r in cc["slack"]}
    assert set(slack) == {"source:configdrive", "source:ec2", "module:create-user", "module:set-hostname"}
    # create-user may end as late as set-password's start (2.05): 2.05 - 0.2 - 0.31
    assert slack["module:create-user"] == pytest.approx(1.54)
    assert slack["source:configdrive"] == pytest.approx(1.54)
    assert slack["module:set-hostname"] == pytest.approx(2.25 - 0.08 - 0.31)
    assert [r["slack_s"] for r in cc["slack"]] == sorted(r["slack_s"] for r in cc["slack"])


def test_select_first_capability_waits_only_on_the_winner():
    # Both sources export hostname; with select: first it settled on the fast one.
    record = make_record(
        [("source:fast", "available", 0.0, 0.1, 1), ("source:slow", "available", 0.0, 3.0, 2),
         ("module:m", "ok", 0.1, 0.6, 0)],
        {"hostname": ("resolved", "source:fast", 0.1, ["source:fast"])},
        [("source:fast", "cap:hostname", "exports"), ("source:slow", "cap:hostname", "exports"),
         ("cap:hostname", "module:m", "needs")],
    )
    chain, total = analysis.longest_chain(record)
    assert chain == ["source:slow"]  # the slow probe itself is the longest chain
    assert total == pytest.approx(3.0)
    info = analysis.schedule(record)
    assert info["module:m"]["es"] == pytest.approx(0.1)


def test_timeline_rows_and_caps():
    tl = analysis.timeline(proposal_record())
    ids = [r["id"] for r in tl["rows"]]
    assert ids[-1] == "module:write-files"  # never started: last
    assert [r["start_s"] for r in tl["rows"][:-1]] == sorted(r["start_s"] for r in tl["rows"][:-1])
    crit = {r["id"] for r in tl["rows"] if r["critical"]}
    assert crit == {"source:openstack", "module:set-password", "module:final-message"}
    caps = {c["name"]: c for c in tl["caps"]}
    assert caps["admin-password"]["critical"] and caps["admin-password"]["provider"] == "source:openstack"
    assert caps["user-data"]["status"] == "unavailable"


def test_big_record_chain_sums():
    record = big_record(200)
    cc = analysis.critical_chain(record)
    assert cc["total_s"] == pytest.approx(record["critical_path_s"])
    assert cc["total_s"] <= cc["makespan_s"] + 1e-9


@pytest.mark.parametrize("text, message", [
    ("{", "invalid JSON"),
    ("[]", "expected a JSON object"),
    ('{"version": 7, "nodes": []}', "unsupported version 7"),
    ('{"version": 1, "nodes": [1]}', "'nodes' must be a list"),
])
def test_load_record_bad_input_is_one_line(tmp_path, text, message):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        analysis.load_record(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_load_record_missing(tmp_path):
    with pytest.raises(UsageError, match="no run record"):
        analysis.load_record(tmp_path / "nope.json")


@st.composite
def random_records(draw):
    n = draw(st.integers(1, 12))
    durs = draw(st.lists(st.floats(0, 5, allow_nan=False), min_size=n, max_size=n))
    nodes, edges = [], []
    for i in range(n):
        nodes.append((f"module:m{i}", "ok", 0.0, durs[i], 0))
        for j in range(i):
            if draw(st.booleans()):
                edges.append((f"module:m{j}", f"module:m{i}", draw(st.sampled_from(["depends_on", "after"]))))
    return make_record(nodes, {}, edges)


@settings(max_examples=60, deadline=None)
@given(random_records())
def test_longest_chain_properties(record):
    chain, total = analysis.longest_chain(record)
    info = analysis.schedule(record)
    durs = {n["id"]: n["duration_s"] for n in record["nodes"]}
    assert total == pytest.approx(max(i["ef"] for i in info.values()))
    assert sum(durs[c] for c in chain) == pytest.approx(total)
    edges = {(e[0], e[1]) for e in record["edges"]}
    assert all((a, b) in edges for a, b in zip(chain, chain[1:]))
    assert all(i["slack"] >= 0 for i in info.values())
    assert all(info[c]["slack"] == pytest.approx(0, abs=1e-6) for c in chain)
    json.dumps(analysis.critical_chain(record))  # serialisable for --format json


def test_non_finite_times_are_refused(tmp_path):
    record = proposal_record()
    record["nodes"][0]["end_s"] = float("inf")
    assert "end_s must be a number" in analysis.check_record(record)
