"""The Context each started node gets (api.py), made the same way for every node of a run."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .api import Context
from .cmdenv import LazyEnv, capability_env
from .facade import Facade
from .nodelogs import NodeLogs
from .plan import Plan
from .runner import CancelEvent
from .values import SecretPolicy


class _NodeContext(Context):
    """A Context whose logger is made on first use: most nodes never log, and a Logger per
    node is a tenth of a no-op node's cost."""

    make_log: tuple  # (function, node): what makes the logger

    @property  # type: ignore[override]
    def log(self) -> logging.Logger:
        log = self.__dict__.get("_log")
        if log is None:
            make, node = self.make_log
            log = self.__dict__["_log"] = make(node)
        return log

    @log.setter
    def log(self, value: logging.Logger | None) -> None:
        self.__dict__["_log"] = value


class Contexts:
    """Makes the contexts of one run's nodes: the facade over the plan, a logger, the
    CIDAG_* environment of their commands (cmdenv.py), the run's clock and secret policy."""

    def __init__(self, plan: Plan, *, root: Path, state_dir: Path, clock: Callable[[], float], t0: float,
                 secrets: SecretPolicy, logs: NodeLogs, commands: dict,
                 run_result: Callable[[], str]) -> None:
        self.plan, self.root, self.state_dir = plan, root, state_dir
        self.clock, self.t0 = clock, t0
        self.secrets, self.logs, self.commands = secrets, logs, commands
        self.run_result = run_result
        self._common = {"root": root, "state_dir": state_dir, "run_started": t0, "run_result": run_result,
                        "is_secret": secrets.is_secret, "commands": commands,
                        "clock": clock}  # one clock: the runner's, which the deadline is on

    def make(self, node: str, instance_id: str | None) -> Context:
        """A new context for `node`, its deadline `timeout` seconds from now on the run's clock."""
        spec = self.plan.cg.specs[node]
        facade = Facade(self.plan, node)
        # The dataclass's __init__ with its 21 fields is a tenth of a no-op node's cost: the
        # run-wide fields are copied from one dict, the node's own set after (the same fields).
        ctx = _NodeContext.__new__(_NodeContext)
        ctx.__dict__.update(
            self._common,
            name=spec.name,
            kind=spec.kind,
            settings=spec.settings,
            caps=facade,
            instance_id=instance_id,
            deadline=self.clock() + spec.timeout,
            cancelled=CancelEvent(),
            env=LazyEnv(self.environment, node, spec.type, facade, instance_id),  # built only if a command runs
            output=[],
            counters={},
            unprovided={},
            faults=[],
            make_log=(self.logs.logger, node),
        )
        return ctx

    def environment(self, node: str, type_name: str, facade: Facade, instance_id: str | None) -> dict[str, str]:
        """CIDAG_* variables for the node's commands. Secret capabilities go only to the
        built-in exec type, whose recipe has no other way to read what it declared."""
        skip = self.secrets.is_secret if type_name != "exec" else (lambda name: False)
        env = capability_env(self.root, instance_id, facade, skip)
        env.update(CIDAG_NODE=node, CIDAG_STATE_DIR=str(self.state_dir))
        return env
