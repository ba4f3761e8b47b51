"""What is settled before a run starts: modules outside --only, `once` modules already done,
sources no module of the run needs, and sources held until instance-id tells whether the
modules that need them already ran for this instance (docs/engine.md)."""
from __future__ import annotations

from collections.abc import Callable

from .compiler import CompiledGraph, ancestors
from .errors import UsageError
from .options import RunOptions
from .plan import ALREADY_RAN, INTERNAL, NOT_NEEDED, NOT_NEEDED_CODE, NOT_SELECTED, Overlay, Plan
from .state import StateDir
from .strategies import overlay_for
from .values import SecretPolicy

IID = "instance-id"


def plan_run(cg: CompiledGraph, opts: RunOptions, markers: StateDir, *, select: str,
             clock: Callable[[], float], secrets: SecretPolicy, overlay: Overlay) -> Plan:
    """The plan of one run: nodes settled before it starts, the strategy's overlay laid over
    `overlay` (the milestones' gates), held sources, and per-instance markers judged once
    instance-id settles. A dry run probes nothing: it assumes the last run's instance-id."""
    last_iid = markers.last_instance_id()
    guess = probably_done(cg, opts, markers, last_iid)
    skips = plan_skips(cg, opts, markers)
    if opts.strategy != "one-step":
        strategy = overlay_for(cg, opts.strategy, skips)
        strategy.gates.extend(overlay.gates)
        strategy.edges.extend(overlay.edges)
        overlay = strategy
    overlay.held = frozenset(deferred_sources(cg, skips, guess))

    def done_for_instance(node: str, iid: str | None) -> tuple[str, dict] | None:
        """A per-instance module's marker for `iid`: (reason, the values it provided)."""
        spec = cg.specs[node]
        if opts.force_all or spec.name in opts.force:
            return None
        how = ""
        if opts.dry_run:
            iid, how = last_iid, " (the last run's instance-id)"
        if iid is None:
            return None
        marker = markers.read_marker(spec.name, "per-instance", str(iid))
        if marker is None:
            return None
        return (f"already ran for instance {iid}{how}", secrets.public(marker_values(marker)))

    plan = Plan(cg, select=select, jobs=opts.jobs, skip=skips, clock=clock, overlay=overlay)
    plan.done_for_instance = done_for_instance
    return plan


def probably_done(cg: CompiledGraph, opts: RunOptions, state: StateDir, last_iid: str | None) -> set[str]:
    """Per-instance modules whose marker exists for the last run's instance id (not forced)."""
    if last_iid is None or opts.force_all:
        return set()
    return {m.node_id for m in cg.manifests.modules
            if m.frequency == "per-instance" and m.name not in opts.force
            and state.read_marker(m.name, "per-instance", last_iid) is not None}


def plan_skips(cg: CompiledGraph, opts: RunOptions, state: StateDir | None) -> dict[str, tuple]:
    """Nodes settled before the run starts: outside --only, `once` already done, sources not
    needed. Sources only probably-done per-instance modules need are deferred, not skipped
    (deferred_sources). Raises UsageError for an --only or --force that names no module."""
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
                skips[n] = ("already ran once on this machine", True, marker_values(marker), ALREADY_RAN)
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


def marker_values(marker: dict) -> dict:
    """The capability values a marker says its module provided."""
    provides = marker.get("provides")
    return dict(provides) if isinstance(provides, dict) else {}


def dry_walk(plan: Plan, cg: CompiledGraph, after_step: Callable[[], None] = lambda: None) -> None:
    """Walk `plan` as if every source were available with every declared capability and
    every module ended ok (ninja -n): the order things would start in (`plan.start_order`)."""
    plan.start()
    while plan.is_active():
        started = plan.next_to_start()
        if not started:
            plan.abandon("internal error: nothing can start (please report)", code=INTERNAL)
            break
        for node in started:
            spec = cg.specs[node]
            if spec.kind == "source":
                plan.finished(node, "available", values={c: None for c in spec.capabilities})
            else:
                plan.finished(node, "ok", values={c: True for c in spec.provides})
        after_step()
