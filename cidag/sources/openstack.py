"""OpenStack metadata API over HTTP (type `openstack-http`), with a `post-password` operation.

`GET /openstack` lists the versions; then meta_data.json, user_data,
vendor_data.json and network_data.json of the chosen version are fetched on
the same kept-alive connection (`max_parallel` > 1: that many at once). `post-password` POSTs to
`/openstack/2013-04-04/password` as cloudbase-init does; a 409 (the service
already holds a password) is reported, never retried.
"""
from __future__ import annotations

import threading
from typing import Callable

from .. import http, platform_check
from ..api import Context
from ..errors import SourceUnavailable
from . import _common

PASSWORD_PATH = "openstack/2013-04-04/password"
DOCUMENTS = ("meta_data.json", "user_data", "vendor_data.json", "network_data.json")

SETTINGS = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "default": "http://169.254.169.254", "pattern": "^https?://",
                "description": "base URL of the metadata service"},
        "version": {"type": "string", "default": "auto", "pattern": r"^(auto|latest|\d{4}-\d{2}-\d{2})$",
                    "description": "API version: auto (latest if listed, else newest dated), or one"},
        "password_timeout": {"format": "duration", "default": 30,
                             "description": "deadline of one post-password call"},
        **http.CLIENT_SETTINGS,
        **platform_check.CHECK_SETTINGS,
    },
}
CAPABILITIES = (
    "instance-id", "hostname", "public-keys", "user-data", "vendor-data", "network-config",
    "admin-password", "availability-zone", "launch-index", "post-password",
)
SECRETS = frozenset({"admin-password"})


class PasswordConflict(RuntimeError):
    """The metadata service already holds a password (HTTP 409)."""


@_common.plain_failures
def probe(ctx: Context) -> dict:
    """Read the OpenStack metadata API; raise SourceUnavailable when it is not there."""
    s = ctx.settings
    ctx.log.info("platform check: %s", platform_check.check("openstack", s))
    with http.Client.from_settings(s["url"], s, ctx) as client:  # one session: kept-alive connections
        caps = _read(ctx, client, s)
    caps["post-password"] = password_poster(s)
    return caps


def _read(ctx: Context, client: http.Client, s: dict) -> dict:
    version = s["version"]
    if version == "auto":
        resp = client.get("openstack")
        if resp.status == 404:
            raise SourceUnavailable(f"no OpenStack metadata at {s['url']} (GET /openstack: 404)")
        _expect_ok(resp)
        names = [line.strip() for line in resp.text().splitlines() if line.strip()]
        version = _common.pick_version(names)
        if version is None:
            raise ValueError(f"{resp.url}: no usable version in the listing ({_head(resp.body)})")
    ctx.log.info("OpenStack metadata API version %s", version)

    def fetch(c: http.Client, name: str) -> bytes | None:
        resp = c.get(f"openstack/{version}/{name}")
        if resp.status == 404 and name != "meta_data.json":
            return None  # optional document
        _expect_ok(resp)
        return resp.body

    docs = http.fetch_all(client, DOCUMENTS, fetch, s["max_parallel"])
    meta = _common.load_json(docs["meta_data.json"], f"{client.url(f'openstack/{version}/meta_data.json')}")
    caps = _common.openstack_caps(
        meta, docs["user_data"], docs["vendor_data.json"], docs["network_data.json"],
        where=client.url(f"openstack/{version}/"),
    )
    return caps


def password_poster(settings: dict) -> Callable[..., None]:
    """The `post-password` operation bound to the service in `settings`."""

    def post_password(password: str | bytes, *, timeout: float | None = None,
                      cancelled: threading.Event | None = None) -> None:
        """POST `password` (already encrypted if the platform wants that) to the service.

        Raises PasswordConflict on 409, HTTPFailure / SourceUnavailable when it cannot be sent.
        The password never appears in a message.
        """
        body = password.encode("utf-8") if isinstance(password, str) else bytes(password)
        with _common.operation_client(
            settings["url"], settings,
            timeout if timeout is not None else settings["password_timeout"], cancelled,
        ) as client:
            resp = client.request("POST", PASSWORD_PATH, body=body,
                                  headers={"Content-Type": "text/plain"}, no_retry_statuses=(409,))
        if resp.status == 409:
            raise PasswordConflict(
                f"{resp.url}: the metadata service already holds a password (409); not posted again"
            )
        if not 200 <= resp.status < 300:
            raise http.HTTPFailure(f"{resp.url}: posting the password got HTTP {resp.status} {resp.reason}")

    return post_password


def _expect_ok(resp: http.Response) -> None:
    if resp.status != 200:
        raise http.HTTPFailure(f"{resp.url}: HTTP {resp.status} {resp.reason}".rstrip())


def _head(body: bytes) -> str:
    text = body[:60].decode("utf-8", "replace").replace("\n", " ")
    return repr(text) if text else "empty"
