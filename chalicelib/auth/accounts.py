"""Users, namespaces, members, access tokens and login throttling, over the DynamoDB table."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Tuple

from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import oci
from chalicelib.auth import passwords
from chalicelib.auth.scopes import DELETE, PULL, PUSH
from chalicelib.storage import mirrors
from chalicelib.storage.metadata import connection
from chalicelib.storage.models import (REPOS_PK, USERS_PK, AccessTokenItem, InviteItem,
                                       LoginFailureItem, MembershipItem, NamespaceItem, RepoItem,
                                       UserIndexItem, UserItem, ns_pk, user_pk)

ROLES = {"owner": frozenset({PULL, PUSH, DELETE}), "push": frozenset({PULL, PUSH, DELETE}),
         "pull": frozenset({PULL})}
TOKEN_SCOPES = {"pull": frozenset({PULL}), "push": frozenset({PULL, PUSH})}
TOKEN_PREFIX = "berth_"
# Brute force: at most this many failed logins per user / per address in one window.
THROTTLE_WINDOW = 15 * 60
USER_FAILURE_LIMIT = 5
ADDRESS_FAILURE_LIMIT = 20
PASSWORD_MIN = 8
SIGNUP_MODES = ("closed", "invite", "open")
SIGNUP_ADDRESS_LIMIT = 20      # sign-up attempts per address in one throttling window
INVITE_TTL = 7 * 24 * 3600


class AccountError(Exception):
    """A refused account operation, with a message fit for the user."""


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user, possibly limited by the access token it logged in with."""
    username: str
    admin: bool
    token_scope: Optional[FrozenSet[str]] = None
    session_version: int = 0


def session_version(user: UserItem) -> int:
    """The version a console session of this user must carry to be valid."""
    return int(user.session_version or 0)


# ---------------------------------------------------------------- users

def _check_password_strength(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise AccountError(f"the password must have at least {PASSWORD_MIN} characters")


def get_user(username: str) -> Optional[UserItem]:
    if not oci.is_valid_username(username):
        return None
    try:
        return UserItem.get(user_pk(username), "user")
    except DoesNotExist:
        return None


def create_user(username: str, password: str, *, admin: bool = False,
                log2_n: int = passwords.DEFAULT_LOG2_N) -> UserItem:
    if not oci.is_valid_username(username):
        raise AccountError(f"invalid user name {username!r}: use 1-64 characters of a-z, 0-9, "
                           "'.', '_' and '-', starting and ending with a letter or digit")
    _check_password_strength(password)
    user = _new_user(username, password, admin, log2_n)
    try:
        with TransactWrite(connection=connection()) as tx:
            _save_user(tx, user)
    except TransactWriteError as exc:
        if "ConditionalCheckFailed" in str(exc.cancellation_reasons or exc):
            raise AccountError(f"user {username!r} already exists") from None
        raise
    return user


def _new_user(username: str, password: str, admin: bool, log2_n: int) -> UserItem:
    return UserItem(user_pk(username), "user", created=time.time(), admin=admin, disabled=False,
                    session_version=0,
                    password_hash=passwords.hash_password(password, log2_n=log2_n))


def _save_user(tx: TransactWrite, user: UserItem) -> None:
    tx.save(user, condition=UserItem.pk.does_not_exist())
    tx.save(UserIndexItem(USERS_PK, user.pk[len("user#"):]))


# ---------------------------------------------------------------- self-service sign-up

def create_invite(admin: str, now: Optional[float] = None) -> Tuple[str, float]:
    """A single-use sign-up code (BERTH_SIGNUP=invite), stored as its SHA-256 only; shown once."""
    now = time.time() if now is None else now
    code = secrets.token_urlsafe(18)
    expires = now + INVITE_TTL
    InviteItem(f"invite#{_token_hash(code)}", "invite", created_by=admin, created=now,
               expires=int(expires)).save()
    return code, expires


def count_signup_attempt(address: Optional[str]) -> None:
    """Bound self-service sign-ups per address (each costs a password hash and creates an
    account): LoginThrottled past SIGNUP_ADDRESS_LIMIT attempts in one window."""
    if address:
        _refuse_if_throttled("signup", address, SIGNUP_ADDRESS_LIMIT)
        _record_failure("signup", address)


def sign_up(username: str, password: str, namespace: str, invite: Optional[str] = None,
            log2_n: int = passwords.DEFAULT_LOG2_N) -> UserItem:
    """Create a user and its first namespace in one transaction (activation by a newcomer), using
    up `invite` if given: nothing is written unless all of it is."""
    if not oci.is_valid_username(username):
        raise AccountError("a user name is 1-64 characters of a-z, 0-9, '.', '_' and '-', "
                           "starting and ending with a letter or digit")
    if not oci.is_valid_namespace(namespace):
        raise AccountError(NAMESPACE_RULE)
    _check_password_strength(password)
    user = _new_user(username, password, False, log2_n)
    item = NamespaceItem(ns_pk(namespace), "ns", owner=username, created=time.time(),
                         public=False)
    try:
        with TransactWrite(connection=connection()) as tx:
            _save_user(tx, user)
            tx.save(item, condition=NamespaceItem.pk.does_not_exist())
            _save_membership(tx, namespace, username, "owner")
            if invite is not None:
                tx.update(InviteItem(f"invite#{_token_hash(invite)}", "invite"),
                          actions=[InviteItem.used_by.set(username)],
                          condition=InviteItem.pk.exists() & InviteItem.used_by.does_not_exist()
                          & (InviteItem.expires > int(time.time())))
    except TransactWriteError as exc:
        reasons = [getattr(r, "code", None) for r in (exc.cancellation_reasons or [])]
        if "ConditionalCheckFailed" in reasons[:1]:
            raise AccountError(f"user name {username!r} is already taken") from None
        if "ConditionalCheckFailed" in reasons[2:3]:
            raise AccountError(f"namespace {namespace!r} is already taken") from None
        if reasons[-1:] == ["ConditionalCheckFailed"] and invite is not None:
            raise AccountError("this invitation is not valid: unknown, used or expired") from None
        raise
    return user


def list_users(limit: int, after: Optional[str] = None) -> Tuple[List[UserItem], bool]:
    """Up to `limit` users in name order after `after`, and whether more follow: one Query of
    the index partition and one BatchGet, whatever the table holds."""
    condition = UserIndexItem.sk > after if after else None
    names = [i.sk for i in UserIndexItem.query(USERS_PK, condition, limit=limit + 1,
                                               attributes_to_get=["sk"])]
    more = len(names) > limit
    names = names[:limit]
    found = {u.pk: u for u in UserItem.batch_get([(user_pk(n), "user") for n in names])}
    return [found[user_pk(n)] for n in names if user_pk(n) in found], more


def set_password(username: str, password: str,
                 log2_n: int = passwords.DEFAULT_LOG2_N) -> None:
    _check_password_strength(password)
    user = _existing_user(username)
    user.update(actions=[UserItem.password_hash.set(
        passwords.hash_password(password, log2_n=log2_n)), UserItem.session_version.add(1)])


def end_sessions(username: str) -> None:
    """Sign out: every console session of the user stops working at its next call."""
    _existing_user(username).update(actions=[UserItem.session_version.add(1)])


def set_user_flags(username: str, *, disabled: Optional[bool] = None,
                   admin: Optional[bool] = None) -> None:
    user = _existing_user(username)
    actions = []
    if disabled is not None:
        actions.append(UserItem.disabled.set(disabled))
    if admin is not None:
        actions.append(UserItem.admin.set(admin))
    if actions:
        user.update(actions=actions)


def ensure_user(username: str, password: str, *, admin: bool) -> bool:
    """Create the user, or reset its password and admin flag; True if it was created."""
    if get_user(username) is None:
        create_user(username, password, admin=admin)
        return True
    set_password(username, password)
    set_user_flags(username, admin=admin, disabled=False)
    return False


def _existing_user(username: str) -> UserItem:
    user = get_user(username)
    if user is None:
        raise AccountError(f"no user {username!r}")
    return user


# ---------------------------------------------------------------- namespaces and members

def get_namespace(namespace: str) -> Optional[NamespaceItem]:
    if not oci.is_valid_namespace(namespace):
        return None
    try:
        return NamespaceItem.get(ns_pk(namespace), "ns")
    except DoesNotExist:
        return None


NAMESPACE_RULE = ("a namespace is lowercase letters (a-z) and digits, optionally separated by "
                  "'.', '_', '__' or '-', at most 64 characters")


def create_namespace(namespace: str, owner: str, *, public: bool = False) -> NamespaceItem:
    """Create a namespace owned by `owner` (activation); namespaces are globally unique."""
    if not oci.is_valid_namespace(namespace):
        raise AccountError(f"invalid namespace {namespace!r}: {NAMESPACE_RULE}")
    _existing_user(owner)
    item = NamespaceItem(ns_pk(namespace), "ns", owner=owner, created=time.time(), public=public)
    try:
        with TransactWrite(connection=connection()) as tx:
            tx.save(item, condition=NamespaceItem.pk.does_not_exist())
            _save_membership(tx, namespace, owner, "owner")
    except TransactWriteError as exc:
        if "ConditionalCheckFailed" in str(exc.cancellation_reasons or exc):
            raise AccountError(f"namespace {namespace!r} is already taken") from None
        raise
    return item


def _save_membership(tx: TransactWrite, namespace: str, username: str, role: str) -> None:
    tx.save(MembershipItem(ns_pk(namespace), f"member#{username}", role=role))
    tx.save(MembershipItem(user_pk(username), f"ns#{namespace}", role=role))


def add_member(namespace: str, username: str, role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if get_namespace(namespace) is None:
        raise AccountError(f"no namespace {namespace!r}")
    _existing_user(username)
    with TransactWrite(connection=connection()) as tx:
        _save_membership(tx, namespace, username, role)


def role_in(username: str, namespace: str) -> Optional[str]:
    try:
        return MembershipItem.get(ns_pk(namespace), f"member#{username}").role
    except DoesNotExist:
        return None


def namespaces_of(username: str) -> List[str]:
    return [m.sk[3:] for m in MembershipItem.query(user_pk(username),
                                                   MembershipItem.sk.startswith("ns#"))]


def set_namespace_public(namespace: str, public: bool) -> None:
    item = get_namespace(namespace)
    if item is None:
        raise AccountError(f"no namespace {namespace!r}")
    item.update(actions=[NamespaceItem.public.set(public)])


def set_repository_public(repository: str, public: bool) -> None:
    """Make one repository public (anonymous pull) or private; it need not be pushed yet."""
    oci.check_name(repository)
    now = time.time()
    RepoItem(REPOS_PK, repository).update(actions=[
        RepoItem.public.set(public), RepoItem.created.set(RepoItem.created | now),
        RepoItem.updated.set(RepoItem.updated | now)])


# ---------------------------------------------------------------- access tokens (CI)

def create_access_token(username: str, name: str, scope: str) -> str:
    """A named token usable as the password of `docker login`; shown once, stored hashed."""
    if scope not in TOKEN_SCOPES:
        raise AccountError(f"unknown token scope {scope!r}: use pull or push")
    if not name or len(name) > 100:
        raise AccountError("a token needs a name of 1 to 100 characters")
    _existing_user(username)
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    if any(t.name == name and not t.revoked for t in list_access_tokens(username)):
        raise AccountError(f"user {username!r} already has a token named {name!r}")
    AccessTokenItem(user_pk(username), f"token#{token_id}", name=name, scope=scope,
                    secret_hash=_token_hash(secret), created=time.time()).save()
    return f"{TOKEN_PREFIX}{token_id}_{secret}"


def list_access_tokens(username: str) -> List[AccessTokenItem]:
    return list(AccessTokenItem.query(user_pk(username), AccessTokenItem.sk.startswith("token#")))


def revoke_access_token(username: str, name: str) -> None:
    live = [t for t in list_access_tokens(username) if t.name == name and not t.revoked]
    if not live:
        raise AccountError(f"user {username!r} has no active token named {name!r}")
    for token in live:
        token.update(actions=[AccessTokenItem.revoked.set(True)])


def _token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_access_token(username: str, password: str) -> Optional[FrozenSet[str]]:
    """The scope of a valid, unrevoked access token given as password; None otherwise."""
    body = password[len(TOKEN_PREFIX):]
    token_id, _, secret = body.partition("_")
    if not token_id or not secret or len(token_id) != 16:
        return None
    try:
        token = AccessTokenItem.get(user_pk(username), f"token#{token_id}")
    except DoesNotExist:
        return None
    if token.revoked or not hmac.compare_digest(token.secret_hash, _token_hash(secret)):
        return None
    token.update(actions=[AccessTokenItem.last_used.set(time.time())])
    return TOKEN_SCOPES[token.scope]


# ---------------------------------------------------------------- login

def authenticate(username: str, password: str, address: Optional[str]) -> Principal:
    """Check credentials, with throttling per user and per address; AccountError if refused."""
    keys = [("user", username, USER_FAILURE_LIMIT)]
    if address:
        keys.append(("addr", address, ADDRESS_FAILURE_LIMIT))
    for kind, key, limit in keys:
        _refuse_if_throttled(kind, key, limit)
    user = get_user(username)
    scope = None
    if user is None:
        passwords.burn_time_like_a_verification(password)
        ok = False
    elif password.startswith(TOKEN_PREFIX):
        scope = _check_access_token(username, password)
        ok = scope is not None
    else:
        ok = passwords.verify_password_cached(password, user.password_hash)
    if not ok:
        for kind, key, _ in keys:
            _record_failure(kind, key)
        raise AccountError("incorrect username or password")
    if user.disabled:
        raise AccountError(f"user {username!r} is disabled")
    return Principal(username, bool(user.admin), scope, session_version(user))


def _window() -> int:
    return int(time.time()) // THROTTLE_WINDOW


def _failure_key(kind: str, key: str) -> str:
    return f"lock#{kind}#{key}#{_window()}"


def _refuse_if_throttled(kind: str, key: str, limit: int) -> None:
    try:
        item = LoginFailureItem.get(_failure_key(kind, key), "lock")
    except DoesNotExist:
        return
    if item.failures >= limit:
        raise LoginThrottled(int((_window() + 1) * THROTTLE_WINDOW - time.time()) + 1)


def _record_failure(kind: str, key: str) -> None:
    now = time.time()
    LoginFailureItem(_failure_key(kind, key), "lock").update(actions=[
        LoginFailureItem.failures.add(1),
        LoginFailureItem.first_failure.set(LoginFailureItem.first_failure | now),
        LoginFailureItem.expires.set(int(now) + 2 * THROTTLE_WINDOW)])


# ---------------------------------------------------------------- permissions

def permitted_actions(principal: Optional[Principal], repository: str) -> FrozenSet[str]:
    """What `principal` (None: anonymous) may do on `repository`."""
    allowed: FrozenSet[str] = frozenset()
    namespace = oci.namespace_of(repository)
    if principal is not None:
        if principal.admin:
            allowed = ROLES["owner"]
        else:
            role = role_in(principal.username, namespace)
            allowed = ROLES.get(role, frozenset())
        if principal.token_scope is not None:
            allowed = allowed & principal.token_scope
    if PULL not in allowed and is_public(repository):
        allowed = allowed | {PULL}
    if mirrors.rule_for(repository) is not None:   # a mirror is read-only (api/access.py)
        allowed = allowed & {PULL}
    return allowed


def is_public(repository: str) -> bool:
    rule = mirrors.rule_for(repository)
    if rule is not None and rule.public:
        return True
    namespace = get_namespace(oci.namespace_of(repository))
    if namespace is not None and namespace.public:
        return True
    try:
        return bool(RepoItem.get(REPOS_PK, repository, attributes_to_get=["public"]).public)
    except DoesNotExist:
        return False
