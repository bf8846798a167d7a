"""Namespaces, users (admin), the caller's own account and access tokens, in the management API."""
from __future__ import annotations

from typing import List, Optional

from pynamodb.exceptions import DoesNotExist
from pynamodb.transactions import TransactWrite

from chalicelib import oci
from chalicelib.api.manage.core import (Caller, bad, bool_field, conflict, cursor_arg, endpoint,
                                        forbidden, json_body, limit_arg, not_found, text_field)
from chalicelib.api.router import Request
from chalicelib.auth import accounts
from chalicelib.storage import metadata, stats
from chalicelib.storage.models import MembershipItem, NamespaceItem, UserItem, ns_pk, user_pk

NAMESPACES_PER_USER = 5      # namespaces a non-admin user may own


def _time(value) -> Optional[float]:
    return float(value) if value is not None else None


# ---------------------------------------------------------------- the caller

@endpoint("GET", r"me", "me", "Who is signed in: user name, admin flag, namespaces with roles")
def me(request: Request, caller: Caller) -> dict:
    return {"username": caller.username, "admin": caller.admin,
            "namespaces": _my_namespaces(caller)}


def _my_namespaces(caller: Caller) -> List[dict]:
    memberships = list(MembershipItem.query(user_pk(caller.username),
                                            MembershipItem.sk.startswith("ns#")))
    keys = [(ns_pk(m.sk[3:]), "ns") for m in memberships]
    items = stats.batch_get(NamespaceItem, keys) if keys else {}
    result = []
    for m in memberships:
        item = items.get((ns_pk(m.sk[3:]), "ns"))
        if item is None:
            continue
        result.append({"name": m.sk[3:], "role": m.role, "owner": item.owner,
                       "public": bool(item.public), "created": _time(item.created)})
    return sorted(result, key=lambda n: n["name"])


@endpoint("PUT", r"me/password", "me/password",
          "Change your password (the current one is required)", body="PasswordChange")
def change_password(request: Request, caller: Caller) -> dict:
    doc = json_body(request)
    current = text_field(doc, "current_password", required=True, max_len=1024)
    new = text_field(doc, "new_password", required=True, max_len=1024)
    if len(new) < accounts.PASSWORD_MIN:
        raise bad(f"the new password must have at least {accounts.PASSWORD_MIN} characters",
                  "new_password", code="TOO_SHORT")
    _confirm_password(request, caller, current, "current_password")
    accounts.set_password(caller.username, new)      # also ends every console session
    return {"username": caller.username, "password_changed": True, "signed_out": True}


def _confirm_password(request: Request, caller: Caller, password: str, field: str) -> None:
    """Ask for the password again before an operation a stolen session must not do."""
    if password.startswith(accounts.TOKEN_PREFIX):
        raise bad("give your password, not an access token", field)
    try:
        accounts.authenticate(caller.username, password, request.source_ip)
    except accounts.LoginThrottled:
        raise
    except accounts.AccountError:
        raise forbidden("the password is not right", field) from None


# ---------------------------------------------------------------- access tokens

def _token_json(item) -> dict:
    return {"id": item.sk[len("token#"):], "name": item.name, "scope": item.scope,
            "created": _time(item.created), "last_used": _time(item.last_used),
            "revoked": bool(item.revoked)}


@endpoint("GET", r"me/tokens", "me/tokens", "Your access tokens (never their secrets)")
def list_tokens(request: Request, caller: Caller) -> dict:
    items = sorted(accounts.list_access_tokens(caller.username), key=lambda t: t.created)
    return {"tokens": [_token_json(t) for t in items]}


@endpoint("POST", r"me/tokens", "me/tokens",
          "Create an access token (pull or push) to use as the password of docker login; "
          "its secret is in this answer only", body="TokenCreate", status=201)
def create_token(request: Request, caller: Caller) -> dict:
    doc = json_body(request)
    name = text_field(doc, "name", required=True, max_len=100).strip()
    if not name:
        raise bad("a token needs a name", "name", code="REQUIRED")
    scope = text_field(doc, "scope", default="pull", max_len=10)
    if scope not in accounts.TOKEN_SCOPES:
        raise bad("scope is pull or push", "scope")
    password = text_field(doc, "password", max_len=1024)
    if not password:
        raise bad("give your password to create an access token", "password",
                  code="REQUIRED")
    _confirm_password(request, caller, password, "password")
    if any(t.name == name and not t.revoked for t in accounts.list_access_tokens(caller.username)):
        raise conflict(f"you already have a token named {name!r}", "name", code="ALREADY_EXISTS")
    secret = accounts.create_access_token(caller.username, name, scope)
    created = [t for t in accounts.list_access_tokens(caller.username)
               if secret.startswith(accounts.TOKEN_PREFIX + t.sk[len("token#"):] + "_")]
    answer = _token_json(created[0]) if created else {"name": name, "scope": scope}
    answer["secret"] = secret
    return answer


@endpoint("DELETE", r"me/tokens/(?P<token_id>[0-9a-f]{16})", "me/tokens/{id}",
          "Revoke one of your access tokens")
def revoke_token(request: Request, caller: Caller) -> dict:
    token_id = request.params["token_id"]
    from chalicelib.storage.models import AccessTokenItem
    try:
        item = AccessTokenItem.get(user_pk(caller.username), f"token#{token_id}")
    except DoesNotExist:
        raise not_found("you have no such token", "id") from None
    if item.revoked:
        raise conflict(f"token {item.name!r} is already revoked", "id")
    accounts.revoke_access_token(caller.username, item.name)
    return {"id": token_id, "name": item.name, "revoked": True}


# ---------------------------------------------------------------- namespaces

@endpoint("GET", r"namespaces", "namespaces", "Your namespaces, with your role in each")
def list_namespaces(request: Request, caller: Caller) -> dict:
    return {"namespaces": _my_namespaces(caller)}


@endpoint("POST", r"namespaces", "namespaces",
          "Activate a namespace: it must be free; you become its owner", body="NamespaceCreate",
          status=201)
def create_namespace(request: Request, caller: Caller) -> dict:
    doc = json_body(request)
    name = text_field(doc, "name", required=True, max_len=oci.NAMESPACE_MAX + 1)
    public = bool_field(doc, "public") or False
    if not oci.is_valid_namespace(name):
        raise bad(accounts.NAMESPACE_RULE, "name", code="NAME_INVALID")
    if not caller.admin:
        owned = [n for n in _my_namespaces(caller) if n["role"] == "owner"]
        if len(owned) >= NAMESPACES_PER_USER:
            raise forbidden(f"you own {len(owned)} namespaces already; the limit is "
                            f"{NAMESPACES_PER_USER}", "name")
    if accounts.get_namespace(name) is not None:
        raise conflict(f"namespace {name!r} is already taken", "name", code="ALREADY_EXISTS")
    try:
        item = accounts.create_namespace(name, caller.username, public=public)
    except accounts.AccountError as exc:
        raise conflict(str(exc), "name", code="ALREADY_EXISTS") from None
    return {"name": name, "role": "owner", "owner": caller.username, "public": public,
            "created": _time(item.created)}


@endpoint("DELETE", r"namespaces/(?P<namespace>[^/]+)", "namespaces/{namespace}",
          "Delete a namespace you own; only when it has no repository left")
def delete_namespace(request: Request, caller: Caller) -> dict:
    name = request.params["namespace"]
    item = accounts.get_namespace(name)
    role = caller.role_in(name) if item is not None else None
    if item is None or (role is None and not caller.admin):
        raise not_found(f"no namespace {name[:100]!r}", "namespace")
    if role not in ("owner", "admin"):
        raise forbidden(f"only an owner may delete namespace {name!r}", "namespace")
    repos, _ = stats.repository_page(f"{name}/", 1, None)
    if repos:
        raise conflict(f"namespace {name!r} still has repositories (e.g. {repos[0].sk}): "
                       "delete them first", "namespace", code="NOT_EMPTY")
    members = list(MembershipItem.query(ns_pk(name), MembershipItem.sk.startswith("member#")))
    with TransactWrite(connection=metadata.connection()) as tx:
        tx.delete(item)
        for member in members[:49]:
            tx.delete(member)
            tx.delete(MembershipItem(user_pk(member.sk[len("member#"):]), f"ns#{name}"))
    for member in members[49:]:
        member.delete()
        MembershipItem(user_pk(member.sk[len("member#"):]), f"ns#{name}").delete()
    return {"name": name, "deleted": True}


# ---------------------------------------------------------------- users (admin)

def _require_admin(caller: Caller) -> None:
    if not caller.admin:
        raise forbidden("only an administrator may manage users")


def _user_json(item: UserItem) -> dict:
    return {"username": item.pk[len("user#"):], "admin": bool(item.admin),
            "disabled": bool(item.disabled), "created": _time(item.created)}


@endpoint("GET", r"users", "users",
          "Administrators: list users in name order (paginated; one Query and one BatchGet)",
          query=["limit", "cursor"])
def list_users(request: Request, caller: Caller) -> dict:
    _require_admin(caller)
    limit = limit_arg(request, 100, 1000)
    after = cursor_arg(request, oci.is_valid_username)
    users, more = accounts.list_users(limit, after)
    next_cursor = stats.encode_cursor(users[-1].pk[len("user#"):]) if more and users else None
    return {"users": [_user_json(u) for u in users], "next_cursor": next_cursor}


@endpoint("POST", r"users", "users", "Administrators: create a user", body="UserCreate",
          status=201)
def create_user(request: Request, caller: Caller) -> dict:
    _require_admin(caller)
    doc = json_body(request)
    username = text_field(doc, "username", required=True, max_len=64)
    password = text_field(doc, "password", required=True, max_len=1024)
    admin = bool_field(doc, "admin") or False
    if not oci.is_valid_username(username):
        raise bad("a user name is 1-64 characters of a-z, 0-9, '.', '_' and '-', starting and "
                  "ending with a letter or digit", "username", code="NAME_INVALID")
    if len(password) < accounts.PASSWORD_MIN:
        raise bad(f"the password must have at least {accounts.PASSWORD_MIN} characters",
                  "password", code="TOO_SHORT")
    if accounts.get_user(username) is not None:
        raise conflict(f"user {username!r} already exists", "username", code="ALREADY_EXISTS")
    return _user_json(accounts.create_user(username, password, admin=admin))


@endpoint("PATCH", r"users/(?P<username>[^/]+)", "users/{username}",
          "Administrators: disable or enable a user, grant or take the admin flag",
          body="UserUpdate")
def update_user(request: Request, caller: Caller) -> dict:
    _require_admin(caller)
    username = request.params["username"]
    doc = json_body(request)
    disabled, admin = bool_field(doc, "disabled"), bool_field(doc, "admin")
    if disabled is None and admin is None:
        raise bad("give disabled and/or admin", "disabled")
    if accounts.get_user(username) is None:
        raise not_found(f"no user {username[:64]!r}", "username")
    if username == caller.username and (disabled or admin is False):
        raise bad("you cannot disable yourself or drop your own admin flag", "disabled")
    accounts.set_user_flags(username, disabled=disabled, admin=admin)
    return _user_json(accounts.get_user(username))
