"""EC2 instance metadata (IMDSv2): a session token first, then the documents at once.

`PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`, then
`GET /latest/meta-data/...` with `X-aws-ec2-metadata-token`. IMDSv1 (no token)
is used only when `allow_imdsv1` is true. `/latest/user-data` answering 404
means no user data, not a failure.
"""
from __future__ import annotations

import re

from .. import http, platform_check
from ..api import Context
from ..errors import SourceUnavailable
from . import _common

TOKEN_PATH = "latest/api/token"  # AWS serves the token only under latest/
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
# meta-data path -> capability (each fetched at once once the token is known)
META = {
    "instance-id": "instance-id",
    "local-hostname": "hostname",
    "placement/availability-zone": "availability-zone",
    "local-ipv4": "local-ipv4",
}
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,255}$")
_KEY_INDEX = re.compile(r"^(\d{1,4})(=.*)?$")

SETTINGS = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "default": "http://169.254.169.254", "pattern": "^https?://",
                "description": "base URL of the instance metadata service"},
        "api_version": {"type": "string", "default": "latest", "pattern": r"^(latest|\d{4}-\d{2}-\d{2})$",
                        "description": "metadata API version in the paths"},
        "token_ttl": {"type": "integer", "minimum": 1, "maximum": 21600, "default": 21600,
                      "description": "seconds the IMDSv2 token lives"},
        "allow_imdsv1": {"type": "boolean", "default": False,
                         "description": "fall back to IMDSv1 (no token) when the token is refused"},
        **http.CLIENT_SETTINGS,
        **platform_check.CHECK_SETTINGS,
    },
}
CAPABILITIES = ("instance-id", "hostname", "public-keys", "user-data", "availability-zone", "local-ipv4")
SECRETS: frozenset[str] = frozenset()


@_common.plain_failures
def probe(ctx: Context) -> dict:
    """Read EC2 instance metadata; raise SourceUnavailable when it is not there."""
    s = ctx.settings
    ctx.log.info("platform check: %s", platform_check.check("ec2", s))
    with http.Client.from_settings(s["url"], s, ctx) as client:  # one session: kept-alive connections
        return _read(client, s)


def _read(client: http.Client, s: dict) -> dict:
    version = s["api_version"]
    token = _token(client, s)
    if token:
        client.headers[TOKEN_HEADER] = token

    def fetch(c: http.Client, path: str) -> bytes | None:
        resp = c.get(f"{version}/{path}")
        if resp.status == 404:
            return None
        if resp.status in (401, 403):
            raise http.HTTPFailure(f"{resp.url}: HTTP {resp.status} (token not accepted)")
        if resp.status != 200:
            raise http.HTTPFailure(f"{resp.url}: HTTP {resp.status} {resp.reason}".rstrip())
        return resp.body

    first = [f"meta-data/{p}" for p in META] + [
        "meta-data/public-keys/", "meta-data/public-keys/0/openssh-key", "user-data"]
    docs = http.fetch_all(client, first, fetch, s["max_parallel"])
    caps: dict = {}
    for path, cap in META.items():
        raw = docs[f"meta-data/{path}"]
        if raw is None:
            continue
        value = _line(raw, client.url(f"{version}/meta-data/{path}"))
        if value:
            caps[cap] = value
    if "instance-id" not in caps:
        raise ValueError(f"{client.url(version + '/meta-data/instance-id')}: no instance-id")
    if not _ID.match(caps["instance-id"]):
        raise ValueError(f"wrong content: instance-id {caps['instance-id'][:40]!r} is not an id")
    # More than one key: the listing says which indexes; fetch the rest in one more round.
    indexes = _key_indexes(docs["meta-data/public-keys/"])
    more = [f"meta-data/public-keys/{i}/openssh-key" for i in indexes if i != 0]
    keys_raw = [docs["meta-data/public-keys/0/openssh-key"]]
    if more:
        extra = http.fetch_all(client, more, fetch, s["max_parallel"])
        keys_raw += [extra[p] for p in more]
    keys = [k for raw in keys_raw if raw is not None for k in _common.public_keys(raw.decode("utf-8", "replace"))]
    if keys:
        caps["public-keys"] = list(dict.fromkeys(keys))
    if docs["user-data"] is not None:
        caps["user-data"] = _common.as_text_or_bytes(docs["user-data"])
    return caps


def _token(client: http.Client, s: dict) -> str | None:
    """An IMDSv2 token, or None when IMDSv1 is allowed and the token was refused."""
    resp = client.request("PUT", TOKEN_PATH,
                          headers={TTL_HEADER: str(s["token_ttl"])})
    if resp.status == 200:
        token = resp.body.strip()
        if token and len(token) < 4096 and all(32 < b < 127 for b in token):
            return token.decode("ascii")
        raise ValueError(f"{resp.url}: the IMDSv2 token is not a printable string")
    if s["allow_imdsv1"]:
        return None
    if resp.status == 404:
        raise SourceUnavailable(
            f"no IMDSv2 token service at {resp.url} (404); allow_imdsv1: true to try IMDSv1"
        )
    raise http.HTTPFailure(
        f"IMDSv2 token refused: PUT {resp.url} got HTTP {resp.status} {resp.reason}".rstrip()
        + " (IMDSv1 fallback is off: allow_imdsv1)"
    )


def _line(raw: bytes, url: str) -> str:
    text = raw.decode("utf-8", "replace").strip()
    if "\n" in text or len(text) > 255:
        raise ValueError(f"wrong content at {url}: expected one short line")
    return text


def _key_indexes(raw: bytes | None) -> list[int]:
    if raw is None:
        return []
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        m = _KEY_INDEX.match(line.strip())
        if m:
            out.append(int(m.group(1)))
    return out
