"""Shared fixtures: write manifests into a temp dir, run the real CLI in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.pop("CIDAG_ROOT", None)  # also for the tests that call cidag.cli.main() in-process


def cli_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CIDAG_CONFIG_DIR", None)
    env.pop("CIDAG_ROOT", None)  # the default of --root; a user's `export CIDAG_ROOT=demo-root` stays out
    env.update(extra or {})
    return env


def cidag(*args: str, env: dict | None = None, timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m cidag ARGS` as a user would; returns the completed process (text)."""
    return subprocess.run([sys.executable, "-m", "cidag", *args], capture_output=True, text=True,
                          env=cli_env(env), timeout=timeout, cwd=cwd)


@pytest.fixture
def manifests(tmp_path):
    """write(sources_yaml, modules_yaml) -> (sources_path, modules_path)."""

    def write(sources: str, modules: str, name: str = "") -> tuple[str, str]:
        d = tmp_path / (name or "conf")
        d.mkdir(exist_ok=True)
        s, m = d / "sources.yaml", d / "modules.yaml"
        s.write_text(textwrap.dedent(sources).lstrip())
        m.write_text(textwrap.dedent(modules).lstrip())
        return str(s), str(m)

    return write


def load_record(path) -> dict:
    return json.loads(Path(path).read_text())


def nodes_by_id(record: dict) -> dict:
    return {n["id"]: n for n in record["nodes"]}


def process_gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` no longer runs (exited, or a zombie nobody reaped yet)."""
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False
