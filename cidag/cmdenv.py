"""The environment of a node's commands (spec §2), built in one place: CIDAG_ROOT,
CIDAG_INSTANCE_ID where known, and CIDAG_CAP_<NAME> for each capability the node reads
(upper case, `-` and `.` as `_`; lists and maps as JSON). Which capabilities are left out
is the caller's secret policy (values.SecretPolicy), passed in as `skip`."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any


def env_key(cap: str) -> str:
    """The variable that carries capability `cap`: CIDAG_CAP_<NAME>."""
    return "CIDAG_CAP_" + cap.upper().replace("-", "_").replace(".", "_")


def capability_env(root: str | Path, instance_id: str | None, caps: Mapping[str, Any],
                   skip: Callable[[str], bool] = lambda name: False) -> dict[str, str]:
    """CIDAG_ROOT, CIDAG_INSTANCE_ID and one CIDAG_CAP_* per readable capability of `caps`
    not `skip`ped. Operations (callables) and None have no variable; an unreadable
    capability is simply absent."""
    env = {"CIDAG_ROOT": str(root)}
    if instance_id is not None:
        env["CIDAG_INSTANCE_ID"] = str(instance_id)
    for name in list(caps):
        if skip(name):
            continue
        try:
            value = caps[name]
        except Exception:  # noqa: BLE001 - unavailable: absent from the environment
            continue
        if value is None or callable(value) or (isinstance(value, str) and "\0" in value):
            continue  # an environment cannot carry a NUL: the command reads it as absent
        env[env_key(name)] = value if isinstance(value, str) else json.dumps(value, default=str)
    return env


class LazyEnv(MutableMapping):
    """A node's CIDAG_* environment (`ctx.env`), built on first use: most plugin types run
    no command."""

    def __init__(self, build: Callable[..., dict], *args: Any) -> None:
        self._build, self._args, self._env = build, args, None

    def _get(self) -> dict:
        if self._env is None:
            self._env = self._build(*self._args)
        return self._env

    def __getitem__(self, key: str) -> str:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __setitem__(self, key: str, value: str) -> None:
        self._get()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._get()[key]
