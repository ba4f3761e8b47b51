"""Build compiled graphs from manifest text for tests (no CLI, no threads)."""
from __future__ import annotations

import itertools
import tempfile
import textwrap
from pathlib import Path

import yaml

from cidag.compiler import compile_manifests
from cidag.manifest import load_manifests

_counter = itertools.count()


def compile_text(sources: str | dict, modules: str | dict):
    """Compile two manifests given as YAML text or dicts."""
    with tempfile.TemporaryDirectory(prefix="cidag-graph-") as tmp:  # the files are read once, here
        paths = []
        for name, body in (("sources.yaml", sources), ("modules.yaml", modules)):
            text = yaml.safe_dump(body, sort_keys=False) if isinstance(body, dict) else textwrap.dedent(body).lstrip()
            p = Path(tmp) / name
            p.write_text(text)
            paths.append(str(p))
        return compile_manifests(load_manifests(*paths))


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t
