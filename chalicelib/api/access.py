"""Authorization of every /v2/ request: a valid bearer token that grants the route's action.

Verifying a token needs no database read (chalicelib/auth/tokens.py). A request without an
acceptable token gets 401 and a `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge,
which sends clients to the token endpoint, as distribution's token-auth spec describes.
"""
from __future__ import annotations

from typing import Optional

from chalicelib.api.router import API, CATALOG, PUBLIC, SIGNED_IN, Request, Route
from chalicelib.auth import refusals, tokens
from chalicelib.auth.scopes import DELETE, PULL, PUSH
from chalicelib.config import settings
from chalicelib.errors import RegistryError
from chalicelib.storage import mirrors

TOKEN_PATH = "_berth/token"


def base_url(request: Request) -> str:
    """The URL clients reach the registry at (for the token realm)."""
    configured = settings().public_url
    if configured:
        return configured
    proto = (request.header("x-forwarded-proto") or "http").split(",")[0].strip()
    host = request.header("host") or "localhost"
    return f"{proto}://{host}"


def realm(request: Request) -> str:
    return f"{base_url(request)}/v2/{TOKEN_PATH}"


def _scope_for(route: Route, request: Request) -> Optional[str]:
    if route.action == CATALOG:
        return "registry:catalog:*"
    if route.action in (PUBLIC, SIGNED_IN, API):
        return None
    actions = "pull,push" if route.action == PUSH else route.action   # docker asks pull,push
    return f"repository:{request.params['name']}:{actions}"


def challenge(request: Request, route: Route, error: Optional[str]) -> RegistryError:
    scope = _scope_for(route, request)
    parts = [f'realm="{realm(request)}"', f'service="{settings().service}"']
    if scope:
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    if error == "insufficient_scope":
        why = _refusal(request, route)
        if why is not None:   # docker shows error_description; HEAD answers have no body
            parts.append(f'error_description="{_quotable(why.message)}"')
        header = {"WWW-Authenticate": "Bearer " + ",".join(parts)}
        return RegistryError(why.code if why else "DENIED", why.message if why else None,
                             status=401, headers=header, detail={"scope": scope})
    header = {"WWW-Authenticate": "Bearer " + ",".join(parts)}
    return RegistryError("UNAUTHORIZED", "authentication required", headers=header,
                         detail={"scope": scope} if scope else None)


def _refusal(request: Request, route: Route) -> Optional[refusals.Refusal]:
    """Why a repository action was refused, worded for the user (chalicelib/auth/refusals.py)."""
    if route.action not in (PULL, PUSH, DELETE) or request.grants is None:
        return None
    return refusals.explain(request.grants.subject, request.params["name"], route.action,
                            base_url(request))


def _quotable(text: str) -> str:
    """`text` fit for a quoted-string header parameter: it may echo the request's Host and path."""
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\')


def _bearer_token(request: Request) -> Optional[str]:
    value = request.header("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authorize(request: Request, route: Route) -> None:
    """Raise the 401 a client must see unless its token allows this route on this repository."""
    if route.action in (PUBLIC, API):   # API: chalicelib/api/manage answers in its own shape
        return
    if route.action in (PUSH, DELETE):
        refuse_writes_to_mirror(request.params["name"])
    token = _bearer_token(request)
    if token is None:
        raise challenge(request, route, None)
    try:
        request.grants = tokens.verify(token)
    except tokens.InvalidToken:
        raise challenge(request, route, "invalid_token") from None
    if route.action in (SIGNED_IN, CATALOG):
        return
    if not request.grants.allows(request.params["name"], route.action):
        raise challenge(request, route, "insufficient_scope")


def refuse_writes_to_mirror(repository: str) -> None:
    """A mirrored namespace holds the upstream's images only: no push, no delete, for anyone."""
    rule = mirrors.rule_for(repository)
    if rule is not None:
        raise RegistryError("DENIED", f"{rule.namespace}/ is a mirror of {rule.upstream}: "
                            "pushes and deletes are refused here; push to another namespace",
                            status=403, detail={"mirror": rule.namespace})


def may_pull(request: Request, repository: str) -> bool:
    """For cross-repository mounts: the caller's token must also grant pull on the source."""
    return request.grants is not None and request.grants.allows(repository, PULL)
