"""cidag.http against real loopback servers (the simulator) and closed ports."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from cidag.errors import SourceUnavailable
from cidag.http import Client, HTTPFailure, fetch_all
from cidag.simulator import Simulator, load_fixture


@pytest.fixture
def sim():
    with Simulator(load_fixture(None)) as s:
        yield s


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(url: str, deadline: float = 10.0, **kw) -> Client:
    kw.setdefault("backoff", 0.05)
    return Client(url, deadline=time.monotonic() + deadline, **kw)


def test_get_returns_the_body(sim):
    resp = client(sim.url).get("openstack")
    assert resp.status == 200
    assert "latest" in resp.text().split()


def test_refused_port_1_is_unavailable_at_once():
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailable) as exc:
        client("http://127.0.0.1:1", retries=5).get("openstack")
    assert time.monotonic() - t0 < 2
    assert str(exc.value).startswith("connection refused at http://127.0.0.1:1 (1 try in")


def test_closed_port_is_unavailable():
    port = closed_port()
    with pytest.raises(SourceUnavailable, match=f"connection refused at http://127.0.0.1:{port}"):
        client(f"http://127.0.0.1:{port}").get("x")


def test_flapping_500_is_retried_until_it_answers(sim):
    sim.add_fault("/openstack", status=500, first=2)
    resp = client(sim.url, retries=3).get("openstack")
    assert resp.status == 200
    assert [r[3] for r in sim.requests] == [500, 500, 200]


def test_persistent_500_fails_after_the_retries(sim):
    sim.add_fault("/openstack", status=503)
    with pytest.raises(HTTPFailure, match=r"HTTP 503 Service Unavailable at .*/openstack \(3 tries in"):
        client(sim.url, retries=2).get("openstack")
    assert len(sim.requests) == 3


def test_404_is_not_retried(sim):
    resp = client(sim.url, retries=3).get("nothing-here")
    assert resp.status == 404
    assert len(sim.requests) == 1


def test_slow_answer_within_the_request_timeout(sim):
    sim.add_fault("/openstack", delay=0.4)
    assert client(sim.url, timeout=3).get("openstack").status == 200


def test_stalled_server_fails_at_the_deadline_not_later(sim):
    sim.add_fault("/openstack", stall=True)
    t0 = time.monotonic()
    with pytest.raises(HTTPFailure, match="timeout at .*/openstack"):
        client(sim.url, deadline=1.0, timeout=30).get("openstack")
    took = time.monotonic() - t0
    assert 0.5 < took < 1.0 + 2


def test_retries_never_sleep_past_the_deadline(sim):
    sim.add_fault("/openstack", status=500)
    t0 = time.monotonic()
    # What failed is said as it was (HTTP 500), the deadline as why there was no other try.
    with pytest.raises(HTTPFailure, match=r"^HTTP 500 .*at .*/openstack \(\d+ tries in .*\); no time left for "
                                          r"another try before the source's deadline$"):
        client(sim.url, deadline=1.0, retries=1000, backoff=0.2, max_backoff=0.5).get("openstack")
    assert time.monotonic() - t0 < 1.0 + 2


def test_a_connection_reset_is_reported_as_a_reset_not_a_timeout(sim):
    """Issue 15: a service that resets every connection (TCP RST, the simulator's `reset`
    fault) read `timeout at URL ...; last error: connection reset` once the deadline ended
    the retries. Now the headline is what happened, whichever of deadline or budget ends it."""
    sim.add_fault("/openstack", reset=True)
    t0 = time.monotonic()
    with pytest.raises(HTTPFailure) as by_deadline:
        client(sim.url, deadline=1.0, retries=1000, backoff=0.05, max_backoff=0.2).get("openstack")
    assert time.monotonic() - t0 < 1.0 + 2
    message = str(by_deadline.value)
    assert message.startswith(f"connection reset at {sim.url}/openstack (") and "timeout" not in message
    assert message.endswith("no time left for another try before the source's deadline")
    with pytest.raises(HTTPFailure, match=r"^connection reset at .*\(3 tries in .*\); retry budget of the source \(2\) spent$"):
        client(sim.url, retries=2).get("openstack")
    assert all(status == 0 for _, _, path, status in sim.requests if path == "/openstack")  # never answered


def test_a_reset_once_is_retried_on_a_new_connection(sim):
    sim.add_fault("/openstack", reset=True, first=1)
    assert client(sim.url, retries=1).get("openstack").status == 200


def test_a_stall_is_still_a_timeout(sim):
    sim.add_fault("/openstack", stall=True)
    with pytest.raises(HTTPFailure, match=r"^timeout at .*/openstack"):
        client(sim.url, deadline=0.5, timeout=0.2, retries=1000, backoff=0.01).get("openstack")


def test_close_mid_body_is_retried_then_reported(sim):
    sim.add_fault("/openstack", close_mid_body=True)
    with pytest.raises(HTTPFailure, match=r"closed mid-body.*\(3 tries in"):
        client(sim.url, retries=2).get("openstack")


def test_close_mid_body_once_then_success(sim):
    sim.add_fault("/openstack", close_mid_body=True, first=1)
    assert client(sim.url, retries=2).get("openstack").status == 200


def test_announced_oversized_body_fails_without_reading_it(sim):
    sim.add_fault("/big", body="huge", size=64 << 20)
    t0 = time.monotonic()
    with pytest.raises(HTTPFailure, match="too large"):
        client(sim.url, max_size=1 << 20).get("big")
    assert time.monotonic() - t0 < 5


def test_endless_body_fails_at_the_size_cap(sim):
    sim.add_fault("/endless", body="endless")
    with pytest.raises(HTTPFailure, match="too large: .* more than 1048576 bytes"):
        client(sim.url, max_size=1 << 20).get("endless")


def test_redirect_on_the_same_host_is_followed(sim):
    sim.add_fault("/old", redirect=f"{sim.url}/openstack")
    resp = client(sim.url).get("old")
    assert resp.status == 200 and resp.url.endswith("/openstack")


def test_redirect_off_host_is_refused(sim):
    # Another port on loopback counts as another host; nothing is contacted there.
    sim.add_fault("/old", redirect=f"http://127.0.0.1:{closed_port()}/openstack")
    with pytest.raises(HTTPFailure, match="redirect off host refused"):
        client(sim.url).get("old")
    sim.add_fault("/other", redirect=f"http://localhost:{sim.port}/openstack")
    with pytest.raises(HTTPFailure, match="redirect off host refused"):
        client(sim.url).get("other")


def test_cancel_aborts_a_stalled_request(sim):
    sim.add_fault("/openstack", stall=True)
    cancelled = threading.Event()
    threading.Timer(0.3, cancelled.set).start()
    t0 = time.monotonic()
    with pytest.raises(HTTPFailure, match="cancelled"):
        client(sim.url, deadline=30, timeout=30, cancelled=cancelled).get("openstack")
    assert time.monotonic() - t0 < 3


def test_fetch_all_runs_requests_at_once(sim):
    sim.add_fault("/openstack/latest/*", delay=0.6)
    names = ["meta_data.json", "user_data", "vendor_data.json", "network_data.json", "password"]
    t0 = time.monotonic()
    out = fetch_all(client(sim.url), names, lambda c, n: c.get(f"openstack/latest/{n}").status)
    assert out == {n: 200 for n in names}
    assert time.monotonic() - t0 < 2.0  # one after another would take 3.0 s


def test_fetch_all_prefers_unavailable_over_other_errors():
    def fetch(c, n):
        if n == "a":
            time.sleep(0.2)  # so that "b" has failed too
            raise RuntimeError("boom")
        raise SourceUnavailable("nothing there")

    with pytest.raises(SourceUnavailable):
        fetch_all(None, ["a", "b"], fetch, max_parallel=2)


def test_post_body_is_sent(sim):
    resp = client(sim.url).request("POST", "openstack/2013-04-04/password", body=b"pw")
    assert resp.status == 200
    assert sim.passwords == [b"pw"]


def test_backoff_is_exponential_with_full_jitter(sim, monkeypatch):
    import cidag.http as mod

    bounds = []

    def uniform(lo, hi):
        bounds.append((lo, hi))
        return 0.0  # no sleep: the test is about the bounds

    monkeypatch.setattr(mod.random, "uniform", uniform)
    sim.add_fault("/openstack", status=500)
    with pytest.raises(HTTPFailure):
        client(sim.url, retries=5, backoff=0.1, max_backoff=0.5).get("openstack")
    assert bounds == [(0, 0.1), (0, 0.2), (0, 0.4), (0, 0.5), (0, 0.5)]
