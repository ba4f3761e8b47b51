"""cidag.progress.Progress: a redrawn line on a TTY, plain lines otherwise, safe from many threads."""
from __future__ import annotations

import io
import re
import threading

from cidag.progress import Progress


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_plain_lines_when_not_a_tty():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, 3, is_tty=False, clock=clock)
    p.node_started("source:seed")
    clock.t += 0.25
    p.node_ended("source:seed", "available", 0.25)
    p.node_ended("module:skipped", "skipped")
    p.close()
    assert out.getvalue().splitlines() == [
        "[0/3   0.00s] start source:seed",
        "[1/3   0.25s] available source:seed (0.25s)",
        "[2/3   0.25s] skipped module:skipped",
    ]
    assert "\r" not in out.getvalue()


def test_one_redrawn_line_on_a_tty():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, 4, is_tty=True, clock=clock)
    p.node_started("module:a")
    p.node_started("module:b")
    clock.t += 1.5
    p.node_ended("module:a", "ok", 1.5)
    p.node_ended("module:b", "failed", 1.5)
    p.refresh()
    p.close()
    text = out.getvalue()
    frames = text.split("\r")
    assert "[0/4   0.00s] running 2: module:a, module:b\x1b[K" in frames
    assert "[1/4   1.50s] running 1: module:b\x1b[K" in frames
    # a failure is printed on a line of its own, so it stays visible
    assert "\x1b[K[2/4   1.50s] failed module:b (1.50s)\n" in text
    assert text.endswith("\r\x1b[K")  # close() clears the line
    p.close()
    assert out.getvalue() == text


def test_long_lines_fit_the_terminal(monkeypatch):
    import os
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((40, 24)))
    out = io.StringIO()
    p = Progress(out, 200, is_tty=True)
    for i in range(20):
        p.node_started(f"module:a-rather-long-module-name-{i}")
    last = out.getvalue().split("\r")[-1].replace("\x1b[K", "")
    assert len(last) <= 40 and last.endswith("…")


def test_thread_safe():
    out = io.StringIO()
    threads, per = 8, 50
    p = Progress(out, threads * per, is_tty=False)

    def work(k):
        for i in range(per):
            p.node_started(f"module:t{k}-{i}")
            p.node_ended(f"module:t{k}-{i}", "ok", 0.0)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 * threads * per
    assert all(re.fullmatch(r"\[\s*\d+/400\s+\d+\.\d\ds\] (start|ok) module:t\d-\d+( \(0\.00s\))?", ln) for ln in lines)
    assert lines[-1].startswith("[400/400")


def test_broken_stream_is_ignored():
    out = io.StringIO()
    p = Progress(out, 1, is_tty=False)
    out.close()
    p.node_started("module:a")  # no exception
    p.node_ended("module:a", "ok", 0.1)
    p.close()


def test_unknown_total():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, None, is_tty=False, clock=clock)
    p.node_started("module:a")
    p.node_ended("module:a", "ok", 0.0)
    p.set_total(5)
    p.node_started("module:b")
    assert out.getvalue().splitlines() == [
        "[0 done   0.00s] start module:a",
        "[1 done   0.00s] ok module:a (0.00s)",
        "[1/5   0.00s] start module:b",
    ]


def test_tty_ticker_redraws_and_stops_at_close():
    import time

    out = io.StringIO()
    p = Progress(out, 1, is_tty=True)
    p.node_started("module:slow")
    before = out.getvalue().count("\r")
    deadline = time.monotonic() + 10
    while out.getvalue().count("\r") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.getvalue().count("\r") > before  # redrawn with nothing else happening
    p.close()
    assert not p._ticker.is_alive()
    text = out.getvalue()
    time.sleep(0.6)
    assert out.getvalue() == text
