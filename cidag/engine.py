"""Run a compiled graph: the loop that joins the plan, a runner, the state and the record.

`run()` is the library entry point the CLI, the tests and the benchmarks call.
The loop talks to a runner (runner.py: start, wait with a timeout, abort); any
exit from it, normal or not, aborts what still runs, and the record tells the
truth about each node.
"""
from __future__ import annotations

import heapq
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from . import signals as run_signals
from .answers import judge
from .api import Context
from .compiler import CompiledGraph, collector_paused, load_and_compile  # noqa: F401 - re-exported
from .errors import UsageError
from .milestones import Reached
from .nodecontext import Contexts
from .nodelogs import NodeLogs
from .options import InternalError, RunOptions, RunResult
from .plan import FAIL_FAST, INTERNAL, INTERRUPTED, OBSOLETE, OBSOLETE_CODE, TIMEOUT, Overlay, Plan
from .skips import dry_walk, plan_run, plan_skips  # noqa: F401 - plan_skips re-exported (bench)
from .record import build_record, instance_data, node_outputs, result_of
from .sdnotify import Notifier
from .runner import ThreadRunner, describe_exception, thread_limit
from .runfiles import RunFiles, utc
from .state import StateDir
from .values import SecretPolicy, at_rest

IID = "instance-id"


class Engine:
    """One run of a compiled graph. Use `run()`; the class keeps the loop's state together."""

    def __init__(self, cg: CompiledGraph, opts: RunOptions) -> None:
        self.cg, self.opts = cg, opts
        self.select = opts.select or cg.manifests.select
        self.state = None if opts.dry_run else StateDir(opts.resolved_state_dir())
        self.runner = opts.runner if opts.runner is not None else ThreadRunner(thread_limit(opts.jobs))
        self.now: Callable[[], float] = self.runner.now
        # node -> ctx. ctx.deadline is the live one: the ThreadRunner puts it out of reach
        # while the node waits for a thread, then gives it its whole timeout from when it
        # really starts (runner.thread_limit)
        self.running: dict[str, Context] = {}
        self.late: dict[str, Context] = {}  # ended without their answer (timeout, obsolete, interrupt)
        self.timed_out: set[str] = set()
        self.commands: dict = {}  # this run's live command processes (process.py), by pid
        self.contexts: dict[str, Context] = {}  # every started node: its output is read at the end
        self.workers: dict[str, int] = {}
        self._free_lanes: list[int] = list(range(opts.jobs))
        self._next_source_lane = opts.jobs
        self.secrets = SecretPolicy(cg.manifests.secrets())
        self._reported = 0  # how much of plan.end_order the observer has seen
        self.interrupted: str | None = None  # the signal's name
        self.first_failure: str | None = None
        self.faults: list[str] = []
        if self.state is not None:
            self.state.faults = self.faults  # odd state files the run went on despite
        self.t0 = self.now()
        self.wall0 = time.time()
        # What a node that can give a secret logs is held until it ends (nodelogs.py).
        held = {n for n, spec in cg.specs.items()
                if any(self.secrets.is_secret(c) for c in
                       (spec.capabilities if spec.kind == "source" else spec.provides))}
        self.logs = NodeLogs(self.secrets, held, self.wall0)
        self.plan: Plan | None = None
        self._iid: str | None = None
        self.root = Path(opts.root)
        self.state_path = opts.resolved_state_dir()
        self.notifier = Notifier() if not opts.dry_run else Notifier("")
        ready = opts.ready_milestone if opts.ready_milestone is not None else os.environ.get("CIDAG_READY_MILESTONE")
        self.milestones = Reached(cg.manifests.milestones, ready or None, self.notifier, self.faults)

    # -- helpers -------------------------------------------------------------

    def clock(self) -> float:
        """Seconds since the run started, on the runner's clock."""
        return self.now() - self.t0

    def _fast_clock(self) -> Callable[[], float]:
        """`clock` without a method call in between: the plan reads it a few times a node."""
        now, t0 = self.now, self.t0
        return lambda: now() - t0

    def scrub(self, text: str) -> str:
        return self.secrets.scrub(text)

    def instance_id(self) -> str | None:
        """The instance-id this run resolved, or None while it is pending or unavailable."""
        if self._iid is not None:
            return self._iid  # once resolved it never changes
        cap = self.plan.caps.get(IID) if self.plan else None
        if cap is None or cap.status != "resolved":
            return None
        value = self.plan.nodes[cap.provider].values.get(IID)
        self._iid = None if value is None else str(value)
        return self._iid

    # -- planning -----------------------------------------------------------

    def _make_plan(self) -> Plan:
        # A dry run reads markers (and writes nothing): it shows what this run would do.
        markers = self.state if self.state is not None else StateDir(self.opts.resolved_state_dir())
        overlay = Overlay()
        self.milestones.overlay(overlay)
        return plan_run(self.cg, self.opts, markers, select=self.select, clock=self._fast_clock(),
                        secrets=self.secrets, overlay=overlay)

    # -- starting nodes ------------------------------------------------------

    def _result_so_far(self) -> str:
        return result_of(self.plan, bool(self.interrupted))

    def _start(self, node: str) -> None:
        spec = self.cg.specs[node]
        ctx = self.context_maker.make(node, self.instance_id())
        if spec.kind == "module":
            lane = heapq.heappop(self._free_lanes) if self._free_lanes else len(self.workers) + self.opts.jobs
        else:
            lane, self._next_source_lane = self._next_source_lane, self._next_source_lane + 1
        self.workers[node] = lane
        self.running[node] = ctx
        self.contexts[node] = ctx
        if self.opts.observer is not None:
            self.opts.observer.node_started(node)
        self.runner.start(node, spec.call, ctx)

    # -- ending nodes --------------------------------------------------------

    def _end(self, node: str, status: str, reason: str = "", values: dict | None = None, code: str = "",
             *, answered: bool = True) -> None:
        """The one way a running node ends, whatever ended it: its answer, its deadline, an
        obsolete source, an interrupt, a failure of the loop. Frees its lane, learns its
        secrets, keeps its faults, releases its held log lines, tells the plan, writes its
        marker. Not `answered`: it is cancelled and its late answer will be ignored."""
        ctx = self.running.pop(node)
        if not answered:
            ctx.cancelled.set()  # its commands are killed; what they print still reaches the record
            self.late[node] = ctx
            self.runner.forget(node)
        spec = self.cg.specs[node]
        lane = self.workers.get(node)
        if spec.kind == "module" and lane is not None and lane < self.opts.jobs:
            heapq.heappush(self._free_lanes, lane)
        if values:
            self.secrets.learn(values)
        if ctx.faults:  # items that failed inside a node that went on
            self.faults.extend(f"{node}: {self.scrub(f)}" for f in ctx.faults)
        self.logs.release(node)
        self.plan.finished(node, status, reason=self.scrub(reason) if reason else "", values=values, code=code)
        if status == "ok" and self.state is not None and spec.frequency != "per-boot":
            self._write_marker(node, spec, values or {})
        if spec.kind == "module" and status in ("failed", "timeout") and self.first_failure is None:
            self.first_failure = node

    def _write_marker(self, node: str, spec, values: dict) -> None:
        iid = self.instance_id()
        provides = {k: at_rest(v) for k, v in self.secrets.public(values).items()}
        try:
            self.state.write_marker(spec.name, spec.frequency, iid,
                                    {"module": spec.name, "instance_id": iid,
                                     "finished_at": utc(time.time()), "provides": provides})
        except (OSError, ValueError) as exc:
            # The module did its work; without its marker it runs again next boot. A fault.
            why = f"marker not written ({getattr(exc, 'strerror', None) or exc}); it will run again next boot"
            if node in self.contexts:
                self.contexts[node].log.warning("%s", why)
            self.faults.append(f"{node}: {why}")

    def _classify(self, node: str, how: str, result: Any, reason: str) -> None:
        ctx = self.running[node]
        status, why, values = judge(self.cg.specs[node], how, result, reason, ctx.unprovided)
        self._end(node, status, why, values)

    def _timed_out_with(self, node: str, reason: str) -> None:
        """`node` failed as its deadline passed: a timeout, its own reason kept (a connection
        reset at the deadline is not only a stall)."""
        spec = self.cg.specs[node]
        why = f"timeout after {spec.timeout:g}s" + (f": {reason}" if reason else "")
        self._end(node, "failed" if spec.kind == "source" else "timeout", why, code=TIMEOUT)

    def _expire(self) -> None:
        now = self.now()
        for node, ctx in list(self.running.items()):
            if now >= ctx.deadline:
                spec = self.cg.specs[node]
                self.timed_out.add(node)
                self._end(node, "failed" if spec.kind == "source" else "timeout",
                          f"timeout after {spec.timeout:g}s", code=TIMEOUT, answered=False)

    # -- the loop ------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        self.runner.post((None, "signal", signum, ""))

    def run(self) -> RunResult:
        # The compiled graph lives all run, and nodes allocate a few objects each and keep
        # them to the end: collections would walk an ever larger heap for nothing (half a
        # second at 5,000 nodes). A plugin's cyclic garbage waits until the run ends.
        with collector_paused(freeze=True):
            self.plan = self._make_plan()
            self.context_maker = Contexts(self.plan, root=self.root, state_dir=self.state_path, clock=self.now,
                                         t0=self.t0, secrets=self.secrets, logs=self.logs, commands=self.commands,
                                         run_result=self._result_so_far)
            if self.opts.dry_run:
                dry_walk(self.plan, self.cg, lambda: self.milestones.check(self.plan, 0.0))
                return RunResult(self._record(utc(self.wall0), 0.0), 0, None, self.plan.start_order)
            return self._run()

    def _run(self) -> RunResult:
        self.state.ensure_writable()
        try:
            self.root.mkdir(parents=True, exist_ok=True)  # modules write under it from the start
        except OSError as exc:
            raise UsageError(f"--root {self.root}: {exc.strerror or exc}") from None
        files = RunFiles(self.state, self.wall0)
        files.begin()
        self.milestones.state, self.milestones.running_info = self.state, files.running
        restore = self._install_signals()
        error: BaseException | None = None
        try:
            try:
                self._loop()
                self._collect_late()
            except BaseException as exc:  # a bug, or a failing observer: stop everything, tell the truth
                error = exc
                self._stop_all(f"cidag internal error: {describe_exception(exc)}")
            finally:
                # A normal end kills what is left of this run's commands (a timed-out node's);
                # a failed loop kills every command of the process: it is going down.
                self.runner.abort(grace=0.0 if error is None else self.opts.grace,
                                  commands=self.commands if error is None else None)
            files.write_instance_data(*instance_data(self.plan, self.secrets, self.instance_id()), self.faults)
            why = None if error is None else f"internal error: {type(error).__name__}: {describe_exception(error)}"
            record = self._record(files.started_at, self.clock(), error=why)
            path = files.write_record(record, secret=self.secrets.any, copy_to=self.opts.record_path)
        finally:
            files.end()
            # Whatever happened, systemd hears that the service is up: units ordered after
            # it must not wait for ever (its exit code says how the run went).
            self.notifier.ready("run ended" if error is not None else f"run ended: {self._result_so_far()}")
            restore()  # only now: a signal while the record is written must not kill the process
        if error is not None:
            if isinstance(error, KeyboardInterrupt):
                raise error
            raise InternalError(f"{why} (record: {path})") from error
        return RunResult(record, record["exit_code"], path, self.plan.start_order)

    def _report_ends(self) -> None:
        """Tell the observer (progress line) about every node that reached a final status."""
        observer, ended = self.opts.observer, self.plan.end_order
        while self._reported < len(ended):
            node = ended[self._reported]
            self._reported += 1
            st = self.plan.nodes[node]
            if st.kind == "gate":
                continue
            took = st.end - st.start if st.start is not None and st.end is not None else None
            observer.node_ended(node, st.status, took)

    def _loop(self) -> None:
        plan = self.plan
        observer = self.opts.observer
        if observer is not None and hasattr(observer, "set_total"):
            observer.set_total(sum(1 for s in plan.nodes.values() if s.kind != "gate") - len(plan.end_order))
        self._reported = len(plan.end_order)  # settled before the run: not progress
        plan.start()
        while plan.is_active():
            if observer is not None:
                self._report_ends()
            if self.milestones.pending():
                self.milestones.check(plan, self.clock())
            stopping = self.interrupted or (self.opts.fail_fast and self.first_failure)
            if not stopping:
                for node in plan.next_to_start():
                    self._start(node)
            if not self.running:
                if stopping:
                    if self.interrupted:
                        plan.abandon(f"not started: run interrupted by {self.interrupted}", code=INTERRUPTED)
                    else:
                        plan.abandon(f"not started: --fail-fast after {self.first_failure} failed",
                                     code=FAIL_FAST)
                    break
                if plan.has_ready():
                    continue  # markers settled some nodes and others became ready
                plan.abandon("internal error: nothing can start (please report)", code=INTERNAL)
                break
            timeout = max(0.0, min(ctx.deadline for ctx in self.running.values()) - self.now())
            for node, how, result, reason in self.runner.wait(timeout):
                if how == "signal":
                    self._interrupt(signal.Signals(result).name)
                    break
                if node in self.running:
                    if how == "deadline" or (how != "returned" and self.now() >= self.running[node].deadline):
                        self._timed_out_with(node, reason)
                    else:
                        self._classify(node, how, result, reason)
                else:
                    self._late_answer(node)
            if self.interrupted:
                break
            self._expire()
            self._drop_obsolete()
        if observer is not None:
            self._report_ends()
        self.milestones.check(plan, self.clock())

    def _drop_obsolete(self) -> None:
        """Cancel running sources whose every capability has settled without them."""
        while self.plan.obsolete:
            node = self.plan.obsolete.pop()
            if node in self.running:
                self._end(node, "skipped", OBSOLETE, code=OBSOLETE_CODE, answered=False)

    def _interrupt(self, signame: str) -> None:
        """No new node starts; running ones are cancelled (their commands get SIGTERM, then
        SIGKILL after the grace period). A node that still answers in the grace period ends
        as it answered (a module that returned ok is ok and gets its marker); the others
        are marked interrupted."""
        self.interrupted = signame
        for ctx in self.running.values():
            ctx.cancelled.set()
        deadline = self.now() + self.opts.grace + 1.0
        while self.running and self.now() < deadline:
            for node, how, result, reason in self.runner.wait(max(0.0, deadline - self.now())):
                if how == "signal":
                    continue  # a second signal changes nothing: we are already stopping
                if node in self.running and how == "returned":
                    self._classify(node, how, result, reason)  # it finished its work: as it says
                elif node in self.running:  # it failed because it was cancelled: interrupted
                    self._end(node, "interrupted", f"interrupted by {signame}", code=INTERRUPTED)
                else:
                    self._late_answer(node)
        for node in list(self.running):
            self._end(node, "interrupted", f"interrupted by {signame}", code=INTERRUPTED, answered=False)
        self.plan.abandon(f"not started: run interrupted by {signame}", code=INTERRUPTED)

    def _stop_all(self, why: str) -> None:
        """After a failure of the loop itself: cancel everything and mark what did not end.
        Each running node ends the usual way; should that fail too (the loop's failure may
        be in it), it is cancelled and the plan marks it."""
        for node in list(self.running):
            try:
                self._end(node, "interrupted", why, code=INTERNAL, answered=False)
            except Exception:  # noqa: BLE001 - the record must still be written
                ctx = self.running.pop(node, None)
                if ctx is not None:
                    ctx.cancelled.set()
                    self.late[node] = ctx
        try:
            self.plan.abandon(why, status="interrupted", code=INTERNAL)
        except Exception:  # noqa: BLE001 - the record must still be written
            pass

    def _late_answer(self, node: str) -> None:
        self.late.pop(node, None)

    def _collect_late(self) -> None:
        """Nodes ended without their answer (timeout) may have commands being killed: wait
        for those a little, so what the commands printed reaches the record."""
        from .process import kill_all

        if not kill_all(dry=True, registry=self.commands) and not any(n in self.timed_out for n in self.late):
            return  # nothing is being killed: no output on its way
        deadline = self.now() + self.opts.grace + 0.5
        while self.late and self.now() < deadline:
            alive = kill_all(dry=True, registry=self.commands)
            # Commands still dying: wait for them; once none is left, one short last wait
            # for the answers that carry their output.
            for node, *_ in self.runner.wait(min(0.2 if alive else 0.05, max(0.0, deadline - self.now()))):
                self._late_answer(node)
            if not alive:
                break

    def _install_signals(self) -> Callable[[], None]:
        if not self.opts.handle_signals:
            return lambda: None
        restore, early = run_signals.take_over(self._on_signal)
        for signum in early[:1]:
            self.interrupted = signal.Signals(signum).name  # before anything started
        return restore

    # -- output --------------------------------------------------------------

    def _record(self, started_at: str, makespan: float, error: str | None = None) -> dict:
        m = self.cg.manifests
        meta = {"strategy": self.opts.strategy, "select": self.select, "jobs": self.opts.jobs,
                "root": str(self.opts.root), "state_dir": str(self.opts.resolved_state_dir()),
                "manifests": {"sources": m.sources_file, "modules": m.modules_file}}
        if self.faults:
            meta["faults"] = [self.scrub(f) for f in self.faults]
        if self.milestones.members:
            meta["milestones"] = self.milestones.summary()
        outputs, counters = node_outputs(self.contexts)
        record = build_record(self.plan, started_at=started_at, makespan=makespan,
                              interrupted=bool(self.interrupted), instance_id=self.instance_id(), meta=meta,
                              logs=self.logs.records, outputs=outputs, workers=self.workers, scrub=self.scrub,
                              counters=counters, error=error)
        if self.faults and record["result"] == "ok":
            record["result"] = "degraded"
        return record


def run(cg: CompiledGraph, opts: RunOptions | None = None) -> RunResult:
    """Run `cg` once with `opts`; returns the record and the exit code (never raises for a
    failing node; raises UsageError for unusable options or state dir, InternalError
    after writing the record when cidag itself failed)."""
    return Engine(cg, opts or RunOptions()).run()


__all__: Iterable[str] = ("RunOptions", "RunResult", "run", "load_and_compile", "plan_skips", "InternalError")
