"""The registry routes' Lambda authorizer (TOKEN type): API Gateway calls it before the app.

Its only job is to let API Gateway send the Bearer challenge itself (chalicelib/frontdoor.py):
a token that does not verify (signature, expiry, issuer, audience: no database read) is refused
with "Unauthorized", which API Gateway turns into its UNAUTHORIZED Gateway Response. A verified
token is allowed on every route; the app still checks, per request, that the token grants the
route's action on the repository (chalicelib/api/access.py), as API Gateway caches this answer
per token for AUTHORIZER_TTL_SECONDS.
"""
from __future__ import annotations

from typing import Any

from chalicelib.auth import tokens

# The exact error message API Gateway maps to a 401 (any other failure is a 500).
UNAUTHORIZED = "Unauthorized"


class Unauthorized(Exception):
    def __init__(self) -> None:
        super().__init__(UNAUTHORIZED)


def check_bearer(authorization: str) -> dict[str, str]:
    """Verify `Bearer <jwt>`; return the authorizer context, or raise Unauthorized."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    try:
        grants = tokens.verify(token.strip())
    except tokens.InvalidToken:
        raise Unauthorized() from None
    return {"subject": grants.subject or ""}


def authorize(auth_request: Any):
    """The Chalice built-in authorizer body: AuthRequest in, AuthResponse out."""
    from chalice import AuthResponse
    context = check_bearer(auth_request.token)
    return AuthResponse(routes=["*"], principal_id=context["subject"] or "anonymous", context=context)
