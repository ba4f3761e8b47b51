"""Run a compiled graph: the loop that joins the plan, a runner, the state and the record.

`run()` is the library entry point the CLI, the tests and the benchmarks call.
The loop talks to a runner (runner.py: start, wait with a timeout, abort); any
exit from it, normal or not, aborts what still runs, and the record tells the
truth about each node.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, MutableMapping

from . import signals as run_signals
from .api import Context
from .compiler import CompiledGraph, ancestors
from .errors import CidagError, UsageError
from .facade import Facade
from .plan import (ALREADY_RAN, FAIL_FAST, INTERNAL, INTERRUPTED, NOT_NEEDED, NOT_NEEDED_CODE,
                   NOT_SELECTED, OBSOLETE, OBSOLETE_CODE, TIMEOUT, Overlay, Plan)
from .record import build_record, result_of
from .sdnotify import Notifier
from .runner import CancelEvent, ThreadRunner, describe_exception, thread_limit
from .state import LastRunNotUpdated, StateDir, process_identity
from .strategies import overlay_for
from .values import SecretPolicy, ValueRefused, at_rest, canonical_capability

MILESTONE = "milestone:"  # gate node of a milestone (docs/manifests.md)
GRACE_S = 2.0  # SIGTERM -> SIGKILL for commands of interrupted nodes
IID = "instance-id"


class StateError(CidagError):
    """The run ended but its state could not be written (a full or broken state dir)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InternalError(CidagError):
    """cidag itself failed during a run; the record (written) says so."""

    exit_code = 70


@dataclass
class RunOptions:
    """What `cidag run` was asked to do; every field has the CLI's default."""

    root: Path = Path("/")
    state_dir: Path | None = None  # default: ROOT/var/lib/cidag
    jobs: int = 4
    select: str | None = None  # None: the manifest's
    strategy: str = "one-step"
    only: tuple[str, ...] = ()
    force: tuple[str, ...] = ()
    force_all: bool = False
    fail_fast: bool = False
    dry_run: bool = False
    record_path: Path | None = None
    handle_signals: bool = True
    observer: Any = None  # has node_started(id) / node_ended(id, status, seconds)
    runner: Any = None  # a runner (runner.py); default: a ThreadRunner
    grace: float = GRACE_S
    # The milestone whose reach tells systemd the service is ready (sd_notify READY=1);
    # None: $CIDAG_READY_MILESTONE, else the run's end (docs/systemd.md).
    ready_milestone: str | None = None

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir else Path(self.root) / "var/lib/cidag"


@dataclass
class RunResult:
    """A finished run: its record, exit code, and for --dry-run the start order."""

    record: dict
    exit_code: int
    record_path: Path | None = None
    start_order: list[str] = field(default_factory=list)


def plan_skips(cg: CompiledGraph, opts: RunOptions, state: StateDir | None,
               done_guess: set[str] = frozenset()) -> dict[str, tuple]:
    """Nodes settled before the run starts: outside --only, `once` already done, sources not
    needed. `done_guess`: per-instance modules whose marker exists for the last instance id
    (docs/engine.md): sources only they need are deferred, not skipped (see run_overlay)."""
    g = cg.graph
    skips: dict[str, tuple] = {}
    modules = {m.node_id: m for m in cg.manifests.modules}
    for name in opts.only:
        if f"module:{name}" not in modules:
            raise UsageError(f"--only {name}: no such module")
    for name in opts.force:
        if f"module:{name}" not in modules:
            raise UsageError(f"--force {name}: no such module")
    in_run = set(modules)
    if opts.only:
        # A module and what it needs: hard and soft inputs and their providers, not `after`.
        keep = {f"module:{n}" for n in opts.only}
        keep |= ancestors(g, keep, skip_kinds=frozenset({"after"}))
        for n in in_run - keep:
            skips[n] = ("not selected by --only", False, {}, NOT_SELECTED)
        in_run &= keep
    if state is not None:
        for n in sorted(in_run):
            spec = modules[n]
            if spec.frequency != "once" or opts.force_all or spec.name in opts.force:
                continue
            marker = state.read_marker(spec.name, "once", None)
            if marker is not None:
                skips[n] = ("already ran once on this machine", True, _marker_values(marker), ALREADY_RAN)
                in_run.discard(n)
    # Probe only what the modules that will run need, directly or through other sources;
    # what only probably-done modules need is deferred until instance-id tells.
    needed = ancestors(g, in_run)
    for s in cg.manifests.sources:
        if s.node_id not in needed:
            skips[s.node_id] = (NOT_NEEDED, False, {}, NOT_NEEDED_CODE)
    return skips


def deferred_sources(cg: CompiledGraph, skips: dict, done_guess: set[str]) -> list[str]:
    """Sources needed only by modules that probably already ran for this instance (their
    marker exists for the last instance id): they are held until instance-id settles, and
    are then probed only if a module still needs them. One that instance-id itself waits
    for is released at once (plan.py)."""
    if not done_guess or f"cap:{IID}" not in cg.graph:
        return []
    g = cg.graph
    live = [m.node_id for m in cg.manifests.modules if m.node_id not in skips and m.node_id not in done_guess]
    needed = ancestors(g, live)
    return [s.node_id for s in cg.manifests.sources
            if s.node_id not in skips and s.node_id not in needed]


def _marker_values(marker: dict) -> dict:
    provides = marker.get("provides")
    return dict(provides) if isinstance(provides, dict) else {}


class _LogGate(logging.Filter):
    """On every node logger: scrubs secrets from each record, and holds the records of a
    node that can give a secret until it has ended (its own secret is known only then)."""

    def __init__(self, secrets: SecretPolicy, held: set[str]) -> None:
        super().__init__()
        self.secrets, self.held = secrets, held
        self.buffers: dict[str, list[logging.LogRecord]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        node = record.name[len("cidag.node."):]
        if node in self.held:
            with self._lock:
                if node in self.held:
                    self.buffers.setdefault(node, []).append(record)
                    return False
        record.msg, record.args = self.secrets.scrub(record.getMessage()), None
        return True

    def release(self, node: str, logger: logging.Logger | None) -> None:
        with self._lock:
            self.held.discard(node)
            records = self.buffers.pop(node, [])
        for record in records:
            if logger is not None:
                logger.handle(record)


class _NodeLogs(logging.Handler):
    """The run's own `cidag.node` logger handler: keeps each node's (scrubbed) records."""

    def __init__(self, t0: float) -> None:
        super().__init__(logging.DEBUG)
        self.t0 = t0
        self.records: dict[str, list[dict]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.records.setdefault(record.name[len("cidag.node."):], []).append(
            {"t": round(record.created - self.t0, 6), "level": record.levelname, "message": record.getMessage()})


class _LazyEnv(MutableMapping):
    """The CIDAG_* environment of a node, built on first use (most plugin types run no command)."""

    def __init__(self, build: Callable[[], dict]) -> None:
        self._build, self._env = build, None

    def _get(self) -> dict:
        if self._env is None:
            self._env = self._build()
        return self._env

    def __getitem__(self, key: str) -> str:
        return self._get()[key]

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __setitem__(self, key: str, value: str) -> None:
        self._get()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._get()[key]


def env_key(cap: str) -> str:
    return "CIDAG_CAP_" + cap.upper().replace("-", "_").replace(".", "_")


class Engine:
    """One run of a compiled graph. Use `run()`; the class keeps the loop's state together."""

    def __init__(self, cg: CompiledGraph, opts: RunOptions) -> None:
        self.cg, self.opts = cg, opts
        self.select = opts.select or cg.manifests.select
        self.state = None if opts.dry_run else StateDir(opts.resolved_state_dir())
        self.runner = opts.runner if opts.runner is not None else ThreadRunner(thread_limit(opts.jobs))
        self.now: Callable[[], float] = self.runner.now
        # node -> (ctx, deadline at start). ctx.deadline is the live one: the ThreadRunner puts
        # it out of reach while the node waits for a thread, then gives it its whole timeout
        # from when it really starts (runner.thread_limit)
        self.running: dict[str, tuple[Context, float]] = {}
        self.late: dict[str, Context] = {}  # ended without their answer (timeout, obsolete)
        self.timed_out: set[str] = set()
        self.commands: dict = {}  # this run's live command processes (process.py), by pid
        self.contexts: dict[str, Context] = {}  # every started node: its output is read at the end
        self.workers: dict[str, int] = {}
        self._free_lanes: list[int] = list(range(opts.jobs))
        self._next_source_lane = opts.jobs
        self.secrets = SecretPolicy(cg.manifests.secrets())
        self.secret_caps = self.secrets.declared
        self._reported = 0  # how much of plan.end_order the observer has seen
        self.interrupted: str | None = None  # the signal's name
        self.first_failure: str | None = None
        self.faults: list[str] = []
        if self.state is not None:
            self.state.faults = self.faults  # odd state files the run went on despite
        self.t0 = self.now()
        self.wall0 = time.time()
        # Node loggers hang under a per-run `cidag.node` logger that keeps their records;
        # from there they propagate to the `cidag` logger (stderr). A filter on each node
        # logger scrubs secrets first, and holds what a secret-giving node logs until it ends.
        held = {n for n, spec in cg.specs.items()
                if any(self.secrets.is_secret(c) for c in
                       (spec.capabilities if spec.kind == "source" else spec.provides))}
        self.log_gate = _LogGate(self.secrets, held)
        self.node_logs = _NodeLogs(self.wall0)
        self.node_log_parent = logging.Logger("cidag.node")
        self.node_log_parent.parent = logging.getLogger("cidag")
        self.node_log_parent.addHandler(self.node_logs)
        self.loggers: dict[str, logging.Logger] = {}
        self.logs = self.node_logs.records
        self.plan: Plan | None = None
        self.root = Path(opts.root)
        self.state_path = opts.resolved_state_dir()
        # Milestones (docs/manifests.md): a gate node each, reached when all its modules are final.
        self.milestones = cg.manifests.milestones  # name -> modules; the gate node is MILESTONE + name
        self.reached: dict[str, float] = {}  # milestone name -> seconds into the run
        self.running_info: dict = {}
        ready = opts.ready_milestone if opts.ready_milestone is not None else os.environ.get("CIDAG_READY_MILESTONE")
        self.ready_milestone = ready or None
        self.notifier = Notifier() if not opts.dry_run else Notifier("")

    # -- helpers -------------------------------------------------------------

    def clock(self) -> float:
        return self.now() - self.t0

    def scrub(self, text: str) -> str:
        return self.secrets.scrub(text)

    def instance_id(self) -> str | None:
        cap = self.plan.caps.get(IID) if self.plan else None
        if cap is None or cap.status != "resolved":
            return None
        value = self.plan.nodes[cap.provider].values.get(IID)
        return None if value is None else str(value)

    # -- planning -----------------------------------------------------------

    def _make_plan(self) -> Plan:
        opts = self.opts
        # A dry run reads markers (and writes nothing): it shows what this run would do.
        self.markers = self.state if self.state is not None else StateDir(opts.resolved_state_dir())
        last_iid = self.markers.last_instance_id()
        self.last_iid = last_iid
        guess: set[str] = set()
        if last_iid is not None and not opts.force_all:
            for m in self.cg.manifests.modules:
                if (m.frequency == "per-instance" and m.name not in opts.force
                        and self.markers.read_marker(m.name, "per-instance", last_iid) is not None):
                    guess.add(m.node_id)
        skips = plan_skips(self.cg, opts, self.markers)
        overlay = overlay_for(self.cg, opts.strategy, skips) if opts.strategy != "one-step" else Overlay()
        overlay.held = frozenset(deferred_sources(self.cg, skips, guess))
        for name, members in self.milestones.items():
            overlay.gates.append(MILESTONE + name)
            overlay.edges.extend((f"module:{m}", MILESTONE + name, "gate") for m in members)
        plan = Plan(self.cg, select=self.select, jobs=opts.jobs, skip=skips, clock=self.clock, overlay=overlay)
        plan.done_for_instance = self._done_for_instance
        return plan

    def _done_for_instance(self, node: str, iid: str | None) -> tuple[str, dict] | None:
        """A per-instance module's marker for `iid`, judged once instance-id has settled.
        A dry run probes nothing: it assumes the instance-id the last run resolved."""
        spec = self.cg.specs[node]
        if self.opts.force_all or spec.name in self.opts.force:
            return None
        how = ""
        if self.opts.dry_run:
            iid, how = self.last_iid, " (the last run's instance-id)"
        if iid is None:
            return None
        marker = self.markers.read_marker(spec.name, "per-instance", str(iid))
        if marker is None:
            return None
        return (f"already ran for instance {iid}{how}", self.secrets.public(_marker_values(marker)))

    # -- starting nodes ------------------------------------------------------

    def _declared(self, node: str) -> list[str]:
        return [u[4:] for u, k in self.plan.inputs[node] if k in ("needs", "wants")]

    def _env(self, node: str, spec, facade: Facade, iid: str | None) -> dict[str, str]:
        """CIDAG_* variables for the node's commands. Secret capabilities go only to the
        built-in exec type, whose recipe has no other way to read what it declared."""
        env = {"CIDAG_ROOT": str(self.root), "CIDAG_NODE": node, "CIDAG_STATE_DIR": str(self.state_path)}
        if iid is not None:
            env["CIDAG_INSTANCE_ID"] = iid
        for name in facade:
            value = facade[name]
            if callable(value) or (self.secrets.is_secret(name) and spec.type != "exec"):
                continue
            if isinstance(value, str) and "\0" in value:
                continue  # an environment cannot carry a NUL: the command reads it as absent
            env[env_key(name)] = value if isinstance(value, str) else json.dumps(value)
        return env

    def _make_context(self, node: str) -> Context:
        spec = self.cg.specs[node]
        facade = Facade(self.plan, node, self._declared(node))
        iid = self.instance_id()
        log = logging.Logger(f"cidag.node.{node}")
        log.parent = self.node_log_parent  # not registered globally: no leak across runs
        log.level = logging.DEBUG  # all reaches the record; stderr filters. (setLevel clears every logger's cache)
        log.addFilter(self.log_gate)
        self.loggers[node] = log
        return Context(
            name=spec.name,
            kind=spec.kind,
            settings=spec.settings,
            caps=facade,
            root=self.root,
            instance_id=iid,
            log=log,
            deadline=self.now() + spec.timeout,
            cancelled=CancelEvent(),
            state_dir=self.state_path,
            env=_LazyEnv(lambda: self._env(node, spec, facade, iid)),  # built only if a command runs
            run_started=self.t0,
            run_result=lambda: result_of(self.plan, bool(self.interrupted)),
            is_secret=self.secrets.is_secret,
            commands=self.commands,
        )

    def _start(self, node: str) -> None:
        spec = self.cg.specs[node]
        ctx = self._make_context(node)
        if spec.kind == "module":
            lane = self._free_lanes.pop(0) if self._free_lanes else len(self.workers) + self.opts.jobs
        else:
            lane, self._next_source_lane = self._next_source_lane, self._next_source_lane + 1
        self.workers[node] = lane
        self.running[node] = (ctx, ctx.deadline)
        self.contexts[node] = ctx
        if self.opts.observer is not None:
            self.opts.observer.node_started(node)
        self.runner.start(node, spec.call, ctx)

    # -- ending nodes --------------------------------------------------------

    def _end(self, node: str, status: str, reason: str = "", values: dict | None = None, code: str = "") -> None:
        self.running.pop(node)
        spec = self.cg.specs[node]
        lane = self.workers.get(node)
        if spec.kind == "module" and lane is not None and lane < self.opts.jobs:
            self._free_lanes.append(lane)
            self._free_lanes.sort()
        if values:
            self.secrets.learn(values)
        ctx = self.contexts.get(node)
        if ctx is not None and ctx.faults:  # items that failed inside a node that went on
            self.faults.extend(f"{node}: {self.scrub(f)}" for f in ctx.faults)
        if node in self.log_gate.held:
            self.log_gate.release(node, self.loggers.get(node))
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
                                     "finished_at": _utc(time.time()), "provides": provides})
        except (OSError, ValueError) as exc:
            # The module did its work; without its marker it runs again next boot. A fault.
            why = f"marker not written ({getattr(exc, 'strerror', None) or exc}); it will run again next boot"
            self.loggers[node].warning("%s", why) if node in self.loggers else None
            self.faults.append(f"{node}: {why}")

    def _canonical(self, node: str, values: dict) -> tuple[dict, str]:
        """Values made canonical (values.py), instance-id and hostname checked as names there;
        a value that cannot be is the node's failure."""
        out = {}
        for cap, value in values.items():
            try:
                out[cap] = canonical_capability(cap, value)
            except ValueRefused as exc:
                return {}, f"capability {cap}: {exc}"
            except RecursionError:
                return {}, f"capability {cap}: value nested too deep"
        return out, ""

    def _classify(self, node: str, how: str, result: Any, reason: str) -> None:
        spec = self.cg.specs[node]
        if spec.kind == "source":
            if how == "unavailable" or (how == "returned" and result is None):
                self._end(node, "unavailable", reason or "probe found nothing")
            elif how == "raised":
                self._end(node, "failed", reason)
            elif not isinstance(result, dict):
                self._end(node, "failed", f"probe returned {type(result).__name__}, not a mapping")
            else:
                values, bad = self._canonical(
                    node, {c: result[c] for c in spec.capabilities if c in result and result[c] is not None})
                if bad:
                    self._end(node, "failed", bad)
                else:
                    self._end(node, "available", "", values)
        else:
            if how == "raised" or how == "unavailable":
                self._end(node, "failed", reason)
            elif result is not None and not isinstance(result, dict):
                self._end(node, "failed", f"run returned {type(result).__name__}, not a mapping or None")
            else:
                result = result or {}
                # A value of None: the module ran but does not provide that capability.
                values, bad = self._canonical(node, {c: result.get(c, True) for c in spec.provides
                                                     if result.get(c, True) is not None})
                if bad:
                    self._end(node, "failed", bad)
                else:
                    # Why a declared capability was not provided (ctx.unprovided): the reason of
                    # what is skipped for want of it.
                    ctx = self.contexts.get(node)
                    why = "; ".join(w for c, w in (ctx.unprovided.items() if ctx is not None else ())
                                    if c in spec.provides and c not in values)
                    self._end(node, "ok", why, values)

    def _expire(self) -> None:
        now = self.now()
        for node, (ctx, _) in list(self.running.items()):
            if now >= ctx.deadline:
                ctx.cancelled.set()  # the node's commands are killed; its late answer is ignored
                self._drop(node, ctx)
                spec = self.cg.specs[node]
                why = f"timeout after {spec.timeout:g}s"
                self.timed_out.add(node)
                self._end(node, "failed" if spec.kind == "source" else "timeout", why, code=TIMEOUT)

    def _drop(self, node: str, ctx: Context) -> None:
        self.late[node] = ctx
        self.runner.forget(node)

    # -- the loop ------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        self.runner.post((None, "signal", signum, ""))

    def run(self) -> RunResult:
        # The compiled graph lives all run: keep the collector from walking it again and
        # again while the plan and the contexts allocate (half a second at 5,000 nodes).
        # And no collection during the run: nodes allocate a few objects each and keep them
        # to the end (contexts, records), so collections would walk an ever larger heap
        # for nothing; a plugin's cyclic garbage waits until the run ends.
        enabled = gc.isenabled()
        gc.freeze()
        gc.disable()
        try:
            return self._run()
        finally:
            gc.unfreeze()
            if enabled:
                gc.enable()

    def _run(self) -> RunResult:
        self.plan = self._make_plan()
        if self.opts.dry_run:
            return self._dry_run()
        self.state.ensure_writable()
        try:
            self.root.mkdir(parents=True, exist_ok=True)  # modules write under it from the start
        except OSError as exc:
            raise UsageError(f"--root {self.root}: {exc.strerror or exc}") from None
        started_at = _utc(self.wall0)
        record_name = f"{datetime.fromtimestamp(self.wall0, timezone.utc):%Y%m%dT%H%M%S.%fZ}-{os.getpid()}.json"
        self.running_info = {"pid": os.getpid(), "started_at": started_at,
                             "record": str(self.state.path / "runs" / record_name),
                             **process_identity(), "milestones": {}}
        self.state.begin_run(self.running_info)
        self.state.reserve()  # room for the record, should the run fill the disk
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
            try:
                self._write_instance_data()
            except OSError as exc:  # e.g. a full disk: the record below says so
                self.faults.append(f"instance data not written ({exc.strerror or exc})")
            record = self._record(started_at, self.clock(),
                                  error=f"internal error: {type(error).__name__}: {describe_exception(error)}"
                                  if error is not None else None)
            mode = 0o600 if self.secrets.any else 0o644
            try:
                path = self.state.write_record(record, record_name, mode=mode)
            except LastRunNotUpdated as exc:  # the work and its record are kept: one line, go on
                logging.getLogger("cidag").warning("%s", exc.strerror)
                path = exc.path
            except OSError as exc:
                raise StateError(f"state dir {self.state.path}: the run ended {record['result']} but its record "
                                 f"could not be written ({exc.strerror or exc})",
                                 exit_code=record["exit_code"] or 1) from None
            if self.opts.record_path:
                from .state import write_json

                write_json(self.opts.record_path, record, mode=mode)
        finally:
            self.state.end_run()
            # Whatever happened, systemd hears that the service is up: units ordered after
            # it must not wait for ever (its exit code says how the run went).
            self.notifier.ready("run ended" if error is not None else
                                f"run ended: {result_of(self.plan, bool(self.interrupted))}")
            restore()  # only now: a signal while the record is written must not kill the process
        if error is not None:
            if isinstance(error, KeyboardInterrupt):
                raise error
            raise InternalError(f"internal error: {type(error).__name__}: {describe_exception(error)} "
                                f"(record: {path})") from error
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
            if len(self.reached) < len(self.milestones):
                self._check_milestones()
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
            timeout = max(0.0, min(ctx.deadline for ctx, _ in self.running.values()) - self.now())
            for node, how, result, reason in self.runner.wait(timeout):
                if how == "signal":
                    self._interrupt(signal.Signals(result).name)
                    break
                if node in self.running:
                    if how != "returned" and self.now() >= self.running[node][0].deadline:
                        self._expire()  # it failed because its deadline passed: a timeout
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
        self._check_milestones()

    def _check_milestones(self) -> None:
        """Note each milestone whose modules have all ended (or will not run): in the
        running file, for `cidag wait`, and to systemd (STATUS=, READY=1 for the ready one).
        A milestone the run abandoned (interrupt, --fail-fast) is not reached."""
        for name in self.milestones:
            st = self.plan.nodes[MILESTONE + name]
            if name in self.reached or st.status != "done" or st.code:
                continue
            self.reached[name] = at = self.clock()
            self.running_info.setdefault("milestones", {})[name] = round(at, 6)
            if self.state is not None:
                try:
                    self.state.update_run(self.running_info)
                except OSError as exc:  # waiters then see it when the run ends: a fault, not a failure
                    self.faults.append(f"milestone {name}: running file not updated ({exc.strerror or exc})")
            if name == self.ready_milestone:
                self.notifier.ready(f"{name} reached at {at:.1f}s; provisioning goes on")
            else:
                self.notifier.notify(STATUS=f"{name} reached at {at:.1f}s")

    def _drop_obsolete(self) -> None:
        """Cancel running sources whose every capability has settled without them."""
        while self.plan.obsolete:
            node = self.plan.obsolete.pop()
            if node in self.running:
                ctx, _ = self.running.pop(node)
                ctx.cancelled.set()
                self._drop(node, ctx)
                if node in self.log_gate.held:
                    self.log_gate.release(node, self.loggers.get(node))
                self.plan.skip(node, OBSOLETE, code=OBSOLETE_CODE)

    def _interrupt(self, signame: str) -> None:
        """No new node starts; running ones are cancelled (their commands get SIGTERM, then
        SIGKILL after the grace period). A node that still answers in the grace period ends
        as it answered (a module that returned ok is ok and gets its marker); the others
        are marked interrupted."""
        self.interrupted = signame
        for ctx, _ in self.running.values():
            ctx.cancelled.set()
        deadline = self.now() + self.opts.grace + 1.0
        while self.running and self.now() < deadline:
            for node, how, result, reason in self.runner.wait(max(0.0, deadline - self.now())):
                if how == "signal":
                    continue  # a second signal changes nothing: we are already stopping
                if node in self.running and how == "returned":
                    self._classify(node, how, result, reason)  # it finished its work: as it says
                elif node in self.running:
                    self.running.pop(node)  # it failed because it was cancelled: interrupted
                    self.plan.finished(node, "interrupted", reason=f"interrupted by {signame}", code=INTERRUPTED)
                else:
                    self._late_answer(node)
        for node in list(self.running):
            ctx, _ = self.running.pop(node)
            self._drop(node, ctx)
            self.plan.finished(node, "interrupted", reason=f"interrupted by {signame}", code=INTERRUPTED)
        self.plan.abandon(f"not started: run interrupted by {signame}", code=INTERRUPTED)

    def _stop_all(self, why: str) -> None:
        """After a failure of the loop itself: cancel everything and mark what did not end."""
        for node, (ctx, _) in list(self.running.items()):
            ctx.cancelled.set()
            self.late[node] = ctx
        self.running.clear()
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
        if not self.opts.handle_signals or threading.current_thread() is not threading.main_thread():
            return lambda: None
        own = not run_signals.latched()
        old = {sig: signal.getsignal(sig) for sig in run_signals.SIGNALS} if own else {}
        if own:
            run_signals.latch()
        early = run_signals.attach(self._on_signal)
        for signum in early[:1]:
            self.interrupted = signal.Signals(signum).name  # before anything started

        def restore() -> None:
            run_signals.detach()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            if own:
                run_signals._latched = False  # noqa: SLF001 - we latched, we unlatch

        return restore

    # -- output --------------------------------------------------------------

    def _record(self, started_at: str, makespan: float, error: str | None = None) -> dict:
        m = self.cg.manifests
        meta = {"strategy": self.opts.strategy, "select": self.select, "jobs": self.opts.jobs,
                "root": str(self.opts.root), "state_dir": str(self.opts.resolved_state_dir()),
                "manifests": {"sources": m.sources_file, "modules": m.modules_file}}
        if self.faults:
            meta["faults"] = [self.scrub(f) for f in self.faults]
        if self.milestones:
            meta["milestones"] = {name: {"reached_s": round(self.reached[name], 6) if name in self.reached else None,
                                         "modules": members}
                                  for name, members in self.milestones.items()}
        outputs = {}
        for node, ctx in self.contexts.items():
            if ctx.output:
                try:
                    outputs[node] = "".join(list(ctx.output))[-(1 << 20):]
                except TypeError:
                    outputs[node] = "".join(str(x) for x in list(ctx.output))[-(1 << 20):]
        counters = {node: dict(ctx.counters) for node, ctx in self.contexts.items() if ctx.counters}
        record = build_record(self.plan, started_at=started_at, makespan=makespan,
                              interrupted=bool(self.interrupted), instance_id=self.instance_id(), meta=meta,
                              logs=self.logs, outputs=outputs, workers=self.workers, scrub=self.scrub,
                              counters=counters, error=error)
        if self.faults and record["result"] == "ok":
            record["result"] = "degraded"
        return record

    def _write_instance_data(self) -> None:
        public: dict = {}
        sensitive: dict = {}
        for name, cap in sorted(self.plan.caps.items()):
            if cap.status != "resolved":
                continue
            value = at_rest(self.plan.nodes[cap.provider].values.get(name))
            secret = self.secrets.is_secret(name) and not callable(self.plan.nodes[cap.provider].values.get(name))
            if "password" in name and secret:
                value = "<secret>"  # passwords are never kept at rest, not even in the 0600 file
            elif secret:
                value = self.secrets.without_passwords(value)  # nor those inside documents
            sensitive[name] = {"provider": cap.provider, "value": value}
            public[name] = {"provider": cap.provider, "value": "<secret>" if secret else value}
        iid = self.instance_id()
        self.state.write_instance_data({"instance_id": iid, "capabilities": public},
                                       {"instance_id": iid, "capabilities": sensitive})

    def _dry_run(self) -> RunResult:
        """Walk the plan as if every source were available with every declared capability
        and every module ended ok (ninja -n): the order things would start in."""
        plan = self.plan
        plan.start()
        while plan.is_active():
            started = plan.next_to_start()
            if not started:
                plan.abandon("internal error: nothing can start (please report)", code=INTERNAL)
                break
            for node in started:
                spec = self.cg.specs[node]
                if spec.kind == "source":
                    plan.finished(node, "available", values={c: None for c in spec.capabilities})
                else:
                    plan.finished(node, "ok", values={c: True for c in spec.provides})
            self._check_milestones()
        record = self._record(_utc(self.wall0), 0.0)
        return RunResult(record, 0, None, plan.start_order)


def run(cg: CompiledGraph, opts: RunOptions | None = None) -> RunResult:
    """Run `cg` once with `opts`; returns the record and the exit code (never raises for a
    failing node; raises UsageError for unusable options or state dir, InternalError
    after writing the record when cidag itself failed)."""
    return Engine(cg, opts or RunOptions()).run()


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def load_and_compile(sources: str | None = None, modules: str | None = None,
                     config_dir: str | None = None, env: Mapping[str, str] | None = None) -> CompiledGraph:
    """Find, load and compile the manifests (the lookup order of spec §2); `env` is what their
    ${VAR}s read (default os.environ). `cidag run` goes through plancache.load_for_run."""
    from .compiler import compile_manifests
    from .manifest import find_manifests, load_manifests

    s, m = find_manifests(sources, modules, config_dir)
    enabled = gc.isenabled()
    gc.disable()  # loading allocates many containers and frees few: collections only cost
    try:
        return compile_manifests(load_manifests(s, m, env))
    finally:
        if enabled:
            gc.enable()


__all__: Iterable[str] = ("RunOptions", "RunResult", "run", "load_and_compile", "plan_skips", "InternalError")
