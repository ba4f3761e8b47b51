"""The compiled-plan cache: `cidag run` loads its CompiledGraph from a file instead of parsing,
validating and compiling the manifests (and importing networkx) on every boot.

See docs/engine.md, "The compiled-plan cache". In short: one file,
ROOT/var/cache/cidag/compiled.pickle, holding a header (what the compile
depended on) and the whole CompiledGraph with its graph frozen (frozengraph.py).
It is used only when every input still matches: the manifests' bytes and paths,
the values of the environment variables their ${VAR}s read, cidag's version and
the size and mtime of each of its files, the Python version, the installed
distributions (names and versions) with their cidag.sources/cidag.modules entry
points, and the files of the plugin modules the manifests' types live in. It is a
pickle, so it is read only when the file and its directory are the user's own and
no one else can write them; any doubt or error means a compile, never a crash.
"""
from __future__ import annotations

import gc
import importlib
import logging
import os
import pickle
import stat
import sys
import types as pytypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

from . import __version__
from .compiler import CompiledGraph
from .digest import sha256
from .document import Document
from .frozengraph import FrozenGraph

FORMAT = 1  # of the file; bump when the header's layout changes
CACHE_NAME = "compiled.pickle"
PACKAGE_DIR = Path(__file__).resolve().parent
log = logging.getLogger("cidag.plancache")


MANIFEST_LIMIT = 8 << 20  # yamldoc.MAX_BYTES; not imported from there: that would import yaml


def cache_dir(root: str | os.PathLike) -> Path:
    """Where `cidag run --root ROOT` keeps its compiled plan: ROOT/var/cache/cidag."""
    return Path(root) / "var/cache/cidag"


def load_for_run(sources: str | None, modules: str | None, config_dir: str | None, *,
                 cache: Path | None, write: bool = True) -> CompiledGraph:
    """The CompiledGraph of the manifests, with a FrozenGraph: from the cache in the directory
    `cache` when it is valid, else compiled (and written there when `write`). `cache` None:
    always compile, write nothing. Raises what compiling raises (ManifestError, UsageError)."""
    from .manifest import find_manifests

    s, m = find_manifests(sources, modules, config_dir)
    key = None
    if cache is not None:
        try:
            key = _key(s, m)
        except OSError:
            key = None  # an unreadable manifest: the compile says so properly
        if key is not None:
            cg = _read(cache / CACHE_NAME, key)
            if cg is not None:
                return cg
    cg, header = compile_frozen(s, m)
    if key is not None and write and not holds_secrets(cg):
        try:
            if _key(s, m) == key:  # not edited while we compiled
                write_cache(cache, dict(header, key=key), cg)
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
            log.debug("compiled-plan cache not written: %s", exc)
    return cg


def compile_frozen(sources: str, modules: str) -> tuple[CompiledGraph, dict]:
    """Compile with networkx, freeze the graph; returns it and the header parts only the
    compile knows (the environment it read, the plugin files it imported)."""
    from .compiler import load_and_compile

    reads = _EnvReads(os.environ)
    cg = load_and_compile(sources, modules, env=reads)
    header = {"env": {k: _digest_value(v) for k, v in sorted(reads.read.items())}, "files": _plugin_files(cg)}
    return freeze(cg), header


def freeze(cg: CompiledGraph) -> CompiledGraph:
    """`cg` (changed in place) in the form `cidag run` runs, from the cache or not: its graph
    a FrozenGraph, each type's function a LazyCall, and each spec's parsed document reduced
    to its file name. The values and positions of a document serve diagnostics, all made
    at compile time (kept in cg.diagnostics); a run never reads them, and at 10,000 modules
    they were a third of the cache and of the time to write and read it."""
    cg.graph = FrozenGraph.from_graph(cg.graph)
    bare: dict[str, Document] = {}
    for spec in cg.specs.values():
        spec.call = LazyCall.of(spec.call)
        doc = spec.doc
        spec.doc = bare.get(doc.file) or bare.setdefault(doc.file, Document(doc.file, None))
    return cg


class LazyCall:
    """A type's function by name, imported when its node first runs: a run loaded from the
    cache imports the code of the nodes it starts, not of every type the manifests name
    (on a reboot most modules are skipped by their markers)."""

    __slots__ = ("module", "qualname", "_func")

    def __init__(self, module: str, qualname: str) -> None:
        self.module, self.qualname = module, qualname
        self._func: Any = None

    @classmethod
    def of(cls, func: Any) -> Any:
        """A LazyCall for a module-level function; anything else (a bound method of a
        class-based type, a closure) unchanged."""
        if not isinstance(func, pytypes.FunctionType) or "<" in func.__qualname__:
            return func
        obj: Any = sys.modules.get(func.__module__)
        for part in func.__qualname__.split("."):
            obj = getattr(obj, part, None)
        return cls(func.__module__, func.__qualname__) if obj is func else func

    def resolve(self) -> Any:
        func = self._func
        if func is None:
            func = importlib.import_module(self.module)
            for part in self.qualname.split("."):
                func = getattr(func, part)
            self._func = func
        return func

    def __call__(self, ctx: Any) -> Any:
        return self.resolve()(ctx)

    def __reduce__(self) -> tuple:
        return (LazyCall, (self.module, self.qualname))

    def __repr__(self) -> str:
        return f"<{self.module}:{self.qualname}>"


def compile_to_cache(root: str | os.PathLike, sources: str | None = None, modules: str | None = None,
                     config_dir: str | None = None) -> Path:
    """Compile the manifests and write the cache of `root` (`cidag compile`); returns its path.
    Raises OSError when it cannot be written, PicklingError/TypeError when a plugin's type
    cannot be pickled."""
    from .manifest import find_manifests

    s, m = find_manifests(sources, modules, config_dir)
    key = _key(s, m)
    cg, header = compile_frozen(s, m)
    if holds_secrets(cg):
        raise SecretsInManifests("the manifests hold a secret (a password, token or private key in some "
                                 "settings): they are not cached; `cidag run` compiles them each time")
    directory = cache_dir(root)
    write_cache(directory, dict(header, key=key), cg)
    return directory / CACHE_NAME


class SecretsInManifests(ValueError):
    """The manifests carry a secret value: a copy of them must not be kept at rest."""


def holds_secrets(cg: CompiledGraph) -> bool:
    """True when some node's settings hold a secret: a value under a secret capability's name
    (admin-password in a static source's data) or a password, token, secret or private key
    (the keys values.py scrubs). Such manifests are never cached: the cache, under the target
    root, would keep a copy of what may have come from the environment."""
    from .values import SecretPolicy, _secret_leaves

    policy = SecretPolicy(cg.manifests.secrets())

    def walk(value: Any) -> bool:
        if isinstance(value, dict):
            for k, v in value.items():
                if policy.is_secret(str(k)) and _has_text(v):  # not password_timeout: 30
                    return True
                if walk(v):
                    return True
            return bool(_secret_leaves(value, under_secret=False))
        if isinstance(value, list):
            return any(walk(v) for v in value)
        return False

    return any(walk(spec.settings) for spec in cg.specs.values())


def _has_text(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, dict):
        return any(_has_text(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_text(v) for v in value)
    return False


# -- the key ---------------------------------------------------------------------------------

def _key(sources: str, modules: str) -> str:
    """A digest of every input known before compiling (the env and plugin files come after)."""
    h = sha256()

    def add(*parts: Any) -> None:
        for p in parts:
            h.update(repr(p).encode("utf-8", "surrogateescape"))
            h.update(b"\0")

    add("format", FORMAT, sys.version, sys.implementation.cache_tag, __version__)
    from .state import read_bytes

    for path in (sources, modules):
        data = read_bytes(path, MANIFEST_LIMIT)  # non-blocking: a FIFO there raises, never hangs
        add(path, os.path.abspath(path), sha256(data).hexdigest())
    for entry in _package_files():
        add(*entry)
    for entry in _distributions():
        add(*entry)
    return h.hexdigest()


def _package_files() -> Iterator[tuple]:
    """(relative path, size, mtime in seconds) of cidag's own files, compiled bytecode excluded."""
    stack = [PACKAGE_DIR]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name == "__pycache__" or e.name.endswith((".pyc", ".pyo")):
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
                continue
            st = e.stat()
            # Whole seconds, as .pyc files do: an image packed with `mkfs.ext4 -d` (or a tar
            # without --posix) keeps no nanoseconds, and its first boot missed the cache made
            # at build time.
            yield (os.path.relpath(e.path, PACKAGE_DIR), st.st_size, int(st.st_mtime))


def _distributions() -> Iterator[tuple]:
    """Every installed distribution on sys.path (its metadata directory names the version),
    with the text of its entry_points.txt when that declares a cidag group: an install,
    upgrade or removal of any package, plugins included, is a new key. Read directly:
    importing importlib.metadata costs more than the rest of the key. sys.path[0] is left
    out: it is the script's directory or the current one, which says how cidag was started
    (`cidag run`, `python -m cidag run` in a checkout), not what is installed."""
    paths = sys.path if getattr(sys.flags, "safe_path", False) else sys.path[1:]
    for entry in paths:
        d = entry or "."
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue  # a zip file, a path hook, a missing directory
        for name in names:
            text = ""
            try:
                with open(os.path.join(d, name, "entry_points.txt"), encoding="utf-8", errors="replace") as f:
                    text = f.read()
            except OSError:
                pass
            yield (os.path.abspath(d), name, text if "[cidag." in text else "")


def _plugin_files(cg: CompiledGraph) -> list[tuple]:
    """(file, size, mtime) of each module outside cidag that holds a type the manifests use."""
    out = set()
    # Once per Python module, not per node: 10,000 nodes share a handful of modules.
    for modname in {getattr(spec.call, "__module__", None) for spec in cg.specs.values()}:
        mod = sys.modules.get(modname) if modname else None
        path = getattr(mod, "__file__", None)
        if not path or Path(path).resolve().is_relative_to(PACKAGE_DIR):
            continue
        st = os.stat(path)
        out.add((path, st.st_size, st.st_mtime_ns))
    return sorted(out)


def _digest_value(value: str | None) -> str | None:
    # Digests, not values: an environment variable may hold a secret.
    return None if value is None else sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


class _EnvReads(Mapping):
    """os.environ as manifest.expand_env sees it, remembering every name it looks up."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.read: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> str:
        value = self.env[name]
        self.read[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read[name] = self.env.get(name)
        return name in self.env

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def _header_valid(header: Any, key: str) -> bool:
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("key") != key:
        return False
    env = header.get("env")
    files = header.get("files")
    if not isinstance(env, dict) or not isinstance(files, list):
        return False
    for name, digest in env.items():
        if _digest_value(os.environ.get(name)) != digest:
            return False
    for path, size, mtime in files:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            return False
    return True


# -- reading and writing -----------------------------------------------------------------------

def _private_dir(directory: Path) -> bool:
    """True when only this user (and root) can write `directory` and every directory above it:
    a pickle from there is one we wrote. Above it, others may write only a sticky directory."""
    uid = os.geteuid()
    real = os.path.realpath(directory)
    path = real
    while True:
        try:
            st = os.stat(path)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        if path == real:
            if st.st_uid != uid or st.st_mode & 0o022:
                return False
        elif st.st_uid not in (uid, 0) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _read(path: Path, key: str) -> CompiledGraph | None:
    """The cached CompiledGraph, or None when there is none, it is stale, or it is not to be trusted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            log.debug("compiled-plan cache %s: not owned by this user or writable by others: ignored", path)
            return None
        if not _private_dir(path.parent):
            log.warning("compiled-plan cache %s: its directory is writable by others: not used", path.parent)
            return None
        enabled = gc.isenabled()
        gc.disable()  # unpickling allocates many containers and frees none
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                header = pickle.load(f)
                if not _header_valid(header, key):
                    return None
                cg = pickle.load(f)
        finally:
            if enabled:
                gc.enable()
        if not isinstance(cg, CompiledGraph) or not isinstance(cg.graph, FrozenGraph):
            return None
        return cg
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign cache: compile instead
        log.debug("compiled-plan cache %s unusable (%s: %s): compiling", path, type(exc).__name__, exc)
        return None
    finally:
        os.close(fd)


def write_cache(directory: Path, header: dict, cg: CompiledGraph) -> None:
    """Write header and `cg` atomically (temporary file, fsync, rename) into `directory`,
    made 0700 when it is new. Raises OSError, or PicklingError/TypeError for an unpicklable plugin."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _private_dir(directory):
        raise PermissionError(f"{directory} is writable by others (or not this user's): not used for the cache")
    blob = pickle.dumps(dict(header, format=FORMAT), protocol=pickle.HIGHEST_PROTOCOL)
    blob += pickle.dumps(cg, protocol=pickle.HIGHEST_PROTOCOL)
    from .state import atomic_write

    atomic_write(directory / CACHE_NAME, blob, mode=0o600)  # temp file 0600 from the start, fsync, rename
