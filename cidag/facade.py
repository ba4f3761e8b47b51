"""The facade (proposal §Strategies): each read of a capability is delegated to its selected provider."""
from __future__ import annotations

from typing import Any, Iterator

from .api import Capabilities
from .errors import CapabilityUnavailable
from .plan import Plan


class Facade(Capabilities):
    """What one node sees: only the capabilities it declared, from the provider each resolved to.

    Reads happen on worker threads; a declared capability is settled before the
    node starts and never changes after, so no lock is needed.
    """

    def __init__(self, plan: Plan, node: str, declared: list[str] | None = None) -> None:
        """`declared`: the capabilities `node` may read; None: its needs and wants in the
        plan, worked out on first read (most nodes never read one)."""
        self._plan, self._node = plan, node
        if declared is not None:
            self.__dict__["_declared"] = list(declared)

    @property
    def _declared(self) -> list[str]:
        declared = self.__dict__.get("_declared")
        if declared is None:
            declared = self.__dict__["_declared"] = [
                u[4:] for u, k in self._plan.inputs[self._node] if k in ("needs", "wants")]
        return declared

    def __getitem__(self, name: str) -> Any:
        if name not in self._declared:
            raise CapabilityUnavailable(
                f"{self._node} reads capability {name!r} without declaring it in needs or wants"
            )
        cap = self._plan.caps[name]
        if cap.status != "resolved":
            raise CapabilityUnavailable(f"capability {name} unavailable: {cap.reason or cap.status}")
        return self._plan.nodes[cap.provider].values[name]

    def __iter__(self) -> Iterator[str]:
        return (n for n in self._declared if self._plan.caps[n].status == "resolved")

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, name: object) -> bool:
        return name in self._declared and self._plan.caps[name].status == "resolved"  # type: ignore[index]

    def provider(self, name: str) -> str | None:
        """Node id of the provider `name` resolved to, or None."""
        cap = self._plan.caps.get(name)
        return cap.provider if cap is not None and name in self._declared else None
