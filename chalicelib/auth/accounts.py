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
from chalicelib.config import settings
from chalicelib.storage import metadata
from chalicelib.storage import mirrors
from chalicelib.storage.metadata import connection
from chalicelib.storage.models import (REPOS_PK, TOMBSTONE_SK, USERS_PK, AccessTokenItem,
                                       InviteItem, LoginFailureItem, MembershipItem, NamespaceItem,
                                       NamespaceTombstoneItem, RepoItem, UserIndexItem, UserItem,
                                       ns_pk, user_pk)

ROLES = {"owner": frozenset({PULL, PUSH, DELETE}), "push": frozenset({PULL, PUSH, DELETE}),
         "pull": frozenset({PULL})}
TOKEN_SCOPES = {"pull": frozenset({PULL}), "push": frozenset({PULL, PUSH})}
TOKEN_PREFIX = "berth_"
# Brute force (see authenticate): failures a source may make in one window before it must wait.
THROTTLE_WINDOW = 15 * 60
PAIR_FAILURE_FREE = 5          # for one user name from one address
ADDRESS_FAILURE_FREE = 20      # from one address, whatever the user names
PASSWORD_MIN = 8
SIGNUP_MODES = ("closed", "invite", "open")
SIGNUP_ADDRESS_LIMIT = 20      # sign-up attempts per address in one throttling window
INVITE_TTL = 7 * 24 * 3600
CLOCK_SKEW = 60          # seconds of clock difference between Lambda instances we allow for


class AccountError(Exception):
    """A refused account operation, with a message fit for the user."""


class NamespaceLimit(AccountError):
    """The owner has activated as many namespaces as they may."""


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
    if not address:
        return
    from pynamodb.exceptions import UpdateError
    now = time.time()
    count = LoginFailureItem.failures
    try:
        LoginFailureItem(f"lock#signup#{address}#{_window()}", "lock").update(
            actions=[count.add(1), LoginFailureItem.expires.set(int(now) + 2 * THROTTLE_WINDOW)],
            condition=count.does_not_exist() | (count < SIGNUP_ADDRESS_LIMIT))
    except UpdateError as exc:
        if not metadata.is_condition_failure(exc):
            raise
        raise LoginThrottled(THROTTLE_WINDOW - int(now) % THROTTLE_WINDOW) from None


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
    user.namespaces_created = 1            # the per-user limit counts this activation too
    now = time.time()
    item = NamespaceItem(ns_pk(namespace), "ns", owner=username, created=now, public=False,
                         repositories=0)
    tx = metadata.Tx()
    tx.put(("user",), user, condition=UserItem.pk.does_not_exist())
    tx.put(("index",), UserIndexItem(USERS_PK, username))
    tx.put(("namespace",), item, condition=NamespaceItem.pk.does_not_exist())
    # a namespace deleted within namespace_quarantine() cannot be taken yet (its old registry
    # tokens may still be valid)
    tx.check(("deleted",), NamespaceTombstoneItem, ns_pk(namespace), TOMBSTONE_SK,
             NamespaceTombstoneItem.deleted_at.does_not_exist()
             | (NamespaceTombstoneItem.deleted_at < now - namespace_quarantine()))
    _save_membership(tx, namespace, username, "owner")
    if invite is not None:
        tx.update(("invite",), InviteItem(f"invite#{_token_hash(invite)}", "invite"),
                  [InviteItem.used_by.set(username)],
                  condition=InviteItem.pk.exists() & InviteItem.used_by.does_not_exist()
                  & (InviteItem.expires > int(time.time())))
    try:
        tx.commit()
    except metadata.TxFailed as failed:
        kinds = failed.kinds()
        if "user" in kinds:
            raise AccountError(f"user name {username!r} is already taken") from None
        if "namespace" in kinds:
            raise AccountError(f"namespace {namespace!r} is already taken") from None
        if "deleted" in kinds:
            raise AccountError(f"namespace {namespace!r} was deleted moments ago; it can be "
                               f"activated again in {namespace_quarantine() // 60 + 1} "
                               "minutes") from None
        if "invite" in kinds:
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


def namespace_quarantine() -> int:
    """Seconds a deleted namespace stays unclaimable: its registry tokens are verified without a
    database read, so one issued just before the delete must have expired first."""
    return settings().token_ttl + CLOCK_SKEW


def create_namespace(namespace: str, owner: str, *, public: bool = False,
                     owner_limit: Optional[int] = None) -> NamespaceItem:
    """Create a namespace owned by `owner` (activation); namespaces are globally unique.

    One transaction, so that no limit is a check-then-write: the name must be free and not
    deleted within namespace_quarantine(), and with `owner_limit` the owner's count of
    activated namespaces must stay within it (parallel activations cannot overrun it)."""
    if not oci.is_valid_namespace(namespace):
        raise AccountError(f"invalid namespace {namespace!r}: {NAMESPACE_RULE}")
    _existing_user(owner)
    now = time.time()
    item = NamespaceItem(ns_pk(namespace), "ns", owner=owner, created=now, public=public,
                         repositories=0)
    tx = metadata.Tx()
    tx.put(("taken",), item, condition=NamespaceItem.pk.does_not_exist())
    tx.check(("deleted",), NamespaceTombstoneItem, ns_pk(namespace), TOMBSTONE_SK,
             NamespaceTombstoneItem.deleted_at.does_not_exist()
             | (NamespaceTombstoneItem.deleted_at < now - namespace_quarantine()))
    created = UserItem.namespaces_created
    condition = UserItem.pk.exists()
    if owner_limit is not None:
        condition &= created.does_not_exist() | (created < owner_limit)
    tx.update(("limit",), UserItem(user_pk(owner), "user"), [created.add(1)], condition=condition)
    _save_membership(tx, namespace, owner, "owner")
    try:
        tx.commit()
    except metadata.TxFailed as failed:
        raise _activation_refusal(failed, namespace, owner_limit) from None
    return item


def _activation_refusal(failed: "metadata.TxFailed", namespace: str,
                        owner_limit: Optional[int]) -> AccountError:
    if "taken" in failed.kinds():
        return AccountError(f"namespace {namespace!r} is already taken")
    if "deleted" in failed.kinds():
        return AccountError(f"namespace {namespace!r} was deleted less than "
                            f"{namespace_quarantine()} s ago; it can be activated again after "
                            "that")
    return NamespaceLimit(f"you have activated {owner_limit} namespaces already; the limit is "
                          f"{owner_limit}")


def delete_namespace(item: NamespaceItem) -> None:
    """Delete a namespace (its repositories must be gone), its memberships and the creator's
    count, leaving a tombstone that keeps the name unclaimable for namespace_quarantine()."""
    namespace = item.pk[len("ns#"):]
    members = list(MembershipItem.query(ns_pk(namespace), MembershipItem.sk.startswith("member#")))
    try:
        _delete_namespace_items(namespace, item, members[:45], lower_count=True)
    except metadata.TxFailed as failed:
        if failed.kinds() != {"creator"}:
            raise
        # activated before namespaces were counted: there is no count to lower
        _delete_namespace_items(namespace, item, members[:45], lower_count=False)
    for member in members[45:]:
        member.delete()
        MembershipItem(user_pk(member.sk[len("member#"):]), f"ns#{namespace}").delete()


def _delete_namespace_items(namespace: str, item: NamespaceItem, members: List[MembershipItem],
                            lower_count: bool) -> None:
    now = time.time()
    tx = metadata.Tx()
    tx.delete(("namespace",), item)
    tx.put(("tombstone",), NamespaceTombstoneItem(
        ns_pk(namespace), TOMBSTONE_SK, deleted_at=now,
        expires=int(now) + namespace_quarantine() + 3600))
    if lower_count:
        created = UserItem.namespaces_created
        tx.update(("creator",), UserItem(user_pk(item.owner), "user"), [created.add(-1)],
                  condition=created > 0)
    for member in members:
        tx.delete(("member", member.sk), member)
        tx.delete(("membership", member.sk),
                  MembershipItem(user_pk(member.sk[len("member#"):]), f"ns#{namespace}"))
    tx.commit()


def _save_membership(tx: "metadata.Tx", namespace: str, username: str, role: str) -> None:
    tx.put(("member",), MembershipItem(ns_pk(namespace), f"member#{username}", role=role))
    tx.put(("membership",), MembershipItem(user_pk(username), f"ns#{namespace}", role=role))


def add_member(namespace: str, username: str, role: str) -> None:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if get_namespace(namespace) is None:
        raise AccountError(f"no namespace {namespace!r}")
    _existing_user(username)
    tx = metadata.Tx()
    _save_membership(tx, namespace, username, role)
    tx.commit()


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
    metadata.ensure_repository(repository, RepoItem(REPOS_PK, repository, created=now,
                                                    updated=now))
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
    """The scope of a valid, unrevoked access token given as password; None otherwise. The
    same reads and comparison whether or not the user exists (user names are not revealed by
    timing)."""
    body = password[len(TOKEN_PREFIX):]
    token_id, _, secret = body.partition("_")
    if not token_id or not secret or len(token_id) != 16:
        return None
    try:
        token = AccessTokenItem.get(user_pk(username), f"token#{token_id}")
    except DoesNotExist:
        hmac.compare_digest(_NO_TOKEN_HASH, _token_hash(secret))
        return None
    if token.revoked or not hmac.compare_digest(token.secret_hash, _token_hash(secret)):
        return None
    token.update(actions=[AccessTokenItem.last_used.set(time.time())])
    return TOKEN_SCOPES[token.scope]


_NO_TOKEN_HASH = _token_hash(secrets.token_urlsafe(32))


# ---------------------------------------------------------------- login and its throttling
#
# Failures slow down their source, never the account: they are counted per address and per
# (user name, address) pair, in fixed windows, and past a free allowance each further failure
# makes that source wait twice as long as the last one (1 s, 2 s, 4 s, ... up to the window's
# end) before its next password is even checked. The victim of a guessing attack, from any other
# address, still gets in; so does anyone behind the attacker's address who signed in from it
# before (a "known" pair); an access token (256 random bits: nothing to guess) is checked
# without any throttling. Nothing here reads whether the user exists.

def authenticate(username: str, password: str, address: Optional[str]) -> Principal:
    """Check credentials, with per-source backoff; AccountError (or LoginThrottled) if refused."""
    if password.startswith(TOKEN_PREFIX):
        user, scope = get_user(username), _check_access_token(username, password)
        if user is None or scope is None:
            _record_failures(_Sources.read(username, address))
            raise AccountError("incorrect username or password")
        return _admit(user, username, scope)
    sources = _Sources.read(username, address)
    sources.refuse_if_throttled()
    user = get_user(username)
    if user is None:
        passwords.burn_time_like_a_verification(password)
    if user is None or not passwords.verify_password_cached(password, user.password_hash):
        _record_failures(sources)
        raise AccountError("incorrect username or password")
    sources.remember_success()
    return _admit(user, username, None)


def _admit(user: UserItem, username: str, scope: Optional[FrozenSet[str]]) -> Principal:
    if user.disabled:
        raise AccountError(f"user {username!r} is disabled")
    return Principal(username, bool(user.admin), scope, session_version(user))


def _window() -> int:
    return int(time.time()) // THROTTLE_WINDOW


def _backoff(failures: int, free: int) -> float:
    """Seconds a source waits after its last failure: 0 within its free allowance."""
    if failures < free:
        return 0.0
    return float(min(2 ** min(failures - free, 20), THROTTLE_WINDOW))


KNOWN_FOR = 30 * 24 * 3600      # a (user, address) pair that signed in stays known this long


@dataclass
class _Sources:
    """The throttling items of one login attempt, read with one BatchGet: its (user, address)
    pair's and its address's failures in the current window, and whether the pair is known."""
    pair: LoginFailureItem
    address: LoginFailureItem
    known: LoginFailureItem

    @classmethod
    def read(cls, username: str, address: Optional[str]) -> "_Sources":
        window, user, address = _window(), username[:64], address or "-"
        keys = {"pair": f"lock#pair#{user}#{address}#{window}",
                "addr": f"lock#addr#{address}#{window}",
                "known": f"lock#known#{user}#{address}"}
        found = {item.pk: item for item in LoginFailureItem.batch_get(
            [(key, "lock") for key in keys.values()])}
        items = {kind: found.get(key) or LoginFailureItem(key, "lock", failures=0)
                 for kind, key in keys.items()}
        return cls(items["pair"], items["addr"], items["known"])

    def is_known(self) -> bool:
        return bool(self.known.known) and (self.known.expires or 0) > time.time()

    def refuse_if_throttled(self) -> None:
        waits = [_wait(self.pair, PAIR_FAILURE_FREE)]
        if not self.is_known():   # signed in from here before: not the stranger being slowed
            waits.append(_wait(self.address, ADDRESS_FAILURE_FREE))
        wait = max(waits)
        if wait > 0:
            raise LoginThrottled(int(wait) + 1)

    def remember_success(self) -> None:
        """Forgive the pair's failures; mark it known (a write at most every few weeks)."""
        now = int(time.time())
        if self.pair.failures:
            self.pair.delete()
        if not self.is_known() or (self.known.expires or 0) < now + KNOWN_FOR // 2:
            self.known.known = True
            self.known.expires = now + KNOWN_FOR
            self.known.save()


def _wait(item: LoginFailureItem, free: int) -> float:
    if not item.failures or item.last_failure is None:
        return 0.0
    return float(item.last_failure) + _backoff(int(item.failures), free) - time.time()


def _record_failures(sources: _Sources) -> None:
    now = time.time()
    for item in (sources.pair, sources.address):
        LoginFailureItem(item.pk, "lock").update(actions=[
            LoginFailureItem.failures.add(1), LoginFailureItem.last_failure.set(now),
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
