"""The management API (/v2/_berth/api/): every endpoint, its refusals, and what it costs."""
from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
import requests

from chalicelib.auth import accounts
from chalicelib.storage.models import REPOS_PK, RepoItem
from tests.support.registry_api import ADMIN, RegistryClient, error_code, push_image

PASSWORD = "correct horse battery"
API = "/v2/_berth/api"


def new_user(admin: bool = False) -> str:
    name = "m" + uuid.uuid4().hex[:10]
    accounts.create_user(name, PASSWORD, admin=admin, log2_n=10)
    return name


def api_token(base: str, username: str, password: str = PASSWORD) -> str:
    r = requests.get(f"{base}/v2/_berth/token", auth=(username, password),
                     params={"service": "berth", "scope": "berth:api:*"})
    assert r.status_code == 200, r.text
    return r.json()["token"]


class Api:
    """requests against the management API with one user's console token."""

    def __init__(self, base: str, username: str, password: str = PASSWORD) -> None:
        self.base, self.username, self.password = base, username, password
        self.headers = {"Authorization": "Bearer " + api_token(base, username, password)}

    def call(self, method: str, path: str, body=None, **kw) -> requests.Response:
        data = json.dumps(body) if body is not None else kw.pop("data", None)
        headers = {**self.headers, "Content-Type": "application/json", **kw.pop("headers", {})}
        r = requests.request(method, f"{self.base}{API}/{path}", data=data, headers=headers,
                             **kw)
        assert "Set-Cookie" not in r.headers
        return r

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.call("PATCH", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


def refused(r: requests.Response, status: int, field=None, code=None) -> dict:
    """Assert the API's error shape {"error": {"code", "message", "field"}}."""
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert set(error) == {"code", "message", "field"} and error["message"]
    if field is not None:
        assert error["field"] == field, error
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="module")
def owner(registry):
    """A user with an activated namespace, through the API."""
    user = new_user()
    api = Api(registry, user)
    namespace = "n" + uuid.uuid4().hex[:10]
    r = api.post("namespaces", {"name": namespace})
    assert r.status_code == 201, r.text
    api.namespace = namespace
    return api


@pytest.fixture(scope="module")
def stranger(registry):
    user = new_user()
    api = Api(registry, user)
    api.namespace = "s" + uuid.uuid4().hex[:10]
    assert api.post("namespaces", {"name": api.namespace}).status_code == 201
    return api


@pytest.fixture(scope="module")
def admin_api(registry):
    return Api(registry, *ADMIN)


# ---------------------------------------------------------------- tokens and authentication

def test_console_token_is_granted_to_password_logins_only(registry):
    user = new_user()
    r = requests.get(f"{registry}/v2/_berth/token", auth=(user, PASSWORD),
                     params={"service": "berth", "scope": ["berth:api:*",
                                                           f"repository:{user}/x:pull"]})
    assert r.status_code == 200 and r.json()["expires_in"] == 3600
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "berth", "name": "api", "actions": ["*"]}]
    assert claims["exp"] - claims["iat"] == 3600
    # a CI access token logs in for the registry, never for the management API
    secret = accounts.create_access_token(user, "ci", "push")
    r = requests.get(f"{registry}/v2/_berth/token", auth=(user, secret),
                     params={"service": "berth", "scope": "berth:api:*"})
    assert r.status_code == 200
    assert jwt.decode(r.json()["token"], options={"verify_signature": False})["access"] == []
    # other berth:… scopes grant nothing (never a repository, even one the user owns)
    accounts.create_namespace(user, user)
    r = requests.get(f"{registry}/v2/_berth/token", auth=(user, PASSWORD),
                     params={"service": "berth", "scope": f"berth:{user}/x:pull"})
    assert jwt.decode(r.json()["token"], options={"verify_signature": False})["access"] == []
    # anonymous: nothing
    r = requests.get(f"{registry}/v2/_berth/token",
                     params={"service": "berth", "scope": "berth:api:*"})
    assert jwt.decode(r.json()["token"], options={"verify_signature": False})["access"] == []


def test_api_refuses_missing_foreign_and_registry_tokens(registry, owner):
    r = requests.get(f"{registry}{API}/me")
    refused(r, 401, code="UNAUTHORIZED")
    assert 'scope="berth:api:*"' in r.headers["WWW-Authenticate"]
    assert "/v2/_berth/token" in r.headers["WWW-Authenticate"]
    r = requests.get(f"{registry}{API}/me", headers={"Authorization": "Bearer nonsense"})
    refused(r, 401)
    # a registry token (repository scopes) is not a console token
    registry_token = RegistryClient((owner.username, PASSWORD)).token(
        registry, (f"repository:{owner.namespace}/x:pull,push",))
    r = requests.get(f"{registry}{API}/me", headers={"Authorization": "Bearer " + registry_token})
    refused(r, 401)
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    # and a console token opens nothing in the registry API itself
    r = requests.get(f"{registry}/v2/{owner.namespace}/x/tags/list", headers=owner.headers)
    assert r.status_code == 401 and error_code(r) == "DENIED"


def test_unknown_endpoints_methods_and_bad_json(registry, owner):
    refused(owner.get("nothing/here"), 404, code="NOT_FOUND")
    refused(owner.call("PUT", "repositories"), 405, code="METHOD_NOT_ALLOWED")
    refused(owner.post("namespaces", data=b"{not json"), 400, code="INVALID_JSON")
    refused(owner.post("namespaces", data=b"[1, 2]"), 400, code="INVALID_JSON")
    refused(owner.post("namespaces", data=b"\xff\xfe"), 400, code="INVALID_JSON")
    refused(owner.post("repositories", {"name": 42}), 400, field="name")
    refused(owner.get("repositories", params={"limit": "0"}), 400, field="limit")
    refused(owner.get("repositories", params={"limit": "abc"}), 400, field="limit")
    refused(owner.get("repositories", params={"cursor": "!!!"}), 400, field="cursor")


def test_openapi_document_describes_every_endpoint(registry):
    r = requests.get(f"{registry}{API}/openapi.json")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    doc = r.json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"]
    expected = {("get", "repositories"), ("post", "repositories"),
                ("get", "repositories/{repository}"), ("patch", "repositories/{repository}"),
                ("delete", "repositories/{repository}"),
                ("get", "repositories/{repository}/_tags"),
                ("delete", "repositories/{repository}/_tags/{tag}"),
                ("get", "namespaces"), ("post", "namespaces"),
                ("delete", "namespaces/{namespace}"), ("get", "users"), ("post", "users"),
                ("patch", "users/{username}"), ("get", "me"), ("put", "me/password"),
                ("get", "me/tokens"), ("post", "me/tokens"), ("delete", "me/tokens/{id}"),
                ("post", "session"), ("delete", "session"), ("get", "signup"),
                ("post", "signup"), ("post", "invites"), ("get", "explore")}
    found = {(m, p[len(API) + 1:]) for p, ops in doc["paths"].items() for m in ops}
    assert expected <= found
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for ref in json.dumps(op).split('"$ref": "')[1:]:
                assert ref.split('"')[0].split("/")[-1] in doc["components"]["schemas"]


# ---------------------------------------------------------------- namespaces

def test_namespace_activation_listing_and_refusals(registry, owner, stranger):
    r = owner.get("namespaces")
    assert r.status_code == 200
    assert {"name": owner.namespace, "role": "owner", "owner": owner.username,
            "public": False} == {k: v for k, v in r.json()["namespaces"][0].items()
                                 if k != "created"}
    me = owner.get("me").json()
    assert me["username"] == owner.username and me["admin"] is False
    assert [n["name"] for n in me["namespaces"]] == [owner.namespace]
    refused(owner.post("namespaces", {"name": stranger.namespace}), 409, "name",
            "ALREADY_EXISTS")
    refused(owner.post("namespaces", {"name": "Bad_Name!"}), 400, "name", "NAME_INVALID")
    refused(owner.post("namespaces", {"name": "a" * 65}), 400, "name")
    refused(owner.post("namespaces", {}), 400, "name", "REQUIRED")
    # someone else's namespace cannot be deleted (nor even seen)
    refused(owner.delete(f"namespaces/{stranger.namespace}"), 404, "namespace")
    refused(owner.delete("namespaces/does-not-exist"), 404, "namespace")


def test_namespace_delete_only_when_empty_and_limit_of_owned(registry):
    api = Api(registry, new_user())
    names = ["d" + uuid.uuid4().hex[:10] for _ in range(5)]
    for name in names:
        assert api.post("namespaces", {"name": name}).status_code == 201
    refused(api.post("namespaces", {"name": "d" + uuid.uuid4().hex[:10]}), 403, "name")
    assert api.post("repositories", {"name": f"{names[0]}/app"}).status_code == 201
    refused(api.delete(f"namespaces/{names[0]}"), 409, "namespace", "NOT_EMPTY")
    assert api.delete(f"repositories/{names[0]}/app").status_code == 200
    r = api.delete(f"namespaces/{names[0]}")
    assert r.status_code == 200, r.text
    assert accounts.get_namespace(names[0]) is None
    assert names[0] not in [n["name"] for n in api.get("namespaces").json()["namespaces"]]
    assert accounts.role_in(api.username, names[0]) is None
    # the name is free again
    assert Api(registry, new_user()).post("namespaces", {"name": names[0]}).status_code == 201


# ---------------------------------------------------------------- repositories

def test_create_read_update_repository(registry, owner, stranger):
    name = f"{owner.namespace}/web"
    r = owner.post("repositories", {"name": name, "description": "The web front end",
                                    "visibility": "private"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["name"] == name and doc["description"] == "The web front end"
    assert doc["visibility"] == "private" and doc["tag_count"] == 0 and doc["size"] == 0
    assert doc["last_push"] is None
    host = registry.split("://", 1)[1]
    assert doc["pull_command"] == f"docker pull {host}/{name}:latest"
    refused(owner.post("repositories", {"name": name}), 409, "name", "ALREADY_EXISTS")
    r = owner.get(f"repositories/{name}")
    assert r.status_code == 200 and r.json()["description"] == "The web front end"
    r = owner.patch(f"repositories/{name}", {"description": "New words", "visibility": "public"})
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "New words" and r.json()["visibility"] == "public"
    assert accounts.is_public(name)
    # public: a stranger may read it, not change it
    assert stranger.get(f"repositories/{name}").status_code == 200
    refused(stranger.patch(f"repositories/{name}", {"description": "mine"}), 403, "description")
    refused(stranger.delete(f"repositories/{name}"), 403, "repository")
    r = owner.patch(f"repositories/{name}", {"visibility": "private"})
    assert r.json()["visibility"] == "private" and not accounts.is_public(name)
    refused(stranger.get(f"repositories/{name}"), 404, "repository")
    # the Host / X-Forwarded-Proto the client used make the pull command
    r = owner.get(f"repositories/{name}", headers={"Host": "registry.example.com",
                                                   "X-Forwarded-Proto": "https"})
    assert r.json()["pull_command"] == f"docker pull registry.example.com/{name}:latest"


def test_repository_refusals(registry, owner, stranger):
    refused(owner.post("repositories", {"name": f"{owner.namespace}/big",
                                        "description": "x" * 1001}),
            400, "description", "TOO_LONG")
    assert owner.post("repositories", {"name": f"{owner.namespace}/edge",
                                       "description": "é" * 1000}).status_code == 201
    refused(owner.patch(f"repositories/{owner.namespace}/edge", {"description": "x" * 1001}),
            400, "description", "TOO_LONG")
    refused(owner.patch(f"repositories/{owner.namespace}/edge", {}), 400)
    refused(owner.patch(f"repositories/{owner.namespace}/edge", {"visibility": "secret"}),
            400, "visibility")
    for bad in ("Upper/Case", "noslash", f"{owner.namespace}/-x", f"{owner.namespace}//x",
                f"{owner.namespace}/" + "a" * 260, ""):
        refused(owner.post("repositories", {"name": bad}), 400, "name")
    refused(owner.post("repositories", {"name": f"{stranger.namespace}/mine"}), 403, "name")
    refused(owner.post("repositories", {"name": "nosuchnamespace123/app"}), 400, "name",
            "NAMESPACE_UNKNOWN")
    refused(owner.get(f"repositories/{owner.namespace}/missing"), 404, "repository")
    refused(owner.delete(f"repositories/{owner.namespace}/missing"), 404, "repository")
    refused(owner.delete(f"repositories/{owner.namespace}/edge/_tags/nope"), 404, "tag")
    refused(owner.delete(f"repositories/{owner.namespace}/edge/_tags/bad%20tag"), 400, "tag")
    refused(owner.get("repositories", params={"namespace": stranger.namespace}), 403,
            "namespace")
    refused(owner.get("repositories", params={"namespace": "nosuchnamespace123"}), 404,
            "namespace")
    refused(owner.get("repositories", params={"namespace": "BAD!"}), 400, "namespace")


def test_pull_member_reads_but_does_not_edit(registry, owner):
    reader = Api(registry, new_user())
    accounts.add_member(owner.namespace, reader.username, "pull")
    name = f"{owner.namespace}/readable"
    assert owner.post("repositories", {"name": name}).status_code == 201
    doc = reader.get(f"repositories/{name}").json()
    assert doc["permissions"] == ["pull"] and not doc["can_edit"] and not doc["can_delete"]
    refused(reader.patch(f"repositories/{name}", {"description": "x"}), 403, "description")
    refused(reader.delete(f"repositories/{name}"), 403, "repository")
    refused(reader.post("repositories", {"name": f"{owner.namespace}/new"}), 403, "name")
    pusher = Api(registry, new_user())
    accounts.add_member(owner.namespace, pusher.username, "push")
    assert pusher.patch(f"repositories/{name}", {"description": "ok"}).status_code == 200
    refused(pusher.patch(f"repositories/{name}", {"visibility": "public"}), 403, "visibility")


def test_list_search_and_pagination(registry):
    api = Api(registry, new_user())
    ns = "l" + uuid.uuid4().hex[:10]
    assert api.post("namespaces", {"name": ns}).status_code == 201
    names = [f"{ns}/app{i:02d}" for i in range(7)] + [f"{ns}/tools/lint"]
    for i, name in enumerate(names):
        assert api.post("repositories", {"name": name, "description": f"d{i}"}).status_code == 201
    seen, cursor = [], None
    while True:
        r = api.get("repositories", params={"namespace": ns, "limit": 3,
                                            **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["repositories"]) <= 3
        seen += [repo["name"] for repo in page["repositories"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(names)
    r = api.get("repositories", params={"namespace": ns, "q": "lint"})
    assert [x["name"] for x in r.json()["repositories"]] == [f"{ns}/tools/lint"]
    assert r.json()["repositories"][0]["description"] == "d7"
    r = api.get("repositories", params={"namespace": ns, "q": "APP0"})    # case-insensitive
    assert len(r.json()["repositories"]) == 7
    # without a namespace: every namespace of mine
    assert {x["name"] for x in api.get("repositories", params={"limit": 100}).json()[
        "repositories"]} == set(names)


def test_listing_reads_are_bounded_whatever_the_namespace_size(registry, admin_api, aws_calls):
    """1,000 repositories in a namespace: the first page costs what a page of a small one does."""
    now = time.time()
    big, small = "b" + uuid.uuid4().hex[:10], "c" + uuid.uuid4().hex[:10]
    for ns in (big, small):
        assert admin_api.post("namespaces", {"name": ns}).status_code == 201
    bulk = [RepoItem(REPOS_PK, f"{big}/r{i:04d}", created=now, updated=now) for i in range(1000)]
    bulk += [RepoItem(REPOS_PK, f"{small}/r{i:04d}", created=now, updated=now) for i in range(25)]
    with RepoItem.batch_write() as batch:
        for item in bulk:
            batch.save(item)
    try:
        _count_first_pages(admin_api, aws_calls, big, small)
    finally:          # other tests page through the catalog: take the bulk out again
        with RepoItem.batch_write() as batch:
            for item in bulk:
                batch.delete(item)


def _count_first_pages(admin_api, aws_calls, big: str, small: str) -> None:
    counts = {}
    for ns in (big, small):
        aws_calls.reset()
        r = admin_api.get("repositories", params={"namespace": ns, "limit": 20})
        assert r.status_code == 200 and len(r.json()["repositories"]) == 20
        assert r.json()["next_cursor"]
        counts[ns] = aws_calls.count("dynamodb")
    # auth (user), namespace checks, 1 Query of _repos, 1 BatchGet of descriptions,
    # and 1 Query per repository of the page
    assert counts[big] == counts[small] <= 8 + 20, counts
    # searching reads at most a few bounded Queries too
    aws_calls.reset()
    r = admin_api.get("repositories", params={"namespace": big, "q": "r009", "limit": 20})
    assert r.status_code == 200
    assert aws_calls.count("dynamodb") <= 8 + 5 + 20
    # 5 Queries of Limit 20 looked at r0000…r0099: a short page and a cursor to go on
    assert [x["name"] for x in r.json()["repositories"]] == [f"{big}/r009{i}" for i in range(10)]
    assert r.json()["next_cursor"]


# ---------------------------------------------------------------- sizes, tags, deletes

def _manifest_size(base: str, client: RegistryClient, repo: str, ref: str) -> int:
    r = client.get(f"{base}/v2/{repo}/manifests/{ref}",
                   headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200
    return len(r.content)


def test_sizes_and_counts_follow_push_retag_and_delete(registry, owner):
    client = RegistryClient((owner.username, PASSWORD))
    repo = f"{owner.namespace}/sized"
    config = b'{"architecture":"amd64","os":"linux"}'
    layers = (b"a" * 1000, b"b" * 3000)
    digest = push_image(registry, repo, "v1", layer_bytes=layers, config=config, client=client)
    m1 = _manifest_size(registry, client, repo, "v1")
    image1 = m1 + len(config) + sum(map(len, layers))
    doc = owner.get(f"repositories/{repo}").json()
    assert (doc["tag_count"], doc["manifest_count"], doc["size"]) == (1, 1, image1)
    assert doc["last_push"] and abs(doc["last_push"] - time.time()) < 60
    assert doc["pull_command"].endswith(f"/{repo}:v1")
    assert doc["description"] == ""
    # re-tag: the same manifest under a second tag costs nothing more
    body = client.get(f"{registry}/v2/{repo}/manifests/v1",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).content
    r = client.put(f"{registry}/v2/{repo}/manifests/stable", data=body,
                   headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201
    doc = owner.get(f"repositories/{repo}").json()
    assert (doc["tag_count"], doc["size"]) == (2, image1)
    assert doc["pull_command"].endswith(f"/{repo}:stable")      # the newest tag
    # a second image sharing one layer: the shared layer counts once
    layers2 = (b"a" * 1000, b"c" * 500)
    push_image(registry, repo, "v2", layer_bytes=layers2, config=config, client=client)
    m2 = _manifest_size(registry, client, repo, "v2")
    doc = owner.get(f"repositories/{repo}").json()
    assert (doc["tag_count"], doc["manifest_count"]) == (3, 2)
    assert doc["size"] == image1 + m2 + 500
    # tags list: digest, media type, size, push time
    tags = {t["name"]: t for t in owner.get(f"repositories/{repo}/_tags").json()["tags"]}
    assert set(tags) == {"v1", "stable", "v2"}
    assert tags["v1"]["digest"] == digest and tags["stable"]["digest"] == digest
    assert tags["v1"]["media_type"] == "application/vnd.oci.image.manifest.v1+json"
    assert tags["v1"]["size"] == image1 and tags["v2"]["size"] == m2 + len(config) + 1500
    # a single-architecture image shows its platform too, read from its config blob
    assert tags["v1"]["kind"] == "image" and tags["v1"]["platforms"] == ["linux/amd64"]
    assert tags["v2"]["pull_command"].endswith(f"/{repo}:v2")
    # delete the first image by digest through the registry API: both its tags go
    r = client.delete(f"{registry}/v2/{repo}/manifests/{digest}")
    assert r.status_code == 202
    doc = owner.get(f"repositories/{repo}").json()
    assert (doc["tag_count"], doc["manifest_count"]) == (1, 1)
    assert doc["size"] == m2 + len(config) + 1500      # unreferenced blobs wait for the GC
    # delete a tag through the management API
    r = owner.delete(f"repositories/{repo}/_tags/v2")
    assert r.status_code == 200 and r.json()["deleted_tag"] == "v2"
    assert client.get(f"{registry}/v2/{repo}/manifests/v2").status_code == 404
    doc = owner.get(f"repositories/{repo}").json()
    assert doc["tag_count"] == 0


def test_tags_of_an_index_show_platforms(registry, owner):
    client = RegistryClient((owner.username, PASSWORD))
    repo = f"{owner.namespace}/multi"
    children = []
    for arch, layer in (("amd64", b"x" * 700), ("arm64", b"y" * 900)):
        config = json.dumps({"architecture": arch, "os": "linux"}).encode()
        d = push_image(registry, repo, f"only-{arch}", layer_bytes=(layer,), config=config,
                       client=client)
        size = _manifest_size(registry, client, repo, d)
        children.append(({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": d, "size": size,
                          "platform": {"os": "linux", "architecture": arch}},
                         size + len(config) + len(layer)))
    index = json.dumps({"schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [c for c, _ in children]}).encode()
    r = client.put(f"{registry}/v2/{repo}/manifests/latest", data=index,
                   headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    assert r.status_code == 201, r.text
    tags = {t["name"]: t for t in owner.get(f"repositories/{repo}/_tags",
                                            params={"limit": 2}).json()["tags"]}
    assert set(tags) == {"latest", "only-amd64"}       # sorted, first page of 2
    latest = tags["latest"]
    assert latest["kind"] == "index" and latest["platforms"] == ["linux/amd64", "linux/arm64"]
    assert latest["size"] == len(index) + sum(s for _, s in children)
    page = owner.get(f"repositories/{repo}/_tags", params={"limit": 2}).json()
    rest = owner.get(f"repositories/{repo}/_tags",
                     params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [t["name"] for t in rest["tags"]] == ["only-arm64"] and rest["next_cursor"] is None


def test_delete_image_removes_every_tag_and_manifest_only_there(registry, owner):
    client = RegistryClient((owner.username, PASSWORD))
    doomed, kept = f"{owner.namespace}/doomed", f"{owner.namespace}/kept"
    assert owner.post("repositories", {"name": doomed, "description": "bye"}).status_code == 201
    shared = b"shared layer bytes"
    d1 = push_image(registry, doomed, "v1", layer_bytes=(shared,), client=client)
    push_image(registry, doomed, "v2", layer_bytes=(shared, b"more"), client=client)
    kept_digest = push_image(registry, kept, "v1", layer_bytes=(shared,), client=client)
    r = owner.delete(f"repositories/{doomed}")
    assert r.status_code == 200, r.text
    assert r.json()["deleted_tags"] == ["v1", "v2"] and r.json()["deleted_manifests"] == 2
    assert r.json()["complete"] is True
    for tag in ("v1", "v2", d1):
        r = client.get(f"{registry}/v2/{doomed}/manifests/{tag}")
        assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    refused(owner.get(f"repositories/{doomed}"), 404)
    refused(owner.delete(f"repositories/{doomed}"), 404)
    assert doomed not in [x["name"] for x in owner.get(
        "repositories", params={"namespace": owner.namespace, "limit": 100}).json()[
        "repositories"]]
    r = client.get(f"{registry}/v2/{kept}/manifests/v1",
                   headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == kept_digest
    # the name can be pushed to again, and comes back without the old description
    push_image(registry, doomed, "v3", client=client)
    doc = owner.get(f"repositories/{doomed}").json()
    assert doc["tag_count"] == 1 and doc["description"] == ""


# ---------------------------------------------------------------- users and the caller's account

def test_users_are_for_admins_only(registry, owner, admin_api):
    refused(owner.get("users"), 403)
    refused(owner.post("users", {"username": "x" + uuid.uuid4().hex[:8],
                                 "password": "long enough"}), 403)
    refused(owner.patch(f"users/{owner.username}", {"disabled": True}), 403)
    name = "v" + uuid.uuid4().hex[:10]
    r = admin_api.post("users", {"username": name, "password": "long enough pw"})
    assert r.status_code == 201, r.text
    assert r.json() == {"username": name, "admin": False, "disabled": False,
                        "created": r.json()["created"]}
    refused(admin_api.post("users", {"username": name, "password": "long enough pw"}), 409,
            "username")
    refused(admin_api.post("users", {"username": "Bad Name", "password": "long enough"}), 400,
            "username")
    refused(admin_api.post("users", {"username": "v" + uuid.uuid4().hex[:8],
                                     "password": "short"}), 400, "password")
    seen, cursor = set(), None
    for _ in range(100):
        r = admin_api.get("users", params={"limit": 50, **({"cursor": cursor} if cursor
                                                            else {})})
        assert r.status_code == 200, r.text
        seen |= {u["username"] for u in r.json()["users"]}
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert {name, owner.username, ADMIN[0]} <= seen
    victim = Api(registry, name, "long enough pw")
    assert victim.get("me").status_code == 200
    r = admin_api.patch(f"users/{name}", {"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    refused(victim.get("me"), 401)       # a live console token stops working at once
    refused(admin_api.patch(f"users/{ADMIN[0]}", {"disabled": True}), 400)
    refused(admin_api.patch("users/nobody-here", {"disabled": True}), 404, "username")
    refused(admin_api.patch(f"users/{name}", {"disabled": "yes"}), 400, "disabled")
    assert admin_api.patch(f"users/{name}", {"disabled": False}).json()["disabled"] is False


def test_password_change(registry):
    user = new_user()
    api = Api(registry, user)
    refused(api.put("me/password", {"current_password": "wrong password",
                                    "new_password": "another long one"}),
            403, "current_password")
    refused(api.put("me/password", {"current_password": PASSWORD, "new_password": "short"}),
            400, "new_password")
    refused(api.put("me/password", {"new_password": "another long one"}), 400,
            "current_password")
    other_tab = Api(registry, user)                  # a second console session of the user
    r = api.put("me/password", {"current_password": PASSWORD,
                                "new_password": "another long one"})
    assert r.status_code == 200, r.text
    assert requests.get(f"{registry}/v2/_berth/token", auth=(user, PASSWORD)).status_code == 401
    # every session opened with the old password ends with the change (issue 12, finding 7)
    assert "ended" in refused(api.get("me"), 401)["message"]
    refused(other_tab.get("me"), 401)
    assert Api(registry, user, "another long one").get("me").status_code == 200


def test_access_tokens_create_list_revoke(registry, owner):
    # minting a lasting token asks for the password again: a stolen session cannot (finding 7)
    refused(owner.post("me/tokens", {"name": "ci", "scope": "push"}), 400, "password",
            "REQUIRED")
    refused(owner.post("me/tokens", {"name": "ci", "scope": "push",
                                     "password": "not the password"}), 403, "password")
    assert not [t for t in owner.get("me/tokens").json()["tokens"] if not t["revoked"]]
    r = owner.post("me/tokens", {"name": "ci", "scope": "pull", "password": PASSWORD})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("berth_") and created["scope"] == "pull"
    refused(owner.post("me/tokens", {"name": "ci", "password": created["secret"]}), 400,
            "password")                                  # an access token is not the password
    refused(owner.post("me/tokens", {"name": "ci", "password": PASSWORD}), 409, "name")
    refused(owner.post("me/tokens", {"name": "x", "scope": "admin"}), 400, "scope")
    refused(owner.post("me/tokens", {"name": "  "}), 400, "name")
    refused(owner.post("me/tokens", {"name": "n" * 101}), 400, "name")
    listed = owner.get("me/tokens").json()["tokens"]
    assert [t["name"] for t in listed if not t["revoked"]] == ["ci"]
    assert all("secret" not in t for t in listed)
    # the token works as a docker login password for pull
    client = RegistryClient((owner.username, created["secret"]))
    repo = f"{owner.namespace}/tokentest"
    push_image(registry, repo, "v1")                               # as the admin
    assert client.get(f"{registry}/v2/{repo}/tags/list").status_code == 200
    assert owner.delete(f"me/tokens/{created['id']}").status_code == 200
    refused(owner.delete(f"me/tokens/{created['id']}"), 409, "id")
    refused(owner.delete("me/tokens/0123456789abcdef"), 404, "id")
    r = requests.get(f"{registry}/v2/_berth/token", auth=(owner.username, created["secret"]))
    assert r.status_code == 401


def test_deleting_a_big_image_resumes_across_calls(registry, owner, monkeypatch):
    """A delete that runs out of its time budget answers 202 (complete: false); calling again
    finishes it (the console repeats the call)."""
    from chalicelib.api.manage import repos
    client = RegistryClient((owner.username, PASSWORD))
    name = f"{owner.namespace}/resumable"
    for i in range(3):
        push_image(registry, name, f"v{i}", layer_bytes=(f"layer {i}".encode(),), client=client)
    monkeypatch.setattr(repos, "DELETE_BUDGET", -1.0)     # out of time after each manifest
    r = owner.delete(f"repositories/{name}")
    assert r.status_code == 202 and r.json()["complete"] is False
    assert r.json()["deleted_manifests"] == 1
    assert owner.get(f"repositories/{name}").json()["manifest_count"] == 2
    monkeypatch.undo()
    r = owner.delete(f"repositories/{name}")
    assert r.status_code == 200 and r.json()["complete"] is True
    refused(owner.get(f"repositories/{name}"), 404)
