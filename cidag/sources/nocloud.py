"""NoCloud: a seed directory, a `cidata` device, or a seed URL (`seedfrom`).

A seed holds `meta-data` (YAML), `user-data`, `vendor-data` and
`network-config` (YAML). Tried in this order: the directory `path`, the device
labelled `label` (mounted read-only), then `seedfrom` (or `ds=nocloud;s=URL` on
the kernel command line), whose four documents are fetched at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from .. import http, platform_check
from ..api import Context
from ..errors import SourceUnavailable
from . import _common

FILES = ("meta-data", "user-data", "vendor-data", "network-config")
DEFAULT_IID = "iid-datasource-nocloud"  # cloud-init's, when meta-data names none

SETTINGS = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "default": "/var/lib/cloud/seed/nocloud",
                 "description": "seed directory (tried first)"},
        **_common.DEVICE_SETTINGS,
        "label": {"type": "string", "default": "cidata",
                  "description": "filesystem label of a seed device"},
        "seedfrom": {"type": ["string", "null"], "default": None, "pattern": "^(https?://|file://|/)",
                     "description": "seed URL (http, https, file) or directory, read when no local seed is found"},
        "cmdline": platform_check.CHECK_SETTINGS["cmdline"],
        **http.CLIENT_SETTINGS,
    },
}
CAPABILITIES = (
    "instance-id", "hostname", "public-keys", "user-data", "vendor-data",
    "network-config", "availability-zone",
)
SECRETS: frozenset[str] = frozenset()


@_common.plain_failures
def probe(ctx: Context) -> dict:
    """Read the first seed found; raise SourceUnavailable when there is none."""
    s = ctx.settings
    path = Path(s["path"])
    if (path / "meta-data").is_file():
        return from_files(lambda name: _common.read_inside(path, name), f"{path}/")
    device = _common.find_device(s, ctx)
    if device is not None:
        ctx.log.info("mounting %s read-only", device)
        with _common.mounted(ctx, device, s["fstypes"]) as mnt:
            if not (mnt / "meta-data").is_file():
                raise SourceUnavailable(f"{device} holds no meta-data")
            return from_files(lambda name: _common.read_inside(mnt, name), f"{device}: ")
    seed = s["seedfrom"] or _cmdline_seed(s["cmdline"])
    if not seed:
        raise SourceUnavailable(
            f"no NoCloud seed: no {path}/meta-data, no device labelled {s['label']!r}, no seedfrom"
        )
    if not seed.startswith(("http://", "https://")):
        local = Path(urlsplit(seed).path if seed.startswith("file://") else seed)
        if not (local / "meta-data").is_file():
            raise SourceUnavailable(f"no meta-data at seedfrom {seed}")
        return from_files(lambda name: _common.read_inside(local, name), f"{local}/")
    return _from_url(ctx, seed if seed.endswith("/") else seed + "/")


def _from_url(ctx: Context, seed: str) -> dict:
    client = http.Client.from_settings(seed, ctx.settings, ctx)

    def fetch(c: http.Client, name: str) -> bytes | None:
        resp = c.get(name)
        if resp.status == 404:
            if name == "meta-data":
                raise SourceUnavailable(f"no meta-data at seedfrom {seed} (404)")
            return None
        if resp.status != 200:
            raise http.HTTPFailure(f"{resp.url}: HTTP {resp.status} {resp.reason}".rstrip())
        return resp.body

    with client:  # one session: kept-alive connections
        docs = http.fetch_all(client, FILES, fetch, ctx.settings["max_parallel"])
    return from_files(docs.get, seed)


def from_files(read: Callable[[str], bytes | None], where: str) -> dict:
    """Capabilities from a seed's documents, `read(name)` giving bytes or None.

    Raises ValueError (one line) when meta-data or network-config is malformed.
    """
    meta: Any = _common.load_yaml(read("meta-data") or b"", f"{where}meta-data") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{where}meta-data: expected a YAML mapping, got {type(meta).__name__}")
    iid = meta.get("instance-id", meta.get("instance_id", DEFAULT_IID))
    if not isinstance(iid, (str, int)) or not str(iid).strip() or any(c.isspace() for c in str(iid)):
        raise ValueError(f"{where}meta-data: instance-id {str(iid)[:40]!r} is not an id")
    caps: dict[str, Any] = {"instance-id": str(iid)}
    hostname = meta.get("local-hostname") or meta.get("hostname")
    if isinstance(hostname, str) and hostname:
        caps["hostname"] = hostname
    keys = _common.public_keys(meta.get("public-keys", meta.get("public_keys")))
    if keys:
        caps["public-keys"] = list(dict.fromkeys(keys))
    zone = meta.get("availability-zone", meta.get("availability_zone"))
    if isinstance(zone, str) and zone:
        caps["availability-zone"] = zone
    for name in ("user-data", "vendor-data"):
        raw = read(name)
        if raw is not None:
            caps[name] = _common.as_text_or_bytes(raw)
    raw = read("network-config")
    if raw is not None and raw.strip():
        net = _common.load_yaml(raw, f"{where}network-config")
        if isinstance(net, dict) and isinstance(net.get("network"), dict):
            net = net["network"]  # cloud-init accepts the config wrapped in `network:`
        if not isinstance(net, dict):
            raise ValueError(f"{where}network-config: expected a YAML mapping")
        caps["network-config"] = net
    return caps


def _cmdline_seed(path: str) -> str | None:
    for name, options in platform_check.ds_hints(platform_check.read_cmdline(path)):
        if name in ("nocloud", "nocloudnet"):
            seed = options.get("s") or options.get("seedfrom")
            if seed:
                return seed
    return None
