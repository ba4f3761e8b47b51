"""Run a compiled graph: the loop that joins the plan, the node runner, the state and the record.

`run()` is the library entry point the CLI, the tests and the benchmarks call.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, MutableMapping

from .api import Context
from .compiler import CompiledGraph, ancestors
from .errors import SourceUnavailable, UsageError
from .facade import Facade
from .plan import Plan
from .record import build_record, jsonable, result_of
from .state import StateDir

GRACE_S = 2.0  # SIGTERM -> SIGKILL for commands of interrupted nodes


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

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir) if self.state_dir else Path(self.root) / "var/lib/cidag"


@dataclass
class RunResult:
    """A finished run: its record, exit code, and for --dry-run the start order."""

    record: dict
    exit_code: int
    record_path: Path | None = None
    start_order: list[str] = field(default_factory=list)


def plan_skips(cg: CompiledGraph, opts: RunOptions, state: StateDir | None) -> dict[str, tuple[str, bool, dict]]:
    """Nodes settled before the run starts: outside --only, `once` already done, sources not needed."""
    g = cg.graph
    skips: dict[str, tuple[str, bool, dict]] = {}
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
            skips[n] = ("not selected by --only", False, {})
        in_run &= keep
    if state is not None:
        for n in sorted(in_run):
            spec = modules[n]
            if spec.frequency != "once" or opts.force_all or spec.name in opts.force:
                continue
            marker = state.read_marker(spec.name, "once", None)
            if marker is not None:
                skips[n] = ("already ran once on this machine", True, marker.get("provides") or {})
                in_run.discard(n)
    # Probe only what the modules that will run need, directly or through other sources.
    needed = ancestors(g, in_run)
    for s in cg.manifests.sources:
        if s.node_id not in needed:
            skips[s.node_id] = ("not needed", False, {})
    return skips


def dry_run_markers(cg: CompiledGraph, opts: RunOptions,
                    state: StateDir) -> Callable[[str], tuple[str, dict] | None]:
    """Plan.before_start for --dry-run: per-instance markers of the instance-id the last run
    resolved (STATE_DIR/instance-data.json). A dry run probes nothing, so it assumes the
    instance is the same and lists what a reboot of it would skip."""
    try:
        iid = json.loads((state.path / "instance-data.json").read_text(encoding="utf-8")).get("instance_id")
    except (OSError, ValueError, AttributeError):
        iid = None

    def before_start(node: str) -> tuple[str, dict] | None:
        spec = cg.specs[node]
        if (not isinstance(iid, str) or spec.kind != "module" or spec.frequency != "per-instance"
                or opts.force_all or spec.name in opts.force):
            return None
        marker = state.read_marker(spec.name, "per-instance", iid)
        if marker is None:
            return None
        return (f"already ran for instance {iid} (the last run's instance-id)", marker.get("provides") or {})

    return before_start


class _NodeLogs(logging.Handler):
    """One handler per run, on the run's own `cidag.node` logger: scrubs secrets from each
    node's records (before any stderr handler above sees them) and keeps them per node."""

    def __init__(self, t0: float, scrub: Callable[[str], str]) -> None:
        super().__init__(logging.DEBUG)
        self.t0, self.scrub = t0, scrub
        self.records: dict[str, list[dict]] = {}

    def handle(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.scrub(record.getMessage()), None
        self.emit(record)
        return True

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


class Engine:
    """One run of a compiled graph. Use `run()`; the class keeps the loop's state together."""

    def __init__(self, cg: CompiledGraph, opts: RunOptions) -> None:
        self.cg, self.opts = cg, opts
        self.select = opts.select or cg.manifests.select
        self.state = None if opts.dry_run else StateDir(opts.resolved_state_dir())
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.running: dict[str, tuple[Context, float]] = {}  # node -> (ctx, deadline)
        self.workers: dict[str, int] = {}
        self._free_lanes: list[int] = list(range(opts.jobs))
        self._next_source_lane = opts.jobs
        self.outputs: dict[str, str] = {}
        self.counters: dict[str, dict] = {}  # node -> ctx.counters (HTTP requests, retries, ...)
        self.secret_values: set[str] = set()
        self.secret_caps = cg.manifests.secrets()
        self._reported = 0  # how much of plan.end_order the observer has seen
        self.interrupted = False
        self.first_failure: str | None = None
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        # Node loggers hang under a per-run `cidag.node` logger whose handler scrubs and
        # keeps their records; from there they propagate to the `cidag` logger (stderr).
        self.node_logs = _NodeLogs(self.wall0, self.scrub)
        self.node_log_parent = logging.Logger("cidag.node")
        self.node_log_parent.parent = logging.getLogger("cidag")
        self.node_log_parent.addHandler(self.node_logs)
        self.logs = self.node_logs.records
        self.plan: Plan | None = None
        self.root = Path(opts.root)
        self.state_path = opts.resolved_state_dir()
        # Worker threads are reused: Thread.start() waits for the new thread to run, which
        # was half the cost of a 5,000-node run. A hung node keeps its thread; a new one
        # is made when no worker is idle, so a hang never blocks a lane.
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = 0
        self._idle_lock = threading.Lock()
        self._threads = 0

    # -- helpers -------------------------------------------------------------

    def clock(self) -> float:
        return time.monotonic() - self.t0

    def scrub(self, text: str) -> str:
        if not text or not self.secret_values:
            return text
        for secret in sorted(self.secret_values, key=len, reverse=True):
            text = text.replace(secret, "<secret>")
        return text

    def instance_id(self) -> str | None:
        cap = self.plan.caps.get("instance-id") if self.plan else None
        if cap is None or cap.status != "resolved":
            return None
        value = self.plan.nodes[cap.provider].values.get("instance-id")
        return None if value is None else str(value)

    def _note_secrets(self, node: str, values: dict) -> None:
        for cap, value in values.items():
            if cap in self.secret_caps and isinstance(value, (str, bytes)) and value:
                self.secret_values.add(value if isinstance(value, str) else value.decode("utf-8", "replace"))

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
            if callable(value) or (name in self.secret_caps and spec.type != "exec"):
                continue
            key = "CIDAG_CAP_" + name.upper().replace("-", "_").replace(".", "_")
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            env[key] = value if isinstance(value, str) else json.dumps(jsonable(value))
        return env

    def _make_context(self, node: str) -> Context:
        spec = self.cg.specs[node]
        facade = Facade(self.plan, node, self._declared(node))
        iid = self.instance_id()
        log = logging.Logger(f"cidag.node.{node}")
        log.parent = self.node_log_parent  # not registered globally: no leak across runs
        log.level = logging.DEBUG  # all reaches the record; stderr filters. (setLevel clears every logger's cache)
        return Context(
            name=spec.name,
            kind=spec.kind,
            settings=spec.settings,
            caps=facade,
            root=self.root,
            instance_id=iid,
            log=log,
            deadline=time.monotonic() + spec.timeout,
            cancelled=threading.Event(),
            state_dir=self.state_path,
            env=_LazyEnv(lambda: self._env(node, spec, facade, iid)),  # built only if a command runs
            run_started=self.t0,
            run_result=lambda: result_of(self.plan, self.interrupted),
        )

    def _before_start(self, node: str) -> tuple[str, dict] | None:
        spec = self.cg.specs[node]
        if spec.kind != "module" or spec.frequency != "per-instance" or self.state is None:
            return None
        if self.opts.force_all or spec.name in self.opts.force:
            return None
        iid = self.instance_id()
        marker = self.state.read_marker(spec.name, "per-instance", iid)
        if marker is None:
            return None
        return (f"already ran for instance {iid}", marker.get("provides") or {})

    def _start(self, node: str) -> None:
        spec = self.cg.specs[node]
        ctx = self._make_context(node)
        if spec.kind == "module":
            lane = self._free_lanes.pop(0) if self._free_lanes else len(self.workers) + self.opts.jobs
        else:
            lane, self._next_source_lane = self._next_source_lane, self._next_source_lane + 1
        self.workers[node] = lane
        self.running[node] = (ctx, ctx.deadline)
        if self.opts.observer is not None:
            self.opts.observer.node_started(node)
        with self._idle_lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1
        self._jobs.put((node, spec.call, ctx))
        if not reuse:
            self._threads += 1
            threading.Thread(target=self._worker, daemon=True, name=f"cidag-worker-{self._threads}").start()

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            event = self._work(*job)
            with self._idle_lock:
                self._idle += 1  # before the event, so the loop sees this worker idle
            self.events.put(event)

    @staticmethod
    def _work(node: str, call, ctx: Context) -> tuple:
        # Runs on a worker thread; everything it learns goes back as one event.
        try:
            return (node, "returned", call(ctx), "")
        except SourceUnavailable as exc:
            return (node, "unavailable", None, str(exc))
        except BaseException as exc:  # a plugin's failure is the node's, never the run's
            return (node, "raised", None, _describe(exc))

    def _stop_workers(self) -> None:
        for _ in range(self._threads):
            self._jobs.put(None)  # a hung worker never reads its None; it is a daemon

    # -- ending nodes --------------------------------------------------------

    def _end(self, node: str, status: str, reason: str = "", values: dict | None = None) -> None:
        ctx, _ = self.running.pop(node)
        spec = self.cg.specs[node]
        if ctx.output:
            self.outputs[node] = "".join(ctx.output)[-(1 << 20):]
        if ctx.counters:
            self.counters[node] = dict(ctx.counters)
        lane = self.workers.get(node)
        if spec.kind == "module" and lane is not None and lane < self.opts.jobs:
            self._free_lanes.append(lane)
            self._free_lanes.sort()
        if values:
            self._note_secrets(node, values)
        self.plan.finished(node, status, reason=self.scrub(reason), values=values)
        if status == "ok" and self.state is not None and spec.frequency != "per-boot":
            iid = self.instance_id()
            provides = {k: jsonable(v) for k, v in (values or {}).items() if not callable(v)}
            self.state.write_marker(spec.name, spec.frequency, iid,
                                    {"module": spec.name, "instance_id": iid,
                                     "finished_at": _utc(time.time()), "provides": provides})
        if spec.kind == "module" and status in ("failed", "timeout") and self.first_failure is None:
            self.first_failure = node

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
                values = {c: result[c] for c in spec.capabilities if c in result and result[c] is not None}
                self._end(node, "available", "", values)
        else:
            if how == "raised" or how == "unavailable":
                self._end(node, "failed", reason)
            elif result is not None and not isinstance(result, dict):
                self._end(node, "failed", f"run returned {type(result).__name__}, not a mapping or None")
            else:
                result = result or {}
                # A value of None: the module ran but does not provide that capability.
                values = {c: result.get(c, True) for c in spec.provides if result.get(c, True) is not None}
                self._end(node, "ok", "", values)

    def _expire(self) -> None:
        now = time.monotonic()
        for node, (ctx, deadline) in list(self.running.items()):
            if now >= deadline:
                ctx.cancelled.set()  # the thread may go on; its late answer is ignored
                spec = self.cg.specs[node]
                why = f"timeout after {spec.timeout:g}s"
                self._end(node, "failed" if spec.kind == "source" else "timeout", why)

    # -- the loop ------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.events.put(("__signal__", signum, None, ""))

    def run(self) -> RunResult:
        markers = StateDir(self.opts.resolved_state_dir()) if self.opts.dry_run else self.state  # read only
        skips = plan_skips(self.cg, self.opts, markers)
        self.plan = Plan(self.cg, select=self.select, strategy=self.opts.strategy,
                         jobs=self.opts.jobs, skip=skips, clock=self.clock)
        if self.opts.dry_run:
            self.plan.before_start = dry_run_markers(self.cg, self.opts, markers)
            return self._dry_run()
        self.state.ensure_writable()
        self.plan.before_start = self._before_start
        started_at = _utc(self.wall0)
        record_name = f"{datetime.fromtimestamp(self.wall0, timezone.utc):%Y%m%dT%H%M%S.%fZ}-{os.getpid()}.json"
        self.state.begin_run({"pid": os.getpid(), "started_at": started_at,
                              "record": str(self.state.path / "runs" / record_name)})
        old_handlers = self._install_signals()
        gc.freeze()  # the compiled graph lives all run: keep the collector from walking it
        try:
            self._loop()
        finally:
            gc.unfreeze()
            self._stop_workers()
            self._restore_signals(old_handlers)
            makespan = self.clock()
            record = self._record(started_at, makespan)
            try:
                path = self.state.write_record(record, record_name)
                if self.opts.record_path:
                    from .state import write_json

                    write_json(self.opts.record_path, record)
                self._write_instance_data()
            finally:
                self.state.end_run()
        return RunResult(record, record["exit_code"], path, self.plan.start_order)

    def _report_ends(self) -> None:
        """Tell the observer (progress line) about every node that reached a final status."""
        observer, ended = self.opts.observer, self.plan.end_order
        while self._reported < len(ended):
            node = ended[self._reported]
            self._reported += 1
            st = self.plan.nodes[node]
            took = st.end - st.start if st.start is not None and st.end is not None else None
            observer.node_ended(node, st.status, took)

    def _loop(self) -> None:
        plan = self.plan
        observer = self.opts.observer
        if observer is not None and hasattr(observer, "set_total"):
            observer.set_total(len(plan.nodes) - len(plan.end_order))
        self._reported = len(plan.end_order)  # settled before the run: not progress
        plan.start()
        while plan.is_active():
            if observer is not None:
                self._report_ends()
            stopping = self.interrupted or (self.opts.fail_fast and self.first_failure)
            if not stopping:
                for node in plan.next_to_start():
                    self._start(node)
            if not self.running:
                if stopping:
                    why = "run interrupted" if self.interrupted else f"not started: --fail-fast after {self.first_failure} failed"
                    plan.abandon(why)
                    break
                if plan.has_ready():
                    continue  # markers settled some nodes and others became ready
                plan.abandon("internal error: nothing can start (please report)")
                break
            timeout = max(0.0, min(d for _, d in self.running.values()) - time.monotonic())
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                self._expire()
                continue
            while event is not None:  # take every queued answer before starting more
                node, how, result, reason = event
                if node == "__signal__":
                    self._interrupt(signal.Signals(how).name)
                    break
                if node in self.running:
                    self._classify(node, how, result, reason)
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    event = None
            if self.interrupted:
                continue
            self._expire()
            self._drop_obsolete()
        if observer is not None:
            self._report_ends()

    def _drop_obsolete(self) -> None:
        """Cancel running sources whose every capability has settled without them."""
        from .plan import OBSOLETE

        while self.plan.obsolete:
            node = self.plan.obsolete.pop()
            if node in self.running:
                ctx, _ = self.running.pop(node)
                ctx.cancelled.set()
                self.plan.skip(node, OBSOLETE)

    def _interrupt(self, signame: str) -> None:
        """No new node starts; running ones are cancelled (their commands get SIGTERM, then
        SIGKILL after the grace period) and marked interrupted."""
        self.interrupted = True
        for ctx, _ in self.running.values():
            ctx.cancelled.set()
        deadline = time.monotonic() + GRACE_S + 1.0
        while self.running and time.monotonic() < deadline:
            try:
                node, how, _, _ = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if node in self.running:
                ctx, _ = self.running.pop(node)
                self.plan.finished(node, "interrupted", reason=f"interrupted by {signame}")
        for node in list(self.running):
            self.running.pop(node)
            self.plan.finished(node, "interrupted", reason=f"interrupted by {signame}")
        self.plan.abandon(f"not started: run interrupted by {signame}")

    def _install_signals(self) -> dict:
        if not self.opts.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, self._on_signal)
        return old

    @staticmethod
    def _restore_signals(old: dict) -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    # -- output --------------------------------------------------------------

    def _record(self, started_at: str, makespan: float) -> dict:
        m = self.cg.manifests
        meta = {"strategy": self.opts.strategy, "select": self.select, "jobs": self.opts.jobs,
                "root": str(self.opts.root), "state_dir": str(self.opts.resolved_state_dir()),
                "manifests": {"sources": m.sources_file, "modules": m.modules_file}}
        return build_record(self.plan, started_at=started_at, makespan=makespan,
                            interrupted=self.interrupted, instance_id=self.instance_id(), meta=meta,
                            logs=self.logs, outputs=self.outputs, workers=self.workers, scrub=self.scrub,
                            counters=self.counters)

    def _write_instance_data(self) -> None:
        secrets = self.cg.manifests.secrets()
        public: dict = {}
        sensitive: dict = {}
        for name, cap in sorted(self.plan.caps.items()):
            if cap.status != "resolved":
                continue
            value = jsonable(self.plan.nodes[cap.provider].values.get(name))
            if "password" in name and value != "<operation>":
                value = "<secret>"  # passwords are never kept at rest, not even in the 0600 file
            sensitive[name] = {"provider": cap.provider, "value": value}
            shown = "<secret>" if name in secrets and value != "<operation>" else value
            public[name] = {"provider": cap.provider, "value": shown}
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
                plan.abandon("internal error: nothing can start (please report)")
                break
            for node in started:
                spec = self.cg.specs[node]
                if spec.kind == "source":
                    plan.finished(node, "available", values={c: None for c in spec.capabilities})
                else:
                    plan.finished(node, "ok", values={c: True for c in spec.provides})
        record = self._record(_utc(self.wall0), 0.0)
        return RunResult(record, 0, None, plan.start_order)


def run(cg: CompiledGraph, opts: RunOptions | None = None) -> RunResult:
    """Run `cg` once with `opts`; returns the record and the exit code (never raises for a
    failing node; raises UsageError for unusable options or state dir)."""
    return Engine(cg, opts or RunOptions()).run()


def _describe(exc: BaseException) -> str:
    """One line for a plugin's exception. Errors a plugin or cidag defines, and OSErrors,
    speak for themselves; Python's own (KeyError, TypeError, ...) are bugs, so their
    class name is kept."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not text:
        return type(exc).__name__
    if type(exc).__module__ != "builtins" or isinstance(exc, OSError) or type(exc) in (RuntimeError, Exception):
        return text
    return f"{type(exc).__name__}: {text}"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def load_and_compile(sources: str | None = None, modules: str | None = None,
                     config_dir: str | None = None) -> CompiledGraph:
    """Find, load and compile the manifests (the lookup order of spec §2)."""
    from .compiler import compile_manifests
    from .manifest import find_manifests, load_manifests

    s, m = find_manifests(sources, modules, config_dir)
    enabled = gc.isenabled()
    gc.disable()  # loading allocates many containers and frees few: collections only cost
    try:
        return compile_manifests(load_manifests(s, m))
    finally:
        if enabled:
            gc.enable()


__all__: Iterable[str] = ("RunOptions", "RunResult", "run", "load_and_compile", "plan_skips")
