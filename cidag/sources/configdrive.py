"""OpenStack config drive: a directory, or a `config-2` device mounted read-only for the probe.

Reads `openstack/latest/` (else the newest dated version): `meta_data.json`,
`user_data`, `vendor_data.json`, `network_data.json`. No directory and no
device: unavailable, in milliseconds.
"""
from __future__ import annotations

from pathlib import Path

from ..api import Context
from ..errors import SourceUnavailable
from . import _common

SETTINGS = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "default": "/run/cidag/config-2",
                 "description": "directory holding the config drive's files (tried first)"},
        **_common.DEVICE_SETTINGS,
        "label": {"type": "string", "default": "config-2",
                  "description": "filesystem label of the config drive device"},
    },
}
CAPABILITIES = (
    "instance-id", "hostname", "public-keys", "user-data", "vendor-data",
    "network-config", "admin-password", "availability-zone", "launch-index",
)
SECRETS = frozenset({"admin-password"})


@_common.plain_failures
def probe(ctx: Context) -> dict:
    """Read the config drive; raise SourceUnavailable when there is none."""
    path = Path(ctx.settings["path"])
    if path.is_dir():
        return read_tree(path)
    device = _common.find_device(ctx.settings, ctx)
    if device is None:
        label = ctx.settings.get("label")
        raise SourceUnavailable(f"no config drive at {path} and no device labelled {label!r}")
    ctx.log.info("mounting %s read-only", device)
    with _common.mounted(ctx, device, ctx.settings["fstypes"]) as mnt:
        return read_tree(mnt, where=f"{device}: ")


def read_tree(path: Path, where: str = "") -> dict:
    """Capabilities from a config drive tree at `path`.

    Raises SourceUnavailable when it is not a config drive, ValueError when it is a broken one.
    """
    where = where or f"{path}/"
    base = path / "openstack"
    if not base.is_dir():
        raise SourceUnavailable(f"{path} is not a config drive (no openstack/ directory)")
    names = [p.name for p in base.iterdir() if p.is_dir()]
    version = _common.pick_version(names)
    if version is None:
        raise ValueError(f"{where}openstack/: no 'latest' or dated version directory")
    vdir = f"openstack/{version}/"

    def read(name: str) -> bytes | None:
        return _common.read_inside(path, vdir + name)

    meta_raw = read("meta_data.json")
    if meta_raw is None:
        raise ValueError(f"{where}{vdir}meta_data.json is missing")
    meta = _common.load_json(meta_raw, f"{where}{vdir}meta_data.json")
    return _common.openstack_caps(
        meta, read("user_data"), read("vendor_data.json"), read("network_data.json"),
        where=f"{where}{vdir}",
    )
