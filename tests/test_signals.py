"""SIGINT/SIGTERM: nothing new starts, running commands are killed, the record says interrupted, exit 130."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import cli_env, load_record, nodes_by_id, process_gone


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_interrupts_the_run(tmp_path, manifests, sig):
    pidfile = tmp_path / "child.pid"
    started = tmp_path / "started"
    s, m = manifests(
        "version: 1\nsources: []\n",
        f"""
        version: 1
        modules:
          - name: long
            type: exec
            frequency: per-boot
            settings: {{command: "touch {started}; sleep 60 & echo $! > {pidfile}; wait"}}
          - name: later
            type: exec
            frequency: per-boot
            depends_on: [long]
            settings: {{command: "true"}}
        """)
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, "-m", "cidag", "run", "--sources", s, "--modules", m, "--root", str(root)],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "module never started"
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    rec = load_record(root / "var/lib/cidag/last-run.json")
    n = nodes_by_id(rec)
    assert rec["result"] == "interrupted"
    assert n["module:long"]["status"] == "interrupted"
    assert n["module:long"]["reason"] == f"interrupted by {signal.Signals(sig).name}"
    assert n["module:later"]["status"] == "skipped"
    assert not (root / "var/lib/cidag/running.json").exists()
    assert process_gone(int(pidfile.read_text())), "the command of an interrupted module survived"
