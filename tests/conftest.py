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


def mount_tmpfs(where: Path, *, size: str = "4m", nr_inodes: int | None = None):
    """A context manager: a tmpfs of `size` bytes (k/m suffixes) and at most `nr_inodes`
    inodes mounted at `where` (made if needed), always unmounted at the end. Skips the
    test with the reason when not root or when mounting is not permitted here."""
    import contextlib
    import shutil

    @contextlib.contextmanager
    def mounted():
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        if shutil.which("mount") is None or shutil.which("umount") is None:
            pytest.skip("no mount/umount command")
        where.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" + (f",nr_inodes={nr_inodes}" if nr_inodes else "") + ",mode=0755"
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        try:
            yield where
        finally:
            # Lazy: a process of the test still holding a file there must not keep it mounted.
            subprocess.run(["umount", "-l", str(where)], capture_output=True)

    return mounted()


def run_shipped(root: Path, env: dict) -> tuple[dict, dict, subprocess.CompletedProcess]:
    """`python -m cidag run` on the shipped sources.yaml and modules.yaml into `root`, with `env`
    (CIDAG_* paths and URLs) laid over this environment; network-online unchecked (a temp root).

    Returns (the run record, its nodes by id, the finished process)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CIDAG_NETWORK_WAIT_ONLINE": "false", **env}
    out = subprocess.run(
        [sys.executable, "-m", "cidag", "run", "--sources", str(REPO / "sources.yaml"),
         "--modules", str(REPO / "modules.yaml"), "--root", str(root), "-j", "4", "-q"],
        capture_output=True, text=True, env=env, timeout=120)
    rec = json.loads((root / "var/lib/cidag/last-run.json").read_text())
    return rec, {n["id"]: n for n in rec["nodes"]}, out


def pytest_collection_modifyitems(config, items):
    """Boot tests early, half of them at the head of each half of the list: `make test`'s
    two workers (xdist's worksteal gives each one half, in order) each start booting at
    once, the quick tests fill the gaps, and the long boots do not all land on one worker.
    Without workers a failing boot shows early."""
    here = Path(__file__).resolve().parent / "vm"
    boots = [it for it in items if here in Path(str(it.fspath)).resolve().parents]
    # The tests of three boots first, one at the head of each worker's half: started last,
    # one of them would be the tail of the whole run.
    boots.sort(key=lambda it: -(it.get_closest_marker("boots").args[0] if it.get_closest_marker("boots") else 1))
    if boots:
        first = set(boots)
        rest = [it for it in items if it not in first]
        half = len(rest) // 2
        items[:] = boots[0::2] + rest[:half] + boots[1::2] + rest[half:]
