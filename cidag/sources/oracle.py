"""Oracle Cloud instance metadata (IMDSv2): /opc/v2 with `Authorization: Bearer Oracle`.

One request, `instance/` (a JSON document): `id`, `hostname`,
`availabilityDomain`, and `metadata` with `ssh_authorized_keys` (one a line)
and `user_data` (base64). The service refuses a request without the header.
IMDSv1 (/opc/v1, no header) is not used.
"""
from __future__ import annotations


from ..api import Context
from . import _common

HEADERS = {"Authorization": "Bearer Oracle"}
INSTANCE = "instance/"

SETTINGS = _common.http_settings("http://169.254.169.254/opc/v2", "base URL of the metadata service (…/opc/v2)")
CAPABILITIES = ("instance-id", "hostname", "public-keys", "user-data", "availability-zone")
SECRETS: frozenset[str] = frozenset()


@_common.plain_failures
def probe(ctx: Context) -> dict:
    """Read Oracle Cloud's instance metadata; raise SourceUnavailable when it is not there."""
    docs = _common.fetch_documents(ctx, "oracle", [INSTANCE], headers=HEADERS)
    where = f"{ctx.settings['url'].rstrip('/')}/{INSTANCE}"
    doc = _common.load_json(docs[INSTANCE], where)
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a JSON object")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    caps = _common.identity_caps(doc.get("id"), where, hostname=doc.get("hostname"),
                                 keys=meta.get("ssh_authorized_keys"), zone=doc.get("availabilityDomain"))
    if isinstance(meta.get("user_data"), str):
        caps["user-data"] = _common.as_text_or_bytes(
            _common.base64_data(meta["user_data"], f"{where} metadata.user_data"))
    return caps
