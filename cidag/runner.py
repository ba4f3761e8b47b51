"""Runners: how the engine's nodes are executed (ninja's CommandRunner).

The engine's loop talks only to this interface:

- `now()`: the runner's clock (monotonic seconds);
- `start(node, call, ctx)`: begin `call(ctx)`;
- `wait(timeout)`: the answers that arrived, waiting at most `timeout` seconds
  for the first one (an empty list when none came);
- `post(event)`: queue an event from elsewhere (a signal handler);
- `abort(grace, commands)`: cancel every node still running and kill the commands they started.

`ThreadRunner` runs each node on a worker thread; `FakeRunner` (with a
`FakeClock`) answers from a script in simulated time, so timeouts, signals
and fail-fast are tested in milliseconds.

An event is `(node, how, result, reason)` with `how` one of `returned`,
`unavailable`, `raised`, `deadline` (the node stopped at its deadline: a
timeout, whichever of the node and the engine sees it first), or `signal`
(then `node` is None and `result` the signal number).
"""
from __future__ import annotations

import collections
import heapq
import itertools
import queue
import threading
import time
from typing import Any, Callable

from .errors import DeadlineReached, SourceUnavailable

Event = tuple  # (node, how, result, reason)


def run_call(node: str, call: Callable, ctx: Any) -> Event:
    """Call a plugin and turn what it did into one event (it never raises)."""
    try:
        return (node, "returned", call(ctx), "")
    except SourceUnavailable as exc:
        return (node, "unavailable", None, str(exc))
    except DeadlineReached:
        return (node, "deadline", None, "")
    except BaseException as exc:  # a plugin's failure is the node's, never the run's
        return (node, "raised", None, describe_exception(exc))


def describe_exception(exc: BaseException) -> str:
    """One line for a plugin's exception. Errors a plugin or cidag defines, and OSErrors,
    speak for themselves; Python's own (KeyError, TypeError, ...) are bugs, so their
    class name is kept."""
    try:
        text = str(exc).strip()
    except Exception:  # a broken __str__ must not break the run
        text = ""
    text = text.splitlines()[0][:500] if text else ""
    if not text:
        return type(exc).__name__
    if type(exc).__module__ != "builtins" or isinstance(exc, OSError) or type(exc) in (RuntimeError, Exception):
        return text
    return f"{type(exc).__name__}: {text}"


_EVENT_LOCK = threading.Lock()


class CancelEvent:
    """`ctx.cancelled`: a threading.Event's interface (set, is_set, wait, clear) whose lock
    and condition are made only when someone waits. Most nodes never wait on it, and a
    real Event costs a Condition and two locks per node (a tenth of a 5,000-node run)."""

    __slots__ = ("_flag", "_event")

    def __init__(self) -> None:
        self._flag = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set

    def set(self) -> None:
        with _EVENT_LOCK:
            self._flag = True
            event = self._event
        if event is not None:
            event.set()

    def clear(self) -> None:
        with _EVENT_LOCK:
            self._flag = False
            if self._event is not None:
                self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        with _EVENT_LOCK:
            if self._flag:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


SIGNAL_SLICE_S = 0.25  # longest blocking wait of the main thread (ThreadRunner.wait)
SOURCE_THREADS = 64  # probes run at once beyond -j's modules, at least (thread_limit)
QUEUED_S = 365 * 86400.0  # the deadline of a node waiting for a thread: out of reach, finite


def thread_limit(jobs: int) -> int:
    """Worker threads a run may have with `-j jobs`: the modules' -j, and max(64, 8*j) for
    the probes that all start at time zero (spec 3.3). Past it a node waits, in the order it
    was started, for a thread to come free: 10,000 sources no longer end in "can't start
    new thread" (issue 15), and a few dozen real sources still all probe at once."""
    jobs = max(1, int(jobs))
    return jobs + max(SOURCE_THREADS, 8 * jobs)


class ThreadRunner:
    """Each node on a worker thread, at most `max_threads` of them (thread_limit). Threads
    are reused (Thread.start() waits for the new thread to run, half the cost of a
    5,000-node run) and take their jobs from one queue, in start order; a node started
    when every thread is busy waits there for one. A node the engine gave up on (timeout,
    obsolete) may hang its thread for ever: that thread no longer counts, so a hang never
    blocks a lane. Workers are daemons: a plugin that never returns cannot block the exit."""

    def __init__(self, max_threads: int | None = None) -> None:
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        # Jobs go through a SimpleQueue (put and get in C, no Python-level Condition): the
        # hand-off is most of what a no-op node costs. The counters below are under _lock.
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued: set[str] = set()  # started, waiting in _jobs for a thread
        self._dropped: set[str] = set()  # forgotten while queued: skipped when taken
        self._idle = 0  # threads waiting for a job (or just made for one)
        self._live = 0  # threads that count against the limit (not lost to a forgotten node)
        self._threads = 0  # threads made (names)
        self._closing = False
        self._executing: dict[str, list] = {}  # node -> [lost?] while a thread runs it
        self.max_threads = max_threads if max_threads is not None else thread_limit(4)
        self.peak_threads = 0  # most threads counted at once (tests, bench)
        self.running: dict[str, Any] = {}  # node -> ctx

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def start(self, node: str, call: Callable, ctx: Any) -> None:
        """Run `call(ctx)` on a worker thread, or queue it until one is free. A queued node's
        `ctx.deadline` is moved out of reach until a thread takes it, then set to its whole
        timeout from then: its timeout counts from when it really starts."""
        self.running[node] = ctx
        with self._lock:
            queued = self._queued
            if self._idle > len(queued):
                queued.add(node)
                self._jobs.put((node, call, ctx, None))
                return
            if self._live >= self.max_threads:
                # It waits for a thread to come free; meanwhile its deadline is out of
                # reach (the engine does not time out what has not started), and it gets
                # its whole timeout once it starts (_worker).
                left = ctx.deadline - time.monotonic()
                ctx.deadline = time.monotonic() + QUEUED_S
                queued.add(node)
                self._jobs.put((node, call, ctx, left))
                return
            queued.add(node)
            self._jobs.put((node, call, ctx, None))
            self._live += 1
            self._idle += 1  # the new thread counts as idle until it takes a job
            self._threads += 1
            self.peak_threads = max(self.peak_threads, self._live)
            name = f"cidag-worker-{self._threads}"
        thread = threading.Thread(target=self._worker, daemon=True, name=name)
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._live -= 1
                self._idle -= 1
                if self._live == 0:  # no thread at all will take it: the engine sees the error
                    self._queued.discard(node)
                    self._dropped.add(node)
                    self.running.pop(node, None)
                    raise
            # Other threads will take it in turn: fewer threads than the limit, no failure.

    def _worker(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            job = jobs.get()
            with lock:
                if job is None or self._closing:  # abort(): this thread goes
                    self._idle -= 1
                    self._live -= 1
                    return
                node, call, ctx, left = job
                if node in self._dropped:  # forgotten while it waited: it never starts
                    self._dropped.discard(node)
                    continue
                self._queued.discard(node)
                self._idle -= 1
                state = self._executing[node] = [False]
                if left is not None:
                    ctx.deadline = time.monotonic() + left
            if left is not None and ctx.cancelled.is_set():
                # Cancelled while it waited for a thread (an interrupt, the engine gave up):
                # it never starts.
                event = (node, "raised", None, "cancelled before it started")
            else:
                event = run_call(node, call, ctx)
            with lock:
                self._executing.pop(node, None)
                stay = not self._closing  # after abort() no job comes: the thread goes
                if not stay:
                    if not state[0]:
                        self._live -= 1
                elif state[0]:  # the engine gave up on it meanwhile, and may have made another thread
                    stay = self._live < self.max_threads
                    self._live += stay
                if stay:
                    self._idle += 1  # before the event, so the loop sees this worker idle
            self._events.put(event)  # a late answer still brings its output (engine._collect_late)
            if not stay:
                return  # one thread too many now: this one goes

    def wait(self, timeout: float | None) -> list[Event]:
        # In slices: Python runs a signal's handler only when the main thread runs Python, and
        # a signal that comes as the main thread goes into a blocking wait does not interrupt
        # it. Between slices the handler runs (and posts its event): SIGTERM is acted on
        # within a slice even then, not after the longest deadline (seen under load).
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            left = SIGNAL_SLICE_S if end is None else min(SIGNAL_SLICE_S, max(0.0, end - time.monotonic()))
            try:
                first = self._events.get(timeout=left)
                break
            except queue.Empty:
                if end is not None and time.monotonic() >= end:
                    return []
        out = [first]
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                break
        for ev in out:
            if ev[0] is not None:
                self.running.pop(ev[0], None)
        return out

    def post(self, event: Event) -> None:
        self._events.put(event)

    def forget(self, node: str) -> None:
        """The engine ended `node` without its answer (timeout, obsolete): its late answer is
        dropped; if it still waits for a thread it never starts; if a thread runs it, that
        thread no longer counts against the limit (it may hang for ever)."""
        self.running.pop(node, None)
        spawn = False
        with self._lock:
            if node in self._queued:
                self._queued.discard(node)
                self._dropped.add(node)
            state = self._executing.get(node)
            if state is not None and not state[0]:
                state[0] = True
                self._live -= 1
                spawn = len(self._queued) > self._idle and self._live < self.max_threads
                if spawn:
                    self._live += 1
                    self._idle += 1
                    self._threads += 1
                    name = f"cidag-worker-{self._threads}"
        if spawn:
            try:
                threading.Thread(target=self._worker, daemon=True, name=name).start()
            except BaseException:  # the busy threads take the queue in turn
                with self._lock:
                    self._live -= 1
                    self._idle -= 1

    def abort(self, grace: float = 0.0, commands: dict | None = None) -> None:
        """Cancel every running node; after `grace` seconds kill what their commands left
        (`commands`: the run's own registry, process.py; None: every command of this process).
        Nodes still waiting for a thread never start."""
        from .process import kill_all

        with self._lock:
            self._closing = True
            self._dropped.update(self._queued)
            self._queued.clear()
            threads = self._live
        for _ in range(threads):
            self._jobs.put(None)  # wakes each idle thread to go

        for ctx in list(self.running.values()):
            ctx.cancelled.set()
        if grace > 0 and kill_all(grace=0.0, dry=True, registry=commands):
            deadline = time.monotonic() + grace
            while kill_all(grace=0.0, dry=True, registry=commands) and time.monotonic() < deadline:
                time.sleep(0.02)
        kill_all(grace=0.0, registry=commands)


class FakeClock:
    """Simulated monotonic time, advanced only by FakeRunner.wait()."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


HANG = object()  # a FakeRunner outcome: the node never answers


class FakeRunner:
    """Answers from a script in simulated time; no threads, no sleeping.

    `script(node, ctx)` returns `(seconds, outcome)`: after `seconds` of fake time the node
    answers with `outcome`: a mapping or None (returned), an exception (raised;
    SourceUnavailable: unavailable), `HANG` (never answers), or `CALL` (the node's real
    `call(ctx)` runs then, e.g. a static source). `signals` is a list of `(t, signum)`
    relative to the runner's creation.
    """

    CALL = object()

    def __init__(self, script: Callable[[str, Any], tuple[float, Any]],
                 clock: FakeClock | None = None, signals: list[tuple[float, int]] = ()) -> None:
        self.clock = clock or FakeClock()
        self.script = script
        self._due: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._posted: list[Event] = []
        self._signals = sorted((self.clock.t + t, s) for t, s in signals)
        self.running: dict[str, tuple[Callable, Any, Any]] = {}
        self.started: list[tuple[float, str]] = []
        self.aborted: list[str] = []

    def now(self) -> float:
        return self.clock.t

    def start(self, node: str, call: Callable, ctx: Any) -> None:
        seconds, outcome = self.script(node, ctx)
        self.running[node] = (call, ctx, outcome)
        self.started.append((self.clock.t, node))
        if outcome is not HANG:
            heapq.heappush(self._due, (self.clock.t + seconds, next(self._seq), node))

    def wait(self, timeout: float | None) -> list[Event]:
        if self._posted:
            out, self._posted = self._posted, []
            return out
        limit = float("inf") if timeout is None else self.clock.t + max(0.0, timeout)
        while self._due and self._due[0][2] not in self.running:
            heapq.heappop(self._due)  # ended by the engine already (timeout, obsolete)
        next_answer = self._due[0][0] if self._due else float("inf")
        next_signal = self._signals[0][0] if self._signals else float("inf")
        when = min(next_answer, next_signal)
        if when > limit:
            if limit == float("inf"):
                raise RuntimeError("FakeRunner: the engine waits forever and nothing is due")
            self.clock.t = limit
            return []
        self.clock.t = max(self.clock.t, when)
        if next_signal <= next_answer:
            _, signum = self._signals.pop(0)
            return [(None, "signal", signum, "")]
        _, _, node = heapq.heappop(self._due)
        call, ctx, outcome = self.running.pop(node)
        return [self._answer(node, call, ctx, outcome)]

    @classmethod
    def _answer(cls, node: str, call: Callable, ctx: Any, outcome: Any) -> Event:
        if outcome is cls.CALL:
            return run_call(node, call, ctx)
        if isinstance(outcome, BaseException):
            return run_call(node, _raiser(outcome), ctx)
        return (node, "returned", outcome, "")

    def post(self, event: Event) -> None:
        self._posted.append(event)

    def forget(self, node: str) -> None:
        self.running.pop(node, None)

    def abort(self, grace: float = 0.0, commands: dict | None = None) -> None:
        for node, (_, ctx, _) in list(self.running.items()):
            ctx.cancelled.set()
            self.aborted.append(node)
        self.running.clear()


def _raiser(exc: BaseException) -> Callable:
    def call(ctx):
        raise exc
    return call
