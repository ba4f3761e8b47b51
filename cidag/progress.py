"""What a run is doing, as it happens: one redrawn line on a terminal, plain log lines elsewhere.

The runner calls `node_started` / `node_ended` from any thread and `close()` at
the end; `-q` means it makes no Progress at all.
"""
from __future__ import annotations

import shutil
import threading
import time
from typing import TextIO

CLEAR_EOL = "\x1b[K"
NOT_OK = frozenset({"failed", "timeout", "interrupted"})


class Progress:
    """Progress of one run over `total` nodes, written to `stream`; thread-safe."""

    def __init__(self, stream: TextIO, total: int | None, is_tty: bool, clock=time.monotonic) -> None:
        self.stream = stream
        self.total = total
        self.is_tty = is_tty
        self._clock = clock
        self._t0 = clock()
        self._running: dict[str, float] = {}  # node -> start time, in start order
        self._done = 0
        self._lock = threading.Lock()
        self._closed = False
        self._drawn = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def node_started(self, node_id: str) -> None:
        """A node began running."""
        with self._lock:
            if self._closed:
                return
            self._running[node_id] = self._clock()
            if self.is_tty:
                self._draw()
                if self._ticker is None:
                    # Elapsed time moves on while a long node runs and nothing else happens.
                    self._ticker = threading.Thread(target=self._tick, name="cidag-progress", daemon=True)
                    self._ticker.start()
            else:
                self._line(f"start {node_id}")

    def node_ended(self, node_id: str, status: str, duration_s: float | None = None) -> None:
        """A node ended (or was skipped: then it never started and duration_s may be None)."""
        with self._lock:
            if self._closed:
                return
            self._running.pop(node_id, None)
            self._done += 1
            took = f" ({duration_s:.2f}s)" if duration_s is not None else ""
            if self.is_tty:
                if status in NOT_OK:
                    # Failures stay on screen above the redrawn line.
                    self._write("\r" + CLEAR_EOL + self._prefix() + f"{status} {node_id}{took}\n")
                    self._drawn = False
                self._draw()
            else:
                self._line(f"{status} {node_id}{took}")

    def set_total(self, total: int | None) -> None:
        """The number of nodes, once known (None: show the count done alone)."""
        with self._lock:
            self.total = total

    def refresh(self) -> None:
        """Redraw the terminal line (elapsed time moves on while nodes run)."""
        with self._lock:
            if self.is_tty and not self._closed:
                self._draw()

    def close(self) -> None:
        """Clear the terminal line; later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self.is_tty and self._drawn:
                self._write("\r" + CLEAR_EOL)
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=2)

    # -- internals (lock held unless said) --

    def _tick(self, every: float = 0.5) -> None:
        # Lock taken by refresh(); stops at close().
        while not self._stop.wait(every):
            self.refresh()

    def _prefix(self) -> str:
        elapsed = f"{self._clock() - self._t0:6.2f}s"
        if not self.total:
            return f"[{self._done} done {elapsed}] "
        width = len(str(self.total))
        return f"[{self._done:>{width}}/{self.total} {elapsed}] "

    def _line(self, text: str) -> None:
        self._write(self._prefix() + text + "\n")

    def _draw(self) -> None:
        names = list(self._running)
        line = self._prefix() + (f"running {len(names)}: " + ", ".join(names) if names else "waiting")
        cols = shutil.get_terminal_size((80, 24)).columns
        if len(line) > cols - 1:
            line = line[: max(10, cols - 2)] + "…"
        self._write("\r" + line + CLEAR_EOL)
        self._drawn = True

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream must never fail the run
