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


# -- metadata services over HTTP (gce, oracle, hetzner, azure IMDS)

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")


def http_settings(url: str, description: str, **extra: Any) -> dict:
    """The SETTINGS schema of an HTTP source: `url` (default `url`), `extra`, client and platform check keys."""
    from .. import http, platform_check

    return {
        "type": "object",
        "properties": {
            "url": {"type": "string", "default": url, "pattern": "^https?://", "description": description},
            **extra,
            **http.CLIENT_SETTINGS,
            **platform_check.CHECK_SETTINGS,
        },
    }


def fetch_documents(ctx, platform: str | None, paths: list[str], *, headers: Mapping[str, str],
                    optional: frozenset[str] = frozenset()) -> dict[str, bytes | None]:
    """Check the platform (None: the caller did), then GET `paths` under `ctx.settings["url"]` with `headers` on one session.

    A 404 on an `optional` path gives None; 401/403 say the service refused the request (the
    platform's header); any other non-200 answer is an HTTPFailure naming the URL.
    """
    from .. import http, platform_check

    s = ctx.settings
    if platform is not None:
        ctx.log.info("platform check: %s", platform_check.check(platform, s))

    def fetch(client: http.Client, path: str) -> bytes | None:
        resp = client.get(path)
        if resp.status == 404 and path in optional:
            return None
        expect_ok(resp)
        return resp.body

    with http.Client.from_settings(s["url"], s, ctx) as client:
        client.headers.update(headers)
        return http.fetch_all(client, paths, fetch, s["max_parallel"])


def expect_ok(resp) -> None:
    """Raise HTTPFailure (one line naming the URL) unless `resp` is a 200."""
    from .. import http

    if resp.status in (401, 403):
        raise http.HTTPFailure(f"{resp.url}: HTTP {resp.status} (the service refused the request)")
    if resp.status != 200:
        raise http.HTTPFailure(f"{resp.url}: HTTP {resp.status} {resp.reason}".rstrip())


def instance_id(value: Any, where: str) -> str:
    """`value` as an instance id: one short token; raise ValueError naming `where` otherwise."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not text or len(text) > 255 or not set(text) <= _ID_CHARS:
        raise ValueError(f"{where}: no usable instance id (got {str(value)[:40]!r})")
    return text


def base64_data(value: Any, where: str) -> bytes:
    """Decode base64 user data (whitespace allowed); raise ValueError naming `where`."""
    import base64
    import binascii

    try:
        return base64.b64decode("".join(str(value).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: not valid base64") from None


def short_hostname(value: Any) -> str | None:
    """A host name from metadata (a string), or None when there is none."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def operation_client(url: str, settings: Mapping, timeout: float, cancelled=None):
    """An http.Client for an operation a source exports (post-password, report-ready), run later
    by a module: its own deadline (`timeout` seconds from now), the source's client settings."""
    from .. import http

    return http.Client(
        url,
        deadline=time.monotonic() + timeout,
        cancelled=cancelled,
        timeout=settings["request_timeout"],
        retries=settings["retries"],
        backoff=settings["backoff"],
        max_backoff=settings["max_backoff"],
        max_size=settings["max_size"],
    )


def identity_caps(iid: Any, where: str, *, hostname: Any = None, keys: Any = None, zone: Any = None) -> dict:
    """`instance-id` (checked: raises ValueError naming `where`), and `hostname`, `public-keys`
    (once each, in order) and `availability-zone` where the metadata gives them."""
    caps: dict[str, Any] = {"instance-id": instance_id(iid, f"{where} instance id")}
    if short_hostname(hostname):
        caps["hostname"] = hostname.strip()
    found = public_keys(keys)
    if found:
        caps["public-keys"] = list(dict.fromkeys(found))
    if isinstance(zone, str) and zone.strip():
        caps["availability-zone"] = zone.strip()
    return caps
