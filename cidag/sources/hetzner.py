"""Hetzner Cloud metadata: /hetzner/v1/metadata (a YAML document) and /hetzner/v1/userdata.

The metadata document holds `instance-id`, `hostname`, `public-keys`,
`availability-zone`, `region`, `vendor_data` and `network-config` (cloud-init's
v1 format). An empty or absent userdata means no user data.

network-config is read but not exported: this source needs network-online, and the
network is what network-config would configure (a cycle; cloud-init breaks it with
an ephemeral DHCP). Without it the `network` module brings up DHCP on the first NIC,
which is how a Hetzner guest gets its IPv4 address; its static IPv6 is not configured
(docs/sources.md).
"""
from __future__ import annotations


from ..api import Context
from . import _common

METADATA, USERDATA = "metadata", "userdata"

SETTINGS = _common.http_settings("http://169.254.169.254/hetzner/v1", "base URL of the metadata service (…/hetzner/v1)")
CAPABILITIES = ("instance-id", "hostname", "public-keys", "user-data", "vendor-data", "availability-zone")
SECRETS: frozenset[str] = frozenset()


@_common.plain_failures
def probe(ctx: Context) -> dict:
    """Read Hetzner Cloud's metadata; raise SourceUnavailable when it is not there."""
    docs = _common.fetch_documents(ctx, "hetzner", [METADATA, USERDATA], headers={},
                                   optional=frozenset({USERDATA}))
    where = f"{ctx.settings['url'].rstrip('/')}/{METADATA}"
    meta = _common.load_yaml(docs[METADATA], where)
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: expected a YAML mapping")
    caps = _common.identity_caps(meta.get("instance-id"), where, hostname=meta.get("hostname"),
                                 keys=meta.get("public-keys"), zone=meta.get("availability-zone"))
    if isinstance(meta.get("vendor_data"), str) and meta["vendor_data"].strip():
        caps["vendor-data"] = meta["vendor_data"]
    if docs[USERDATA]:
        caps["user-data"] = _common.as_text_or_bytes(docs[USERDATA])
    return caps
