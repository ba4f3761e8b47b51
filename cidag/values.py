"""One value policy and one secret policy for every place a capability value goes.

A value is made canonical once, when the node that gave it ends
(`canonical()`): its JSON form, within size and depth limits, cycles refused.
Live reads, markers, records and instance data then all see the same thing,
on the first boot and on the second.

A capability is secret (`SecretPolicy.is_secret`) when some type in the run
lists it in `SECRETS`, a manifest node lists it under `secrets:`, it is
`admin-password`, or its name holds `password`. Secret values are kept out
of command environments (but the built-in `exec` type's own), markers,
records and logs; the run's logger scrubs every known secret value.
"""
from __future__ import annotations

import base64
import math
import threading
import unicodedata
from typing import Any, Iterable

from .api import ALWAYS_SECRET, default_is_secret

MAX_DEPTH = 64  # nesting of one value (cloud-init's own documents use < 10)
MAX_ITEMS = 200_000  # containers and scalars in one value, aliases counted each time
MAX_BYTES = 32 << 20  # characters of text in one value, aliases counted each time
MAX_INT_DIGITS = 64  # integers beyond this are refused (JSON readers lose them anyway)
MAX_NAME_VALUE = 255  # an instance-id or host name past a file name's length is no name
SECRET_TEXT = "<secret>"
OPERATION_TEXT = "<operation>"


class ValueRefused(ValueError):
    """A value that cannot be made canonical; the message says why in one line."""


def canonical(value: Any, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS,
              max_bytes: int = MAX_BYTES) -> Any:
    """The JSON form of a capability value: mappings with text keys, lists, text, finite
    numbers, booleans, None. Bytes become text when they are UTF-8, else
    `{"data": BASE64, "encoding": "base64"}` (what user-data readers take).
    An operation (a callable) stays as it is at the top level.

    Raises ValueRefused for a value that refers to itself, nests deeper than
    `max_depth`, or holds more than `max_items` items or `max_bytes` characters
    once aliases are expanded.
    """
    if callable(value):
        return value
    t = type(value)
    if t is bool or value is None:
        return value
    if t is str:
        if len(value) > max_bytes:
            raise ValueRefused(f"value larger than {max_bytes} characters")
        return value
    budget = [max_items, max_bytes]
    return _canon(value, 0, max_depth, budget, set())


def canonical_capability(name: str, value: Any) -> Any:
    """`canonical(value)`, then the rules of capability `name` (`check_name_value`): what the
    engine keeps of every value a node gives. Raises ValueRefused (one line)."""
    return check_name_value(name, canonical(value))


# Capabilities whose values become names: the instance-id names a directory of the state
# dir, goes into every command's environment (CIDAG_INSTANCE_ID) and into the status line;
# the host name goes into /etc/hostname and /etc/hosts. A value that cannot be one of those
# (a NUL, a newline, 5,000 characters) fails the node that gave it, naming it, so the
# capability falls to the next provider instead of crashing each module that reads it.
# Whitespace is refused in an instance-id (the built-in sources already refused it); a host
# name's finer rules (RFC 1123 labels) are the hostname module's.
_NAME_RULES = {"instance-id": True, "hostname": False}  # name -> whitespace refused
# Control, format (bidi overrides, zero-width), unpaired surrogates, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def check_name_value(name: str, value: Any) -> Any:
    """`value` if it is usable as capability `name`; raises ValueRefused saying why otherwise.

    `instance-id`: text (or an integer), 1 to MAX_NAME_VALUE characters, no whitespace, no
    control or format character. `hostname`: text of at most MAX_NAME_VALUE characters
    without control or format characters. Other capabilities: any canonical value.
    """
    no_space = _NAME_RULES.get(name)
    if no_space is None:
        return value
    if name == "instance-id" and type(value) is int:
        return value
    if not isinstance(value, str):
        raise ValueRefused(f"must be text, not {_kind(value)}")
    if not value:
        raise ValueRefused("is empty")
    if len(value) > MAX_NAME_VALUE:
        raise ValueRefused(f"is {len(value)} characters long (at most {MAX_NAME_VALUE})")
    for i, ch in enumerate(value):
        if unicodedata.category(ch) in _REFUSED_CATEGORIES or (no_space and ch.isspace()):
            raise ValueRefused(f"{_show(value)} holds {_char(ch)} at offset {i}")
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean", float: "a number"}.get(type(value), type(value).__name__)


def _show(value: str) -> str:
    """A value quoted for a one-line message: escaped, at most 40 characters of it."""
    shown = repr(value[:40])
    return shown + ("..." if len(value) > 40 else "")


def _char(ch: str) -> str:
    if ch == "\0":
        return "a NUL byte"
    name = unicodedata.name(ch, "") or {"\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\t": "TAB"}.get(ch, "")
    cat = unicodedata.category(ch)
    what = "a space" if cat == "Zs" else "a format character" if cat == "Cf" else \
        "an unpaired surrogate" if cat == "Cs" else "a control character"
    return f"{what} (U+{ord(ch):04X}{' ' + name if name else ''})"


def _canon(value: Any, depth: int, max_depth: int, budget: list[int], path: set[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueRefused(f"value holds more than {MAX_ITEMS} items once aliases are expanded")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        budget[1] -= len(value)
        if budget[1] < 0:
            raise ValueRefused(f"value larger than {MAX_BYTES} characters once aliases are expanded")
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_DIGITS * 4:
            raise ValueRefused("integer too large")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueRefused(f"number {value!r} is not finite")
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        budget[1] -= len(raw)
        if budget[1] < 0:
            raise ValueRefused(f"value larger than {MAX_BYTES} characters once aliases are expanded")
        if text is not None:
            return text
        return {"data": base64.b64encode(raw).decode("ascii"), "encoding": "base64"}
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        if depth >= max_depth:
            raise ValueRefused(f"value nested deeper than {max_depth} levels")
        key = id(value)
        if key in path:
            raise ValueRefused("value refers to itself")
        path.add(key)
        try:
            if isinstance(value, dict):
                out = {}
                for k, v in value.items():
                    if callable(v):
                        raise ValueRefused("an operation inside a value")
                    out[k if isinstance(k, str) else _key(k)] = _canon(v, depth + 1, max_depth, budget, path)
                return out
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return [_canon(v, depth + 1, max_depth, budget, path) for v in items]
        finally:
            path.discard(key)
    if callable(value):
        raise ValueRefused("an operation inside a value")
    # Dates and other scalars YAML may produce: their text.
    text = str(value)
    budget[1] -= len(text)
    if budget[1] < 0:
        raise ValueRefused(f"value larger than {MAX_BYTES} characters once aliases are expanded")
    return text


def _key(k: Any) -> str:
    if isinstance(k, bool) or k is None:
        return {True: "true", False: "false", None: "null"}[k]
    if isinstance(k, (int, float, str)):
        return str(k)
    raise ValueRefused(f"mapping key of type {type(k).__name__}")


def at_rest(value: Any) -> Any:
    """A canonical value as stored: operations as '<operation>' (they only exist live)."""
    return OPERATION_TEXT if callable(value) else value


class SecretPolicy:
    """The one secrecy rule of a run, and the secret values learned so far (for scrubbing)."""

    def __init__(self, declared: Iterable[str] = ()) -> None:
        self.declared = frozenset(declared) | ALWAYS_SECRET
        self._values: tuple[str, ...] = ()
        self._passwords: tuple[str, ...] = ()  # password leaves of secret documents
        self._lock = threading.Lock()

    def is_secret(self, name: str) -> bool:
        return name in self.declared or default_is_secret(name)

    @property
    def any(self) -> bool:
        """True once some secret value is known (files of the run are then kept 0600)."""
        return bool(self._values)

    def learn(self, values: dict) -> None:
        """Remember the text of every secret among `values` (capability -> canonical value)."""
        found, passwords = [], []
        for name, value in values.items():
            if self.is_secret(name):
                found.extend(_texts(value))
                if not isinstance(value, str):
                    passwords.extend(_secret_leaves(value, False, _PASSWORD_KEY_PARTS))
        if found:
            with self._lock:
                merged = set(self._values) | {t for t in found if t}
                self._values = tuple(sorted(merged, key=len, reverse=True))
                if passwords:
                    pw = set(self._passwords) | {t for t in passwords if t}
                    self._passwords = tuple(sorted(pw, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """`text` with every known secret value replaced by '<secret>'."""
        values = self._values
        if not text or not values:
            return text
        for secret in values:
            if secret in text:
                text = text.replace(secret, SECRET_TEXT)
        return text

    def kept_at_rest(self, name: str, value: Any) -> tuple[Any, Any]:
        """(public, sensitive): capability `name`'s value as instance-data.json and the 0600
        instance-data-sensitive.json keep it. A secret is '<secret>' in the first; a password
        is '<secret>' in both (never kept at rest), and a secret document keeps no password
        it holds. An operation (a callable) is '<operation>' in both: it only exists live."""
        if callable(value):
            return at_rest(value), at_rest(value)
        if not self.is_secret(name):
            return value, value
        if "password" in name:
            return SECRET_TEXT, SECRET_TEXT
        return SECRET_TEXT, self.without_passwords(value)

    def without_passwords(self, value: Any) -> Any:
        """A secret value as `instance-data-sensitive.json` keeps it: every password a secret
        document holds (cloud-config's passwd, chpasswd...) replaced by '<secret>', in the
        documents and in texts that repeat them (the raw user-data). Nothing reads them
        back from there: the modules that set passwords have them live."""
        passwords = self._passwords
        if not passwords:
            return value
        if isinstance(value, str):
            for pw in passwords:
                if pw in value:
                    value = value.replace(pw, SECRET_TEXT)
            return value
        if isinstance(value, dict):
            return {k: (SECRET_TEXT if _secret_key(str(k), _PASSWORD_KEY_PARTS) and str(k) not in _NOT_SECRET_KEYS
                        and isinstance(v, str) else self.without_passwords(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.without_passwords(v) for v in value]
        return value

    def public(self, values: dict) -> dict:
        """`values` without secrets and operations: what a marker may keep."""
        return {k: v for k, v in values.items() if not self.is_secret(k) and not callable(v)}


# Keys whose values are secret inside a secret document (cloud-config's password,
# passwd, hashed_passwd, chpasswd, ssh_keys.*_private, tokens). Only these leaves are
# scrubbed: scrubbing every word of a cloud-config ("sh", "-c", a host name) would
# make every log unreadable and protect nothing.
_SECRET_KEY_PARTS = ("passw", "secret", "token", "private")
_PASSWORD_KEY_PARTS = ("passw",)
_NOT_SECRET_KEYS = frozenset({"name", "type"})  # chpasswd.users[].name / .type


def _secret_key(key: str, parts: tuple[str, ...] = _SECRET_KEY_PARTS) -> bool:
    key = key.lower()
    return any(part in key for part in parts)


def _texts(value: Any) -> list[str]:
    """The texts to scrub for one secret value: a text whole; in a document, its secret leaves."""
    if isinstance(value, str):
        return [value] if value else []
    return _secret_leaves(value, under_secret=False)


def _secret_leaves(value: Any, under_secret: bool, parts: tuple[str, ...] = _SECRET_KEY_PARTS) -> list[str]:
    if isinstance(value, str):
        if not under_secret or not value:
            return []
        # A multi-line secret (chpasswd's `list`) is also scrubbed line by line.
        lines = [ln.strip() for ln in value.splitlines() if ln.strip()]
        parts = [p.partition(":")[2] for p in lines if ":" in p]  # user:password lines
        return [value, *lines, *(p for p in parts if p)]
    if isinstance(value, dict):
        return [t for k, v in value.items() if str(k) not in _NOT_SECRET_KEYS
                for t in _secret_leaves(v, under_secret or _secret_key(str(k), parts), parts)]
    if isinstance(value, list):
        return [t for v in value for t in _secret_leaves(v, under_secret, parts)]
    return []
