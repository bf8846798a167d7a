"""Regression tests of the adversarial run of issue #12 (one section per finding), over HTTP.

Each test fails on the code the run broke: unbounded catalog and token work, a re-claimed
namespace showing its previous owner's blobs, a lock-out that locked out the victim, deeply nested
JSON answering 500, user names told apart by the work their login did, a namespace limit that
parallel activations overran, and `make run`'s unauthenticated bodies and orphaned moto child.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
import requests
from requests.adapters import HTTPAdapter

from chalicelib.api import catalog
from chalicelib.auth import accounts
from chalicelib.config import settings
from chalicelib.storage.models import REPOS_PK, TOMBSTONE_SK, NamespaceTombstoneItem, RepoItem
from berth_local.backend import free_port
from tests.conftest import ROOT, _wait_for
from tests.test_manage_api import PASSWORD, api_token, new_user
from tests.support.registry_api import (ADMIN, RegistryClient, error_code, http, push_blob,
                                        push_image, sha256)

API = "/v2/_berth/api"


def console_headers(base: str, username: str) -> dict:
    return {"Authorization": "Bearer " + api_token(base, username),
            "Content-Type": "application/json"}


def user_with_namespace(base: str, prefix: str):
    """A new user signed in to the console, with a namespace activated through the API."""
    user = new_user()
    headers = console_headers(base, user)
    namespace = prefix + uuid.uuid4().hex[:8]
    assert requests.post(f"{base}{API}/namespaces", json={"name": namespace},
                         headers=headers).status_code == 201
    return user, headers, namespace


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


# ---------------------------------------------------------------- 1: bounded work per request

@pytest.fixture
def many_private_repositories():
    """3,000 private repositories in one namespace (written directly: the API would need the
    limit raised), and two public ones sorted after them; taken out again afterwards."""
    owner = new_user()
    namespace = "zz" + uuid.uuid4().hex[:8]
    accounts.create_namespace(namespace, owner)
    now = time.time()
    bulk = [RepoItem(REPOS_PK, f"{namespace}/r{i:05d}", created=now, updated=now)
            for i in range(3000)]
    bulk += [RepoItem(REPOS_PK, f"{namespace}/zpublic{i}", created=now, updated=now, public=True)
             for i in range(2)]
    with RepoItem.batch_write() as batch:
        for item in bulk:
            batch.save(item)
    try:
        yield namespace
    finally:
        with RepoItem.batch_write() as batch:
            for item in bulk:
                batch.delete(item)


def _anonymous_catalog(base: str, **params) -> requests.Response:
    token = requests.get(f"{base}/v2/_berth/token",
                         params={"service": "berth", "scope": "registry:catalog:*"}).json()["token"]
    return requests.get(f"{base}/v2/_catalog", params=params,
                        headers={"Authorization": f"Bearer {token}"})


def test_anonymous_catalog_reads_are_bounded_by_a_ceiling_not_by_private_repositories(
        registry, many_private_repositories, aws_calls):
    namespace = many_private_repositories
    aws_calls.reset()
    started = time.monotonic()
    r = _anonymous_catalog(registry, n=2, last=f"{namespace}/")
    took = time.monotonic() - started
    assert r.status_code == 200, r.text
    calls = aws_calls.count("dynamodb")
    # at most SCAN_QUERIES Queries of 1,000 names and one BatchGet of namespaces: not 2 GetItems
    # for each of the 3,000 private repositories in the way (6,000 calls, minutes, before)
    assert calls <= getattr(catalog, "SCAN_QUERIES", 11) + 2, aws_calls.calls
    assert took < 30
    # what it found, and a Link to go on; following the Links reaches both public ones
    seen = list(r.json()["repositories"])
    link = r.headers.get("Link")
    for _ in range(10):
        if not link or len([s for s in seen if s.startswith(namespace)]) >= 2:
            break
        last = parse_qs(urlparse(link.split(";")[0].strip("<>")).query)["last"][0]
        aws_calls.reset()
        r = _anonymous_catalog(registry, n=2, last=last)
        assert aws_calls.count("dynamodb") <= getattr(catalog, "SCAN_QUERIES", 11) + 2
        seen += r.json()["repositories"]
        link = r.headers.get("Link")
    mine = [s for s in seen if s.startswith(namespace + "/")]
    assert mine == [f"{namespace}/zpublic0", f"{namespace}/zpublic1"]


def test_token_request_with_thousands_of_scopes_is_refused_at_once(registry, aws_calls):
    scopes = [f"repository:nobody/r{i}:pull" for i in range(4000)]
    aws_calls.reset()
    r = requests.get(f"{registry}/v2/_berth/token", params={"service": "berth", "scope": scopes})
    assert r.status_code == 400 and error_code(r) == "DENIED"
    assert "at most 20" in r.json()["errors"][0]["message"]
    assert aws_calls.count("dynamodb") == 0
    # space-joined (the OAuth2 form) counts the same
    r = requests.post(f"{registry}/v2/_berth/token", data={
        "grant_type": "password", "username": "nobody", "password": "whatever!",
        "scope": " ".join(scopes[:21])})
    assert r.status_code == 400 and error_code(r) == "DENIED"
    ok = requests.get(f"{registry}/v2/_berth/token",
                      params={"service": "berth", "scope": scopes[:20]})
    assert ok.status_code == 200


@pytest.fixture
def repository_limit(monkeypatch):
    """BERTH_REPOS_PER_NAMESPACE=3 for the registry served in this process."""
    from chalicelib.storage import metadata
    limited = dataclasses.replace(settings(), repos_per_namespace=3)
    monkeypatch.setattr(metadata, "settings", lambda: limited)
    return 3


def test_repositories_per_namespace_limit_on_push_and_api(registry, repository_limit):
    user, headers, namespace = user_with_namespace(registry, "lim")
    client = RegistryClient((user, PASSWORD))
    for i in range(2):
        r = requests.post(f"{registry}{API}/repositories", json={"name": f"{namespace}/r{i}"},
                          headers=headers)
        assert r.status_code == 201, r.text
    push_image(registry, f"{namespace}/pushed", "v1", client=client)     # the third
    r = requests.post(f"{registry}{API}/repositories", json={"name": f"{namespace}/r9"},
                      headers=headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "LIMIT_REACHED"
    assert "BERTH_REPOS_PER_NAMESPACE" in r.json()["error"]["message"]
    r = client.post(f"{registry}/v2/{namespace}/fourth/blobs/uploads/")
    assert r.status_code == 403 and error_code(r) == "DENIED"
    assert "limit" in r.json()["errors"][0]["message"]
    # pushing more into an existing repository is not affected
    push_image(registry, f"{namespace}/pushed", "v2", layer_bytes=(b"other",), client=client)
    # deleting one makes room
    assert requests.delete(f"{registry}{API}/repositories/{namespace}/r0",
                           headers=headers).status_code == 200
    push_image(registry, f"{namespace}/fourth", "v1", client=client)


def test_parallel_repository_creations_stop_at_the_limit(registry, repository_limit):
    _, headers, namespace = user_with_namespace(registry, "par")

    def create(i):
        return requests.post(f"{registry}{API}/repositories", json={"name": f"{namespace}/r{i}"},
                             headers=headers).status_code
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(create, range(16)))
    assert codes.count(201) == repository_limit, codes
    assert set(codes) == {201, 409}


# ---------------------------------------------------------------- 2: a re-claimed name starts empty

def test_a_reclaimed_namespace_starts_empty(registry):
    alice, bob = new_user(), new_user()
    alice_api = console_headers(registry, alice)
    namespace = "re" + uuid.uuid4().hex[:8]
    assert requests.post(f"{registry}{API}/namespaces", json={"name": namespace},
                         headers=alice_api).status_code == 201
    alice_client = RegistryClient((alice, PASSWORD))
    secret = b"alice's private layer " + uuid.uuid4().bytes
    push_image(registry, f"{namespace}/app", "v1", layer_bytes=(secret,), client=alice_client)
    lone = push_blob(registry, f"{namespace}/app", b"uploaded, never in a manifest " +
                     uuid.uuid4().bytes, client=alice_client)
    stashed = push_blob(registry, f"{namespace}/stash", b"a repository of one blob " +
                        uuid.uuid4().bytes, client=alice_client)
    old_token = alice_client.token(registry, (f"repository:{namespace}/app:pull,push,delete",))

    assert requests.delete(f"{registry}{API}/repositories/{namespace}/app",
                           headers=alice_api).status_code == 200
    # a repository holding only an uploaded blob still counts: the namespace is not empty
    r = requests.delete(f"{registry}{API}/namespaces/{namespace}", headers=alice_api)
    assert r.status_code == 409 and r.json()["error"]["code"] == "NOT_EMPTY", r.text
    assert requests.delete(f"{registry}{API}/repositories/{namespace}/stash",
                           headers=alice_api).status_code == 200
    assert requests.delete(f"{registry}{API}/namespaces/{namespace}",
                           headers=alice_api).status_code == 200

    # nobody takes the name while a token issued for it may still be valid
    bob_api = console_headers(registry, bob)
    r = requests.post(f"{registry}{API}/namespaces", json={"name": namespace}, headers=bob_api)
    assert r.status_code == 409 and "deleted less than" in r.json()["error"]["message"]
    tombstone = NamespaceTombstoneItem.get(f"ns#{namespace}", TOMBSTONE_SK)
    expires = jwt.decode(old_token, options={"verify_signature": False})["exp"]
    assert tombstone.deleted_at + accounts.namespace_quarantine() > expires

    _age_tombstone(namespace)
    assert requests.post(f"{registry}{API}/namespaces", json={"name": namespace},
                         headers=bob_api).status_code == 201
    bob_client = RegistryClient((bob, PASSWORD))
    for repo, digest in ((f"{namespace}/app", sha256(secret)), (f"{namespace}/app", lone),
                         (f"{namespace}/stash", stashed)):
        r = bob_client.get(f"{registry}/v2/{repo}/blobs/{digest}", allow_redirects=False)
        assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN", (repo, r.status_code)
        r = bob_client.post(f"{registry}/v2/{namespace}/mine/blobs/uploads/",
                            params={"mount": digest, "from": repo})
        assert r.status_code == 202, (repo, r.status_code)     # an upload, not a mount
    assert bob_client.get(f"{registry}/v2/{namespace}/app/tags/list").status_code == 404
    listed = bob_client.get(f"{registry}/v2/_catalog").json()["repositories"]
    assert not [name for name in listed if name.startswith(namespace + "/") and
                name != f"{namespace}/mine"]


def _age_tombstone(namespace: str) -> None:
    """What namespace_quarantine() seconds of waiting would do."""
    NamespaceTombstoneItem(f"ns#{namespace}", TOMBSTONE_SK).update(actions=[
        NamespaceTombstoneItem.deleted_at.set(time.time() - accounts.namespace_quarantine() - 1)])


# ---------------------------------------------------------------- 8: the namespace limit holds

def test_parallel_activations_stop_at_the_namespace_limit(registry):
    from chalicelib.api.manage.people import NAMESPACES_PER_USER
    headers = console_headers(registry, new_user())
    names = ["act" + uuid.uuid4().hex[:8] for _ in range(20)]

    def activate(name):
        return requests.post(f"{registry}{API}/namespaces", json={"name": name},
                             headers=headers).status_code
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(activate, names))
    assert codes.count(201) == NAMESPACES_PER_USER, codes
    assert set(codes) == {201, 403}
    mine = requests.get(f"{registry}{API}/namespaces", headers=headers).json()["namespaces"]
    assert len(mine) == NAMESPACES_PER_USER
    # deleting one gives its place back
    assert requests.delete(f"{registry}{API}/namespaces/{mine[0]['name']}",
                           headers=headers).status_code == 200
    assert activate("act" + uuid.uuid4().hex[:8]) == 201
    assert activate("act" + uuid.uuid4().hex[:8]) == 403


# ---------------------------------------------------------------- 3 and 6: lock-out, timing

class _FromAddress(HTTPAdapter):
    """Connect from another loopback address: the registry sees another client (sourceIp)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client_at(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", _FromAddress(address))
    return session


_next_address = iter(range(20, 250))


def fresh_address() -> str:
    """A loopback address no other test logged in from (each test gets its own sources)."""
    return f"127.0.{uuid.uuid4().int % 200 + 20}.{next(_next_address)}"


def login(session: requests.Session, base: str, username: str, password: str):
    return session.get(f"{base}/v2/_berth/token", auth=(username, password),
                       params={"service": "berth"})


def test_guessing_a_password_slows_the_guesser_not_the_victim(registry):
    victim = new_user()
    ci_token = accounts.create_access_token(victim, "ci", "push")
    attacker, home = client_at(fresh_address()), client_at(fresh_address())
    for _ in range(accounts.PAIR_FAILURE_FREE):
        assert login(attacker, registry, victim, "guess guess").status_code == 401
    r = login(attacker, registry, victim, "one more guess")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1       # the guesser waits
    # the victim, from anywhere else, gets in with the right password; a CI token gets in even
    # from the guesser's own address
    assert login(home, registry, victim, PASSWORD).status_code == 200
    assert login(attacker, registry, victim, ci_token).status_code == 200
    # the admin too: wrong passwords for "admin" from a stranger do not lock the admin out
    for _ in range(accounts.PAIR_FAILURE_FREE + 1):
        login(attacker, registry, ADMIN[0], "not the admin password")
    assert login(home, registry, *ADMIN).status_code == 200


def test_made_up_names_slow_their_address_with_growing_delays_but_not_its_known_users(registry):
    regular, newcomer = new_user(), new_user()
    address = fresh_address()
    office = client_at(address)
    assert login(office, registry, regular, PASSWORD).status_code == 200   # known from here
    for i in range(accounts.ADDRESS_FAILURE_FREE):
        r = login(office, registry, f"made-up-{uuid.uuid4().hex[:8]}", "password?")
        assert r.status_code == 401, (i, r.status_code)
    first = login(office, registry, f"made-up-{uuid.uuid4().hex[:8]}", "password?")
    assert first.status_code == 429
    # not yet known from this address: waits like the attacker (its password is not even
    # checked); known: gets in; an access token: gets in
    assert login(office, registry, newcomer, PASSWORD).status_code == 429
    assert login(office, registry, regular, PASSWORD).status_code == 200
    token = accounts.create_access_token(newcomer, "ci", "pull")
    assert login(office, registry, newcomer, token).status_code == 200
    # the delay doubles with each further failure
    time.sleep(int(first.headers["Retry-After"]))
    assert login(office, registry, "made-up-again", "password?").status_code == 401
    second = login(office, registry, "made-up-again", "password?")
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) > int(first.headers["Retry-After"])


def test_throttling_never_depends_on_the_user_existing(registry):
    existing = new_user()
    answers = {}
    for name in (existing, "nobody" + uuid.uuid4().hex[:8]):
        source = client_at(fresh_address())
        answers[name] = [login(source, registry, name, "wrong password").status_code
                         for _ in range(accounts.PAIR_FAILURE_FREE + 2)]
    assert answers[existing] == answers[[n for n in answers if n != existing][0]]
    assert answers[existing][-1] == 429


def test_unknown_and_known_users_cost_the_same_work(registry, aws_calls, monkeypatch):
    from chalicelib.auth import passwords
    kdf_runs = []
    real = passwords._scrypt
    monkeypatch.setattr(passwords, "_scrypt", lambda *a: kdf_runs.append(1) or real(*a))
    existing, missing = new_user(), "nobody" + uuid.uuid4().hex[:8]
    token_shaped = accounts.TOKEN_PREFIX + "0123456789abcdef_" + "s" * 43
    source = client_at(fresh_address())
    work, timings = {}, {}
    for password in (token_shaped, "a wrong password"):
        for name in (existing, missing):
            kdf_runs.clear()
            aws_calls.reset()
            r = login(source, registry, name, password)
            assert r.status_code == 401
            work[(password, name)] = (len(kdf_runs), dict(aws_calls.calls))
    assert work[(token_shaped, existing)] == work[(token_shaped, missing)]
    assert work[(token_shaped, existing)][0] == 0            # no KDF for a token-shaped password
    assert work[("a wrong password", existing)] == work[("a wrong password", missing)]
    # and on the clock (medians; generous: the machine is shared)
    for name in (existing, missing):
        samples = []
        for _ in range(7):
            started = time.perf_counter()
            login(client_at(fresh_address()), registry, name, token_shaped)
            samples.append(time.perf_counter() - started)
        timings[name] = statistics.median(samples)
    assert timings[missing] < 3 * timings[existing] and timings[existing] < 3 * timings[missing]


# ---------------------------------------------------------------- 9: make run's moto, the CLI

def _children(pid: int) -> List[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_make_run_takes_its_moto_child_down(tmp_path):
    port, moto_port = free_port(), free_port()
    env = dict(os.environ, PORT=str(port), BERTH_MOTO_PORT=str(moto_port),
               BERTH_STATE_DIR=str(tmp_path / "state"), BERTH_LOG_LEVEL="WARNING",
               BERTH_ADMIN_PASSWORD="run-admin-password")
    for name in ("BERTH_AWS_ENDPOINT", "BERTH_TOKEN_KEY"):
        env.pop(name, None)
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen([sys.executable, "-m", "berth_local.run"], cwd=ROOT, env=env,
                               stdout=out, stderr=subprocess.STDOUT)
    moto = []
    try:
        _wait_for(f"http://127.0.0.1:{port}/v2/", run, log)
        moto = _children(run.pid)
        assert moto and all(_alive(pid) for pid in moto)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in moto) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in moto), "moto outlived make run"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", moto_port), timeout=2).close()
        # the state file it could not remove is stale: the CLI says so and touches nothing
        assert (tmp_path / "state" / "local.json").exists()
        refused = _berth_cli(tmp_path, "user", "add", "eve", "--password-stdin",
                             stdin="a long password\n")
        assert refused.returncode == 1
        assert "no longer running" in refused.stderr and "BERTH_TARGET=aws" in refused.stderr
    finally:
        if run.poll() is None:
            run.kill()
        for pid in moto:        # only if the test failed: what this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _berth_cli(tmp_path: Path, *args: str, stdin: str = "", **extra_env: str):
    """`berth` with AWS credentials in the environment, its DynamoDB and S3 endpoints pointed at
    a socket that records whether anything connected (a real AWS call would)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BERTH_") and not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="example",
               AWS_DEFAULT_REGION="us-east-1", BERTH_STATE_DIR=str(tmp_path / "state"),
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", **extra_env)
    contacted = threading.Event()
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)

        def refuse_everyone():
            while True:
                try:
                    conn, _ = trap.accept()
                except OSError:
                    return
                contacted.set()
                conn.close()
        threading.Thread(target=refuse_everyone, daemon=True).start()
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{trap.getsockname()[1]}"
        result = subprocess.run([sys.executable, "-m", "berth_local.cli", *args], input=stdin,
                                capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    result.aws_contacted = contacted.is_set()
    return result


def test_berth_cli_never_falls_back_to_aws_by_itself(tmp_path):
    (tmp_path / "state").mkdir()
    for state in (None, {"registry": "http://127.0.0.1:1", "aws_endpoint": "http://127.0.0.1:1",
                         "pid": 2 ** 22 + 17}):
        if state:
            (tmp_path / "state" / "local.json").write_text(json.dumps(state))
        result = _berth_cli(tmp_path, "user", "add", "eve", "--password-stdin",
                            stdin="a long password\n")
        assert result.returncode == 1, result.stderr
        assert "make run" in result.stderr and "BERTH_TARGET=aws" in result.stderr
        assert "Traceback" not in result.stderr and not result.aws_contacted
    # asked for, AWS is what it talks to
    asked = _berth_cli(tmp_path, "user", "add", "eve", "--password-stdin",
                       stdin="a long password\n", BERTH_TARGET="aws",
                       AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard")
    assert asked.returncode != 0 and asked.aws_contacted


# ---------------------------------------------------------------- 4: no spooling without a token

def _send_big_body(base: str, headers: str, first_bytes: int = 8 * 1024 * 1024) -> bytes:
    """Start a request announcing a 2 GiB body, send its first bytes, and return what the
    server answers meanwhile (b"" if it waits for the rest, as it did spooling to disk)."""
    host, port = base.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(headers.encode() + b"\r\n")
        chunk = b"\0" * 65536
        sent = 0
        try:
            while sent < first_bytes:
                conn.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass               # refused and closed while we were still sending: fine
        conn.settimeout(5)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = conn.recv(65536)
                if not data:
                    break
                answer += data
        except (socket.timeout, ConnectionResetError):
            pass
        return answer


def test_unauthenticated_bodies_are_refused_before_they_are_spooled(registry):
    for auth in ("", "Authorization: Bearer not-a-token\r\n",
                 "Authorization: Basic YWRtaW46YWRtaW4tdGVzdC1wYXNzd29yZA==\r\n"):
        started = time.monotonic()
        answer = _send_big_body(registry, (
            "PATCH /v2/spool/app/blobs/uploads/0123456789abcdef0123456789abcdef HTTP/1.1\r\n"
            f"Host: {registry.split('//')[1]}\r\n{auth}"
            f"Content-Length: {2 * 1024 ** 3}\r\n"))
        assert answer.startswith(b"HTTP/1.1 401"), (auth, answer[:200])
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b'www-authenticate: bearer realm="' in head.lower() and b"Connection: close" in head
        assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
        assert time.monotonic() - started < 8       # not after 2 GiB
    # chunked, as podman sends it
    answer = _send_big_body(registry, (
        "PATCH /v2/spool/app/blobs/uploads/0123456789abcdef0123456789abcdef HTTP/1.1\r\n"
        f"Host: {registry.split('//')[1]}\r\nTransfer-Encoding: chunked\r\n"), first_bytes=0)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
