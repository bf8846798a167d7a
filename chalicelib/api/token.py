"""The token endpoint (`realm` of the auth challenges): registry credentials in, a scoped JWT out.

GET with HTTP basic credentials (or none: anonymous) and `scope` parameters, as docker does, and
the OAuth2 password-grant POST form some clients use. The token grants the intersection of what
was asked and what the caller may do.
"""
from __future__ import annotations

import base64
import binascii
from typing import List, Optional, Tuple
from urllib.parse import parse_qs

from chalice import Response

from chalicelib import oci
from chalicelib.api.access import TOKEN_PATH
from chalicelib.api.router import PUBLIC, Request, json_response, route
from chalicelib.auth import accounts, tokens
from chalicelib.auth.scopes import API, PUSH, Scope, parse_scope
from chalicelib.config import settings
from chalicelib.errors import RegistryError


def _basic_credentials(request: Request) -> Optional[Tuple[str, str]]:
    value = request.header("authorization") or ""
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, sep, password = base64.b64decode(encoded.strip(), validate=True).decode(
            "utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise RegistryError("UNAUTHORIZED", "malformed basic credentials", status=400) from None
    if not sep:
        raise RegistryError("UNAUTHORIZED", "malformed basic credentials", status=400)
    return username, password


def _login(request: Request, credentials: Optional[Tuple[str, str]]):
    if credentials is None:
        return None
    username, password = credentials
    try:
        return accounts.authenticate(username, password, request.source_ip)
    except accounts.LoginThrottled as exc:
        raise RegistryError("TOOMANYREQUESTS", str(exc),
                            headers={"Retry-After": str(exc.retry_after)}) from None
    except accounts.AccountError as exc:
        raise RegistryError("UNAUTHORIZED", str(exc)) from None


API_TOKEN_TTL = 3600    # a console session: the management API checks rights on every call


def _grant(principal, requested: List[Scope]) -> List[Scope]:
    """What to put in the token. `berth:api:*` (management API, web console) goes to users who
    logged in with their password (not with a CI access token), and alone: such a token carries
    no repository grant, since it lives longer (API_TOKEN_TTL)."""
    if any((s.type, s.name) == API[:2] and "*" in s.actions for s in requested):
        if principal is not None and principal.token_scope is None:
            return [Scope(*API[:2], frozenset({"*"}))]
        return []
    granted = []
    for scope in requested:
        if scope.type == "registry":
            if scope.name == "catalog" and "*" in scope.actions:
                granted.append(Scope("registry", "catalog", frozenset({"*"})))
            continue
        if scope.type != "repository":      # e.g. berth:<anything but api>:…
            continue
        if not oci.is_valid_name(scope.name):
            continue
        if principal is not None and principal.admin and PUSH in scope.actions and \
                PUSH in accounts.permitted_actions(principal, scope.name):   # not a pull token
            _create_namespace_for_admin(principal.username, scope.name)
        allowed = scope.actions & accounts.permitted_actions(principal, scope.name)
        if allowed:
            granted.append(Scope("repository", scope.name, frozenset(allowed)))
    return granted


def _create_namespace_for_admin(admin: str, repository: str) -> None:
    """An admin may push anywhere; the namespace comes into being, owned by them, on first push."""
    namespace = oci.namespace_of(repository)
    if oci.is_valid_namespace(namespace) and accounts.get_namespace(namespace) is None:
        try:
            accounts.create_namespace(namespace, admin)
        except accounts.AccountError:
            pass   # created concurrently: fine


def _issue(principal, granted: List[Scope]) -> dict:
    subject = principal.username if principal else None
    if any((s.type, s.name) == API[:2] for s in granted):
        return console_session(principal)
    return tokens.issue(subject, granted)


def console_session(principal) -> dict:
    """A `berth:api:*` token for a user who logged in with their password: it carries the user's
    session version, so sign-out or a password change ends it before it expires."""
    return tokens.issue(principal.username, [Scope(*API[:2], frozenset({"*"}))],
                        ttl=API_TOKEN_TTL, session_version=principal.session_version)


def _check_service(service: Optional[str]) -> None:
    if service and service != settings().service:
        raise RegistryError("DENIED", f"this token service is {settings().service!r}, "
                            f"not {service[:100]!r}", status=400)


def _scopes(values: List[str]) -> List[Scope]:
    scopes = []
    for value in values:
        for raw in value.split(" "):          # OAuth2 joins scopes with spaces
            scope = parse_scope(raw) if raw else None
            if scope is not None:
                scopes.append(scope)
    return scopes


@route("GET", TOKEN_PATH, "/v2/_berth/token", PUBLIC)
def get_token(request: Request) -> Response:
    _check_service(request.arg("service"))
    credentials = _basic_credentials(request)
    account = request.arg("account")
    if account and credentials and account != credentials[0]:
        raise RegistryError("UNAUTHORIZED", "account does not match the credentials")
    principal = _login(request, credentials)
    granted = _grant(principal, _scopes(request.query.get("scope", [])))
    return json_response(_issue(principal, granted))


@route("POST", TOKEN_PATH, "/v2/_berth/token", PUBLIC)
def post_token(request: Request) -> Response:
    """OAuth2 form: grant_type=password with username and password."""
    try:
        form = parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        form = {}

    def field(name: str) -> Optional[str]:
        return form.get(name, [None])[-1]
    if field("grant_type") != "password":
        return json_response({"error": "unsupported_grant_type",
                              "error_description": "only grant_type=password is supported"},
                             status=400)
    _check_service(field("service"))
    if not field("username") or field("password") is None:
        return json_response({"error": "invalid_request",
                              "error_description": "username and password are required"},
                             status=400)
    principal = _login(request, (field("username"), field("password")))
    granted = _grant(principal, _scopes(form.get("scope", [])))
    answer = _issue(principal, granted)
    return json_response({"access_token": answer["access_token"],
                          "expires_in": answer["expires_in"], "issued_at": answer["issued_at"],
                          "scope": " ".join(str(s) for s in granted)})
