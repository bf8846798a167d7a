"""Accounts and token auth: every refusal the registry owes a caller, asserted over HTTP."""
from __future__ import annotations

import base64
import logging
import time
import uuid

import jwt
import pytest
import requests

from chalicelib.auth import accounts
from tests.support.registry_api import RegistryClient, error_code, push_blob, push_image

PASSWORD = "correct horse battery"


def new_user(admin: bool = False) -> str:
    name = "u" + uuid.uuid4().hex[:10]
    accounts.create_user(name, PASSWORD, admin=admin, log2_n=10)
    return name


def new_namespace(owner: str, public: bool = False) -> str:
    namespace = "ns" + uuid.uuid4().hex[:10]
    accounts.create_namespace(namespace, owner, public=public)
    return namespace


def token(base: str, scopes, auth=None, **params) -> requests.Response:
    return requests.get(f"{base}/v2/_berth/token", auth=auth,
                        params={"service": "berth", "scope": list(scopes), **params})


def granted(response: requests.Response) -> dict:
    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    return {a["name"]: sorted(a["actions"]) for a in claims["access"]}


def bearer(value: str) -> dict:
    return {"Authorization": f"Bearer {value}"}


def signed(claims: dict, key: str = "test-signing-key-" + "k" * 32, alg="HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def good_claims(repository: str, actions=("pull",)) -> dict:
    now = int(time.time())
    return {"iss": "berth", "aud": "berth", "sub": "admin", "iat": now, "nbf": now - 5,
            "exp": now + 60, "access": [{"type": "repository", "name": repository,
                                         "actions": list(actions)}]}


@pytest.fixture(scope="module")
def alice():
    user = new_user()
    return user, new_namespace(user)


def test_v2_without_token_is_a_bearer_challenge(registry):
    r = requests.get(f"{registry}/v2/")
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{registry}/v2/_berth/token"' in challenge and 'service="berth"' in challenge
    answer = token(registry, [], auth=("admin", "admin-test-password"))
    body = answer.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300 and body["issued_at"]
    ok = requests.get(f"{registry}/v2/", headers=bearer(body["token"]))
    assert ok.status_code == 200


def test_challenge_names_the_scope_the_request_needs(registry):
    r = requests.put(f"{registry}/v2/acme/app/manifests/v1", data=b"{}")
    assert r.status_code == 401
    assert 'scope="repository:acme/app:pull,push"' in r.headers["WWW-Authenticate"]
    r = requests.get(f"{registry}/v2/acme/app/tags/list")
    assert 'scope="repository:acme/app:pull"' in r.headers["WWW-Authenticate"]


def test_owner_gets_what_they_ask_for_in_their_namespace_and_nothing_elsewhere(registry, alice):
    user, namespace = alice
    other = new_namespace(new_user())
    answer = token(registry, [f"repository:{namespace}/app:pull,push",
                              f"repository:{other}/app:pull,push", "repository:NOT VALID:pull"],
                   auth=(user, PASSWORD))
    assert answer.status_code == 200
    assert granted(answer) == {f"{namespace}/app": ["pull", "push"]}


def test_push_and_pull_in_own_namespace_denied_in_another(registry, alice):
    user, namespace = alice
    client = RegistryClient((user, PASSWORD))
    digest = push_image(registry, f"{namespace}/app", "v1", client=client)
    assert client.get(f"{registry}/v2/{namespace}/app/manifests/v1").headers[
        "Docker-Content-Digest"] == digest
    other = new_namespace(new_user())
    r = client.post(f"{registry}/v2/{other}/app/blobs/uploads/")
    assert r.status_code == 401 and error_code(r) == "DENIED"
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]


def test_anonymous_may_pull_public_repositories_only(registry, alice):
    owner, namespace = alice
    owner_client = RegistryClient((owner, PASSWORD))
    push_image(registry, f"{namespace}/open", "v1", client=owner_client)
    push_image(registry, f"{namespace}/closed", "v1", client=owner_client)
    accounts.set_repository_public(f"{namespace}/open", True)
    anonymous = RegistryClient(None)
    assert anonymous.get(f"{registry}/v2/{namespace}/open/manifests/v1").status_code == 200
    r = anonymous.get(f"{registry}/v2/{namespace}/closed/manifests/v1")
    assert r.status_code == 401 and error_code(r) == "DENIED"
    r = anonymous.post(f"{registry}/v2/{namespace}/open/blobs/uploads/")
    assert r.status_code == 401          # public means pull, never push
    r = requests.post(f"{registry}/v2/{namespace}/open/blobs/uploads/")
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"


def test_public_namespace_opens_every_repository_for_pull(registry):
    owner = new_user()
    namespace = new_namespace(owner, public=True)
    push_image(registry, f"{namespace}/img", "v1", client=RegistryClient((owner, PASSWORD)))
    answer = token(registry, [f"repository:{namespace}/img:pull,push"])
    assert granted(answer) == {f"{namespace}/img": ["pull"]}


def test_members_roles(registry, alice):
    owner, namespace = alice
    puller, pusher = new_user(), new_user()
    accounts.add_member(namespace, puller, "pull")
    accounts.add_member(namespace, pusher, "push")
    scope = [f"repository:{namespace}/team:pull,push,delete"]
    assert granted(token(registry, scope, auth=(puller, PASSWORD))) == {
        f"{namespace}/team": ["pull"]}
    assert granted(token(registry, scope, auth=(pusher, PASSWORD))) == {
        f"{namespace}/team": ["delete", "pull", "push"]}


def test_admin_may_push_anywhere_creating_the_namespace(registry):
    namespace = "fresh" + uuid.uuid4().hex[:8]
    assert accounts.get_namespace(namespace) is None
    answer = token(registry, [f"repository:{namespace}/x:pull,push"],
                   auth=("admin", "admin-test-password"))
    assert granted(answer) == {f"{namespace}/x": ["pull", "push"]}
    assert accounts.get_namespace(namespace).owner == "admin"


@pytest.mark.parametrize("forge", [
    "alg_none", "other_key", "expired", "not_yet_valid", "other_service", "other_issuer",
    "garbage"])
def test_forged_or_stale_tokens_are_refused(registry, forge):
    push_image(registry, "forge/target", "v1")
    claims = good_claims("forge/target")
    if forge == "alg_none":
        value = jwt.encode(claims, None, algorithm="none")
    elif forge == "other_key":
        value = signed(claims, key="another-key-of-sufficient-length-0123456789")
    elif forge == "expired":
        claims.update(exp=int(time.time()) - 10, iat=int(time.time()) - 400)
        value = signed(claims)
    elif forge == "not_yet_valid":
        claims.update(nbf=int(time.time()) + 600)
        value = signed(claims)
    elif forge == "other_service":
        value = signed(dict(claims, aud="some-other-registry"))
    elif forge == "other_issuer":
        value = signed(dict(claims, iss="evil"))
    else:
        value = "not.a.jwt"
    r = requests.get(f"{registry}/v2/forge/target/manifests/v1", headers=bearer(value))
    assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # The same claims, properly signed, are accepted: the refusal above is the forgery's.
    assert requests.get(f"{registry}/v2/forge/target/manifests/v1",
                        headers=bearer(signed(good_claims("forge/target")))).status_code == 200


def test_token_for_another_repository_is_refused(registry):
    push_image(registry, "scoped/one", "v1")
    push_image(registry, "scoped/two", "v1")
    value = signed(good_claims("scoped/one", ("pull", "push")))
    assert requests.get(f"{registry}/v2/scoped/one/manifests/v1",
                        headers=bearer(value)).status_code == 200
    r = requests.get(f"{registry}/v2/scoped/two/manifests/v1", headers=bearer(value))
    assert r.status_code == 401 and error_code(r) == "DENIED"
    r = requests.delete(f"{registry}/v2/scoped/one/manifests/v1", headers=bearer(value))
    assert r.status_code == 401   # delete was not granted


def test_mount_needs_pull_on_the_source(registry, alice):
    user, namespace = alice
    secret_digest = push_blob(registry, "secret/stash", b"someone else's layer")
    client = RegistryClient((user, PASSWORD))
    r = client.post(f"{registry}/v2/{namespace}/thief/blobs/uploads/",
                    params={"mount": secret_digest, "from": "secret/stash"})
    assert r.status_code == 202        # silently an ordinary upload, no mount
    r = client.head(f"{registry}/v2/{namespace}/thief/blobs/{secret_digest}")
    assert r.status_code == 404
    own = push_blob(registry, f"{namespace}/src", b"my own layer", client=client)
    r = client.post(f"{registry}/v2/{namespace}/dst/blobs/uploads/",
                    params={"mount": own, "from": f"{namespace}/src"})
    assert r.status_code == 201


def test_catalog_lists_only_what_the_caller_may_pull(registry, alice):
    user, namespace = alice
    client = RegistryClient((user, PASSWORD))
    push_image(registry, f"{namespace}/listed", "v1", client=client)
    push_image(registry, "hidden/from-alice", "v1")
    names = client.get(f"{registry}/v2/_catalog").json()["repositories"]
    assert f"{namespace}/listed" in names and "hidden/from-alice" not in names
    assert all(n.startswith(namespace + "/") or accounts.is_public(n) for n in names)
    everything = RegistryClient().get(f"{registry}/v2/_catalog").json()["repositories"]
    assert "hidden/from-alice" in everything


def test_wrong_password_then_lockout(registry):
    user = new_user()
    for _ in range(accounts.PAIR_FAILURE_FREE):
        r = token(registry, [], auth=(user, "wrong password!"))
        assert r.status_code == 401 and error_code(r) == "UNAUTHORIZED"
    r = token(registry, [], auth=(user, PASSWORD))   # even the right password now
    assert r.status_code == 429 and error_code(r) == "TOOMANYREQUESTS"
    assert "too many failed logins" in r.json()["errors"][0]["message"]
    assert int(r.headers["Retry-After"]) > 0


def test_unknown_user_is_refused_like_a_wrong_password(registry):
    r = token(registry, [], auth=("nobody-" + uuid.uuid4().hex[:6], PASSWORD))
    assert r.status_code == 401
    assert r.json()["errors"][0]["message"] == "incorrect username or password"


def test_disabled_user_is_refused(registry):
    user = new_user()
    assert token(registry, [], auth=(user, PASSWORD)).status_code == 200
    accounts.set_user_flags(user, disabled=True)
    r = token(registry, [], auth=(user, PASSWORD))
    assert r.status_code == 401 and "disabled" in r.json()["errors"][0]["message"]


def test_access_tokens_scope_last_use_and_revocation(registry, alice):
    user, namespace = alice
    pull_token = accounts.create_access_token(user, "ci-pull", "pull")
    push_token = accounts.create_access_token(user, "ci-push", "push")
    scope = [f"repository:{namespace}/ci:pull,push,delete"]
    assert granted(token(registry, scope, auth=(user, pull_token))) == {
        f"{namespace}/ci": ["pull"]}
    assert granted(token(registry, scope, auth=(user, push_token))) == {
        f"{namespace}/ci": ["pull", "push"]}
    used = {t.name: t.last_used for t in accounts.list_access_tokens(user)}
    assert used["ci-pull"] and used["ci-push"]
    accounts.revoke_access_token(user, "ci-push")
    assert token(registry, scope, auth=(user, push_token)).status_code == 401
    stored = {t.name: t.secret_hash for t in accounts.list_access_tokens(user)}
    assert push_token.split("_")[-1] not in stored.values()   # only a hash is kept


def test_scope_broader_than_rights_is_cut_to_the_rights(registry, alice):
    user, namespace = alice
    reader = new_user()
    accounts.add_member(namespace, reader, "pull")
    answer = token(registry, [f"repository:{namespace}/x:pull,push,delete,*"],
                   auth=(reader, PASSWORD))
    assert granted(answer) == {f"{namespace}/x": ["pull"]}


def test_oauth2_password_grant_form(registry, alice):
    user, namespace = alice
    r = requests.post(f"{registry}/v2/_berth/token", data={
        "grant_type": "password", "username": user, "password": PASSWORD, "service": "berth",
        "scope": f"repository:{namespace}/app:pull,push", "client_id": "test"})
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == f"repository:{namespace}/app:pull,push"
    r = requests.post(f"{registry}/v2/_berth/token", data={
        "grant_type": "password", "username": user, "password": "wrong!!!", "service": "berth"})
    assert r.status_code == 401
    r = requests.post(f"{registry}/v2/_berth/token", data={"grant_type": "refresh_token"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_malformed_credentials_and_service(registry):
    r = requests.get(f"{registry}/v2/_berth/token",
                     headers={"Authorization": "Basic !!!notbase64"})
    assert r.status_code == 400
    no_colon = base64.b64encode(b"justauser").decode()
    r = requests.get(f"{registry}/v2/_berth/token", headers={"Authorization": f"Basic {no_colon}"})
    assert r.status_code == 400
    r = requests.get(f"{registry}/v2/_berth/token", params={"service": "elsewhere"})
    assert r.status_code == 400


def test_passwords_are_hashed_with_scrypt_and_never_logged(registry, caplog):
    user = new_user()
    stored = accounts.get_user(user).password_hash
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    caplog.set_level(logging.DEBUG)
    # The access log and Chalice's app log do not propagate to the root logger: listen directly.
    quiet = [logging.getLogger(name) for name in ("berth.access", "berth")]
    for logger in quiet:
        logger.addHandler(caplog.handler)
    try:
        secret_token = accounts.create_access_token(user, "logged?", "pull")
        token(registry, [], auth=(user, PASSWORD))
        token(registry, [], auth=(user, secret_token))
        answer = token(registry, ["repository:x/y:pull"], auth=(user, PASSWORD)).json()["token"]
        requests.get(f"{registry}/v2/x/y/tags/list", headers=bearer(answer))
    finally:
        for logger in quiet:
            logger.removeHandler(caplog.handler)
    logged = caplog.text
    # The requests were logged (so the check below looks at real log lines), with their user.
    assert '"route": "/v2/_berth/token"' in logged and f'"user": "{user}"' in logged
    assert PASSWORD not in logged and secret_token not in logged and answer not in logged


def test_repeated_logins_skip_the_kdf_but_a_password_change_takes_effect_at_once(registry):
    from chalicelib.auth import passwords
    user = new_user()
    calls = []
    real = passwords.verify_password
    passwords.verify_password = lambda pw, stored: calls.append(1) or real(pw, stored)
    try:
        for _ in range(3):
            assert token(registry, [], auth=(user, PASSWORD)).status_code == 200
        assert len(calls) == 1                   # scrypt ran once, not three times
        accounts.set_password(user, "a brand new password", log2_n=10)
        assert token(registry, [], auth=(user, PASSWORD)).status_code == 401
        assert token(registry, [], auth=(user, "a brand new password")).status_code == 200
    finally:
        passwords.verify_password = real
