"""`cidag clean`: reset a machine or a target root so that its next boot is a first boot.

cloud-init's `cloud-init clean [--logs] [--seed] [--machine-id] [--configs ...]` is the
model (docs/image-builders.md). By default the state directory is emptied: markers
(so every per-instance and once module runs again), run records (cidag's logs),
instance data and login-identity (so the next boot's logins wait for cidag again).
The options also remove the NoCloud seed, the SSH host keys and the files cidag's
modules generated, and reset /etc/machine-id to "uninitialized" (systemd then
makes a new one and treats the boot as its first).

Everything named is taken inside `root` (paths.confine): a symlink that leads out of
the root is refused, never followed; a symlink met where something is removed is
itself removed, not what it points to; directories are removed by file descriptor
(shutil.rmtree with dir_fd), which never follows a symlink swapped in meanwhile.
"""
from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .errors import UsageError
from .state import STATE_SUBDIR

STATE_DIR = STATE_SUBDIR  # the state dir's place under the root (state.py)
SEED_DIR = "var/lib/cloud/seed/nocloud"  # the nocloud source's default `path`
MACHINE_ID = "etc/machine-id"
DBUS_MACHINE_ID = "var/lib/dbus/machine-id"
SSH_DIR = "etc/ssh"
HOST_KEY_GLOB = "ssh_host_*key*"  # as ssh_deletekeys: the keys, .pub and certificates
# Files cidag's modules write, by kind (cloud-init's --configs choices). One place, so a
# module that writes a new kind of file adds its pattern here. network: every renderer's
# files (systemd-networkd, netplan, NetworkManager keyfiles, ifupdown), as the network
# module names them.
GENERATED_CONFIGS: dict[str, tuple[str, ...]] = {
    "network": ("etc/systemd/network/10-cidag-*.network", "etc/systemd/network/10-cidag-*.link",
                "etc/netplan/50-cidag.yaml", "etc/netplan/50-cidag.*.yaml",
                "etc/NetworkManager/system-connections/cidag-*.nmconnection",
                "etc/network/interfaces.d/50-cidag"),
    "ssh_config": ("etc/ssh/sshd_config.d/50-cidag-*.conf",),
}
CONFIG_CHOICES = ("all", *GENERATED_CONFIGS)
SYSTEMD_BINARIES = ("usr/lib/systemd/systemd", "lib/systemd/systemd")


@dataclass
class CleanResult:
    """What was done, as paths relative to the root ("/etc/machine-id"), and what failed."""

    removed: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def clean(root: str | os.PathLike = "/", state_dir: str | os.PathLike | None = None, *,
          seed: bool = False, host_keys: bool = False, machine_id: bool = False,
          configs: tuple[str, ...] | list[str] = ()) -> CleanResult:
    """Empty the state dir (default ROOT/var/lib/cidag) and, as asked, remove the seed, the
    host keys and the generated configs, and uninitialize the machine-id.

    Raises UsageError when a run is in progress there (its record would land in the
    cleaned directory) or an option is wrong. Anything that cannot be removed is one line
    in `problems`; the rest is still done."""
    from .runstatus import current_status

    unknown = sorted(set(configs) - set(CONFIG_CHOICES))
    if unknown:
        raise UsageError(f"--configs: unknown kind {unknown[0]!r} (one of {', '.join(CONFIG_CHOICES)})")
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--root {root}: not a directory")
    result = CleanResult()
    given = state_dir is not None
    state = Path(state_dir) if given else root / STATE_DIR
    try:
        now = current_status(state, root, cmdline="/dev/null")
    except UsageError:
        now = {}  # an unreadable record is what clean removes
    if now.get("status") == "running":
        raise UsageError(f"a cidag run is in progress (pid {now.get('pid')}): "
                         "wait for it (cidag status --wait) before cleaning")

    if given:
        # --state-dir is the command line's, trusted as --root is (it may lie outside the root).
        _empty_dir(Path(os.path.realpath(state)), str(state), result)
    else:
        _empty_in_root(root, STATE_DIR, result)
    if seed:
        _remove_in_root(root, SEED_DIR, result)
    if host_keys:
        for rel in _glob_in_root(root, SSH_DIR, HOST_KEY_GLOB, result):
            _remove_in_root(root, rel, result)
    kinds = list(GENERATED_CONFIGS) if "all" in configs else [k for k in GENERATED_CONFIGS if k in configs]
    for kind in kinds:
        for pattern in GENERATED_CONFIGS[kind]:
            directory, _, glob = pattern.rpartition("/")
            for rel in _glob_in_root(root, directory, glob, result):
                _remove_in_root(root, rel, result)
    if machine_id:
        _uninitialize_machine_id(root, result)
    return result


def _where(root: Path, rel: str) -> tuple[int, str, str] | None:
    """An O_NOFOLLOW-walked fd of the directory holding ROOT/rel (symlinks inside the root
    resolved first), the entry's name and its path as shown; None when not there."""
    real = paths.confine(root, rel)  # PathRefused when it would leave the root
    base = Path(os.path.realpath(root))
    parts = list(real.relative_to(base).parts)
    if not parts:
        raise paths.PathRefused(f"{rel}: is the root itself")
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        for name in parts[:-1]:
            try:
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            finally:
                os.close(fd)
            fd = nfd
    except (FileNotFoundError, NotADirectoryError):
        return None
    return fd, parts[-1], "/" + rel


def _remove_entry(fd: int, name: str) -> bool:
    """Remove `name` in directory `fd` without following it; False when it was not there."""
    try:
        st = os.lstat(name, dir_fd=fd)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=fd)  # fd-based: a symlink inside is unlinked, not followed
    else:
        os.unlink(name, dir_fd=fd)
    return True


def _remove_in_root(root: Path, rel: str, result: CleanResult) -> None:
    try:
        where = _where(root, rel)
        if where is None:
            return
        fd, name, shown = where
        try:
            if _remove_entry(fd, name):
                result.removed.append(shown)
        finally:
            os.close(fd)
    except paths.PathRefused as exc:
        result.problems.append(f"/{rel}: not removed: {exc}")
    except OSError as exc:
        result.problems.append(f"/{rel}: not removed: {exc.strerror or exc}")


def _empty_in_root(root: Path, rel: str, result: CleanResult) -> None:
    """Remove what is in ROOT/rel, keeping the directory (its owner, mode and mount point)."""
    try:
        where = _where(root, rel)
        if where is None:
            return
        parent, name, shown = where
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        finally:
            os.close(parent)
    except FileNotFoundError:
        return
    except paths.PathRefused as exc:
        result.problems.append(f"/{rel}: not emptied: {exc}")
        return
    except OSError as exc:  # a file where the directory belongs, or a symlink swapped in since
        result.problems.append(f"/{rel}: not emptied: {exc.strerror or exc}")
        return
    _empty_fd(fd, shown, result)


def _empty_dir(path: Path, shown: str, result: CleanResult) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    except OSError as exc:
        result.problems.append(f"{shown}: not emptied: {exc.strerror or exc}")
        return
    _empty_fd(fd, shown, result)


def _empty_fd(fd: int, shown: str, result: CleanResult) -> None:
    try:
        for name in sorted(os.listdir(fd)):
            try:
                if _remove_entry(fd, name):
                    result.removed.append(f"{shown.rstrip('/')}/{name}")
            except OSError as exc:
                result.problems.append(f"{shown.rstrip('/')}/{name}: not removed: {exc.strerror or exc}")
    finally:
        os.close(fd)


def _glob_in_root(root: Path, directory: str, pattern: str, result: CleanResult) -> list[str]:
    """Names under ROOT/directory matching `pattern` (fnmatch), as paths relative to the root."""
    import fnmatch

    try:
        where = _where(root, directory)
        if where is None:
            return []
        parent, name, _ = where
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        except OSError:
            return []
        finally:
            os.close(parent)
        try:
            names = sorted(n for n in os.listdir(fd) if fnmatch.fnmatchcase(n, pattern))
        finally:
            os.close(fd)
    except paths.PathRefused as exc:
        result.problems.append(f"/{directory}: not looked at: {exc}")
        return []
    except OSError as exc:
        result.problems.append(f"/{directory}: not looked at: {exc.strerror or exc}")
        return []
    return [f"{directory}/{n}" for n in names]


def _uninitialize_machine_id(root: Path, result: CleanResult) -> None:
    """systemd (v247+) makes a new machine-id at a boot that finds "uninitialized" and runs
    it as a first boot (ConditionFirstBoot=); without systemd the file is removed (cloud-init
    does the same). A copy in /var/lib/dbus (not the usual symlink) would keep the old id."""
    if any(os.path.lexists(root / b) for b in SYSTEMD_BINARIES):
        try:
            paths.write_file(root, MACHINE_ID, "uninitialized\n", mode=0o444)
            result.written.append("/" + MACHINE_ID)
        except (paths.PathRefused, OSError) as exc:
            reason = exc if isinstance(exc, paths.PathRefused) else (exc.strerror or exc)
            result.problems.append(f"/{MACHINE_ID}: not written: {reason}")
    else:
        _remove_in_root(root, MACHINE_ID, result)
    try:
        st = os.lstat(paths.confine(root, DBUS_MACHINE_ID, follow_symlinks=False))
    except (OSError, paths.PathRefused):
        return
    if stat.S_ISREG(st.st_mode):
        _remove_in_root(root, DBUS_MACHINE_ID, result)
