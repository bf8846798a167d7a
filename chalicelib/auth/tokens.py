"""Registry bearer tokens: JWTs signed (HS256) and verified by the app itself.

The same service issues and checks the tokens, so a shared secret is enough and verification
needs no database read: signature, exp, nbf, iat, iss and aud are checked locally.
The key comes from configuration: BERTH_TOKEN_KEY (tests), BERTH_TOKEN_KEY_FILE (make run
generates one), or BERTH_TOKEN_KEY_PARAM, an SSM parameter read once per Lambda instance.
"""
from __future__ import annotations

import os
import secrets
import threading
import time
from typing import List, Optional

from chalicelib.auth.scopes import Grants, Scope, access_claim
from chalicelib.config import settings
from chalicelib.errors import RegistryError

ALGORITHM = "HS256"
_key: Optional[bytes] = None
_key_lock = threading.Lock()


def signing_key() -> bytes:
    global _key
    if _key is None:
        with _key_lock:
            if _key is None:
                _key = _load_key()
    return _key


def forget_key() -> None:
    """Drop the cached key (tests rotate it)."""
    global _key
    _key = None


def _load_key() -> bytes:
    raw = os.environ.get("BERTH_TOKEN_KEY")
    path = os.environ.get("BERTH_TOKEN_KEY_FILE")
    parameter = os.environ.get("BERTH_TOKEN_KEY_PARAM")
    if raw:
        key = raw.encode()
    elif path:
        with open(path, "rb") as f:
            key = f.read().strip()
    elif parameter:
        key = _read_ssm_parameter(parameter).encode()
    else:
        raise RegistryError("UNKNOWN", "the registry has no token signing key configured "
                            "(BERTH_TOKEN_KEY, BERTH_TOKEN_KEY_FILE or BERTH_TOKEN_KEY_PARAM)")
    if len(key) < 32:
        raise RegistryError("UNKNOWN", "the token signing key is shorter than 32 bytes")
    return key


def _read_ssm_parameter(name: str) -> str:
    import boto3
    cfg = settings()
    ssm = boto3.client("ssm", region_name=cfg.region, endpoint_url=cfg.endpoint)
    return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]


def generate_key() -> str:
    return secrets.token_hex(32)


def issue(subject: Optional[str], granted: List[Scope], now: Optional[float] = None,
          ttl: Optional[int] = None, session_version: Optional[int] = None) -> dict:
    """A token answer as the token-auth spec defines it (token and access_token are the same).
    `ttl`: seconds it is valid, if not the registry tokens' BERTH_TOKEN_TTL. `session_version`:
    for a console session, the user's session version (claim `sv`), checked on every call."""
    import jwt
    cfg = settings()
    now = int(now if now is not None else time.time())
    ttl = ttl if ttl is not None else cfg.token_ttl
    claims = {"iss": cfg.issuer, "aud": cfg.service, "sub": subject or "", "iat": now,
              "nbf": now - 5, "exp": now + ttl, "jti": secrets.token_hex(12),
              "access": access_claim(granted)}
    if session_version is not None:
        claims["sv"] = session_version
    token = jwt.encode(claims, signing_key(), algorithm=ALGORITHM)
    issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return {"token": token, "access_token": token, "expires_in": ttl,
            "issued_at": issued_at}


class InvalidToken(Exception):
    pass


def verify(token: str) -> Grants:
    """Check a bearer token and return what it grants; InvalidToken if it is not acceptable."""
    import jwt
    cfg = settings()
    try:
        claims = jwt.decode(token, signing_key(), algorithms=[ALGORITHM], audience=cfg.service,
                            issuer=cfg.issuer,
                            options={"require": ["exp", "nbf", "iat", "iss", "aud"]})
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    grants = Grants.from_claim(claims.get("sub"), claims.get("access"))
    version = claims.get("sv")
    grants.session_version = version if isinstance(version, int) else None
    return grants
