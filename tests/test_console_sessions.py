"""Console sessions (cookie, sign-out, password change), self-service sign-up with BERTH_SIGNUP,
admin invitations, and Explore, through the management API as the console calls it."""
from __future__ import annotations

import uuid

import pytest
import requests

from chalicelib.auth import accounts
from chalicelib.config import settings
from chalicelib.storage import mirrors
from tests.support.registry_api import ADMIN, push_image
from tests.test_manage_api import PASSWORD, Api, new_user, refused

API = "/v2/_berth/api"
CONSOLE = {"X-Berth-Console": "1"}


def sign_in(registry: str, user: str, password: str = PASSWORD) -> requests.Session:
    browser = requests.Session()
    r = browser.post(f"{registry}{API}/session", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return browser


@pytest.fixture
def signup_mode(monkeypatch):
    """Set BERTH_SIGNUP for the in-process registry (settings are cached per process)."""
    def set_mode(mode: str) -> None:
        monkeypatch.setenv("BERTH_SIGNUP", mode)
        settings.cache_clear()
    yield set_mode
    monkeypatch.delenv("BERTH_SIGNUP", raising=False)
    settings.cache_clear()


def test_session_cookie_is_http_only_strict_and_needs_the_console_header(registry, monkeypatch):
    user = new_user()
    browser = requests.Session()
    r = browser.post(f"{registry}{API}/session", json={"username": user, "password": "wrong!!"})
    refused(r, 401, "password")
    assert "Set-Cookie" not in r.headers
    r = browser.post(f"{registry}{API}/session", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["username"] == user
    cookie = r.headers["Set-Cookie"]
    for part in ("berth_session=", "HttpOnly", "SameSite=Strict", "Path=/v2/_berth/api/",
                 "Max-Age=3600"):
        assert part in cookie, cookie
    assert "Secure" not in cookie                # plain HTTP here; served over HTTPS it is Secure
    monkeypatch.setenv("BERTH_PUBLIC_URL", "https://registry.example")
    settings.cache_clear()
    try:
        r = requests.post(f"{registry}{API}/session",
                          json={"username": user, "password": PASSWORD})
        assert r.headers["Set-Cookie"].endswith("; Secure")
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert "token" not in r.json()               # nothing a script could read or leak
    # the cookie alone (what a cross-site form or image would send) is not enough
    refused(browser.get(f"{registry}{API}/me"), 401)
    me = browser.get(f"{registry}{API}/me", headers=CONSOLE)
    assert me.status_code == 200 and me.json()["username"] == user
    # an access token is not a password for the console
    secret = accounts.create_access_token(user, "ci", "push")
    refused(requests.post(f"{registry}{API}/session",
                          json={"username": user, "password": secret}), 400, "password")


def test_sign_out_ends_every_session_of_the_user(registry):
    user = new_user()
    tab, other_device = sign_in(registry, user), sign_in(registry, user)
    bearer = Api(registry, user)
    stolen = tab.cookies.get("berth_session")
    r = tab.delete(f"{registry}{API}/session", headers=CONSOLE)
    assert r.status_code == 200 and "Max-Age=0" in r.headers["Set-Cookie"]
    refused(other_device.get(f"{registry}{API}/me", headers=CONSOLE), 401)
    refused(bearer.get("me"), 401)
    # a copy of the signed-out session token is worthless too
    refused(requests.get(f"{registry}{API}/me",
                         headers={"Authorization": f"Bearer {stolen}"}), 401)
    assert sign_in(registry, user).get(f"{registry}{API}/me", headers=CONSOLE).ok


def test_password_change_ends_cookie_sessions(registry):
    user = new_user()
    tab, other = sign_in(registry, user), sign_in(registry, user)
    r = tab.put(f"{registry}{API}/me/password", headers=CONSOLE,
                json={"current_password": PASSWORD, "new_password": "a brand new one"})
    assert r.status_code == 200 and r.json()["signed_out"] is True
    for session in (tab, other):
        refused(session.get(f"{registry}{API}/me", headers=CONSOLE), 401)


def test_sign_up_is_closed_by_default(registry, signup_mode):
    assert requests.get(f"{registry}{API}/signup").json() == {"mode": "closed"}
    name = "s" + uuid.uuid4().hex[:8]
    refused(requests.post(f"{registry}{API}/signup", json={
        "username": name, "password": PASSWORD, "namespace": name}), 403)
    assert accounts.get_user(name) is None
    signup_mode("nonsense")                               # anything unknown stays closed
    assert requests.get(f"{registry}{API}/signup").json() == {"mode": "closed"}


def test_open_sign_up_creates_user_and_namespace_and_signs_in(registry, signup_mode):
    signup_mode("open")
    name = "s" + uuid.uuid4().hex[:8]
    browser = requests.Session()
    body = {"username": name, "password": PASSWORD, "namespace": name + "-team"}
    refused(browser.post(f"{registry}{API}/signup", json={**body, "password": "short"}), 400,
            "password")
    refused(browser.post(f"{registry}{API}/signup", json={**body, "namespace": "Bad NS"}), 400,
            "namespace")
    assert accounts.get_user(name) is None                # nothing half-written
    r = browser.post(f"{registry}{API}/signup", json=body)
    assert r.status_code == 201, r.text
    me = browser.get(f"{registry}{API}/me", headers=CONSOLE).json()
    assert me["username"] == name
    assert [(n["name"], n["role"]) for n in me["namespaces"]] == [(name + "-team", "owner")]
    # the same password logs in to the registry and pushes to the new namespace
    from tests.support.registry_api import RegistryClient
    push_image(registry, f"{name}-team/app", "v1",
               client=RegistryClient((name, PASSWORD)))
    # taken names are refused on the right field, and nothing is written
    other = "s" + uuid.uuid4().hex[:8]
    refused(requests.post(f"{registry}{API}/signup", json={**body, "namespace": other}), 409,
            "username", "ALREADY_EXISTS")
    refused(requests.post(f"{registry}{API}/signup", json={**body, "username": other}), 409,
            "namespace", "ALREADY_EXISTS")
    assert accounts.get_user(other) is None and accounts.get_namespace(other) is None


def test_sign_ups_per_address_are_bounded(registry, signup_mode, monkeypatch):
    signup_mode("open")
    monkeypatch.setattr(accounts, "SIGNUP_ADDRESS_LIMIT", 0)    # this address has used its share
    name = "s" + uuid.uuid4().hex[:8]
    r = requests.post(f"{registry}{API}/signup",
                      json={"username": name, "password": PASSWORD, "namespace": name})
    refused(r, 429)
    assert int(r.headers["Retry-After"]) > 0
    assert accounts.get_user(name) is None


def test_invite_sign_up_uses_an_admin_invitation_once(registry, signup_mode):
    signup_mode("invite")
    admin, user = Api(registry, ADMIN[0], ADMIN[1]), Api(registry, new_user())
    refused(user.post("invites"), 403)
    r = admin.post("invites")
    assert r.status_code == 201 and r.json()["signup"] == "invite"
    code = r.json()["code"]
    name = "s" + uuid.uuid4().hex[:8]
    body = {"username": name, "password": PASSWORD, "namespace": name}
    refused(requests.post(f"{registry}{API}/signup", json=body), 400, "invite", "REQUIRED")
    refused(requests.post(f"{registry}{API}/signup", json={**body, "invite": "made-up"}), 400,
            "invite")
    assert accounts.get_user(name) is None
    assert requests.post(f"{registry}{API}/signup",
                         json={**body, "invite": code}).status_code == 201
    again = "s" + uuid.uuid4().hex[:8]
    refused(requests.post(f"{registry}{API}/signup", json={
        "username": again, "password": PASSWORD, "namespace": again, "invite": code}), 400,
        "invite")
    assert accounts.get_user(again) is None


def test_explore_lists_public_repositories_of_every_namespace(registry):
    owner_a, owner_b = new_user(), new_user()
    ns_a, ns_b = "ea" + uuid.uuid4().hex[:6], "eb" + uuid.uuid4().hex[:6]
    accounts.create_namespace(ns_a, owner_a)
    accounts.create_namespace(ns_b, owner_b, public=True)
    push_image(registry, f"{ns_a}/secret", "v1")
    push_image(registry, f"{ns_a}/shared", "v1")
    push_image(registry, f"{ns_b}/tool", "v1")
    accounts.set_repository_public(f"{ns_a}/shared", True)
    viewer = Api(registry, new_user())
    seen, cursor = {}, None
    for _ in range(200):
        r = viewer.get("explore", params={"limit": 50, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen.update({x["name"]: x for x in r.json()["repositories"]})
        assert "library" in [o["namespace"] for o in r.json()["official"]]  # the default rule
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert f"{ns_a}/shared" in seen and f"{ns_b}/tool" in seen
    assert f"{ns_a}/secret" not in seen
    assert seen[f"{ns_b}/tool"]["permissions"] == ["pull"]
    assert not seen[f"{ns_b}/tool"]["can_delete"]
    found = viewer.get("explore", params={"q": ns_b}).json()["repositories"]
    assert [x["name"] for x in found] == [f"{ns_b}/tool"]
    refused(viewer.get("explore", params={"cursor": "garbage"}), 400, "cursor")


def test_explore_reads_are_bounded_by_private_repositories(registry, aws_calls):
    """1,000 private repositories ahead of every public one: an Explore page stops after its 5
    Queries with a cursor, instead of reading the whole registry."""
    import time
    from chalicelib.storage.models import REPOS_PK, RepoItem
    owner, ns = new_user(), "0" + uuid.uuid4().hex[:8]        # sorts before other namespaces
    accounts.create_namespace(ns, owner)
    now = time.time()
    bulk = [RepoItem(REPOS_PK, f"{ns}/r{i:04d}", created=now, updated=now) for i in range(1000)]
    with RepoItem.batch_write() as batch:
        for item in bulk:
            batch.save(item)
    viewer = Api(registry, new_user())
    try:
        mirrors.rules(fresh=True)       # the default rules are seeded before counting
        aws_calls.reset()
        r = viewer.get("explore", params={"limit": 20})
        assert r.status_code == 200, r.text
        assert r.json()["repositories"] == [] and r.json()["next_cursor"]
        queries = aws_calls.calls[("dynamodb", "Query")]
        # + one Query of the mirror rules when this process's 5-second cache of them has expired
        assert 5 <= queries <= 6, aws_calls.calls
        assert aws_calls.count("dynamodb") <= 6 + 3, aws_calls.calls   # + user, namespace
    finally:
        with RepoItem.batch_write() as batch:
            for item in bulk:
                batch.delete(item)
