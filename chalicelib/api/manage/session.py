"""Console sessions (sign in, sign out) and self-service sign-up, in the management API.

A session is the same one-hour `berth:api:*` token the token endpoint gives, set as an HttpOnly,
SameSite=Strict cookie limited to the API's path, so it survives reloads and new tabs without any
script being able to read it (see core.py for the CSRF side). Signing out raises the user's
session version, which ends every console session of the user at once.

Sign-up follows BERTH_SIGNUP: `closed` (the default: admins create users), `invite` (a single-use
code from an administrator) or `open`. It creates the user and their first namespace together;
an address gets at most accounts.SIGNUP_ADDRESS_LIMIT attempts per throttling window.
"""
from __future__ import annotations

from chalice import Response

from chalicelib.api import access
from chalicelib.api.manage.core import (SESSION_COOKIE, ApiError, Caller, bad, endpoint,
                                        forbidden, json_body, reply, text_field)
from chalicelib.api.router import Request
from chalicelib.api.token import console_session
from chalicelib.auth import accounts
from chalicelib.config import settings

COOKIE_PATH = "/v2/_berth/api/"


def _cookie(request: Request, value: str, max_age: int) -> str:
    secure = "; Secure" if access.base_url(request).startswith("https://") else ""
    return (f"{SESSION_COOKIE}={value}; Max-Age={max_age}; Path={COOKIE_PATH}; HttpOnly; "
            f"SameSite=Strict{secure}")


def _signed_in(request: Request, principal: accounts.Principal, status: int = 200) -> Response:
    answer = console_session(principal)
    return reply({"username": principal.username, "admin": principal.admin,
                  "expires_in": answer["expires_in"]}, status,
                 {"Set-Cookie": _cookie(request, answer["token"], answer["expires_in"])})


def password_login(request: Request, username: str, password: str,
                   field: str = "password") -> accounts.Principal:
    """Check a user's password (never an access token), with the login throttling."""
    if password.startswith(accounts.TOKEN_PREFIX):
        raise bad("give your password: access tokens are for docker login only", field)
    try:
        return accounts.authenticate(username, password, request.source_ip)
    except accounts.LoginThrottled:
        raise
    except accounts.AccountError:
        raise ApiError(401, "UNAUTHORIZED", "incorrect user name or password, or the account "
                       "is disabled", field) from None


@endpoint("POST", r"session", "session",
          "Sign in to the console with user name and password: sets the HttpOnly session "
          "cookie (one hour; send X-Berth-Console: 1 with it)", body="SignIn", public=True)
def sign_in(request: Request) -> Response:
    doc = json_body(request)
    username = (text_field(doc, "username", required=True, max_len=64) or "").strip()
    password = text_field(doc, "password", required=True, max_len=1024)
    return _signed_in(request, password_login(request, username, password))


@endpoint("DELETE", r"session", "session",
          "Sign out: ends every console session of the caller and clears the cookie")
def sign_out(request: Request, caller: Caller) -> Response:
    accounts.end_sessions(caller.username)
    return reply({"signed_out": True}, 200, {"Set-Cookie": _cookie(request, "", 0)})


def signup_mode() -> str:
    mode = settings().signup
    return mode if mode in accounts.SIGNUP_MODES else "closed"


@endpoint("GET", r"signup", "signup",
          "How a newcomer gets an account: mode closed, invite or open (BERTH_SIGNUP)",
          public=True)
def signup_info(request: Request) -> dict:
    return {"mode": signup_mode()}


@endpoint("POST", r"signup", "signup",
          "Self-service sign-up and activation in one step: user name, password, namespace "
          "(and invite when BERTH_SIGNUP=invite); signs the new user in", body="SignUp",
          public=True, status=201)
def sign_up(request: Request) -> Response:
    mode = signup_mode()
    if mode == "closed":
        raise forbidden("sign-up is closed on this registry: ask an administrator for an "
                        "account", "username")
    accounts.count_signup_attempt(request.source_ip)
    doc = json_body(request)
    username = (text_field(doc, "username", required=True, max_len=64) or "").strip()
    password = text_field(doc, "password", required=True, max_len=1024)
    namespace = (text_field(doc, "namespace", required=True, max_len=65) or "").strip()
    invite = (text_field(doc, "invite", max_len=100) or "").strip() or None
    if mode == "invite" and not invite:
        raise bad("this registry signs up by invitation: give the code an administrator "
                  "sent you", "invite", code="REQUIRED")
    if len(password) < accounts.PASSWORD_MIN:
        raise bad(f"the password must have at least {accounts.PASSWORD_MIN} characters",
                  "password", code="TOO_SHORT")
    try:
        accounts.sign_up(username, password, namespace, invite if mode == "invite" else None)
    except accounts.AccountError as exc:
        text = str(exc)
        field = ("invite" if "invitation" in text else "namespace" if "namespace" in text
                 else "username")
        code = "ALREADY_EXISTS" if "taken" in text else "INVALID"
        raise ApiError(409 if code == "ALREADY_EXISTS" else 400, code, text, field) from None
    return _signed_in(request, accounts.Principal(username, False, None, 0), 201)


@endpoint("POST", r"invites", "invites",
          "Administrators: a single-use sign-up invitation code, valid 7 days (shown once)",
          status=201)
def create_invite(request: Request, caller: Caller) -> dict:
    if not caller.admin:
        raise forbidden("only an administrator may invite")
    code, expires = accounts.create_invite(caller.username)
    return {"code": code, "expires": expires, "signup": signup_mode()}
