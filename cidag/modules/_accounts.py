"""The account database of a target root: ROOT/etc/passwd, shadow, group, gshadow.

Read as the system tools read it, and edited the way the shadow tools edit
it: under lckpwdf's lock (`fcntl` on ROOT/etc/.pwd.lock) plus a `FILE.lock`
made by linking a pid file (what commonio does), each file replaced
atomically with its mode and owner kept and the old one saved as `FILE-`.
Never the host's database: `pwd`/`grp` would answer for `/`, not for ROOT.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import paths

FILES = ("passwd", "shadow", "group", "gshadow")
NFIELDS = {"passwd": 7, "shadow": 9, "group": 4, "gshadow": 4}
DEFAULT_MODES = {"passwd": 0o644, "group": 0o644, "shadow": 0o640, "gshadow": 0o640}
# fcntl locks do not exclude threads of one process, and cidag runs modules in threads.
_THREAD_LOCK = threading.Lock()
NAME_CHARS = r"[a-z_][a-z0-9_-]*[$]?"  # useradd's default NAME_REGEX, also for groups
NAME_RE = f"^{NAME_CHARS}$"


def default_user_name(ctx) -> str | None:
    """The `default-user` capability as a user name, or None.

    A module that provides a capability without giving it a value provides
    `True`; only a non-empty string names a user.
    """
    value = ctx.caps.get("default-user")
    return value if isinstance(value, str) and value else None


@dataclass
class User:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


def today() -> int:
    """Days since the epoch, as shadow's lastchg field counts."""
    return int(time.time() // 86400)


def login_defs(root: Path) -> dict[str, str]:
    """Key/value pairs from ROOT/etc/login.defs (empty when absent)."""
    out: dict[str, str] = {}
    try:
        text = (paths.read_file(root, "etc/login.defs") or b"").decode("utf-8", "replace")
    except (paths.PathRefused, OSError):
        return out
    for line in text.splitlines():
        bits = line.split()
        if len(bits) >= 2 and not bits[0].startswith("#"):
            out[bits[0]] = bits[1]
    return out


def _as_id(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class Database:
    """The four files of one root, as lists of fields (comments and blank lines kept)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lines: dict[str, list[list[str] | str]] = {}
        self.dirty: set[str] = set()
        for fname in FILES:
            self.lines[fname] = self._load(fname)
        # name -> position and id -> count per file: thousands of users stay linear, not quadratic
        self._pos: dict[str, dict[str, int]] = {}
        self._ids: dict[str, dict[int, int]] = {}
        self._defs: dict[str, str] | None = None

    def _index(self, fname: str) -> dict[str, int]:
        pos = self._pos.get(fname)
        if pos is None:
            pos = {}
            for i, item in enumerate(self.lines[fname]):
                if isinstance(item, list):
                    pos.setdefault(item[0], i)  # the first entry of a name wins, as getpwnam
            self._pos[fname] = pos
        return pos

    def _id_counts(self, fname: str) -> dict[int, int]:
        ids = self._ids.get(fname)
        if ids is None:
            ids = {}
            for f in self.entries(fname):
                n = _as_id(f[2])
                if n is not None:
                    ids[n] = ids.get(n, 0) + 1
            self._ids[fname] = ids
        return ids

    def _load(self, fname: str) -> list[list[str] | str]:
        data = paths.read_file(self.root, f"etc/{fname}")
        out: list[list[str] | str] = []
        for line in (data or b"").decode("utf-8", "replace").splitlines():
            if not line.strip() or line.startswith("#") or line.startswith(("+", "-")):
                out.append(line)  # kept verbatim (NIS compat entries too)
                continue
            fields = line.split(":")
            fields += [""] * (NFIELDS[fname] - len(fields))
            out.append(fields)
        return out

    def entries(self, fname: str) -> Iterator[list[str]]:
        for item in self.lines[fname]:
            if isinstance(item, list):
                yield item

    def find(self, fname: str, name: str) -> list[str] | None:
        i = self._index(fname).get(name)
        return None if i is None else self.lines[fname][i]

    def user(self, name: str) -> User | None:
        f = self.find("passwd", name)
        if f is None:
            return None
        try:
            return User(f[0], int(f[2]), int(f[3]), f[4], f[5], f[6])
        except ValueError:
            return None

    def user_by_uid(self, uid: int) -> User | None:
        for f in self.entries("passwd"):
            if f[2] == str(uid):
                return self.user(f[0])
        return None

    def group_gid(self, name: str) -> int | None:
        f = self.find("group", name)
        try:
            return int(f[2]) if f else None
        except ValueError:
            return None

    def group_name(self, gid: int) -> str | None:
        for f in self.entries("group"):
            if f[2] == str(gid):
                return f[0]
        return None

    def set(self, fname: str, fields: list[str]) -> None:
        """Replace the entry with the same name, or append it."""
        self.dirty.add(fname)
        pos = self._index(fname)
        i = pos.get(fields[0])
        ids = self._id_counts(fname) if fname in ("passwd", "group") else None
        if i is not None:
            old = self.lines[fname][i]
            if ids is not None:
                n = _as_id(old[2])
                if n is not None:
                    ids[n] -= 1
                    if not ids[n]:
                        del ids[n]
            self.lines[fname][i] = fields
        else:
            pos[fields[0]] = len(self.lines[fname])
            self.lines[fname].append(fields)
        if ids is not None:
            n = _as_id(fields[2])
            if n is not None:
                ids[n] = ids.get(n, 0) + 1

    def _used(self, fname: str) -> set[int] | dict[int, int]:
        return self._id_counts(fname)  # membership is all callers ask

    def free_id(self, fname: str, system: bool, want: int | None = None) -> int:
        """The id useradd/groupadd would pick: max used + 1 in range (system ids count down)."""
        used = self._used(fname)
        if want is not None:
            if want in used:
                kind = "uid" if fname == "passwd" else "gid"
                raise ValueError(f"{kind} {want} is already used in the target root")
            return want
        if self._defs is None:
            self._defs = login_defs(self.root)
        defs = self._defs
        prefix = "UID" if fname == "passwd" else "GID"
        if system:
            lo = int(defs.get(f"SYS_{prefix}_MIN", 100))
            hi = int(defs.get(f"SYS_{prefix}_MAX", 999))
            for n in range(hi, lo - 1, -1):
                if n not in used:
                    return n
        else:
            lo = int(defs.get(f"{prefix}_MIN", 1000))
            hi = int(defs.get(f"{prefix}_MAX", 60000))
            top = max([u for u in used if lo <= u <= hi], default=lo - 1)
            if top < hi:
                return top + 1
            for n in range(lo, hi + 1):
                if n not in used:
                    return n
        raise RuntimeError(f"no free {'system ' if system else ''}{prefix.lower()} left")

    def add_member(self, group: str, user: str) -> bool:
        """Add `user` to `group` in group and gshadow; False if already there."""
        changed = False
        for fname in ("group", "gshadow"):
            f = self.find(fname, group)
            if f is None:
                continue
            members = [m for m in f[3].split(",") if m]
            if user not in members:
                members.append(user)
                f[3] = ",".join(members)
                self.dirty.add(fname)
                changed = True
        return changed

    def text(self, fname: str) -> str:
        return "".join((":".join(i) if isinstance(i, list) else i) + "\n" for i in self.lines[fname])

    def save(self) -> None:
        """Write the changed files atomically, keeping mode and owner; the old one becomes FILE-."""
        shadow_gid = self.group_gid("shadow")
        for fname in FILES:
            if fname not in self.dirty:
                continue
            target = paths.confine(self.root, f"etc/{fname}")
            try:
                st = os.stat(target)
                mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
                old = target.read_bytes()
                paths.write_file(self.root, f"etc/{fname}-", old, mode=mode, uid=uid, gid=gid)
            except FileNotFoundError:
                mode, uid = DEFAULT_MODES[fname], 0
                gid = shadow_gid if fname in ("shadow", "gshadow") and shadow_gid is not None else 0
                if fname in ("shadow", "gshadow") and shadow_gid is None:
                    mode = 0o600
            paths.write_file(self.root, f"etc/{fname}", self.text(fname), mode=mode, uid=uid, gid=gid)
        self.dirty.clear()


def bootstrap(db: Database) -> None:
    """Give an empty target root the root account, so the tools and pwck have a database."""
    if not db.find("passwd", "root"):
        db.set("passwd", ["root", "x", "0", "0", "root", "/root", "/bin/sh"])
    if not db.find("shadow", "root"):
        db.set("shadow", ["root", "*", str(today()), "0", "99999", "7", "", "", ""])
    if not db.find("group", "root"):
        db.set("group", ["root", "x", "0", ""])
    if not db.find("gshadow", "root"):
        db.set("gshadow", ["root", "*", "", ""])


@contextlib.contextmanager
def locked(root: Path, timeout: float = 15.0) -> Iterator[None]:
    """Hold the shadow tools' locks on ROOT/etc: lckpwdf's fcntl lock, then FILE.lock for each file."""
    end = time.monotonic() + timeout
    if not _THREAD_LOCK.acquire(timeout=timeout):
        raise RuntimeError("timed out waiting for another module editing the account files")
    try:
        with _file_locks(root, end):
            yield
    finally:
        _THREAD_LOCK.release()


@contextlib.contextmanager
def _file_locks(root: Path, end: float) -> Iterator[None]:
    etc = paths.makedirs(root, "etc")
    lockfile = paths.confine(root, "etc/.pwd.lock")
    fd = os.open(lockfile, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    held: list[Path] = []
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN) or time.monotonic() > end:
                    raise RuntimeError(f"cannot lock {lockfile}: {exc.strerror}") from None
                time.sleep(0.1)
        for fname in FILES:
            held.append(_commonio_lock(etc, fname, end))
        yield
    finally:
        for path in held:
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)


def _commonio_lock(etc: Path, fname: str, end: float) -> Path:
    """FILE.lock made by link(2) from FILE.PID, holding our pid; a stale lock (dead pid) is removed."""
    lock = etc / f"{fname}.lock"
    tmp = etc / f"{fname}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}")
    try:
        while True:
            try:
                os.link(tmp, lock)
                return lock
            except FileExistsError:
                if _stale(lock):
                    with contextlib.suppress(OSError):
                        os.unlink(lock)
                    continue
                if time.monotonic() > end:
                    raise RuntimeError(f"{lock} is held by another process") from None
                time.sleep(0.1)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _stale(lock: Path) -> bool:
    try:
        pid = int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        return True
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def resolve_owner(db: Database, owner: str) -> tuple[int, int]:
    """`user`, `user:group` or numeric ids, looked up in the target root; raise ValueError if unknown."""
    user, _, group = str(owner).partition(":")
    user = user.strip()
    group = group.strip()
    if user.isdigit():
        uid = int(user)
        u = db.user_by_uid(uid)
        gid = u.gid if u else uid
    else:
        u = db.user(user)
        if u is None:
            raise ValueError(f"unknown user {user!r} in the target root")
        uid, gid = u.uid, u.gid
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = db.group_gid(group)
            if g is None:
                raise ValueError(f"unknown group {group!r} in the target root")
            gid = g
    return uid, gid


# -- subordinate ids (/etc/subuid, /etc/subgid): what useradd gives a new user ----------------

SUBID_FILES = {"subuid": "UID", "subgid": "GID"}


def add_subordinate_ranges(root: Path, names: list[str], timeout: float = 15.0) -> list[str]:
    """Give each of `names` (new, non-system users) a range in ROOT/etc/subuid and subgid, as
    useradd does (rootless containers need them): only where the file exists and login.defs'
    SUB_UID_COUNT / SUB_GID_COUNT is not 0; the lowest free SUB_*_COUNT ids (65536) from
    SUB_*_MIN (100000) within SUB_*_MAX (600100000). A name holding a range keeps it.
    Returns the lines added, as `file name:start:count`."""
    defs = login_defs(root)
    added: list[str] = []
    end = time.monotonic() + timeout
    for fname, kind in SUBID_FILES.items():
        data = paths.read_file(root, f"etc/{fname}")  # a FIFO or a huge file: PathRefused, one line
        count = int(defs.get(f"SUB_{kind}_COUNT", 65536))
        if data is None or count <= 0 or not names:
            continue
        low = int(defs.get(f"SUB_{kind}_MIN", 100000))
        high = int(defs.get(f"SUB_{kind}_MAX", 600100000))
        with _THREAD_LOCK, _one_file_lock(root, fname, end):
            data = paths.read_file(root, f"etc/{fname}") or b""
            lines = data.decode("utf-8", "replace").splitlines()
            owners, ranges = set(), []
            for line in lines:
                bits = line.split(":")
                if len(bits) == 3 and bits[1].isdigit() and bits[2].isdigit():
                    owners.add(bits[0])
                    ranges.append((int(bits[1]), int(bits[1]) + int(bits[2])))
            new = []
            for name in names:
                if name in owners:
                    continue
                start = _free_range(ranges, low, high, count)
                if start is None:
                    raise RuntimeError(f"no free range of {count} ids left in /etc/{fname}")
                ranges.append((start, start + count))
                owners.add(name)
                new.append(f"{name}:{start}:{count}")
            if not new:
                continue
            target = paths.confine(root, f"etc/{fname}")
            st = os.stat(target)
            text = "".join(line + "\n" for line in lines + new)
            paths.write_file(root, f"etc/{fname}", text, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                             gid=st.st_gid)
            added += [f"{fname} {line}" for line in new]
    return added


def _free_range(ranges: list[tuple[int, int]], low: int, high: int, count: int) -> int | None:
    """The lowest start >= low with [start, start+count) clear of `ranges` and within high."""
    start = low
    for lo, hi in sorted(ranges):
        if hi <= start:
            continue
        if lo >= start + count:
            break
        start = hi
    return start if start + count - 1 <= high else None


@contextlib.contextmanager
def _one_file_lock(root: Path, fname: str, end: float) -> Iterator[None]:
    lock = _commonio_lock(paths.makedirs(root, "etc"), fname, end)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
