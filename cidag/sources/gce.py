"""Google Compute Engine metadata server: /computeMetadata/v1 with `Metadata-Flavor: Google`.

Two requests on one session: `instance/?recursive=true` and
`project/attributes/?recursive=true` (JSON trees). The server refuses a request
without the header, as GCE does.

SSH keys are the `ssh-keys` and legacy `sshKeys` attributes of the instance and,
unless the instance sets `block-project-ssh-keys: true`, of the project: one
`user:key` a line. As cloud-init, only the keys of the users in `key_users`
(default `cloudinit` and `cidag`, the shipped default user) are kept, and all of
them go to the default user; a key in the `google-ssh {"expireOn": ...}` form is
dropped once expired.
"""
from __future__ import annotations

import json

from ..api import Context
from . import _common

HEADERS = {"Metadata-Flavor": "Google"}
INSTANCE = "instance/?recursive=true"
PROJECT = "project/attributes/?recursive=true"
KEY_ATTRIBUTES = ("ssh-keys", "sshKeys")

SETTINGS = _common.http_settings(
    "http://169.254.169.254/computeMetadata/v1", "base URL of the metadata server (…/computeMetadata/v1)",
    key_users={"type": "array", "items": {"type": "string"}, "default": ["cloudinit", "cidag"],
               "description": "users whose `user:key` lines are taken (for the default user); [\"*\"]: all"},
)
CAPABILITIES = ("instance-id", "hostname", "public-keys", "user-data", "availability-zone")
SECRETS: frozenset[str] = frozenset()


@_common.plain_failures
def probe(ctx: Context) -> dict:
    """Read the GCE metadata server; raise SourceUnavailable when it is not there."""
    docs = _common.fetch_documents(ctx, "gce", [INSTANCE, PROJECT], headers=HEADERS,
                                   optional=frozenset({PROJECT}))
    where = ctx.settings["url"].rstrip("/")
    instance = _common.load_json(docs[INSTANCE], f"{where}/{INSTANCE}")
    project = _common.load_json(docs[PROJECT], f"{where}/{PROJECT}") if docs[PROJECT] is not None else {}
    if not isinstance(instance, dict) or not isinstance(project, dict):
        raise ValueError(f"{where}: expected JSON objects for instance/ and project/attributes/")
    return caps_from(instance, project, ctx.settings.get("key_users", ["cloudinit", "cidag"]), where)


def caps_from(instance: dict, project: dict, key_users: list[str], where: str = "") -> dict:
    """Capabilities from the instance tree and the project's attributes."""
    attrs = instance.get("attributes") if isinstance(instance.get("attributes"), dict) else {}
    lines = [attrs.get(k) for k in KEY_ATTRIBUTES]
    if str(attrs.get("block-project-ssh-keys", "")).strip().lower() != "true":
        lines += [project.get(k) for k in KEY_ATTRIBUTES]
    zone = instance.get("zone")
    caps = _common.identity_caps(
        instance.get("id"), f"{where}/instance/", hostname=instance.get("hostname"),
        keys=select_keys([v for v in lines if isinstance(v, str)], key_users),
        zone=zone.rsplit("/", 1)[-1] if isinstance(zone, str) else None)  # projects/N/zones/us-central1-a
    data = attrs.get("user-data")
    if isinstance(data, str):
        if str(attrs.get("user-data-encoding", "")).lower() == "base64":
            caps["user-data"] = _common.as_text_or_bytes(
                _common.base64_data(data, f"{where}/instance/attributes/user-data"))
        else:
            caps["user-data"] = data
    return caps


def select_keys(texts: list[str], key_users: list[str]) -> list[str]:
    """The keys of `user:key` lines whose user is in `key_users` ("*": any), unexpired, once each."""
    out = []
    for text in texts:
        for line in text.splitlines():
            user, sep, key = line.strip().partition(":")
            if not sep or not key.strip() or not line.isascii():
                continue
            if ("*" in key_users or user in key_users) and not expired(key):
                out.append(key.strip())
    return list(dict.fromkeys(out))


def expired(key: str) -> bool:
    """True for a `google-ssh {"expireOn": "...+0000"}` key past its date (others never expire)."""
    fields = key.split(None, 3)
    if len(fields) < 4 or fields[2] != "google-ssh":
        return False
    import datetime  # only for Google's expiring keys

    try:
        when = json.loads(fields[3]).get("expireOn")
        at = datetime.datetime.strptime(when, "%Y-%m-%dT%H:%M:%S+0000").replace(tzinfo=datetime.timezone.utc)
    except (ValueError, TypeError, AttributeError):
        return False
    return datetime.datetime.now(datetime.timezone.utc) > at
