"""Plugin types used by the engine tests (referenced as `plugins_for_tests:NAME`)."""
from __future__ import annotations

import time

from cidag.api import declare


def slow_probe(ctx):
    """A source whose data and delay come from settings."""
    time.sleep(ctx.settings.get("delay", 0))
    return dict(ctx.settings.get("data", {}))


@declare(settings={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
def write_text(ctx):
    """Writes settings.text and what it read to ROOT/out/NAME."""
    out = ctx.root / "out"
    out.mkdir(parents=True, exist_ok=True)
    seen = {name: str(ctx.caps[name]) for name in ctx.caps}
    (out / ctx.name).write_text(ctx.settings["text"] + " " + repr(sorted(seen.items())))
    return None


def log_secret(ctx):
    """Logs and returns a secret: the record must show neither."""
    pw = ctx.caps["admin-password"]
    ctx.log.info("setting password %s for user", pw)
    ctx.output.append(f"chpasswd: {pw}\n")
    return None


def read_undeclared(ctx):
    return {"got": ctx.caps["hostname"]}


def boom(ctx):
    raise ValueError("the widget is broken")


def returns_list(ctx):
    return [1, 2]


class ClassSource:
    """A source type written as a class."""

    SETTINGS = {"type": "object", "properties": {"iid": {"type": "string", "default": "i-class"}}}

    def probe(self, ctx):
        return {"instance-id": ctx.settings["iid"]}


@declare(secrets=["api-token"], settings={"type": "object", "properties": {"token": {"type": "string"}}})
def secret_probe(ctx):
    """A source with a secret that is not a password (kept, 0600, for query --secrets)."""
    return {"instance-id": "i-secret", "api-token": ctx.settings["token"]}


def returns_recursive(ctx):
    """Provides a list that contains itself (what `foo: &a [*a]` gives)."""
    loop = []
    loop.append(loop)
    return {"blob": loop}


@declare(secrets=["admin-password"])
def logs_own_secret(ctx):
    """A source that logs the secret it is about to return."""
    ctx.log.warning("got %s from the vault", "pw-9d8c7b6a")
    return {"instance-id": "i-vault", "admin-password": "pw-9d8c7b6a"}


def returns_bytes(ctx):
    return {"blob": b"\xff\x00", "text": "h\u00e9llo".encode()}


def records_what_it_sees(ctx):
    """Writes ROOT/out/NAME: each capability it sees as [type name, value]."""
    import json

    out = ctx.root / "out"
    out.mkdir(parents=True, exist_ok=True)
    seen = {name: [type(ctx.caps[name]).__name__, ctx.caps[name]] for name in ctx.caps}
    (out / ctx.name).write_text(json.dumps(seen, sort_keys=True))
    return None


def reports_remaining(ctx):
    """Provides `left`: the seconds ctx.remaining() gives when it runs."""
    return {"left": ctx.remaining()}
