"""Set passwords in ROOT/etc/shadow, stored only as SHA-512 crypt ($6$) or yescrypt ($y$) hashes.

Capabilities: wants (or needs) `admin-password` (secret), `post-password`
(an operation: `ctx.caps["post-password"](encrypted_b64)`), `public-keys`,
`default-user`, `cloud-config`. Cloud-config keys: `password` (the default
user's), `chpasswd` (`users: [{name, password, type: text|hash|RANDOM}]`,
the older `list`, `expire`), `ssh_pwauth`.

The `admin-password` (or a random one, with `random: true` or `RANDOM`) goes
to `user` (default: the default user, else root). Then, when `post-password`
is there, that password is sent back as cloudbase-init does: RSA PKCS#1 v1.5
to the first `ssh-rsa` key in `public-keys`, base64. A clear-text password
never reaches a log, the record, a file or a command line.
"""
from __future__ import annotations

import re

from .. import paths, userdata
from ..api import Context
from . import _accounts as acc
from . import _crypto

SECRETS = ("admin-password",)
USER_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*[$]?")
HASH_RE = re.compile(r"\$(6|y)\$[^:\s]+")  # fullmatch: no newline can reach the shadow file
PW_USER = {"type": "object", "properties": {
    "name": {"type": "string"}, "password": {"type": "string"},
    "type": {"enum": ["text", "hash", "RANDOM"]}}, "required": ["name"]}
CLOUD_CONFIG = {
    "password": {"type": "string"},
    "chpasswd": {"type": "object", "properties": {
        "expire": {"type": "boolean"},
        "users": {"type": "array", "items": PW_USER},
        "list": {"type": ["string", "array"], "items": {"type": "string"}}}},
    "ssh_pwauth": {"type": ["boolean", "string"], "enum": [True, False, "unchanged"]},
}
SETTINGS = {
    "type": "object",
    "properties": {
        "user": {"type": ["string", "null"], "default": None,
                 "description": "who gets admin-password; default: the default-user capability, else root"},
        "random": {"type": "boolean", "default": False,
                   "description": "no admin-password: set a random one (posted back if post-password is there)"},
        "expire": {"type": "boolean", "default": False,
                   "description": "make the admin user change the password at first login"},
        "post": {"type": "boolean", "default": True, "description": "send the password back via post-password"},
    },
}


def _entries(cc: dict, default_user: str | None) -> tuple[list[tuple[str, str, str]], bool]:
    """(user, kind, value) for every cloud-config password, kind text|hash|RANDOM; and expire."""
    out: list[tuple[str, str, str]] = []
    if cc.get("password") is not None:
        if not default_user:
            raise ValueError("cloud-config 'password' given but there is no default user")
        out.append((default_user, _kind(str(cc["password"])), str(cc["password"])))
    ch = cc.get("chpasswd") or {}
    if not isinstance(ch, dict):
        raise ValueError("cloud-config chpasswd must be a mapping")
    for i, u in enumerate(ch.get("users") or []):
        if not isinstance(u, dict) or not u.get("name"):
            raise ValueError(f"cloud-config chpasswd.users[{i}] needs a name")
        value = str(u.get("password", ""))
        kind = u.get("type") or _kind(value)
        if kind != "RANDOM" and not value:
            raise ValueError(f"cloud-config chpasswd.users[{i}] ({u['name']}) has no password")
        out.append((str(u["name"]), kind, value))
    listing = ch.get("list") or []
    if isinstance(listing, str):
        listing = listing.splitlines()
    for i, line in enumerate(listing):
        if not str(line).strip():
            continue
        name, sep, value = str(line).partition(":")
        if not sep:
            raise ValueError(f"cloud-config chpasswd.list line {i + 1} is not user:password")
        out.append((name.strip(), _kind(value), value))
    for i, (name, _, _) in enumerate(out):
        # Checked before anything is echoed: a mistyped line could put a password where a name goes.
        if not USER_RE.fullmatch(name):
            raise ValueError(f"cloud-config password entry {i + 1}: invalid user name (not shown)")
    return out, bool(ch.get("expire", True))


def _kind(value: str) -> str:
    if value in ("R", "RANDOM"):
        return "RANDOM"
    return "hash" if value.startswith("$") else "text"


def run(ctx: Context) -> dict | None:
    s = ctx.settings
    cc = userdata.cloud_config_sections(ctx, CLOUD_CONFIG)
    default_user = acc.default_user_name(ctx)
    admin = s.get("user") or default_user or "root"
    entries, expire_cc = _entries(cc, default_user)
    hashes: dict[str, tuple[str, bool]] = {}
    posted_password = None
    admin_pw = ctx.caps.get("admin-password")
    if admin_pw:
        posted_password = str(admin_pw)
    elif s.get("random"):
        posted_password = _crypto.random_password()
    if posted_password is not None:
        hashes[admin] = (_crypto.hash_password(posted_password), bool(s.get("expire")))
    bad: list[str] = []  # entries refused: each that user's failure
    for name, kind, value in entries:
        if kind == "hash":
            if not HASH_RE.fullmatch(value):
                bad.append(f"password hash for {name} is not SHA-512 ($6$) or yescrypt ($y$): not set")
                continue
            hashes[name] = (value, expire_cc)
        elif kind == "RANDOM":
            # Nobody learns it (cloud-init prints it on the console; cidag does not): the account is usable
            # only through keys or a later reset, unless it is the admin user and post-password sends it.
            pw = _crypto.random_password()
            if name == admin and posted_password is None:
                posted_password = pw
            hashes[name] = (_crypto.hash_password(pw), expire_cc)
        else:
            hashes[name] = (_crypto.hash_password(value), expire_cc)
    if bad and not hashes:
        raise ValueError("; ".join(bad))  # nothing asked for can be set: the module fails
    for message in bad:
        ctx.fault(message)
    _pwauth(ctx, cc.get("ssh_pwauth"))
    if not hashes:
        ctx.log.info("no password to set")
        return None
    with acc.locked(ctx.root):
        db = acc.Database(ctx.root)
        missing = [n for n in hashes if db.find("shadow", n) is None or db.find("passwd", n) is None]
        if missing and len(missing) == len(hashes):
            raise RuntimeError(f"user(s) not in the target root: {', '.join(sorted(missing))}")
        for name in sorted(missing):  # that user's password; the others are set
            ctx.fault(f"user {name} not in the target root: password not set")
            del hashes[name]
        for name, (hashed, expire) in hashes.items():
            sh = db.find("shadow", name)
            sh[1] = hashed
            sh[2] = "0" if expire else str(acc.today())
            db.set("shadow", sh)
        db.save()
    for name, (hashed, expire) in hashes.items():
        ctx.log.info("password set for %s (%s hash%s)", name, "yescrypt" if hashed.startswith("$y$") else "sha512",
                     ", expired" if expire else "")
    if posted_password is not None and admin in hashes and s.get("post", True):
        _post(ctx, admin, posted_password)
    return None


def _post(ctx: Context, user: str, password: str) -> None:
    post = ctx.caps.get("post-password")
    if post is None:
        return
    if not callable(post):
        ctx.log.warning("password not posted: post-password is not an operation (a %s)", type(post).__name__)
        return
    from .ssh_keys import normalize_keys

    key = next((k for k in normalize_keys(ctx.caps.get("public-keys")) if "ssh-rsa " in k + " "), None)
    if key is None:
        ctx.log.warning("password not posted: no ssh-rsa key in public-keys to encrypt it with")
        return
    try:
        blob = _crypto.encrypt_for_key(password, key)
    except ValueError as exc:
        ctx.log.warning("password not posted: %s", exc)
        return
    try:
        try:
            post(blob, timeout=ctx.remaining(), cancelled=ctx.cancelled)
        except TypeError:  # a plugin's operation that takes the blob alone
            post(blob)
    except Exception as exc:  # the platform said no; the password is set all the same
        raise RuntimeError(f"posting the password failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    ctx.log.info("password of %s posted to the platform (RSA-encrypted)", user)


def _pwauth(ctx: Context, value) -> None:
    if value is None or value == "unchanged":
        return
    if isinstance(value, str):
        value = value.lower() in ("true", "yes", "1")
    text = f"# Written by cidag (set-password, ssh_pwauth)\nPasswordAuthentication {'yes' if value else 'no'}\n"
    paths.write_file(ctx.root, "etc/ssh/sshd_config.d/50-cidag-pwauth.conf", text, mode=0o644)
    ctx.log.info("sshd PasswordAuthentication %s", "yes" if value else "no")
