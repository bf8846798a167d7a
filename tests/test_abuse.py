"""Regression tests of the adversarial run of issue #12 (one section per finding), over HTTP.

Each test fails on the code the run broke: unbounded catalog and token work, a re-claimed
namespace showing its previous owner's blobs, a lock-out that locked out the victim, deeply nested
JSON answering 500, user names told apart by the work their login did, a namespace limit that
parallel activations overran, and `make run`'s unauthenticated bodies and orphaned moto child.
"""
from __future__ import annotations

import json
import uuid

import requests

from chalicelib.auth import accounts
from tests.support.registry_api import error_code, http, sha256

PASSWORD = "correct horse battery"
API = "/v2/_berth/api"


def new_user(admin: bool = False) -> str:
    name = "x" + uuid.uuid4().hex[:10]
    accounts.create_user(name, PASSWORD, admin=admin, log2_n=10)
    return name


def console_headers(base: str, username: str, password: str = PASSWORD) -> dict:
    r = requests.get(f"{base}/v2/_berth/token", auth=(username, password),
                     params={"service": "berth", "scope": "berth:api:*"})
    assert r.status_code == 200, r.text
    return {"Authorization": "Bearer " + r.json()["token"], "Content-Type": "application/json"}


# ---------------------------------------------------------------- 5: nested JSON is a 400

NESTED = b"[" * 20_000 + b"]" * 20_000     # 40 KB: under every body limit


def test_deeply_nested_manifest_is_manifest_invalid_not_500(registry):
    for body in (NESTED, b'{"schemaVersion": 2, "annotations": ' + b'{"a":' * 5000 + b'1' +
                 b"}" * 5001):
        r = http.put(f"{registry}/v2/nest/app/manifests/v1", data=body,
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 400, r.text
        assert error_code(r) == "MANIFEST_INVALID"
        assert "nested deeper than" in r.json()["errors"][0]["message"]


def test_deeply_nested_management_api_bodies_are_400_not_500(registry):
    headers = console_headers(registry, new_user())
    for method, path in (("POST", "namespaces"), ("POST", "repositories"),
                         ("PUT", "me/password"), ("POST", "me/tokens")):
        for body in (NESTED, b'{"name": ' + b"[" * 3000 + b"]" * 3000 + b"}"):
            r = requests.request(method, f"{registry}{API}/{path}", data=body, headers=headers)
            assert r.status_code == 400, (path, r.status_code, r.text[:200])
            assert r.json()["error"]["code"] == "INVALID_JSON"
