"""Password hashing (SHA-512 crypt) and the RSA PKCS#1 v1.5 encryption cloudbase-init uses to post a password.

Pure Python, so it works where the `crypt` module is gone (Python 3.13) and
no secret ever goes through a command line or a pipe.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import struct
import warnings

B64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ORDER = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
          (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
          (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41)]


def _b64(value: int, n: int) -> str:
    out = []
    for _ in range(n):
        out.append(B64[value & 0x3F])
        value >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return digest * (length // 64) + digest[: length % 64]


def sha512_crypt(password: str, salt: str | None = None, rounds: int = 5000) -> str:
    """The `$6$` crypt(3) hash of `password` (Ulrich Drepper's SHA-crypt), a random salt by default."""
    pw = password.encode("utf-8")
    if salt is None:
        salt = "".join(secrets.choice(B64) for _ in range(16))
    s = salt.encode("ascii")[:16]
    rounds = max(1000, min(999_999_999, rounds))
    b = hashlib.sha512(pw + s + pw).digest()
    a = hashlib.sha512(pw + s + _repeat(b, len(pw)))
    i = len(pw)
    while i:
        a.update(b if i & 1 else pw)
        i >>= 1
    c = a.digest()
    p = _repeat(hashlib.sha512(pw * len(pw)).digest(), len(pw))
    ss = _repeat(hashlib.sha512(s * (16 + c[0])).digest(), len(s))
    for r in range(rounds):
        h = hashlib.sha512(p if r & 1 else c)
        if r % 3:
            h.update(ss)
        if r % 7:
            h.update(p)
        h.update(c if r & 1 else p)
        c = h.digest()
    out = "".join(_b64((c[x] << 16) | (c[y] << 8) | c[z], 4) for x, y, z in _ORDER) + _b64(c[63], 2)
    head = "$6$" if rounds == 5000 else f"$6$rounds={rounds}$"
    return f"{head}{s.decode('ascii')}${out}"


def hash_password(password: str) -> str:
    """A SHA-512 crypt hash: the system's crypt(3) when Python still has it, else the pure version."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # deprecated in 3.11, gone in 3.13

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
        if hashed and hashed.startswith("$6$"):
            return hashed
    except (ImportError, OSError, AttributeError):
        pass
    return sha512_crypt(password)


def random_password(length: int = 20) -> str:
    """A random password of letters and digits (no characters a console mangles)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def parse_ssh_rsa(key: str) -> tuple[int, int]:
    """(e, n) of an `ssh-rsa AAAA... comment` line; raise ValueError if it is not one."""
    bits = key.split()
    idx = next((i for i, b in enumerate(bits) if b == "ssh-rsa"), None)
    if idx is None or idx + 1 >= len(bits):
        raise ValueError("not an ssh-rsa key")
    try:
        blob = base64.b64decode(bits[idx + 1], validate=True)
    except ValueError:
        raise ValueError("ssh-rsa key is not valid base64") from None
    fields = []
    pos = 0
    for _ in range(3):
        if pos + 4 > len(blob):
            raise ValueError("truncated ssh-rsa key")
        (n,) = struct.unpack(">I", blob[pos: pos + 4])
        pos += 4
        if pos + n > len(blob):
            raise ValueError("truncated ssh-rsa key")
        fields.append(blob[pos: pos + n])
        pos += n
    if fields[0] != b"ssh-rsa":
        raise ValueError("key blob is not ssh-rsa")
    e = int.from_bytes(fields[1], "big")
    n = int.from_bytes(fields[2], "big")
    if n.bit_length() < 1024 or e < 3:
        raise ValueError("ssh-rsa key too small")
    return e, n


def pkcs1v15_encrypt(message: bytes, e: int, n: int) -> bytes:
    """RSAES-PKCS1-v1_5 encryption (RFC 8017 §7.2.1) with nonzero random padding."""
    k = (n.bit_length() + 7) // 8
    if len(message) > k - 11:
        raise ValueError("message too long for the RSA key")
    ps = bytearray()
    while len(ps) < k - len(message) - 3:
        ps += bytes(b for b in secrets.token_bytes(k) if b)
    em = b"\x00\x02" + bytes(ps[: k - len(message) - 3]) + b"\x00" + message
    c = pow(int.from_bytes(em, "big"), e, n)
    return c.to_bytes(k, "big")


def encrypt_for_key(password: str, ssh_rsa_key: str) -> str:
    """Base64 of the password encrypted to an ssh-rsa public key, as cloudbase-init posts it."""
    e, n = parse_ssh_rsa(ssh_rsa_key)
    return base64.b64encode(pkcs1v15_encrypt(password.encode("utf-8"), e, n)).decode("ascii")
