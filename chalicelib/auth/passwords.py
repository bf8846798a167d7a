"""Password hashing with scrypt (stdlib, memory-hard): no native dependency to package for Lambda.

Stored form: scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>, so parameters can be raised later
without breaking existing hashes.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# n = 2^15, r = 8: 32 MiB and ~0.09 s per hash here. Every token request of a client carries the
# password again, so 2^17 (0.4 s) would slow every push and pull; login throttling and the
# 128-bit salt cover online guessing.
DEFAULT_LOG2_N = 15
DEFAULT_R = 8
DEFAULT_P = 1
_MAXMEM = 256 * 1024 * 1024


def hash_password(password: str, *, log2_n: int = DEFAULT_LOG2_N, r: int = DEFAULT_R,
                  p: int = DEFAULT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, log2_n, r, p)
    return "$".join(["scrypt", str(log2_n), str(r), str(p),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a stored hash; False for malformed hashes."""
    try:
        scheme, log2_n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = _scrypt(password, base64.b64decode(salt), int(log2_n), int(r), int(p))
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except (ValueError, TypeError):
        return False


# Clients send the password again with every token request (each push or pull), so a Lambda
# instance remembers, for a minute, that this exact password matched this exact stored hash: a
# keyed hash of both (the key is random per process, so nothing here can be reversed or reused),
# never the password. A password change alters the stored hash and so misses the cache at once.
_VERIFIED_TTL = 60.0
_VERIFIED_MAX = 1024
_verified: dict = {}
_verified_key = secrets.token_bytes(32)


def verify_password_cached(password: str, stored: str) -> bool:
    """verify_password, without repeating the KDF for a match seen in the last minute."""
    import time
    token = hmac.new(_verified_key, password.encode("utf-8") + b"\0" + stored.encode(),
                     hashlib.sha256).digest()
    now = time.monotonic()
    if _verified.get(token, 0.0) > now:
        return True
    if not verify_password(password, stored):
        return False
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[token] = now + _VERIFIED_TTL
    return True


# Verified against when the user does not exist, so that the answer takes as long either way.
_DUMMY_HASH = None


def burn_time_like_a_verification(password: str) -> None:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("not a real password")
    verify_password(password, _DUMMY_HASH)


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log2_n, r=r, p=p,
                          maxmem=_MAXMEM, dklen=32)
