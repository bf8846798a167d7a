"""What every management API endpoint shares: authentication, errors, JSON in and out.

Authentication: a `berth:api:*` JWT (chalicelib/api/token.py grants it to users who logged in
with their password, for an hour), either as `Authorization: Bearer <JWT>` (API clients) or, for
the console, in the `berth_session` cookie set by POST session (chalicelib/api/manage/session.py):
HttpOnly (scripts, hence XSS, cannot read it), SameSite=Strict and Path=/v2/_berth/api/, and
honoured only with the `X-Berth-Console: 1` header, which a cross-site form or image cannot send
and a cross-site script cannot send without a CORS preflight this API never grants (CSRF).
The token only says who the caller is: every call then reads the user (not disabled, and the
token's session version `sv` equal to the user's: sign-out and a password change raise it) and
checks the caller's rights (admin flag, role in the namespace) in the database.

Every refusal is a 4xx with `{"error": {"code", "message", "field"}}`.
"""
from __future__ import annotations

import json
import re
from http.cookies import CookieError, SimpleCookie
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from chalice import Response

from chalicelib.api import access
from chalicelib.api.router import API, Request, route
from chalicelib.auth import accounts, tokens
from chalicelib.auth.scopes import DELETE, PULL, PUSH
from chalicelib.config import settings
from chalicelib.errors import RegistryError

PREFIX = "_berth/api/"
SESSION_COOKIE = "berth_session"
CONSOLE_HEADER = "x-berth-console"     # required with the cookie: see the module docstring
BODY_MAX = 64 * 1024

# (method, path template, summary, request schema name or None, query parameters) for OpenAPI
ENDPOINTS: List[dict] = []


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}

    def response(self) -> Response:
        return reply({"error": {"code": self.code, "message": self.message,
                                "field": self.field}}, self.status, self.headers)


def bad(message: str, field: Optional[str] = None, code: str = "INVALID") -> ApiError:
    return ApiError(400, code, message, field)


def not_found(message: str, field: Optional[str] = None) -> ApiError:
    return ApiError(404, "NOT_FOUND", message, field)


def forbidden(message: str, field: Optional[str] = None) -> ApiError:
    return ApiError(403, "FORBIDDEN", message, field)


def conflict(message: str, field: Optional[str] = None, code: str = "CONFLICT") -> ApiError:
    return ApiError(409, code, message, field)


def reply(doc: Any, status: int = 200, headers: Optional[Dict[str, str]] = None) -> Response:
    all_headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    all_headers.update(headers or {})
    return Response(body=json.dumps(doc, separators=(",", ":")), status_code=status,
                    headers=all_headers)


@dataclass(frozen=True)
class Caller:
    username: str
    admin: bool

    @property
    def principal(self) -> accounts.Principal:
        return accounts.Principal(self.username, self.admin)

    def actions_on(self, repository: str) -> frozenset:
        return accounts.permitted_actions(self.principal, repository)

    def role_in(self, namespace: str) -> Optional[str]:
        if self.admin:
            return "admin"
        return accounts.role_in(self.username, namespace)


def _unauthorized(request: Request, message: str, error: Optional[str] = None) -> ApiError:
    parts = [f'realm="{access.realm(request)}"', f'service="{settings().service}"',
             'scope="berth:api:*"']
    if error:
        parts.append(f'error="{error}"')
    return ApiError(401, "UNAUTHORIZED", message,
                    headers={"WWW-Authenticate": "Bearer " + ",".join(parts)})


def session_cookie(request: Request) -> Optional[str]:
    """The console's session token, if the request carries the cookie and the console header."""
    raw = request.header("cookie")
    if not raw or request.header(CONSOLE_HEADER) != "1":
        return None
    try:
        morsel = SimpleCookie(raw).get(SESSION_COOKIE)
    except CookieError:
        return None
    return morsel.value if morsel is not None and morsel.value else None


def presented_token(request: Request) -> Optional[str]:
    value = request.header("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return session_cookie(request)


def authenticate(request: Request) -> Caller:
    token = presented_token(request)
    if token is None:
        raise _unauthorized(request, "sign in: a bearer token with scope berth:api:* is required")
    try:
        grants = tokens.verify(token)
    except tokens.InvalidToken:
        raise _unauthorized(request, "the session has expired or the token is invalid; "
                            "sign in again", "invalid_token") from None
    request.grants = grants
    if not grants.api or not grants.subject:
        raise _unauthorized(request, "this token does not grant the management API "
                            "(scope berth:api:*)", "insufficient_scope")
    user = accounts.get_user(grants.subject)
    if user is None or user.disabled:
        raise _unauthorized(request, "this account no longer exists or is disabled",
                            "invalid_token")
    if grants.session_version != accounts.session_version(user):
        raise _unauthorized(request, "this session has ended (signed out, or the password "
                            "changed); sign in again", "invalid_token")
    return Caller(grants.subject, bool(user.admin))


def json_body(request: Request) -> dict:
    raw = request.body
    if len(raw) > BODY_MAX:
        raise ApiError(413, "TOO_LARGE", f"the request body is over {BODY_MAX} bytes")
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad("the request body is not valid JSON", code="INVALID_JSON") from None
    if not isinstance(doc, dict):
        raise bad("the request body must be a JSON object", code="INVALID_JSON")
    return doc


def text_field(doc: dict, name: str, *, required: bool = False, max_len: int = 1000,
               default: Optional[str] = None) -> Optional[str]:
    value = doc.get(name)
    if value is None:
        if required:
            raise bad(f"{name} is required", name, code="REQUIRED")
        return default
    if not isinstance(value, str):
        raise bad(f"{name} must be a string", name)
    if len(value) > max_len:
        raise bad(f"{name} is {len(value)} characters long; the limit is {max_len}", name,
                  code="TOO_LONG")
    return value


def bool_field(doc: dict, name: str) -> Optional[bool]:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad(f"{name} must be true or false", name)
    return value


def limit_arg(request: Request, default: int, maximum: int) -> int:
    raw = request.arg("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise bad(f"limit must be an integer from 1 to {maximum}", "limit")
    return int(raw)


SEARCH_MAX = 255


def search_arg(request: Request) -> str:
    """The `q` search string, lowercased (names are)."""
    search = (request.arg("q") or "").strip().lower()
    if len(search) > SEARCH_MAX:
        raise bad(f"the search string is longer than {SEARCH_MAX} characters", "q")
    return search


def cursor_arg(request: Request, valid: Callable[[str], bool]) -> Optional[str]:
    """The name a page continues after, from the `cursor` this API returned (None: first page)."""
    from chalicelib.storage import stats
    cursor = request.arg("cursor") or None
    if not cursor:
        return None
    after = stats.decode_cursor(cursor)
    if after is None or not valid(after):
        raise bad("this cursor is not one this API returned", "cursor")
    return after


def registry_host(request: Request) -> str:
    """The host:port clients use in image references (docker pull HOST/name:tag)."""
    base = access.base_url(request)
    return re.sub(r"^[a-z]+://", "", base).rstrip("/")


def endpoint(method: str, path: str, template: str, summary: str, *,
             body: Optional[str] = None, query: Optional[List[str]] = None,
             public: bool = False, status: int = 200) -> Callable:
    """Register a management API handler: `path` is a regex after /v2/_berth/api/, `template`
    its OpenAPI form. The handler takes (request, caller) — or (request) when `public` — and
    returns a Response or a JSON-able document."""
    ENDPOINTS.append({"method": method, "template": template, "summary": summary, "body": body,
                      "query": query or [], "public": public, "status": status})

    def register(handler: Callable) -> Callable:
        @route(method, PREFIX + path, "/v2/_berth/api/" + template, API)
        def serve(request: Request) -> Response:
            try:
                result = handler(request) if public else handler(request, authenticate(request))
            except ApiError as error:
                return error.response()
            except accounts.LoginThrottled as exc:
                return ApiError(429, "TOO_MANY_REQUESTS", str(exc),
                                headers={"Retry-After": str(exc.retry_after)}).response()
            except accounts.AccountError as exc:
                return bad(str(exc)).response()
            except RegistryError as exc:
                if exc.status >= 500:
                    raise
                return ApiError(exc.status, exc.code, exc.message).response()
            if isinstance(result, Response):
                return result
            return reply(result, status)
        return handler
    return register


__all__ = ["ApiError", "Caller", "DELETE", "PULL", "PUSH", "bad", "bool_field", "conflict",
           "cursor_arg", "endpoint", "forbidden", "json_body", "limit_arg", "not_found",
           "registry_host", "reply", "search_arg", "text_field"]
