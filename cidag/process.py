"""Process plumbing: spawn in a new process group, cap output, kill on deadline or cancel.

Every command cidag runs goes through `run_command`, so a timed-out or
interrupted node never leaves children behind: the whole group gets SIGTERM,
then SIGKILL after `grace` seconds.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

DEFAULT_OUTPUT_CAP = 1 << 20  # bytes kept per stream; the rest is counted and dropped
DEFAULT_GRACE = 2.0

# Every live command's process group, so that a run that ends for any reason (even a bug in
# the loop) kills what its nodes started: worker threads are daemons and die with cidag.
_live: dict[int, subprocess.Popen] = {}
_live_lock = threading.Lock()


def kill_all(grace: float = DEFAULT_GRACE, dry: bool = False, registry: dict | None = None) -> int:
    """SIGTERM (then SIGKILL after `grace`) every live command group (of `registry`, a run's
    own, when given; else of the whole process); returns how many there were. `dry`: only
    count them."""
    with _live_lock:
        procs = list((_live if registry is None else registry).values())
    alive = [p for p in procs if p.poll() is None]
    if dry or not procs:
        return len(alive)
    for sig in ((signal.SIGTERM, signal.SIGKILL) if grace > 0 else (signal.SIGKILL,)):
        for proc in procs:  # the group, even when its leader is gone: a background child may remain
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGTERM:
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.02)
    return len(alive)


@dataclass
class CommandResult:
    """What a finished command gave; `timed_out`/`cancelled` say why it was killed."""

    argv: list[str]
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    cancelled: bool = False
    dropped_stdout: int = 0
    dropped_stderr: int = 0
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.cancelled

    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def to_argv(command: str | Sequence[str]) -> list[str]:
    """A list stays argv; a string runs under /bin/sh -c, as make does."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    return [str(a) for a in command]


def describe(command: str | Sequence[str]) -> str:
    return command if isinstance(command, str) else shlex.join(str(a) for a in command)


class _CappedReader(threading.Thread):
    def __init__(self, stream, cap: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.chunks: list[bytes] = []
        self.kept = 0
        self.dropped = 0

    def run(self) -> None:
        try:
            while True:
                chunk = self.stream.read1(65536) if hasattr(self.stream, "read1") else self.stream.read(65536)
                if not chunk:
                    break
                room = self.cap - self.kept
                if room > 0:
                    self.chunks.append(chunk[:room])
                    self.kept += min(room, len(chunk))
                self.dropped += max(0, len(chunk) - max(room, 0))
        except (OSError, ValueError):
            pass
        finally:
            try:
                self.stream.close()
            except OSError:
                pass

    def data(self) -> bytes:
        return b"".join(self.chunks)


def kill_group(proc: subprocess.Popen, grace: float = DEFAULT_GRACE) -> None:
    """SIGTERM the process group, then SIGKILL it if the leader is still there after `grace`."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # The leader is gone; make sure no member of its group outlives it.
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return


def run_command(
    command: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    input: bytes | None = None,
    deadline: float | None = None,
    cancelled: threading.Event | None = None,
    output_cap: int = DEFAULT_OUTPUT_CAP,
    grace: float = DEFAULT_GRACE,
    registry: dict | None = None,
) -> CommandResult:
    """Run `command` until it exits, `deadline` (monotonic) passes or `cancelled` is set.

    Raises OSError when the program cannot be started (not found, not executable).
    """
    argv = to_argv(command)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    with _live_lock:
        _live[proc.pid] = proc
        if registry is not None:
            registry[proc.pid] = proc  # the run's own: what its end kills (engine.py)
    try:
        return _supervise(proc, argv, input, deadline, cancelled, output_cap, grace, started)
    finally:
        with _live_lock:
            _live.pop(proc.pid, None)
            if registry is not None:
                registry.pop(proc.pid, None)


def _supervise(proc, argv, input, deadline, cancelled, output_cap, grace, started) -> CommandResult:
    readers = [_CappedReader(proc.stdout, output_cap), _CappedReader(proc.stderr, output_cap)]
    for reader in readers:
        reader.start()
    if input is not None:
        threading.Thread(target=_feed, args=(proc.stdin, input), daemon=True).start()
    exited = threading.Event()
    threading.Thread(target=lambda: (proc.wait(), exited.set()), daemon=True).start()
    timed_out = was_cancelled = False
    while not exited.is_set():
        step = 0.1
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            step = min(step, left)
        if cancelled is not None and cancelled.is_set():
            was_cancelled = True
            break
        exited.wait(step)
    if timed_out or was_cancelled:
        kill_group(proc, grace)
    for reader in readers:
        # A background grandchild may hold the pipe open; do not wait for it forever.
        reader.join(timeout=1.0 if not (timed_out or was_cancelled) else 0.2)
    return CommandResult(
        argv=argv,
        returncode=proc.returncode,
        stdout=readers[0].data(),
        stderr=readers[1].data(),
        timed_out=timed_out,
        cancelled=was_cancelled,
        dropped_stdout=readers[0].dropped,
        dropped_stderr=readers[1].dropped,
        duration_s=time.monotonic() - started,
    )


def _feed(stream, data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except (BrokenPipeError, OSError, ValueError):
        pass
