"""Set the target's time zone (cloud-init's cc_timezone).

Capabilities: wants `cloud-config`. Cloud-config key: `timezone` (an IANA
name such as `Europe/Paris`); the `timezone` setting is used when it is absent.

ROOT/etc/localtime becomes a symlink to /usr/share/zoneinfo/ZONE, as
`timedatectl set-timezone` and systemd expect; ROOT/etc/timezone gets the
name on Debian-family targets (where it exists or ROOT/etc/debian_version
does). A zone the target has no file for fails the module.
"""
from __future__ import annotations

import re

from .. import paths, userdata
from ..api import Context

CLOUD_CONFIG = {"timezone": {"type": "string"}}
SETTINGS = {
    "type": "object",
    "properties": {"timezone": {"type": ["string", "null"], "default": None,
                                "description": "used when cloud-config has no timezone"}},
}
ZONE = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
ZONEINFO = "/usr/share/zoneinfo"


def run(ctx: Context) -> dict | None:
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    zone = cc.get("timezone") or ctx.settings.get("timezone")
    if not zone:
        ctx.log.info("no timezone asked")
        return None
    zone = str(zone).strip()
    if not ZONE.fullmatch(zone):
        raise ValueError(f"invalid time zone name {zone!r}")
    zonefile = f"{ZONEINFO}/{zone}"
    if not paths.confine(ctx.root, zonefile).is_file():
        raise ValueError(f"unknown time zone {zone!r}: the target has no {zonefile}")
    paths.symlink(ctx.root, "etc/localtime", zonefile)
    debian = paths.confine(ctx.root, "etc/debian_version").exists()
    if debian or paths.confine(ctx.root, "etc/timezone").exists():
        paths.write_file(ctx.root, "etc/timezone", zone + "\n", mode=0o644)
    ctx.log.info("time zone: %s", zone)
    return None
