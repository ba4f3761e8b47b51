"""Where log lines go: stderr as text or JSON lines; node records also land in the run record."""
from __future__ import annotations

import json
import logging
import sys
import time


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
                           "level": record.levelname, "logger": record.name,
                           "message": record.getMessage()})


def setup_logging(*, verbose: int = 0, quiet: bool = False, fmt: str = "text") -> None:
    """Configure the `cidag` logger once per process: WARNING by default, INFO with -v, DEBUG with -vv."""
    log = logging.getLogger("cidag")
    for h in list(log.handlers):
        if getattr(h, "_cidag", False):
            log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._cidag = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose or fmt == "json" else logging.WARNING)
    handler.setLevel(level)  # node loggers log at DEBUG into the record; stderr shows from `level`
    log.setLevel(logging.DEBUG)
