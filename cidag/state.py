"""The state directory (docs/state-and-record.md): markers, records, the running file. Writes are atomic."""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

from .digest import sha256
from .errors import UsageError

# The state directory's contract (docs/state-and-record.md): where it is and what is in it.
# Every reader (status, wait, query, analyze, clean) takes these names from here.
STATE_SUBDIR = "var/lib/cidag"  # under --root, unless --state-dir says where
LAST_RUN = "last-run.json"  # the last run's record (a hard link to its file under runs/)
RUNS = "runs"  # one record per run, named by its start time and pid
INSTANCE_DATA = "instance-data.json"  # resolved capabilities, secrets replaced (0644)
INSTANCE_DATA_SENSITIVE = "instance-data-sensitive.json"  # the same with secrets, no passwords (0600)
EXIT_CODES = {"ok": 0, "degraded": 0, "failed": 1, "interrupted": 130}  # a record's result -> run's exit
EXIT_INTERNAL = 70  # EX_SOFTWARE: cidag itself failed (the record's `error` says how)
PROC = Path("/proc")
RESERVE_FILE = ".record-reserve"
RESERVE_INODE = ".record-reserve-inode"
RESERVE = 1 << 20  # a record without logs is ~300 bytes a node: room for some 3,000 nodes
RUNNING = "running.json"  # the run in progress: pid, start ticks, boot id, record path, milestones
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_STATE_FILE = 4 << 20  # a marker or instance-data file larger than this is not ours: ignored
INSTANCES = "instances"  # STATE/instances/IID/markers: per-instance markers


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temp file in the same directory, fsync, rename, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


class LastRunNotUpdated(OSError):
    """The run's own record is written (`path`) but last-run.json could not be replaced
    (a directory there, an immutable file): `status` shows the previous run."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(errno.EIO, message)
        self.path = path


def _encode(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()


def _compact(record: dict, why: OSError) -> dict:
    """The record without what can be spared (node logs and outputs), saying so."""
    out = dict(record)
    out["nodes"] = [{k: v for k, v in n.items() if k not in ("log", "output")} for n in record.get("nodes", [])]
    out["faults"] = list(record.get("faults", [])) + [
        f"state dir full ({why.strerror or why}): node logs and outputs left out of this record"]
    if out.get("result") == "ok":
        out["result"] = "degraded"
    return out


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: str | os.PathLike, value: Any, mode: int = 0o644) -> None:
    atomic_write(path, (json.dumps(value, indent=1, sort_keys=False, default=str) + "\n").encode(), mode)


def safe_component(value: str) -> str:
    """A metadata value made safe as one path component (never '.', '..' or with '/')."""
    if SAFE_ID.match(value) and value not in (".", ".."):
        return value
    return "sha256-" + sha256(value.encode()).hexdigest()


class StateDir:
    """Markers per instance and per machine, run records, and the in-progress file.

    `faults`: one line per odd thing met in the directory that the run went on despite (an
    odd marker, a running file that could not be written); the engine shares its own list,
    so they land in the record's `faults`. Each is also logged once as a warning."""

    def __init__(self, path: str | os.PathLike, faults: list[str] | None = None) -> None:
        self.path = Path(path)
        self.faults: list[str] = faults if faults is not None else []
        self._told: set[str] = set()

    def _fault(self, message: str) -> None:
        if message not in self._told:
            self._told.add(message)
            self.faults.append(message)
            logging.getLogger("cidag").warning("%s", message)

    def ensure_writable(self) -> None:
        """Create the directory; raise UsageError with a one-line reason if it cannot be used."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.path, prefix=".probe.", delete=True)
            probe.close()
        except OSError as exc:
            raise UsageError(
                f"state dir {self.path}: {exc.strerror or exc} (use --state-dir or --root)"
            ) from None

    def marker_path(self, module: str, frequency: str, instance_id: str | None) -> Path | None:
        if frequency == "once":
            return self.path / "once" / f"{module}.json"
        if frequency == "per-instance" and instance_id is not None:
            return self.path / INSTANCES / safe_component(instance_id) / "markers" / f"{module}.json"
        return None

    def read_marker(self, module: str, frequency: str, instance_id: str | None) -> dict | None:
        """The marker of a module that already ended ok (a dict, maybe without values), or
        None: nothing there, the module runs.

        A marker is a stamp, as make's targets, systemd's ConditionPathExists= and
        cloud-init's semaphores are: whatever is at its path, symlinks followed, means the
        module ran. Only a regular file holding a JSON object gives values (`provides`);
        anything else there (a directory, a FIFO, a device, a socket, a file that is not
        JSON) counts as done without values and is a fault (one line, once). An empty file
        (`touch`: a stamp made on purpose) is done without a fault. Reads never block."""
        path = self.marker_path(module, frequency, instance_id)
        if path is None:
            return None
        rel = path.relative_to(self.path)
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None  # a symlink that resolves to nothing is no stamp (make, systemd)
            return self._odd_marker(rel, module, f"cannot be examined ({exc.strerror or exc})")
        if not stat.S_ISREG(mode):
            return self._odd_marker(rel, module, f"is {_file_kind(mode)}, not a file")
        try:
            raw = read_bytes(path, MAX_STATE_FILE)
        except OSError as exc:
            return self._odd_marker(rel, module, f"cannot be read ({exc.strerror or exc})")
        if not raw.strip():
            return {}  # a stamp made by hand (touch): done, nothing provided
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return self._odd_marker(rel, module, "is not a marker cidag wrote (not JSON)")
        return data if isinstance(data, dict) else {}

    def _odd_marker(self, rel: Path, module: str, why: str) -> dict:
        self._fault(f"marker {rel} {why}: module {module} taken as done (remove it to run the module again)")
        return {"odd": why}

    def last_instance_id(self) -> str | None:
        """The instance id the last run resolved (instance-data.json), or None."""
        data = read_json(self.path / INSTANCE_DATA)
        iid = data.get("instance_id") if isinstance(data, dict) else None
        return iid if isinstance(iid, str) and iid else None

    def write_marker(self, module: str, frequency: str, instance_id: str | None, record: dict) -> None:
        """Write a module's marker atomically. Raises OSError whose `strerror` is one line
        naming what is in the way (a directory where the marker or a file where its
        directory belongs)."""
        path = self.marker_path(module, frequency, instance_id)
        if path is None:
            return
        try:
            write_json(path, record, mode=0o600)
        except OSError as exc:
            raise OSError(exc.errno, _in_the_way(self.path, path, exc)) from None

    def begin_run(self, info: dict) -> None:
        """Write the running file. One that cannot be written (a directory there) is a fault,
        not a reason to provision nothing: `status` and `wait` then see the run only once
        it ends."""
        try:
            write_json(self.path / RUNNING, info)
        except OSError as exc:
            self._fault(f"{RUNNING} not written ({_in_the_way(self.path, self.path / RUNNING, exc)}): "
                        "status and wait see this run only once it ends")

    def update_run(self, info: dict) -> None:
        """Rewrite the running file (e.g. with the milestones reached so far)."""
        write_json(self.path / RUNNING, info)

    def read_running(self) -> dict | None:
        """The running file as written, or None (absent, unreadable, not ours)."""
        data = read_json(self.path / RUNNING)
        return data if isinstance(data, dict) else None

    def end_run(self) -> None:
        try:
            os.unlink(self.path / RUNNING)
        except OSError:
            pass  # absent, or not ours to remove (a directory there: begin_run said so)

    def reserve(self, size: int = RESERVE) -> None:
        """Set aside `size` bytes and two inodes in the state dir (a file of zeros, allocated
        for real, and an empty file), and make runs/ now; the reserve is given back when the
        record cannot be written for want of space or inodes: a run that fills the disk
        still leaves a true record. Best effort: no room, no reserve."""
        try:
            # runs/ now, while there is room: made at the end, its inode would take the one
            # the reserve gives back (a disk out of inodes), and the record would still not fit.
            (self.path / RUNS).mkdir(exist_ok=True)
        except OSError:
            pass
        path = self.path / RESERVE_FILE
        try:
            # Non-blocking: opening a FIFO for writing would wait for a reader for ever.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return  # not ours to fill (a FIFO would never take the bytes): no reserve
            if st.st_size < size:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError:
                    os.ftruncate(fd, 0)  # a tmpfs or a full disk: keep nothing half-reserved
        finally:
            os.close(fd)
        try:
            # A second inode (a file system out of inodes: the record's temp file takes one,
            # and tmpfs counts the hard link that makes last-run.json as one more).
            os.close(os.open(self.path / RESERVE_INODE,
                             os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600))
        except OSError:
            pass

    def _release_reserve(self) -> bool:
        released = False
        for name in (RESERVE_FILE, RESERVE_INODE):
            try:
                os.unlink(self.path / name)
                released = True
            except OSError:
                pass
        return released

    def write_record(self, record: dict, name: str, mode: int = 0o644) -> Path:
        """Write the record to runs/NAME and last-run.json (encoded once, compact: json's
        indenting encoder is pure Python and three times slower on a big run). `mode`:
        0600 for a run that handled secrets. Out of space, the reserve is given back and the
        record written again, without node logs and outputs if it must; the record then
        says so in `faults`. Raises OSError (one line in strerror) when even that fails."""
        path = self.path / RUNS / name
        try:
            atomic_write(path, _encode(record), mode)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(exc.errno, _in_the_way(self.path, path, exc)) from None
            if not self._release_reserve():
                raise
            try:
                atomic_write(path, _encode(record), mode)
            except OSError as again:
                if again.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                atomic_write(path, _encode(_compact(record, again)), mode)
        # last-run.json is the same file: a hard link renamed into place (atomic, and no
        # second copy to write and fsync); a copy where links are not possible.
        tmp = self.path / f".last-run.json.{os.getpid()}.tmp"

        def link() -> None:
            try:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                os.link(path, tmp)
                os.replace(tmp, self.path / LAST_RUN)
                _fsync_dir(self.path)
            except OSError:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise

        try:
            try:
                link()
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self._release_reserve():
                    raise
                link()  # out of inodes (tmpfs counts links): again with the reserve given back
        except OSError:
            last = self.path / LAST_RUN
            try:
                if last.is_dir() and not last.is_symlink():
                    raise IsADirectoryError(errno.EISDIR, "is a directory")
                atomic_write(last, path.read_bytes(), mode)
            except OSError as exc:
                self._release_reserve()
                raise LastRunNotUpdated(f"{last} not updated ({exc.strerror or exc}); this run's record is {path}",
                                        path) from None
        self._release_reserve()
        return path

    def write_instance_data(self, public: dict, sensitive: dict) -> None:
        # One capability per line: readable, and json's C encoder (indent= is pure Python).
        encode = json.JSONEncoder(separators=(", ", ": "), default=str).encode
        for name, value, mode in ((INSTANCE_DATA, public, 0o644), (INSTANCE_DATA_SENSITIVE, sensitive, 0o600)):
            caps = value.get("capabilities", {})
            lines = ",\n  ".join(encode(k) + ": " + encode(v) for k, v in caps.items())
            head = json.dumps({k: v for k, v in value.items() if k != "capabilities"})[:-1]
            text = head + (", " if head != "{" else "") + '"capabilities": {' + ("\n  " + lines + "\n" if lines else "") + "}}\n"
            atomic_write(self.path / name, text.encode(), mode)


def _file_kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")


def _in_the_way(base: Path, path: Path, exc: OSError) -> str:
    """One line for a write of `path` that failed: what stands where it or its directory belongs."""
    for p in [path, *path.parents]:
        if p == base or base not in p.parents:
            break
        try:
            mode = os.lstat(p).st_mode
        except OSError:
            continue
        rel = p.relative_to(base)
        if p == path and stat.S_ISDIR(mode):
            return f"{rel} is a directory"
        if p != path and not stat.S_ISDIR(mode):
            if stat.S_ISLNK(mode):
                try:
                    if os.stat(p) and os.path.isdir(p):
                        continue  # a symlink to a directory: written through, as make would
                except OSError:
                    pass
                return f"{rel} is a symlink to no directory, where a directory belongs"
            return f"{rel} is {_file_kind(mode) if not stat.S_ISREG(mode) else 'a file'}, where a directory belongs"
    try:
        return f"{path.relative_to(base)}: {exc.strerror or exc}"
    except ValueError:
        return exc.strerror or str(exc)


def read_bytes(path: str | os.PathLike, limit: int) -> bytes:
    """A regular file's bytes, at most `limit`. Opened non-blocking, so a FIFO or a device
    where a state file or manifest belongs never hangs the reader. Raises OSError with a
    one-line `strerror`: FileNotFoundError, IsADirectoryError, PermissionError, and
    EINVAL "not a regular file (a FIFO)" or EFBIG "larger than N bytes"."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(mode):
            what = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
            raise OSError(errno.EINVAL, f"not a regular file ({what})", str(path))
        with os.fdopen(os.dup(fd), "rb") as fh:
            raw = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return raw


def default_state_dir(root: str | os.PathLike) -> Path:
    """The state dir of a run whose --root is `root` and that gives no --state-dir."""
    return Path(root) / STATE_SUBDIR


def load_json_file(path: str | os.PathLike, limit: int, *, kind: str, missing: str,
                   denied: str | None = None) -> Any:
    """A JSON file a command was asked to read (a record, instance data), or UsageError with
    one line naming it: `missing` when it is absent, `denied` when it may not be read,
    "not a KIND: ..." when it is not JSON. Never blocks (read_bytes)."""
    path = Path(path)
    a_kind = ("an " if kind[:1] in "aeiou" else "a ") + kind
    try:
        text = read_bytes(path, limit).decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not {a_kind}") from None
    except PermissionError:
        raise UsageError(f"{path}: {denied or 'permission denied'}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read {kind}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: not {a_kind}: invalid JSON ({exc})") from None
    except RecursionError:
        raise UsageError(f"{path}: not {a_kind}: JSON nested too deep") from None


def read_json(path: str | os.PathLike, limit: int = MAX_STATE_FILE) -> Any:
    """A JSON file of at most `limit` bytes, or None (absent, too big, not JSON, not a file)."""
    try:
        raw = read_bytes(path, limit)
    except OSError:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None



def process_identity() -> dict:
    """This process's start time in clock ticks since boot and the boot id: `status` tells
    a live run from a reused pid with them, whatever the wall clock does."""
    out: dict = {}
    try:
        text = (PROC / "self/stat").read_text()
        out["start_ticks"] = int(text.rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        pass
    boot = _boot_id()
    if boot is not None:
        out["boot_id"] = boot
    return out


def pid_alive(pid: object, started_at: str | None = None, start_ticks: object = None,
              boot_id: object = None) -> bool:
    """True if `pid` is a live process that could be the run begun at `started_at` (UTC ISO).

    A run records its start in clock ticks since boot and the boot id (running.json):
    when they are there, the pid is the run exactly when they match, whatever the wall
    clock did since (NTP stepping it at boot is common). Only older files fall back to
    comparing wall-clock times."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False  # kill(0) or kill(-1) would signal a whole group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    except (OverflowError, OSError):
        return False
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return True  # no /proc: kill(0) is all we know
    fields = text.rpartition(")")[2].split()
    if not fields or fields[0] in ("Z", "X"):
        return False  # a zombie has ended; its parent has not reaped it yet
    if isinstance(start_ticks, int) and not isinstance(start_ticks, bool):
        if isinstance(boot_id, str) and boot_id != _boot_id():
            return False  # written before a reboot: whatever has this pid now is not the run
        try:
            return int(fields[19]) == start_ticks
        except (ValueError, IndexError):
            return True
    began = _process_start(fields)
    when = _parse_utc(started_at)
    # A pid reused by a process younger than the run (after a reboot, say) is not the run.
    return not (began is not None and when is not None and began > when + 5.0)


def _boot_id() -> str | None:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(fields: list[str]) -> float | None:
    try:
        ticks = int(fields[19])  # field 22 of /proc/PID/stat: start time in clock ticks after boot
        for line in (PROC / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return None


def _parse_utc(text: str | None) -> float | None:
    if not isinstance(text, str):
        return None
    from datetime import datetime, timezone

    try:
        return datetime.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        try:
            return datetime.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            return None
