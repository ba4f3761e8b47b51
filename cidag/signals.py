"""SIGINT/SIGTERM for `cidag run` from the first line of the program to its last.

`latch()` is called before anything is imported: a signal that arrives while
the manifests are read is kept, and the engine acts on it as soon as it
starts (nothing starts, the record is written, exit 130), instead of the
process dying with 143 and no record. While the engine runs, signals go to
its handler; after the record is written they are kept again and ignored.
"""
from __future__ import annotations

import signal
import threading
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[int] = []
_handler: Callable[[int], None] | None = None
_latched = False


def _on_signal(signum, frame) -> None:
    handler = _handler
    if handler is not None:
        handler(signum)
    else:
        _pending.append(signum)


def latch() -> None:
    """Keep SIGINT/SIGTERM from now on (main thread only; elsewhere a no-op)."""
    global _latched
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)
    _latched = True


def latched() -> bool:
    return _latched


def attach(handler: Callable[[int], None]) -> list[int]:
    """Send signals to `handler` from now on; returns those that came before (and forgets them)."""
    global _handler
    _handler = handler
    early, _pending[:] = list(_pending), []
    return early


def detach() -> None:
    """Keep signals again (the run is over; its record is written)."""
    global _handler
    _handler = None


def take_over(handler: Callable[[int], None]) -> tuple[Callable[[], None], list[int]]:
    """For one run on the main thread: signals go to `handler` (latched first if nobody
    has). Returns (restore, signals that came before); `restore()` gives the previous
    handlers back. Off the main thread it does nothing."""
    global _latched
    if threading.current_thread() is not threading.main_thread():
        return (lambda: None), []
    own = not _latched
    old = {sig: signal.getsignal(sig) for sig in SIGNALS} if own else {}
    if own:
        latch()
    early = attach(handler)

    def restore() -> None:
        global _latched
        detach()
        for sig, old_handler in old.items():
            signal.signal(sig, old_handler)
        if own:
            _latched = False  # we latched, we unlatch

    return restore, early
