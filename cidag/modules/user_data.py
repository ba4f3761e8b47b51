"""Turn the `user-data` and `vendor-data` capabilities into `cloud-config` and `user-scripts`.

Capabilities: wants `user-data`, `vendor-data`; provides `cloud-config` (the
merged mapping; user-data wins over vendor-data) and `user-scripts` (a list of
{name, content (bytes), origin}). Cloud-config keys: `vendor_data: {enabled: false}`
drops vendor-data.

The four capabilities are marked secret (SECRETS): `cidag query` and
instance-data.json withhold them. Parts that cannot be parsed, and each top-level key no cidag module applies
(cidag/cloudconfig_keys.py), are logged as warnings; bad parts are left out; the module
fails (so consumers, which only want `cloud-config`, go on without it) only
when nothing at all could be used.
"""
from __future__ import annotations

from .. import cloudconfig_keys, userdata
from ..api import Context

# User-data may hold passwords (chpasswd) and scripts with credentials: kept out of
# instance-data.json and scrubbed from logs, as cloud-init keeps user-data root-only.
SECRETS = ("user-data", "vendor-data", "cloud-config", "user-scripts")
SETTINGS = {
    "type": "object",
    "properties": {
        "encoding": {"enum": ["none", "base64"], "default": "none",
                     "description": "how the sources deliver user-data when they do not say"},
    },
}
CLOUD_CONFIG = {
    "vendor_data": {"type": "object", "properties": {"enabled": {"type": "boolean"},
                                                      "prefix": {"type": ["string", "array"]}}},
}


def run(ctx: Context) -> dict | None:
    enc = None if ctx.settings.get("encoding", "none") == "none" else "base64"
    user = vendor = None
    if ctx.caps.get("user-data") is not None:
        user = userdata.parse(ctx.caps["user-data"], origin="user-data", encoding=enc)
    if ctx.caps.get("vendor-data") is not None:
        vendor = userdata.parse(ctx.caps["vendor-data"], origin="vendor-data", encoding=enc)
    if user is None and vendor is None:
        ctx.log.info("no user-data or vendor-data")
        return {"cloud-config": {}, "user-scripts": []}
    merged = userdata.combine(user, vendor)
    for msg in merged.warnings:
        ctx.log.warning("%s", msg)
    for msg in merged.errors:
        ctx.log.warning("%s", msg)
    if merged.errors and not merged.parts:
        raise RuntimeError(f"user-data unusable: {merged.errors[0]}")
    for key in cloudconfig_keys.unsupported(merged.cloud_config):
        ctx.log.warning("%s", cloudconfig_keys.message(key))
    ctx.log.info("user-data: %d part(s), %d cloud-config key(s), %d script(s)",
                 merged.parts, len(merged.cloud_config), len(merged.scripts))
    return {
        "cloud-config": merged.cloud_config,
        "user-scripts": [s.as_dict() for s in merged.scripts],
    }
