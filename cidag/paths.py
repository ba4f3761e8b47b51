"""Keep paths from metadata and user-data inside the target root, and write files there safely.

`confine(root, path)` resolves `path` as if `root` were `/` (the idea of
openat2's RESOLVE_IN_ROOT) and refuses, with a reason, what would leave it:

- a `..` component in the path itself (never needed in a config file path);
- a symlink whose absolute target lies outside `root` (with `--root /tmp/x`,
  `etc/foo -> /etc/shadow` would write the host's file);
- a relative symlink that climbs above `root`;
- any symlink at all when `follow_symlinks=False` (for paths a user can
  change, like ~/.ssh).

The writers then walk the resolved path one directory at a time with
O_NOFOLLOW | O_DIRECTORY, so a symlink swapped in after the check is refused
instead of followed, and create files with O_EXCL | O_NOFOLLOW.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_SYMLINKS = 40  # as the kernel's ELOOP limit


class PathRefused(ValueError):
    """A path would leave the target root or cross a symlink it may not; the message says why."""


def _real_root(root: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(root)))


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def confine(
    root: str | os.PathLike, path: str | os.PathLike, *, follow_symlinks: bool = True
) -> Path:
    """Return the host path `path` names inside `root`, every existing symlink resolved.

    `path` may be absolute ("/etc/hosts") or relative ("etc/hosts"); both are
    taken inside `root`. Components that do not exist yet are kept as given.
    Raises PathRefused.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if not text or "\0" in text:
        raise PathRefused(f"invalid path {text!r}")
    if ".." in text.split("/"):
        raise PathRefused(f"path {text!r} contains '..'")
    base = _real_root(root)
    todo = _split(text)
    done: list[str] = []
    hops = 0
    missing = False
    while todo:
        name = todo.pop(0)
        if name == "..":  # only from a symlink target
            if not done:
                raise PathRefused(f"path {text!r}: a symlink climbs above the root {base}")
            done.pop()
            continue
        here = base.joinpath(*done, name)
        if missing:
            done.append(name)
            continue
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            missing = True
            done.append(name)
            continue
        except NotADirectoryError:
            raise PathRefused(f"path {text!r}: {base.joinpath(*done)} is not a directory") from None
        if not stat.S_ISLNK(st.st_mode):
            done.append(name)
            continue
        if not follow_symlinks:
            raise PathRefused(f"path {text!r}: {here} is a symlink (not followed here)")
        hops += 1
        if hops > MAX_SYMLINKS:
            raise PathRefused(f"path {text!r}: too many levels of symlinks")
        target = os.readlink(here)
        if target.startswith("/"):
            real_target = Path(os.path.normpath(target))
            if base != Path("/") and base not in real_target.parents and real_target != base:
                raise PathRefused(
                    f"path {text!r}: {here} is a symlink to {target}, outside the root {base}"
                )
            done = []
            todo = _split(str(real_target.relative_to(base))) + todo
        else:
            todo = _split(target) + todo
    return base.joinpath(*done)


def _open_dir(base: Path, parts: list[str], *, create: bool, mode: int, uid: int | None, gid: int | None) -> int:
    """Open base/parts... walking with O_NOFOLLOW; create missing directories if asked."""
    if create:
        os.makedirs(base, 0o755, exist_ok=True)  # the root itself is trusted (the command line gave it)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in parts:
            try:
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                    made = True
                except FileExistsError:  # another module (thread) made it just now
                    made = False
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                if made:
                    os.chmod(nfd, mode)  # umask must not narrow it
                    _chown(nfd, uid, gid)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a symlink or a file appeared
                    raise PathRefused(f"{base.joinpath(*parts)}: {name} is not a plain directory") from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _chown(fd: int, uid: int | None, gid: int | None) -> None:
    # Only root can give files away; as an ordinary user (tests, --root demos) keep ours.
    if os.geteuid() != 0 or (uid is None and gid is None):
        return
    os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)


def _parts_inside(root: Path, target: Path) -> list[str]:
    return list(target.relative_to(root).parts)


def makedirs(
    root: str | os.PathLike,
    path: str | os.PathLike,
    *,
    mode: int = 0o755,
    uid: int | None = None,
    gid: int | None = None,
    follow_symlinks: bool = True,
) -> Path:
    """Create the directory `path` inside `root` (and missing parents); return its host path.

    New directories get `mode` and, when running as root, `uid`/`gid`.
    Raises PathRefused or OSError.
    """
    base = _real_root(root)
    target = confine(base, path, follow_symlinks=follow_symlinks)
    fd = _open_dir(base, _parts_inside(base, target), create=True, mode=mode, uid=uid, gid=gid)
    os.close(fd)
    return target


def write_file(
    root: str | os.PathLike,
    path: str | os.PathLike,
    data: bytes | str,
    *,
    mode: int = 0o644,
    uid: int | None = None,
    gid: int | None = None,
    append: bool = False,
    dir_mode: int = 0o755,
    follow_symlinks: bool = True,
    durable: bool = True,
) -> Path:
    """Write `data` to `path` inside `root`; return the host path written.

    Replaces atomically (temp file in the same directory, fsync, rename, fsync
    of the directory); `append` adds to the end of an existing file instead.
    `durable=False` skips the fsyncs: for many small files the caller makes
    durable at once (os.sync) before it reports success.
    The file ends with `mode` and, when running as root, `uid`/`gid`.
    Raises PathRefused or OSError.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    base = _real_root(root)
    target = confine(base, path, follow_symlinks=follow_symlinks)
    if target == base:
        raise PathRefused(f"path {os.fspath(path)!r} names the root itself")
    parts = _parts_inside(base, target)
    dfd = _open_dir(base, parts[:-1], create=True, mode=dir_mode, uid=None, gid=None)
    name = parts[-1]
    try:
        if append:
            _append(dfd, name, data, mode, uid, gid)
        else:
            _replace(dfd, name, data, mode, uid, gid, durable)
        if durable:
            os.fsync(dfd)
    finally:
        os.close(dfd)
    return target


def symlink(root: str | os.PathLike, path: str | os.PathLike, target: str) -> Path:
    """Make `path` inside `root` a symlink to `target`, replacing what is there atomically.

    `target` is written as given: it is resolved on the target system (an
    absolute `target` names a file of the target once it boots). The parent of
    `path` is confined like write_file's; `path` itself may be a symlink
    already (it is replaced, not followed). Raises PathRefused or OSError.
    """
    base = _real_root(root)
    text = os.fspath(path).rstrip("/")
    parent = confine(base, os.path.dirname(text) or "/")
    name = os.path.basename(text)
    if not name or name in (".", ".."):
        raise PathRefused(f"invalid path {text!r}")
    dfd = _open_dir(base, _parts_inside(base, parent), create=True, mode=0o755, uid=None, gid=None)
    tmp = f".{name}.cidag-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        try:
            if stat.S_ISDIR(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                raise PathRefused(f"{name} is a directory")
        except FileNotFoundError:
            pass
        os.symlink(target, tmp, dir_fd=dfd)
        try:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            os.unlink(tmp, dir_fd=dfd)
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return parent / name


def _append(dfd: int, name: str, data: bytes, mode: int, uid: int | None, gid: int | None) -> None:
    try:
        # O_NONBLOCK: opening a FIFO (or a device) must not wait for a reader; it is refused below.
        fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, mode, dir_fd=dfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PathRefused(f"{name} is a symlink (not followed)") from None
        if exc.errno == errno.ENXIO:
            raise PathRefused(f"{name} is not a regular file") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PathRefused(f"{name} is not a regular file")
        os.set_blocking(fd, True)
        _write_all(fd, data)
        os.fchmod(fd, mode)
        _chown(fd, uid, gid)
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(dfd: int, name: str, data: bytes, mode: int, uid: int | None, gid: int | None,
             durable: bool = True) -> None:
    tmp = f".{name}.cidag-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
    try:
        try:
            _write_all(fd, data)
            # Owner and mode before the rename: the file never exists with the wrong ones.
            _chown(fd, uid, gid)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise PathRefused(f"{name} is a directory")
        except FileNotFoundError:
            pass
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_file(root: str | os.PathLike, path: str | os.PathLike, *, limit: int = 16 << 20) -> bytes | None:
    """Return the contents of `path` inside `root`, or None if it does not exist.

    Raises PathRefused if the path leaves the root or the file is larger than `limit`.
    """
    target = confine(root, path)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PathRefused(f"{target} is not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise PathRefused(f"{target} is larger than {limit} bytes")
    return data
