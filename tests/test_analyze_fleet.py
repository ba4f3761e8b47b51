"""`cidag analyze trace` and `analyze blame` over many run records (a fleet's boots)."""
from __future__ import annotations

import json

from cidag.cli import main
from record_factory import make_record


def guest(i: int, probe_s: float, retries: int, started: str) -> dict:
    record = make_record(
        [("source:openstack", "available", 0.0, probe_s, 2), ("module:settled", "ok", probe_s, probe_s + 0.1, 0)],
        {"hostname": ("resolved", "source:openstack", probe_s, ["source:openstack"])},
        [("source:openstack", "cap:hostname", "exports"), ("cap:hostname", "module:settled", "needs")],
        instance_id=f"guest-{i}", started_at=started)
    record["nodes"][0]["counters"] = {"requests": 5 + retries, "retries": retries}
    return record


def write_fleet(tmp_path) -> list[str]:
    guests = [guest(0, 1.0, 0, "2026-11-27T11:40:00.000000Z"),
              guest(1, 2.0, 3, "2026-11-27T11:40:00.500000Z"),
              guest(2, 4.0, 7, "2026-11-27T11:40:01.250000Z")]
    paths = []
    for i, record in enumerate(guests):
        path = tmp_path / f"guest{i}.json"
        path.write_text(json.dumps(record))
        paths.append(str(path))
    return paths


def cli(capsys, *args):
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_trace_of_many_records_has_a_process_per_guest_on_one_clock(tmp_path, capsys):
    paths = write_fleet(tmp_path)
    rc, out, err = cli(capsys, "analyze", "trace", *paths, "-o", "-")
    assert rc == 0, err
    events = json.loads(out)["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names == {1: "guest-0 ok", 2: "guest-1 ok", 3: "guest-2 ok"}
    probes = {e["pid"]: e for e in events if e["ph"] == "X" and e["name"] == "source:openstack"}
    # Each run's spans are shifted by when it started after the first.
    assert [probes[p]["ts"] for p in (1, 2, 3)] == [0.0, 500000.0, 1250000.0]
    assert [probes[p]["dur"] for p in (1, 2, 3)] == [1e6, 2e6, 4e6]
    settled = [e for e in events if e["ph"] == "i" and e["pid"] == 3]
    assert settled[0]["ts"] == 1250000.0 + 4e6


def test_a_directory_of_records_is_read_whole(tmp_path, capsys):
    write_fleet(tmp_path)
    rc, out, _ = cli(capsys, "analyze", "trace", str(tmp_path), "-o", "-")
    assert rc == 0
    assert len({e["pid"] for e in json.loads(out)["traceEvents"]}) == 3


def test_blame_over_many_records_gives_percentiles_per_node(tmp_path, capsys):
    paths = write_fleet(tmp_path)
    rc, out, _ = cli(capsys, "analyze", "blame", *paths, "--format", "json")
    assert rc == 0
    fb = json.loads(out)
    assert fb["runs"] == 3
    probe = fb["nodes"][0]
    assert probe["id"] == "source:openstack"
    assert (probe["p50_s"], probe["p99_s"], probe["max_s"]) == (2.0, 4.0, 4.0)
    assert probe["statuses"] == {"available": 3} and probe["retries"] == 10
    assert fb["caps"] == [{"id": "cap:hostname", "runs": 3, "p50_s": 2.0, "p90_s": 4.0, "p99_s": 4.0, "max_s": 4.0}]
    rc, out, _ = cli(capsys, "analyze", "blame", *paths)
    lines = out.splitlines()
    assert lines[0].startswith("3 runs")
    assert "source:openstack" in lines[2] and "3 available; 10 retries" in lines[2]
    assert lines[2].split()[:4] == ["2.000s", "4.000s", "4.000s", "4.000s"]


def test_one_record_keeps_the_single_run_output(tmp_path, capsys):
    paths = write_fleet(tmp_path)
    rc, out, _ = cli(capsys, "analyze", "blame", paths[2])
    assert rc == 0 and out.splitlines()[0].split() == ["4.000s", "source:openstack", "available"]


def test_a_bad_record_among_many_is_one_line(tmp_path, capsys):
    paths = write_fleet(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    rc, _, err = cli(capsys, "analyze", "blame", *paths, str(tmp_path / "broken.json"))
    assert rc == 2
    assert err.strip().count("\n") == 0 and "broken.json: not a run record" in err
