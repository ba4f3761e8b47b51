"""SHA-256 without loading OpenSSL.

`hashlib` loads OpenSSL's libcrypto when first imported: about 80 ms under emulation
(a boot's start-up pays it, docs/engine.md). The digests here are cache keys and file
names, not security, so CPython's own built-in SHA-256 serves; hashlib's only where
that is missing (a build without it).
"""
from __future__ import annotations

try:
    from _sha2 import sha256  # CPython 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:  # pragma: no cover - a Python built without its own SHA-256
        from hashlib import sha256

__all__ = ["sha256"]
