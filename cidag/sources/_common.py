"""What the built-in metadata sources share: safe file reads, decoding, the OpenStack document shape."""
from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import SourceUnavailable

MAX_FILE = 16 << 20
_VERSION_CHARS = frozenset("0123456789-")


def as_text_or_bytes(data: bytes) -> str | bytes:
    """User and vendor data as delivered: `str` when it is UTF-8, else the raw bytes."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def load_json(data: bytes | str, what: str) -> Any:
    """Parse JSON; raise ValueError naming `what` and where the syntax broke."""
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{what}: invalid JSON: {exc}") from None


def load_yaml(data: bytes | str, what: str) -> Any:
    """Parse YAML (safe loader); raise ValueError naming `what`."""
    import yaml

    from ..yamldoc import safe_load as _safe_load

    try:
        return _safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{what}: invalid YAML{where}: {problem}") from None


def read_inside(base: Path, rel: str, *, cap: int = MAX_FILE) -> bytes | None:
    """Bytes of base/rel, or None if absent; never follows a path (or symlink) out of `base`.

    Raises ValueError when the file escapes `base` or is larger than `cap`.
    """
    root = base.resolve()
    path = (base / rel).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"{base / rel} points outside {base}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(cap + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    if len(data) > cap:
        raise ValueError(f"{base / rel} is larger than {cap} bytes")
    return data


def is_version(name: str) -> bool:
    """A dated metadata version such as 2013-04-04 (digits and dashes only: safe in a path or URL)."""
    return len(name) == 10 and set(name) <= _VERSION_CHARS and name[4] == name[7] == "-"


def pick_version(names: list[str]) -> str | None:
    """`latest` if offered, else the newest dated version; None when neither is there."""
    if "latest" in names:
        return "latest"
    dated = sorted(n for n in names if is_version(n))
    return dated[-1] if dated else None


def openstack_caps(meta: Any, user_data: bytes | None, vendor: bytes | None,
                   network: bytes | None, where: str) -> dict:
    """Capabilities from OpenStack's meta_data.json, user_data, vendor_data.json, network_data.json.

    Raises ValueError (a one-line reason) when a document is malformed or lacks the uuid.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"{where}meta_data.json: expected a JSON object, got {type(meta).__name__}")
    uuid = meta.get("uuid")
    if not isinstance(uuid, str) or not uuid.strip() or len(uuid) > 255 or any(c.isspace() for c in uuid):
        raise ValueError(f"{where}meta_data.json: no usable uuid (got {str(uuid)[:40]!r})")
    caps: dict[str, Any] = {"instance-id": uuid}
    hostname = meta.get("hostname") or meta.get("name")
    if isinstance(hostname, str) and hostname:
        caps["hostname"] = hostname
    keys = public_keys(meta.get("public_keys"))
    listed = meta.get("keys")
    for item in listed if isinstance(listed, list) else []:
        if isinstance(item, dict) and item.get("type", "ssh") == "ssh" and isinstance(item.get("data"), str):
            keys.append(item["data"].strip())
    if keys:
        caps["public-keys"] = list(dict.fromkeys(k for k in keys if k))
    for cap, key in (("admin-password", "admin_pass"), ("availability-zone", "availability_zone")):
        if isinstance(meta.get(key), str) and meta[key]:
            caps[cap] = meta[key]
    if isinstance(meta.get("launch_index"), (int, str)):
        caps["launch-index"] = str(meta["launch_index"])
    if user_data is not None:
        caps["user-data"] = as_text_or_bytes(user_data)
    if vendor is not None:
        value = load_json(vendor, f"{where}vendor_data.json")
        # cloud-init's convention: the part for it is the string or the "cloud-init" key.
        if isinstance(value, dict):
            value = value.get("cloud-init")
        if isinstance(value, str):
            caps["vendor-data"] = value
    if network is not None:
        value = load_json(network, f"{where}network_data.json")
        if not isinstance(value, dict):
            raise ValueError(f"{where}network_data.json: expected a JSON object")
        caps["network-config"] = value
    return caps


def public_keys(value: Any) -> list[str]:
    """Keys given as a string (one per line), a list, or a {name: key} mapping (in name order)."""
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip() and not line.startswith("#")]
    if isinstance(value, list):
        return [k.strip() for k in value if isinstance(k, str) and k.strip()]
    if isinstance(value, dict):
        return [value[k].strip() for k in sorted(value, key=str) if isinstance(value[k], str)]
    return []


# -- block devices (config drive `config-2`, NoCloud `cidata`)

DEVICE_SETTINGS = {
    "label": {"type": "string", "description": "filesystem label of the device to mount read-only"},
    "device": {"type": ["string", "null"], "default": None,
               "description": "block device to mount read-only (default: /dev/disk/by-label/LABEL)"},
    "fstypes": {"type": "string", "default": "iso9660,vfat",
                "description": "filesystem types passed to mount -t"},
}


def find_device(settings: Mapping, ctx=None) -> Path | None:
    """The device given, or the first by-label link for the label (also upper case); None if none.

    With `ctx`, while udev still has events queued, looks again until the link shows, the
    queue is empty or the probe's time is up: cidag.service starts before sysinit.target,
    as cloud-init-local does, when a CD-ROM's driver may still be loading at udev's
    coldplug and its link not made yet (docs/systemd.md).
    """
    if settings.get("device"):
        path = Path(settings["device"])
        return path if path.exists() else None
    label = settings.get("label")
    if not label:
        return None
    found = _by_label(label)
    # udevd holds /run/udev/queue while events wait (what `udevadm settle` waits on): no
    # process to spawn, and the device is used the moment its link is made, before the
    # rest of the coldplug queue has drained. No udev (a container, a chroot): no file.
    while found is None and ctx is not None and UDEV_QUEUE.exists() and ctx.remaining() > 0.5:
        if ctx.cancelled.wait(0.05):
            break
        found = _by_label(label)
    return found


BY_LABEL = Path("/dev/disk/by-label")
UDEV_QUEUE = Path("/run/udev/queue")


def _by_label(label: str) -> Path | None:
    for name in dict.fromkeys((label, label.upper(), label.lower())):
        path = BY_LABEL / name
        if path.exists():
            return path
    return None


@contextmanager
def mounted(ctx, device: Path, fstypes: str) -> Iterator[Path]:
    """Yield a directory holding `device`'s filesystem: its mount point, or a read-only temp mount.

    Raises RuntimeError (one line) when mount fails.
    """
    from ..process import run_command

    real = os.path.realpath(device)
    for mount_point in _mount_points(real):
        yield Path(mount_point)
        return
    tmp = tempfile.mkdtemp(prefix="cidag-mnt-")
    result = ctx.run(["mount", "-o", "ro,nosuid,nodev,noexec", "-t", fstypes, str(device), tmp])
    if not result.ok:
        os.rmdir(tmp)
        err = result.stderr_text().strip().splitlines()
        raise RuntimeError(f"cannot mount {device}: {err[-1] if err else f'exit {result.returncode}'}")
    try:
        yield Path(tmp)
    finally:
        # Not bound by the probe deadline: a mount must not be left behind.
        run_command(["umount", tmp], deadline=time.monotonic() + 10)
        try:
            os.rmdir(tmp)
        except OSError:
            pass


def _mount_points(real_device: str) -> list[str]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and os.path.realpath(_unescape(fields[0])) == real_device:
            out.append(_unescape(fields[1]))
    return out


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def plain_failures(probe: Callable) -> Callable:
    """Re-raise a probe's failure as a plain RuntimeError so the reason is its one-line message.

    (The engine prefixes the class name of anything but RuntimeError/Exception.)
    SourceUnavailable passes through: it means "not this platform".
    """

    @functools.wraps(probe)
    def wrapper(ctx):
        try:
            return probe(ctx)
        except SourceUnavailable:
            raise
        except (ValueError, RuntimeError) as exc:
            if type(exc) is RuntimeError:
                raise
            raise RuntimeError(str(exc)) from None

    return wrapper
