"""The loggers of one run's nodes: what each node logs is kept for the run record, with
secrets scrubbed first, and what a node that can give a secret logs is held until it ends
(its own secret is known only then)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from .values import SecretPolicy

PREFIX = "cidag.node."


class _Gate(logging.Filter):
    """On every node logger: scrubs each record, holds those of the nodes in `held`."""

    def __init__(self, secrets: SecretPolicy, held: set[str]) -> None:
        super().__init__()
        self.secrets, self.held = secrets, held
        self.buffers: dict[str, list[logging.LogRecord]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        node = record.name[len(PREFIX):]
        if node in self.held:
            with self._lock:
                if node in self.held:
                    self.buffers.setdefault(node, []).append(record)
                    return False
        record.msg, record.args = self.secrets.scrub(record.getMessage()), None
        return True

    def release(self, node: str) -> list[logging.LogRecord]:
        with self._lock:
            self.held.discard(node)
            return self.buffers.pop(node, [])


class _Keep(logging.Handler):
    """Keeps each node's (scrubbed) records as the run record lists them."""

    def __init__(self, t0: float) -> None:
        super().__init__(logging.DEBUG)
        self.t0 = t0
        self.records: dict[str, list[dict]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.records.setdefault(record.name[len(PREFIX):], []).append(
            {"t": round(record.created - self.t0, 6), "level": record.levelname, "message": record.getMessage()})


class NodeLogs:
    """One run's node loggers. They hang under a `cidag.node` logger of the run's own, not
    registered with `logging` (nothing leaks across runs), which keeps their records and
    passes them on to the `cidag` logger (stderr). `t0`: wall time the run started."""

    def __init__(self, secrets: SecretPolicy, held: Iterable[str], t0: float) -> None:
        self._gate = _Gate(secrets, set(held))
        keep = _Keep(t0)
        self.records = keep.records  # node -> [{t, level, message}]
        self._parent = logging.Logger("cidag.node")
        self._parent.parent = logging.getLogger("cidag")
        self._parent.addHandler(keep)
        self._loggers: dict[str, logging.Logger] = {}

    def logger(self, node: str) -> logging.Logger:
        """A new logger for `node` (DEBUG: everything reaches the record; stderr filters)."""
        log = logging.Logger(PREFIX + node)
        log.parent = self._parent
        log.level = logging.DEBUG  # not setLevel(): that clears every logger's cache
        log.addFilter(self._gate)
        self._loggers[node] = log
        return log

    def release(self, node: str) -> None:
        """`node` has ended: what it logged while held goes through, scrubbed of the secret
        it gave (learned by the policy before this call)."""
        if node not in self._gate.held:
            return
        log = self._loggers.get(node)
        for record in self._gate.release(node):
            if log is not None:
                log.handle(record)
