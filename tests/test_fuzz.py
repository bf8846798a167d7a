"""Fuzzing and abuse suite (issue #12): generated input against the running registry.

Property-based tests (hypothesis) send generated repository names, references, digests,
Content-Range values and manifests to the v2 API, and schemathesis sends what the management
API's own OpenAPI document allows (and what it does not) to every management endpoint. Every
answer must be a client error or a success — never a 500 —, a tenant must never read another's
private content, and each request must make a bounded number of AWS calls (counted in botocore,
in this process, where the registry runs).

Examples per test are set for CI (the whole file runs in about a minute and a half); raise them
locally with BERTH_FUZZ_EXAMPLES=1000. Requests come from their own loopback address, so that the
failed logins the fuzzer causes slow down only itself (login backoff is per address).
"""
from __future__ import annotations

import json
import os
import string
import uuid
from urllib.parse import quote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from chalicelib import oci
from chalicelib.auth import accounts, tokens
from chalicelib.auth.scopes import Scope
from tests.support.registry_api import RegistryClient, absolute, push_blob, push_image, sha256
from tests.test_abuse import client_at, fresh_address

PASSWORD = "correct horse battery"
EXAMPLES = int(os.environ.get("BERTH_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.filter_too_much])
# DynamoDB calls one registry request may make, whatever it is sent (a manifest PUT with many
# references: its reads, the transaction, the retries of a conflict)
DYNAMODB_CALLS_MAX = 30
S3_CALLS_MAX = 6


class Tenants:
    """Two users with private namespaces; alice has pushed an image and a lone blob."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.alice, self.bob = (self._user("fa"), self._user("fb"))
        self.alice_ns, self.bob_ns = (self._namespace(self.alice), self._namespace(self.bob))
        self.repo = f"{self.alice_ns}/private"
        alice = RegistryClient((self.alice, PASSWORD))
        self.secret_layer = b"alice's secret layer " + uuid.uuid4().bytes
        self.manifest = push_image(base, self.repo, "v1", layer_bytes=(self.secret_layer,),
                                   client=alice)
        self.lone_blob = push_blob(base, self.repo, b"lone " + uuid.uuid4().bytes, client=alice)
        self.alice_digests = [self.manifest, sha256(self.secret_layer), self.lone_blob]
        self.session = client_at(fresh_address())

    @staticmethod
    def _user(prefix: str) -> str:
        name = prefix + uuid.uuid4().hex[:10]
        accounts.create_user(name, PASSWORD, log2_n=10)
        return name

    @staticmethod
    def _namespace(owner: str) -> str:
        namespace = "fz" + uuid.uuid4().hex[:10]
        accounts.create_namespace(namespace, owner)
        return namespace

    def bob_token(self, scope: str, session: "requests.Session | None" = None) -> str:
        r = (session or self.session).get(f"{self.base}/v2/_berth/token", auth=(self.bob, PASSWORD),
                             params={"service": "berth", "scope": scope})
        assert r.status_code == 200, r.text
        return r.json()["token"]


@pytest.fixture(scope="module")
def tenants(registry) -> Tenants:
    return Tenants(registry)


def admin_headers(name: str) -> dict:
    """A token for everything on `name`, minted as the token endpoint would for the admin (no
    login per generated name: the fuzzing is of the registry API, not of the password KDF)."""
    scope = Scope("repository", name, frozenset({"pull", "push", "delete"}))
    return {"Authorization": "Bearer " + tokens.issue("admin", [scope])["token"]}


def check_answer(response: requests.Response, aws_calls, allowed=None) -> None:
    """Never a 5xx; errors in the OCI envelope; bounded AWS calls."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if allowed is not None:
        assert response.status_code in allowed, (response.status_code, response.text[:300])
    if response.status_code >= 400 and response.request.method != "HEAD":
        errors = response.json()["errors"]
        assert errors and errors[0]["code"] and errors[0]["message"]
    assert aws_calls.count("dynamodb") <= DYNAMODB_CALLS_MAX, aws_calls.calls
    assert aws_calls.count("s3") <= S3_CALLS_MAX, aws_calls.calls


def path_part(text: str) -> str:
    return quote(text, safe="/")


# ---------------------------------------------------------------- names

NAME_ALPHABET = string.ascii_lowercase + string.digits + "._-/"
names = st.one_of(
    st.from_regex(oci.NAME_RE, fullmatch=True).filter(lambda n: len(n) <= 300),
    st.text(NAME_ALPHABET + "AZ_:@%?#", min_size=1, max_size=300),
    st.text(min_size=1, max_size=80).filter(lambda n: n.strip("/")),
)


@FUZZ
@given(name=names)
def test_generated_repository_names(registry, aws_calls, name):
    aws_calls.reset()
    r = requests.get(f"{registry}/v2/{path_part(name)}/tags/list", headers=admin_headers(name))
    check_answer(r, aws_calls, allowed={200, 400, 401, 404, 405})
    if r.status_code == 400:
        assert r.json()["errors"][0]["code"] in ("NAME_INVALID", "PAGINATION_NUMBER_INVALID")
    aws_calls.reset()
    r = requests.post(f"{registry}/v2/{path_part(name)}/blobs/uploads/",
                      headers=admin_headers(name))
    check_answer(r, aws_calls, allowed={202, 400, 401, 403, 404, 405})
    if r.status_code == 202:        # leave no session behind
        requests.delete(absolute(registry, r.headers["Location"]), headers=admin_headers(name))


# ---------------------------------------------------------------- references and digests

algorithms = st.sampled_from(["sha256", "sha512", "md5", "sha256+b64u", "SHA256", ""])
digests = st.one_of(
    st.builds(lambda a, h: f"{a}:{h}", algorithms, st.text(string.hexdigits + "=_-", max_size=140)),
    st.text(max_size=150),
)
references = st.one_of(st.from_regex(oci.TAG_RE, fullmatch=True), digests,
                       st.text(string.printable, min_size=1, max_size=200))


@pytest.fixture(scope="module")
def refs_repo(registry) -> str:
    push_image(registry, "fuzz/refs", "v1")
    return "fuzz/refs"


@FUZZ
@given(reference=references, method=st.sampled_from(["GET", "HEAD", "DELETE"]))
def test_generated_references(registry, refs_repo, aws_calls, reference, method):
    if not reference.strip("/"):
        return
    aws_calls.reset()
    r = requests.request(method, f"{registry}/v2/{refs_repo}/manifests/{path_part(reference)}",
                         headers=admin_headers(refs_repo))
    check_answer(r, aws_calls, allowed={200, 202, 400, 404, 405})
    if r.status_code == 400 and method != "HEAD":
        assert r.json()["errors"][0]["code"] in ("TAG_INVALID", "DIGEST_INVALID",
                                                 "MANIFEST_INVALID", "NAME_INVALID")


@FUZZ
@given(digest=digests)
def test_generated_digests(registry, aws_calls, digest):
    repo = "fuzz/digests"
    headers = admin_headers(repo)
    for method in ("GET", "HEAD"):
        aws_calls.reset()
        r = requests.request(method, f"{registry}/v2/{repo}/blobs/{path_part(digest)}",
                             headers=headers, allow_redirects=False)
        check_answer(r, aws_calls, allowed={307, 200, 400, 404, 405})
    aws_calls.reset()
    r = requests.post(f"{registry}/v2/{repo}/blobs/uploads/", headers=headers,
                      params={"mount": digest, "from": "fuzz/elsewhere"})
    check_answer(r, aws_calls, allowed={201, 202, 400})
    if r.status_code == 202:
        aws_calls.reset()
        done = requests.put(absolute(registry, r.headers["Location"]), headers=headers,
                            params={"digest": digest}, data=b"some bytes")
        check_answer(done, aws_calls, allowed={201, 400})
        if done.status_code == 400:
            assert done.json()["errors"][0]["code"] in ("DIGEST_INVALID", "BLOB_UPLOAD_INVALID")


# ---------------------------------------------------------------- ranges

HEADER_CHARS = string.ascii_letters + string.digits + string.punctuation + " "
ranges = st.one_of(
    st.builds(lambda a, b: f"{a}-{b}", st.integers(-5, 70), st.integers(-5, 70)),
    st.builds(lambda a, b, t: f"bytes {a}-{b}/{t}", st.integers(0, 70), st.integers(0, 70),
              st.sampled_from(["*", "64", "abc", ""])),
    # what an HTTP header may carry at all (clients strip surrounding blanks; requests refuses
    # to send a value that starts with one)
    st.text(HEADER_CHARS, max_size=40).map(str.strip),
)


@FUZZ
@given(chunks=st.lists(st.tuples(ranges, st.binary(max_size=32)), min_size=1, max_size=4))
def test_generated_content_ranges(registry, aws_calls, chunks):
    repo = "fuzz/ranges"
    headers = admin_headers(repo)
    r = requests.post(f"{registry}/v2/{repo}/blobs/uploads/", headers=headers)
    location = absolute(registry, r.headers["Location"])
    received = b""
    for content_range, body in chunks:
        aws_calls.reset()
        r = requests.patch(location, data=body, headers={**headers, "Content-Range": content_range})
        check_answer(r, aws_calls, allowed={202, 400, 416})
        if r.status_code == 202:
            received += body
        # whatever was refused, the session says exactly what it holds
        assert r.headers["Range"] == f"0-{max(len(received) - 1, 0)}"
    aws_calls.reset()
    r = requests.put(location, params={"digest": sha256(received)}, headers=headers)
    check_answer(r, aws_calls, allowed={201})


# ---------------------------------------------------------------- manifests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=4),
    max_leaves=20)
media_types = st.sampled_from(sorted(oci.MANIFEST_TYPES) + ["text/plain", "", "application/json"])


def descriptor(digest_strategy):
    return st.fixed_dictionaries(
        {"mediaType": st.sampled_from(["application/vnd.oci.image.layer.v1.tar+gzip",
                                       "application/vnd.oci.image.config.v1+json", 7, ""]),
         "digest": digest_strategy, "size": st.one_of(st.integers(-1, 10 ** 12), st.text())},
        optional={"annotations": json_values, "platform": json_values,
                  "artifactType": json_values})


manifest_docs = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"schemaVersion": st.sampled_from([2, 1, "2", None]), "mediaType": media_types},
        optional={"config": descriptor(digests), "layers": st.lists(descriptor(digests),
                                                                    max_size=20),
                  "manifests": st.lists(descriptor(digests), max_size=20),
                  "subject": descriptor(digests), "annotations": json_values,
                  "artifactType": json_values}),
)


@FUZZ
@given(doc=manifest_docs, content_type=media_types,
       reference=st.one_of(st.just("v1"), st.from_regex(oci.TAG_RE, fullmatch=True)))
def test_generated_manifests(registry, aws_calls, doc, content_type, reference):
    repo = "fuzz/manifests"
    aws_calls.reset()
    r = requests.put(f"{registry}/v2/{repo}/manifests/{reference}", data=json.dumps(doc),
                     headers={**admin_headers(repo), "Content-Type": content_type})
    check_answer(r, aws_calls, allowed={201, 400, 404})


@FUZZ
@given(body=st.binary(max_size=2000))
def test_manifest_bodies_of_any_bytes(registry, aws_calls, body):
    repo = "fuzz/manifests"
    aws_calls.reset()
    r = requests.put(f"{registry}/v2/{repo}/manifests/v1", data=body,
                     headers={**admin_headers(repo), "Content-Type": oci.OCI_MANIFEST})
    check_answer(r, aws_calls, allowed={400})


# ---------------------------------------------------------------- no cross-tenant read

@FUZZ
@given(reference=st.one_of(st.sampled_from(["v1", "latest"]), references),
       pick=st.integers(0, 2), kind=st.sampled_from(["manifests", "blobs"]))
def test_a_tenant_never_reads_another_tenants_private_content(tenants, aws_calls, reference,
                                                              pick, kind):
    token = tenants.bob_token(f"repository:{tenants.repo}:pull,push,delete")
    assert tokens.verify(token).repositories == {}     # nothing granted on alice's repository
    for ref in (reference, tenants.alice_digests[pick]):
        if not ref.strip("/"):
            continue
        aws_calls.reset()
        r = tenants.session.get(f"{tenants.base}/v2/{tenants.repo}/{kind}/{path_part(ref)}",
                                headers={"Authorization": f"Bearer {token}"},
                                allow_redirects=False)
        check_answer(r, aws_calls, allowed={400, 401, 404})
        # mounting into bob's own namespace does not link alice's blob either
        r = tenants.session.post(
            f"{tenants.base}/v2/{tenants.bob_ns}/loot/blobs/uploads/",
            params={"mount": tenants.alice_digests[pick], "from": tenants.repo},
            headers={"Authorization": "Bearer " + tenants.bob_token(
                f"repository:{tenants.bob_ns}/loot:pull,push repository:{tenants.repo}:pull")})
        assert r.status_code == 202, r.status_code
    listed = tenants.session.get(
        f"{tenants.base}/v2/_catalog",
        headers={"Authorization": "Bearer " + tenants.bob_token("registry:catalog:*")})
    assert tenants.repo not in listed.json()["repositories"]


# ---------------------------------------------------------------- the management API

@pytest.fixture(scope="module")
def management_schema(registry):
    return schemathesis.openapi.from_url(f"{registry}/v2/_berth/api/openapi.json")


@pytest.fixture(scope="module")
def fuzz_user(registry, tenants):
    """bob: a user with a namespace, signed in to the console from the fuzzer's address."""
    token = tenants.bob_token("berth:api:*")
    return {"Authorization": f"Bearer {token}"}, tenants


management = schemathesis.pytest.from_fixture("management_schema")
APP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}      # app.py's routes
API_CALLS_MAX = 8 + 100 + 20      # auth and checks, one Query per repository of a 100-row page


@management.parametrize()
@settings(max_examples=max(EXAMPLES // 4, 10), deadline=None,
          suppress_health_check=list(HealthCheck))
def test_management_api_under_schemathesis(case, fuzz_user, aws_calls):
    headers, tenants = fuzz_user
    aws_calls.reset()
    response = case.call(session=tenants.session, headers=headers)
    case.validate_response(response, checks=[not_a_server_error])
    assert aws_calls.count("dynamodb") <= API_CALLS_MAX, aws_calls.calls
    if response.status_code >= 400 and case.method.upper() in APP_METHODS:
        assert "error" in response.json(), (case.method, case.formatted_path, response.text[:300])
        error = response.json()["error"]
        assert error["code"] and error["message"]
    # (other methods get API Gateway's own 403 "Missing Authentication Token", as in AWS)
    # whatever it sent, alice's private repository stays out of reach
    if case.method == "GET" and tenants.repo in str(case.path_parameters or ""):
        assert response.status_code == 404


def test_management_api_never_shows_another_tenants_repository(tenants):
    # from an address of its own: the fuzzing above may have slowed bob's logins down
    token = tenants.bob_token("berth:api:*", client_at(fresh_address()))
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{tenants.base}/v2/_berth/api"
    for path in (f"repositories/{tenants.repo}", f"repositories/{tenants.repo}/_tags"):
        assert tenants.session.get(f"{base}/{path}", headers=headers).status_code == 404
    r = tenants.session.get(f"{base}/repositories", headers=headers,
                            params={"namespace": tenants.alice_ns})
    assert r.status_code == 403
    r = tenants.session.get(f"{base}/repositories", headers=headers, params={"limit": 100})
    assert all(not x["name"].startswith(tenants.alice_ns + "/") for x in r.json()["repositories"])
