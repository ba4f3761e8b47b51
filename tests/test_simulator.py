"""`cidag serve-metadata` as a user runs it, and the simulator's fault injection."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cidag.simulator import Fault, Simulator, load_fixture

REPO = Path(__file__).resolve().parent.parent


def start_cli(*args: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "cidag", "serve-metadata", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = proc.stdout.readline().strip()
    return proc, url


def get(url: str, method: str = "GET", data: bytes | None = None, headers=None, timeout=5):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_its_url_serves_and_stops_on_signal(sig):
    proc, url = start_cli("--fault", "{path: /openstack, delay: 100ms}")
    try:
        assert url.startswith("http://127.0.0.1:")
        status, body = get(f"{url}/openstack")
        assert status == 200 and b"latest" in body
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert "GET /openstack -> 200" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_cli_writes_seed_directories(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "cidag", "serve-metadata", "--no-serve",
         "--write-configdrive", str(tmp_path / "cd"), "--write-nocloud", str(tmp_path / "nc"),
         "--write-sysfs", str(tmp_path / "sys")],
        capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    meta = json.loads((tmp_path / "cd/openstack/latest/meta_data.json").read_text())
    assert meta["hostname"] == "sim-host"
    assert "instance-id:" in (tmp_path / "nc/meta-data").read_text()
    assert (tmp_path / "sys/class/dmi/id/product_name").read_text().strip() == "OpenStack Nova"


def test_cli_bad_fault_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "cidag", "serve-metadata", "--fault", "{pth: /x}"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 2
    assert "unknown key(s) pth" in out.stderr and "Traceback" not in out.stderr


def test_fixture_file_and_its_errors(tmp_path):
    fixture = tmp_path / "f.json"
    fixture.write_text(json.dumps({"instance": {"instance-id": "iid-1", "hostname": "h"}}))
    with Simulator(load_fixture(fixture)) as sim:
        assert get(f"{sim.url}/openstack/latest/meta_data.json")[1].find(b'"iid-1"') > 0
    fixture.write_text("instances: {}\n")
    with pytest.raises(ValueError, match="unknown fixture key"):
        load_fixture(fixture)


def test_ec2_requires_a_token():
    with Simulator() as sim:
        assert get(f"{sim.url}/latest/meta-data/instance-id")[0] == 401
        status, token = get(f"{sim.url}/latest/api/token", "PUT",
                            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        assert status == 200
        status, body = get(f"{sim.url}/latest/meta-data/instance-id",
                           headers={"X-aws-ec2-metadata-token": token.decode()})
        assert (status, body) == (200, b"i-0c1d2a3b4e5f60718")


def test_password_endpoint_records_then_answers_409():
    with Simulator() as sim:
        url = f"{sim.url}/openstack/2013-04-04/password"
        assert get(url, "POST", b"first")[0] == 200
        assert get(url, "POST", b"second")[0] == 409
        assert sim.passwords == [b"first"]
        assert get(url) == (200, b"first")


def test_first_n_faults_then_normal():
    with Simulator() as sim:
        sim.add_fault("/openstack", status=500, first=2)
        codes = [get(f"{sim.url}/openstack")[0] for _ in range(3)]
        assert codes == [500, 500, 200]


def test_jittered_delay_and_404():
    with Simulator() as sim:
        sim.add_fault("/openstack", delay=0.2, jitter=0.2)
        sim.add_fault("/openstack/latest/user_data", status=404)
        t0 = time.monotonic()
        assert get(f"{sim.url}/openstack")[0] == 200
        assert 0.15 < time.monotonic() - t0 < 2.5
        assert get(f"{sim.url}/openstack/latest/user_data")[0] == 404


def test_stop_releases_stalled_requests():
    sim = Simulator().start()
    sim.add_fault("*", stall=True)
    import threading

    result = []
    t = threading.Thread(target=lambda: result.append(_try(f"{sim.url}/x")))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    sim.stop()
    t.join(timeout=5)
    assert not t.is_alive() and time.monotonic() - t0 < 3


def _try(url):
    try:
        return get(url, timeout=10)
    except Exception as exc:  # the connection is closed without an answer
        return exc


def test_fault_validation():
    with pytest.raises(ValueError, match="unknown key"):
        Fault.from_dict({"path": "/x", "sleep": 1})
    assert Fault.from_dict({"path": "/x", "delay": "1.5s"}).delay == 1.5


def test_a_client_that_resets_its_connection_leaves_no_traceback():
    """A client reset mid-connection (a probe killed at its deadline, a guest rebooting) is
    routine for a metadata service: `serve-metadata` prints nothing for it (socketserver used
    to print 'Exception occurred during processing of request' and a traceback)."""
    import socket
    import struct
    from urllib.parse import urlsplit

    proc, url = start_cli()
    try:
        host, port = urlsplit(url).hostname, urlsplit(url).port
        for _ in range(3):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /openstack HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 ")
            # Close with a reset (SO_LINGER 0) while the server waits for the next request.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        time.sleep(0.5)
        assert get(url + "/openstack")[0] == 200  # still serving
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err and "Exception occurred" not in err, err
