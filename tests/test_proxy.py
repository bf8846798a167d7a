"""`berth proxy`: whole-layer uploads cut into Lambda-sized chunked-upload PATCHes.

Three levels:
- the piece arithmetic and HTTP behaviour against a small fake registry that records every
  request it gets (Content-Range values, Location following, de-chunking, monolithic uploads,
  the Content-Type of upload bodies, errors and auth passing through, HEAD, Expect:
  100-continue, TLS refusal, 502), and the proxy's own login with what docker stores for the
  upstream, against a fake token realm (scopes, caching, renewal, Basic, identity tokens);
- Berth itself with Lambda's 6 MiB request limit emulated (`lambda_registry`), with requests;
- the real skopeo and podman pushing an image with a 200 MiB incompressible layer: directly
  they fail with 413, through the proxy they succeed, and the proxy (in its own process) stays
  in bounded memory. (The real docker engine: tests/test_e2e_docker_proxy.py.)
"""
from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from berth_local import cli
from berth_local.proxy import (Progress, UploadRecord, parse_listen, parse_size, parse_upstream,
                               start_proxy)

MiB, KiB = 1 << 20, 1 << 10


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pseudo_random(size: int, seed: int = 0) -> bytes:
    out, i = [], 0
    while sum(map(len, out)) < size:
        out.append(hashlib.shake_256(f"{seed}:{i}".encode()).digest(64 * KiB))
        i += 1
    return b"".join(out)[:size]


# ----------------------------------------------------------------------------------------------
# A fake registry that records what it gets
# ----------------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]        # lower-cased names
    body: bytes
    chunked: bool

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


class FakeRegistry:
    """Just enough of the upload protocol, distribution-style: each 202 names the next Location
    (with a new `_state`), as an absolute URL or a path. Bodies over `max_body` get 413."""

    def __init__(self, *, absolute_locations: bool = True, max_body: Optional[int] = None,
                 tls: Optional[ssl.SSLContext] = None, drop_idle: bool = False) -> None:
        self.absolute_locations = absolute_locations
        self.max_body = max_body
        self.seen: list[Seen] = []
        self.sessions: dict[str, bytearray] = {}
        self.blobs: dict[str, bytes] = {}
        self.canned: dict[tuple[str, str], tuple[int, dict, bytes]] = {}
        self.fail_patch: dict[int, tuple[int, dict, bytes]] = {}   # n-th PATCH (1-based) -> answer
        self.tokens: Optional["FakeTokenService"] = None   # set: every request needs its token
        self.basic: Optional[str] = None                   # set: every request needs this Basic
        self.connections = 0
        self.lock = threading.Lock()
        # Berth's chunks sent ahead (chalicelib/oci.py): off, as on other registries
        self.offers_ahead = False
        self.ahead: dict[tuple[str, int], bytes] = {}
        self.in_flight = self.most_in_flight = 0
        self.on_patch = None        # called with the upload's bytes so far as each PATCH arrives
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with fake.lock:
                    fake.connections += 1

            def _any(self):
                fake._handle(self)
                if fake.drop_idle:   # as a server whose keep-alive timeout expired: no warning
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args):
                pass

        self.drop_idle = drop_idle
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self, method: Optional[str] = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if method is None or s.method == method]

    def open_session(self) -> str:
        upload_id = uuid.uuid4().hex
        with self.lock:
            self.sessions[upload_id] = bytearray()
        return upload_id

    # -- the handler ---------------------------------------------------------------------------

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> tuple[bytes, bool]:
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n"):
                        pass
                    return b"".join(parts), True
                parts.append(h.rfile.read(size))
                h.rfile.readline()
        return h.rfile.read(int(h.headers.get("Content-Length") or 0)), False

    def _location(self, path: str, state: int) -> str:
        location = f"{path}?_state={state}"
        return self.url + location if self.absolute_locations else location

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body, chunked = self._read_body(h)
        seen = Seen(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, body, chunked)
        with self.lock:
            self.seen.append(seen)
            patch_number = sum(1 for s in self.seen if s.method == "PATCH")
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            status, headers, payload = self._answer(seen, patch_number)
        finally:
            with self.lock:
                self.in_flight -= 1
        if self.offers_ahead and "/blobs/uploads/" in seen.path:
            headers = {**headers, "Berth-Upload-Chunk": "ahead"}
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        if "Content-Length" not in headers:
            h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def _answer(self, seen: Seen, patch_number: int) -> tuple[int, dict, bytes]:
        canned = self.canned.get((seen.method, seen.path))
        if canned:
            return canned
        refused = self._refuse_unauthorized(seen)
        if refused:
            return refused
        if self.max_body is not None and len(seen.body) > self.max_body:
            return 413, {"Content-Type": "application/json"}, b'{"errors":[{"code":"SIZE_INVALID"}]}'
        if seen.path == "/v2/":
            return 200, {"Content-Type": "application/json"}, b"{}"
        m = re.match(r"^/v2/(.+)/blobs/uploads/([^/]*)$", seen.path)
        if not m:
            return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NAME_UNKNOWN"}]}'
        name, upload_id = m.groups()
        digest = (seen.query.get("digest") or [None])[0]
        if seen.method == "POST":
            if digest:
                self.blobs[digest] = seen.body
                return 201, {"Location": f"/v2/{name}/blobs/{digest}"}, b""
            upload_id = self.open_session()
            return 202, {"Location": self._location(f"/v2/{name}/blobs/uploads/{upload_id}", 0),
                         "Range": "0-0", "Docker-Upload-UUID": upload_id}, b""
        data = self.sessions.get(upload_id)
        if data is None:
            return 404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN"}]}'
        state = int((seen.query.get("_state") or ["0"])[0])
        range_header = {"Range": f"0-{max(len(data) - 1, 0)}"}
        if seen.method == "GET":
            return 204, {**range_header, "Location": self._location(seen.path, state)}, b""
        if seen.method == "PATCH":
            if patch_number in self.fail_patch:
                return self.fail_patch[patch_number]
            if self.on_patch is not None:
                self.on_patch(len(data))
            content_range = seen.headers.get("content-range")
            kind = seen.headers.get("berth-upload-chunk") if self.offers_ahead else None
            if content_range is not None:
                start, end = map(int, content_range.split("-"))
                if kind == "ahead" and start > len(data):
                    time.sleep(0.01)       # an S3 PutObject: the in-order piece may overtake it
                    with self.lock:
                        self.ahead[(upload_id, start)] = seen.body
                    return 202, {**range_header, "Location": self._location(seen.path, state)}, b""
                if start != len(data) or end - start + 1 != len(seen.body):
                    return 416, {**range_header, "Content-Type": "application/json"}, \
                        b'{"errors":[{"code":"RANGE_INVALID"}]}'
            time.sleep(0.02)               # the in-order piece's work (hash, S3 part, session save)
            data += seen.body
            if kind == "join":
                with self.lock:
                    data += self.ahead.pop((upload_id, len(data)), b"")
            return 202, {"Location": self._location(seen.path, state + 1),
                         "Range": f"0-{len(data) - 1}", "Docker-Upload-UUID": upload_id}, b""
        if seen.method == "PUT":
            data += seen.body
            if sha256(bytes(data)) != digest:
                return 400, {"Content-Type": "application/json"}, b'{"errors":[{"code":"DIGEST_INVALID"}]}'
            self.blobs[digest] = bytes(data)
            del self.sessions[upload_id]
            return 201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest}, b""
        return 405, {}, b""


    def _refuse_unauthorized(self, seen: Seen) -> Optional[tuple[int, dict, bytes]]:
        """Registry auth, distribution-style: a 401 with the challenge unless the request
        carries a token granting push on its repository (any valid token for /v2/)."""
        given = seen.headers.get("authorization", "")
        if self.basic is not None:
            if given == self.basic:
                return None
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'
        if self.tokens is None:
            return None
        granted = self.tokens.scopes_of(given.removeprefix("Bearer "))
        m = re.match(r"^/v2/(.+?)/(?:blobs|manifests)/", seen.path)
        if granted is not None and (m is None or f"repository:{m.group(1)}:pull,push" in granted):
            return None
        challenge = f'Bearer realm="{self.tokens.url}/token",service="fake-registry"'
        return 401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, \
            b'{"errors":[{"code":"UNAUTHORIZED"}]}'


class FakeTokenService:
    """A token realm, distribution-style: GET with basic auth (or POST grant_type=refresh_token)
    -> {"token", "expires_in"}; it records every request and the scopes of every token."""

    def __init__(self, users: dict[str, str], refresh_tokens: tuple[str, ...] = (),
                 expires_in: int = 300) -> None:
        self.users, self.refresh_tokens, self.expires_in = users, refresh_tokens, expires_in
        self.seen: list[tuple[str, dict[str, str], dict[str, list[str]]]] = []   # method, headers, params
        self.issued: dict[str, tuple[str, ...]] = {}
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode()) if length else {}
                params = {**parse_qs(urlsplit(self.path).query), **form}
                status, payload = service.answer(self.command, dict(self.headers.items()), params)
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def answer(self, method: str, headers: dict[str, str], params: dict[str, list[str]]) -> tuple[int, dict]:
        with self.lock:
            self.seen.append((method, headers, params))
        if params.get("service") != ["fake-registry"]:
            return 400, {"error": "wrong service"}
        if method == "POST":
            ok = params.get("grant_type") == ["refresh_token"] and \
                params.get("refresh_token", [""])[0] in self.refresh_tokens
            scopes = tuple(params.get("scope", [""])[0].split())
        else:
            import base64
            auth = headers.get("Authorization", "")
            user, _, password = base64.b64decode(auth.removeprefix("Basic ") or b"").decode().partition(":")
            ok = auth.startswith("Basic ") and self.users.get(user) == password
            scopes = tuple(params.get("scope", []))
        if not ok:
            return 401, {"details": "bad credentials"}
        token = uuid.uuid4().hex
        with self.lock:
            self.issued[token] = scopes
        return 200, {"token": token, "expires_in": self.expires_in}

    def scopes_of(self, token: str) -> Optional[tuple[str, ...]]:
        with self.lock:
            return self.issued.get(token)

    def revoke_all(self) -> None:
        with self.lock:
            self.issued.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    registry = FakeRegistry()
    yield registry
    registry.stop()


@pytest.fixture
def proxied(fake):
    """(fake registry, proxy base URL) with 1000-byte pieces."""
    server, port = start_proxy(fake.url, chunk_size=1000)
    yield fake, f"http://127.0.0.1:{port}"
    server.stop()


def ranges(seen: list[Seen]) -> list[Optional[str]]:
    return [s.headers.get("content-range") for s in seen]


# ----------------------------------------------------------------------------------------------
# Piece arithmetic
# ----------------------------------------------------------------------------------------------


def test_a_whole_layer_patch_becomes_ranged_pieces_following_each_location(proxied):
    fake, base = proxied
    data = pseudo_random(3500)
    opened = requests.post(f"{base}/v2/team/app/blobs/uploads/", headers={"Authorization": "Bearer t0k"})
    assert opened.status_code == 202
    # the fake answers absolute Locations naming itself; the client sees them relative
    location = opened.headers["Location"]
    assert location.startswith("/v2/team/app/blobs/uploads/") and "_state=0" in location
    answer = requests.patch(base + location, data=data,
                            headers={"Authorization": "Bearer t0k", "X-Custom": "kept",
                                     "Content-Type": "application/octet-stream"})
    assert answer.status_code == 202, answer.text
    assert answer.headers["Range"] == "0-3499"
    assert answer.headers["Location"].startswith("/v2/team/app/blobs/uploads/")
    assert answer.headers["Location"].endswith("_state=4")

    patches = fake.requests("PATCH")
    assert ranges(patches) == ["0-999", "1000-1999", "2000-2999", "3000-3499"]
    assert [s.headers["content-length"] for s in patches] == ["1000", "1000", "1000", "500"]
    assert [s.query["_state"] for s in patches] == [["0"], ["1"], ["2"], ["3"]]
    for s in patches:
        assert s.headers["content-type"] == "application/octet-stream"
        assert s.headers["authorization"] == "Bearer t0k"
        assert s.headers["x-custom"] == "kept"
        assert s.headers["host"] == f"127.0.0.1:{fake.port}"
        assert not s.chunked
    assert b"".join(s.body for s in patches) == data

    done = requests.put(f"{base}{answer.headers['Location']}&digest={sha256(data)}")
    assert done.status_code == 201
    assert fake.blobs[sha256(data)] == data


def test_a_chunked_body_is_dechunked_and_cut_at_piece_boundaries(proxied):
    fake, base = proxied
    data = pseudo_random(3001, seed=2)
    location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
    odd_chunks = (data[i:i + 333] for i in range(0, len(data), 333))   # Transfer-Encoding: chunked
    answer = requests.patch(base + location, data=odd_chunks)
    assert answer.status_code == 202 and answer.headers["Range"] == "0-3000"
    patches = fake.requests("PATCH")
    assert ranges(patches) == ["0-999", "1000-1999", "2000-2999", "3000-3000"]
    assert b"".join(s.body for s in patches) == data
    assert requests.put(f"{base}{answer.headers['Location']}&digest={sha256(data)}").status_code == 201


def test_a_body_of_whole_pieces_sends_no_empty_patch(proxied):
    fake, base = proxied
    data = pseudo_random(2000, seed=3)
    location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
    assert requests.patch(base + location, data=data).status_code == 202
    assert ranges(fake.requests("PATCH")) == ["0-999", "1000-1999"]


def test_small_bodies_pass_through_whole(proxied):
    fake, base = proxied
    data = pseudo_random(1000, seed=4)        # exactly one piece
    location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
    answer = requests.patch(base + location, data=data)
    assert answer.status_code == 202
    [patch] = fake.requests("PATCH")
    assert patch.headers.get("content-range") is None and patch.body == data
    small = requests.post(f"{base}/v2/app/blobs/uploads/?digest={sha256(b'tiny')}", data=b"tiny")
    assert small.status_code == 201
    assert [(s.method, s.body) for s in fake.requests("POST")][-1] == ("POST", b"tiny")


def send_raw(base: str, method: str, target: str, body: bytes, extra: str = "") -> int:
    """A request with exactly the headers given (requests would add its own), as dockerd sends
    layer bodies: no Content-Type at all. Returns the status."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        reply = sock.makefile("rb").readline()
    return int(reply.split()[1])


def test_every_upload_body_goes_upstream_as_octet_stream(proxied):
    """dockerd sends layer bodies without Content-Type; API Gateway would pass them to Lambda as
    text. Whole or cut, with or without a type from the client, they leave as binary."""
    fake, base = proxied
    small, big = pseudo_random(700, seed=40), pseudo_random(2500, seed=41)
    for data in (small, big):
        location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
        assert send_raw(base, "PATCH", location, data) == 202
        done = requests.put(f"{base}/v2/app/blobs/uploads/{location.split('/')[-1].split('?')[0]}"
                            f"?_state=9&digest={sha256(data)}")
        assert done.status_code == 201, done.text
    assert send_raw(base, "POST", f"/v2/app/blobs/uploads/?digest={sha256(small)}", small) == 201
    assert send_raw(base, "POST", f"/v2/app/blobs/uploads/?digest={sha256(big)}", big) == 201
    location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
    assert send_raw(base, "PUT", f"{location}&digest={sha256(small)}", small,
                    extra="Content-Type: text/plain\r\n") == 201
    with_body = [s for s in fake.requests() if s.body]
    assert [s.method for s in with_body] == ["PATCH"] + ["PATCH"] * 3 + ["POST"] + ["PATCH"] * 3 + ["PUT"]
    assert all(s.headers.get("content-type") == "application/octet-stream" for s in with_body), \
        [(s.method, s.headers.get("content-type")) for s in with_body]
    assert fake.blobs[sha256(small)] == small and fake.blobs[sha256(big)] == big
    # requests without a body, and bodies that are no blob, keep what the client sent
    manifest = requests.put(f"{base}/v2/app/manifests/v1", data=b"{}",
                            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert manifest.status_code == 404     # the fake has no manifests; what matters is what it got
    assert fake.requests("PUT")[-1].headers["content-type"] == "application/vnd.oci.image.manifest.v1+json"
    assert "content-type" not in fake.requests("POST")[0].headers


def test_pieces_go_two_at_a_time_where_offered_with_at_most_four_read_ahead(fake):
    """Berth offers chunks sent ahead: every other piece is stored ahead while the previous
    in-order piece is written, then joined, and the blob is exact. The proxy reads the client's
    body at most four pieces past what the registry holds (plus socket buffers), not the whole
    layer ahead."""
    fake.offers_ahead = True
    piece = 8 * MiB
    server, port = start_proxy(fake.url, chunk_size=piece)
    data = pseudo_random(12 * piece + 12345)
    produced, leads = [0], []
    fake.on_patch = lambda held: leads.append(produced[0] - held)

    def client_body():
        for i in range(0, len(data), 256 * KiB):
            produced[0] += len(data[i:i + 256 * KiB])
            yield data[i:i + 256 * KiB]
    try:
        base = f"http://127.0.0.1:{port}"
        location = requests.post(f"{base}/v2/big/blobs/uploads/").headers["Location"]
        r = requests.patch(base + location, data=client_body(), timeout=60)
        assert r.status_code == 202, r.text
        r = requests.put(base + r.headers["Location"], params={"digest": sha256(data)}, timeout=60)
        assert r.status_code == 201
    finally:
        server.stop()
    assert fake.blobs[sha256(data)] == data
    kinds = [s.headers.get("berth-upload-chunk") for s in fake.requests("PATCH")]
    assert kinds.count("ahead") >= 5 and kinds.count("join") >= 5, kinds
    assert fake.most_in_flight >= 2                  # an ahead piece overlapped an in-order one
    assert max(leads) <= 4 * piece + 16 * MiB, [lead // MiB for lead in leads]   # 16 MiB: socket buffers


def test_a_monolithic_post_becomes_post_pieces_put(proxied):
    fake, base = proxied
    data = pseudo_random(2500, seed=5)
    answer = requests.post(f"{base}/v2/mono/blobs/uploads/?digest={sha256(data)}", data=data)
    assert answer.status_code == 201, answer.text
    assert answer.headers["Location"] == f"/v2/mono/blobs/{sha256(data)}"
    seen = fake.requests()
    assert [s.method for s in seen] == ["POST", "PATCH", "PATCH", "PATCH", "PUT"]
    assert seen[0].target == "/v2/mono/blobs/uploads/" and seen[0].body == b""
    assert ranges(seen[1:4]) == ["0-999", "1000-1999", "2000-2499"]
    assert seen[4].query["digest"] == [sha256(data)] and seen[4].query["_state"] == ["3"]
    assert seen[4].body == b"" and seen[4].headers["content-length"] == "0"
    assert fake.blobs[sha256(data)] == data


def test_a_put_with_a_body_becomes_pieces_then_an_empty_put(proxied):
    fake, base = proxied
    data = pseudo_random(1500, seed=6)
    location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
    answer = requests.put(f"{base}{location}&digest={sha256(data)}", data=iter([data]))   # chunked
    assert answer.status_code == 201, answer.text
    seen = fake.requests()[1:]
    assert [s.method for s in seen] == ["PATCH", "PATCH", "PUT"]
    assert ranges(seen[:2]) == ["0-999", "1000-1499"]
    assert "digest" not in seen[0].query
    assert seen[2].query["digest"] == [sha256(data)] and seen[2].body == b""


def test_pieces_continue_where_an_upload_opened_elsewhere_stands(proxied):
    """The proxy did not see this session start: it asks the upload's status first."""
    fake, base = proxied
    head, rest = pseudo_random(500, seed=7), pseudo_random(2100, seed=8)
    upload_id = fake.open_session()
    fake.sessions[upload_id] += head
    answer = requests.patch(f"{base}/v2/app/blobs/uploads/{upload_id}", data=rest)
    assert answer.status_code == 202 and answer.headers["Range"] == f"0-{len(head) + len(rest) - 1}"
    seen = fake.requests()
    assert seen[0].method == "GET" and seen[0].path == f"/v2/app/blobs/uploads/{upload_id}"
    assert ranges(seen[1:]) == ["500-1499", "1500-2499", "2500-2599"]


def test_a_client_content_range_sets_the_start_of_the_pieces(proxied):
    fake, base = proxied
    upload_id = fake.open_session()
    fake.sessions[upload_id] += b"x" * 10
    data = pseudo_random(1200, seed=9)
    answer = requests.patch(f"{base}/v2/app/blobs/uploads/{upload_id}", data=data,
                            headers={"Content-Range": "10-1209"})
    assert answer.status_code == 202
    assert ranges(fake.requests("PATCH")) == ["10-1009", "1010-1209"]
    bad = requests.patch(f"{base}/v2/app/blobs/uploads/{upload_id}", data=data,
                         headers={"Content-Range": "10-20"})
    assert bad.status_code == 416 and bad.json()["errors"][0]["code"] == "RANGE_INVALID"


def test_concurrent_uploads_each_get_their_own_pieces(proxied):
    fake, base = proxied
    blobs = [pseudo_random(2600 + i * 100, seed=100 + i) for i in range(6)]

    def push(data: bytes) -> int:
        with requests.Session() as s:
            location = s.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
            patched = s.patch(base + location, data=iter([data[:700], data[700:]]))
            assert patched.status_code == 202
            return s.put(f"{base}{patched.headers['Location']}&digest={sha256(data)}").status_code

    threads_results: list[int] = []
    threads = [threading.Thread(target=lambda d=d: threads_results.append(push(d))) for d in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert threads_results == [201] * len(blobs)
    assert all(fake.blobs[sha256(d)] == d for d in blobs)


# ----------------------------------------------------------------------------------------------
# Passing through: errors, auth, redirects, HEAD
# ----------------------------------------------------------------------------------------------


def test_an_upstream_error_midway_goes_back_as_is_and_the_connection_stays_usable(proxied):
    fake, base = proxied
    error = json.dumps({"errors": [{"code": "BLOB_UPLOAD_INVALID", "message": "boom"}]}).encode()
    fake.fail_patch[2] = (418, {"Content-Type": "application/json", "X-Why": "teapot"}, error)
    data = pseudo_random(5500, seed=10)
    with requests.Session() as s:
        location = s.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
        answer = s.patch(base + location, data=data)
        assert answer.status_code == 418
        assert answer.content == error and answer.headers["X-Why"] == "teapot"
        assert len(fake.requests("PATCH")) == 2           # no piece after the failure
        assert s.get(f"{base}/v2/app/blobs/uploads/{location.split('/')[-1]}").status_code == 204
    # a failing chunked body is drained too
    fake.fail_patch[3] = (500, {"Content-Type": "application/json"}, error)
    location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
    assert requests.patch(base + location, data=iter([data])).status_code == 500


def test_auth_challenges_and_redirects_pass_through_untouched(proxied):
    fake, base = proxied
    challenge = 'Bearer realm="https://auth.example.com/token",service="registry",scope="repository:app:pull,push"'
    fake.canned[("GET", "/v2/")] = (401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
                                    b'{"errors":[{"code":"UNAUTHORIZED"}]}')
    s3 = "https://bucket.s3.amazonaws.com/blobs/x?X-Amz-Signature=abc"
    fake.canned[("GET", "/v2/app/blobs/sha256:aa")] = (307, {"Location": s3}, b"")
    fake.canned[("GET", "/v2/app/manifests/v1")] = (
        200, {"Location": f"{fake.url}/v2/app/manifests/sha256:bb?x=1", "Content-Type": "a/b"}, b"{}")

    r = requests.get(f"{base}/v2/", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == challenge
    assert fake.requests("GET")[-1].headers["authorization"] == "Basic dXNlcjpwYXNz"
    r = requests.get(f"{base}/v2/app/blobs/sha256:aa", allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"] == s3
    r = requests.get(f"{base}/v2/app/manifests/v1")
    assert r.headers["Location"] == "/v2/app/manifests/sha256:bb?x=1" and r.content == b"{}"


# ----------------------------------------------------------------------------------------------
# The login docker stores for the upstream
# ----------------------------------------------------------------------------------------------


def docker_config(tmp_path: Path, auths: dict) -> Path:
    folder = tmp_path / "docker-config"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"auths": auths}))
    return folder


def basic(user: str, password: str) -> str:
    import base64
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def token_service():
    service = FakeTokenService({"alice": "alice pw"})
    yield service
    service.stop()


def test_a_client_without_credentials_is_logged_in_with_dockers_login_for_the_upstream(fake, token_service,
                                                                                       tmp_path):
    fake.tokens = token_service
    host = f"127.0.0.1:{fake.port}"
    config = docker_config(tmp_path, {host: {"auth": basic("alice", "alice pw")},
                                      "127.0.0.1:1": {"auth": basic("mallory", "x")}})
    server, port = start_proxy(fake.url, chunk_size=1000, docker_config=config)
    base = f"http://127.0.0.1:{port}"
    try:
        assert requests.get(f"{base}/v2/").status_code == 200     # docker then sends no credentials
        data = pseudo_random(2500, seed=50)
        opened = requests.post(f"{base}/v2/team/app/blobs/uploads/")
        assert opened.status_code == 202, opened.text
        patched = send_raw(base, "PATCH", opened.headers["Location"], data)
        assert patched == 202
        location = fake.requests("PATCH")[-1]
        done = requests.put(f"{base}/v2/team/app/blobs/uploads/{location.path.rsplit('/', 1)[1]}"
                            f"?_state=3&digest={sha256(data)}")
        assert done.status_code == 201, done.text
        assert fake.blobs[sha256(data)] == data
        mount = requests.post(f"{base}/v2/team/app/blobs/uploads/?mount={sha256(data)}&from=team/base")
        assert mount.status_code == 202
    finally:
        server.stop()
    # no request but the proxy's probe of the challenge reached the registry without a token
    seen = fake.requests()
    assert [(s.method, s.path) for s in seen if "authorization" not in s.headers] == [("GET", "/v2/")]
    assert all(s.headers["authorization"].startswith("Bearer ") for s in seen if "authorization" in s.headers)
    # alice's password went to the realm only, with the scopes each request needed, once per scope
    asked = [(method, headers["Authorization"], params.get("scope", []))
             for method, headers, params in token_service.seen]
    assert asked == [("GET", "Basic " + basic("alice", "alice pw"), []),
                     ("GET", "Basic " + basic("alice", "alice pw"), ["repository:team/app:pull,push"]),
                     ("GET", "Basic " + basic("alice", "alice pw"),
                      ["repository:team/app:pull,push", "repository:team/base:pull"])]
    assert all("alice pw" not in str(s.headers) and basic("alice", "alice pw") not in str(s.headers)
               for s in fake.requests())


def test_tokens_are_renewed_before_they_expire_and_after_a_401(fake, tmp_path):
    service = FakeTokenService({"alice": "alice pw"}, expires_in=2)
    fake.tokens = service
    config = docker_config(tmp_path, {f"http://127.0.0.1:{fake.port}/v1/": {"auth": basic("alice", "alice pw")}})
    server, port = start_proxy(fake.url, chunk_size=1000, docker_config=config)
    base = f"http://127.0.0.1:{port}"
    try:
        location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
        assert requests.get(base + location).status_code == 204
        assert len(service.seen) == 1                      # the same token for both
        time.sleep(2)
        assert requests.get(base + location).status_code == 204
        assert len(service.seen) == 2                      # renewed before it lapsed
        service.revoke_all()                               # e.g. the registry's key was rotated
        answer = requests.patch(base + location, data=pseudo_random(2100, seed=51))
        assert answer.status_code == 202, answer.text      # the first piece was retried with a new token
        assert len(service.seen) == 3
        assert ranges(fake.requests("PATCH")) == ["0-999", "0-999", "1000-1999", "2000-2099"]
        assert [s.headers.get("authorization") is not None for s in fake.requests("PATCH")] == [True] * 4
    finally:
        server.stop()
        service.stop()


def test_a_client_with_its_own_credentials_is_forwarded_unchanged(fake, token_service, tmp_path):
    fake.tokens = token_service
    config = docker_config(tmp_path, {f"127.0.0.1:{fake.port}": {"auth": basic("alice", "alice pw")}})
    server, port = start_proxy(fake.url, docker_config=config)
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/v2/", headers={"Authorization": "Bearer theirs"})
        assert answer.status_code == 401 and 'realm="http://127.0.0.1:' in answer.headers["WWW-Authenticate"]
        assert fake.requests()[-1].headers["authorization"] == "Bearer theirs"
        assert token_service.seen == []
    finally:
        server.stop()


@pytest.mark.parametrize("auths", [{}, {"127.0.0.1:1": {"auth": basic("alice", "alice pw")}},
                                   "wrong password"])
def test_without_a_usable_login_the_upstream_challenge_reaches_the_client(fake, token_service, tmp_path,
                                                                         auths, caplog):
    fake.tokens = token_service
    wrong_password = auths == "wrong password"
    if wrong_password:
        auths = {f"127.0.0.1:{fake.port}": {"auth": basic("alice", "not it")}}
    server, port = start_proxy(fake.url, docker_config=docker_config(tmp_path, auths))
    try:
        answer = requests.post(f"http://127.0.0.1:{port}/v2/app/blobs/uploads/")
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == \
            f'Bearer realm="{token_service.url}/token",service="fake-registry"'
    finally:
        server.stop()
    if wrong_password:
        assert f"run `docker login 127.0.0.1:{fake.port}`" in caplog.text
        assert "not it" not in caplog.text and basic("alice", "not it") not in caplog.text
        assert len(token_service.seen) == 1     # refused once: not asked again at every request
    else:
        assert token_service.seen == []


def test_a_basic_auth_upstream_gets_the_stored_credentials(fake, tmp_path):
    fake.basic = "Basic " + basic("alice", "alice pw")
    config = docker_config(tmp_path, {f"127.0.0.1:{fake.port}": {"username": "alice", "password": "alice pw"}})
    server, port = start_proxy(fake.url, docker_config=config)
    try:
        assert requests.post(f"http://127.0.0.1:{port}/v2/app/blobs/uploads/").status_code == 202
        assert fake.requests("POST")[-1].headers["authorization"] == fake.basic
    finally:
        server.stop()


def test_an_identity_token_is_used_as_a_refresh_token(fake, tmp_path):
    service = FakeTokenService({}, refresh_tokens=("refresh-me",))
    fake.tokens = service
    config = docker_config(tmp_path, {f"127.0.0.1:{fake.port}": {"identitytoken": "refresh-me"}})
    server, port = start_proxy(fake.url, docker_config=config)
    try:
        assert requests.post(f"http://127.0.0.1:{port}/v2/app/blobs/uploads/").status_code == 202
    finally:
        server.stop()
        service.stop()
    [(method, headers, params)] = service.seen
    assert method == "POST" and "Authorization" not in headers
    assert params["grant_type"] == ["refresh_token"] and params["scope"] == ["repository:app:pull,push"]
    assert params["client_id"] == ["berth-proxy"]


def test_head_keeps_content_length_and_sends_no_body(proxied):
    fake, base = proxied
    fake.canned[("HEAD", "/v2/app/blobs/sha256:cc")] = (
        200, {"Content-Length": "123456789", "Docker-Content-Digest": "sha256:cc"}, b"")
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
        for _ in range(2):   # twice on one connection: nothing was left in between
            sock.sendall(b"HEAD /v2/app/blobs/sha256:cc HTTP/1.1\r\nHost: x\r\n\r\n")
            response = http.client.HTTPResponse(sock, method="HEAD")
            response.begin()
            assert response.status == 200
            assert response.getheader("Content-Length") == "123456789"
            assert response.read() == b""


def test_expect_100_continue_is_answered_before_the_body(proxied):
    fake, base = proxied
    data = pseudo_random(2500, seed=11)
    location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(data)
        response = http.client.HTTPResponse(sock, method="PATCH")
        response.begin()
        assert response.status == 202 and response.getheader("Range") == "0-2499"
    assert all("expect" not in s.headers for s in fake.requests("PATCH"))


def test_a_tls_client_hello_gets_plain_http_at_once(proxied):
    _, base = proxied
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]))
        reply = sock.recv(100)
    assert reply.startswith(b"HTTP/1.0 400 Bad Request\r\n") and time.monotonic() - started < 1


def test_an_unreachable_upstream_gives_a_502_with_an_oci_error(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]          # closed again: nothing listens there
    server, port = start_proxy(f"http://127.0.0.1:{dead_port}")
    try:
        r = requests.patch(f"http://127.0.0.1:{port}/v2/app/blobs/uploads/x", data=b"x" * 5000)
        assert r.status_code == 502
        error = r.json()["errors"][0]
        assert error["code"] == "UNKNOWN" and "unreachable" in error["message"]
        assert f"127.0.0.1:{dead_port}" in error["message"]
        assert any("unreachable" in rec.getMessage() for rec in caplog.records)
    finally:
        server.stop()


def test_upstream_keep_alive_connections_are_reused(proxied):
    fake, base = proxied
    data = pseudo_random(10_000, seed=12)
    location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
    assert requests.patch(base + location, data=data).status_code == 202
    assert len(fake.requests("PATCH")) == 10 and fake.connections <= 2


def test_a_connection_the_upstream_closed_while_idle_is_replaced(fake):
    fake.drop_idle = True
    server, port = start_proxy(fake.url, chunk_size=1000)
    base = f"http://127.0.0.1:{port}"
    try:
        data = pseudo_random(3000, seed=14)
        location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
        time.sleep(0.1)    # the upstream has closed the pooled connection by now
        answer = requests.patch(base + location, data=data)
        assert answer.status_code == 202, answer.text
        assert ranges(fake.requests("PATCH")) == ["0-999", "1000-1999", "2000-2999"]
    finally:
        server.stop()


@pytest.mark.needs("openssl")
def test_an_https_upstream(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    registry = FakeRegistry(tls=server_side)
    server, port = start_proxy(registry.url, chunk_size=1000,
                               ssl_context=ssl.create_default_context(cafile=str(cert)))
    base = f"http://127.0.0.1:{port}"
    try:
        data = pseudo_random(2500, seed=15)
        location = requests.post(f"{base}/v2/app/blobs/uploads/").headers["Location"]
        assert location.startswith("/v2/app/blobs/uploads/")     # was https://127.0.0.1:PORT/...
        answer = requests.patch(base + location, data=data)
        assert answer.status_code == 202 and answer.headers["Location"].startswith("/v2/")
        assert requests.put(f"{base}{answer.headers['Location']}&digest={sha256(data)}").status_code == 201
        assert registry.blobs[sha256(data)] == data
        # and an upstream whose certificate is not trusted is a 502, not a hang
        untrusting, other = start_proxy(registry.url)
        try:
            r = requests.get(f"http://127.0.0.1:{other}/v2/")
            assert r.status_code == 502 and "CERTIFICATE_VERIFY_FAILED" in r.json()["errors"][0]["message"]
        finally:
            untrusting.stop()
    finally:
        server.stop()
        registry.stop()


# ----------------------------------------------------------------------------------------------
# Command line and helpers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, message", [
    ("ftp://registry.example.com", "scheme must be http or https"),
    ("registry.example.com", "has no scheme"),
    ("https://registry.example.com/some/path", "root of its host"),
    ("https://user:pw@registry.example.com", "credentials"),
    ("https://registry.example.com:http", "invalid port"),
])
def test_a_bad_upstream_is_a_one_line_cli_error(url, message, capsys):
    assert cli.main(["proxy", "--upstream", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("berth: --upstream") and message in err and len(err.strip().splitlines()) == 1


def test_a_busy_listen_address_is_a_cli_error(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli.main(["proxy", "--upstream", "http://127.0.0.1:1", "--listen", f"127.0.0.1:{port}",
                         "--quiet"]) == 1
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_parsers():
    assert parse_upstream("https://Registry.example.com/").url == "https://registry.example.com"
    assert parse_upstream("http://127.0.0.1:5000/v2/").url == "http://127.0.0.1:5000"
    assert parse_upstream("https://[::1]:8443").host_header == "[::1]:8443"
    assert parse_listen("127.0.0.1:5001") == ("127.0.0.1", 5001)
    assert parse_listen("[::1]:5001") == ("::1", 5001) and parse_listen(":80") == ("127.0.0.1", 80)
    assert [parse_size(s) for s in ("4194304", "4MiB", "4M", "512k", "4MB")] == \
        [4 * MiB, 4 * MiB, 4 * MiB, 512 * KiB, 4_000_000]
    with pytest.raises(ValueError):
        parse_size("lots")


def test_progress_prints_one_line_per_finished_blob_when_not_a_terminal(tmp_path):
    out = open(tmp_path / "err", "w+")
    progress = Progress.for_terminal(quiet=False, stream=out)
    assert progress.mode == "lines"
    token = progress.begin("app 1234", 10 * MiB)
    progress.advance(token, 10 * MiB)
    progress.end(token)
    progress.blob_done(UploadRecord("/p", "team/app", sent=10 * MiB, pieces=3, started=1.0, last=2.0),
                       "sha256:" + "ab" * 32)
    out.seek(0)
    assert out.read() == ("pushed team/app@sha256:abababababab: 10.0 MiB in 1.0 s "
                          "(10.5 MB/s, 3 pieces)\n")
    assert Progress.for_terminal(quiet=True, stream=out).mode == "off"


def test_progress_bars_on_a_terminal(tmp_path):
    class Tty:
        def __init__(self):
            self.text = ""

        def isatty(self):
            return True

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    tty = Tty()
    progress = Progress.for_terminal(quiet=False, stream=tty)
    assert progress.mode == "bars"
    token = progress.begin("team/app 0123", 8 * MiB)
    progress.advance(token, 4 * MiB)
    progress.end(token)
    assert "team/app 0123" in tty.text and "/ 8.0 MiB" in tty.text and "MB/s" in tty.text
    assert "\x1b[1F\x1b[J" in tty.text   # the bar was redrawn in place, then cleared


# ----------------------------------------------------------------------------------------------
# Berth with Lambda's request limit, through the proxy
# ----------------------------------------------------------------------------------------------


def test_berth_behind_a_lambda_limit_takes_a_big_blob_through_the_proxy(lambda_registry):
    from tests.support.registry_api import RegistryClient, error_code, push_in_one_patch
    client = RegistryClient()
    data = pseudo_random(13 * MiB + 17, seed=13)
    direct = client.post(f"{lambda_registry}/v2/proxy/unit/blobs/uploads/?digest={sha256(data)}", data=data)
    assert direct.status_code == 413 and error_code(direct) == "SIZE_INVALID"
    server, port = start_proxy(lambda_registry)
    base = f"http://127.0.0.1:{port}"
    try:
        push_in_one_patch(base, "proxy/unit", data, client)
        mono = client.post(f"{base}/v2/proxy/mono/blobs/uploads/?digest={sha256(data)}", data=data)
        assert mono.status_code == 201, mono.text
        head = client.head(f"{base}/v2/proxy/mono/blobs/{sha256(data)}")
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
        unauthorized = requests.get(f"{base}/v2/proxy/mono/blobs/{sha256(data)}")
        if unauthorized.status_code == 401:   # the realm is the registry's own URL, untouched
            assert f'realm="{lambda_registry}/' in unauthorized.headers["WWW-Authenticate"]
    finally:
        server.stop()


# ----------------------------------------------------------------------------------------------
# The real clients, with a 200 MiB layer
# ----------------------------------------------------------------------------------------------

needs_skopeo = pytest.mark.needs("skopeo")
needs_podman = pytest.mark.needs("podman")


def _creds() -> str:
    from tests.support.registry_api import ADMIN
    return ":".join(ADMIN)


@pytest.fixture(scope="session")
def huge_image(image_cache):
    from tests.support.images import build_image
    return build_image(image_cache / "proxy-huge", layers=[200 * MiB, 1 * MiB], seed="berth-proxy-huge")


@pytest.fixture
def proxy_process(lambda_registry, tmp_path):
    """`berth proxy` in its own process (so its memory can be measured) in front of Berth."""
    from tests.support.berth_proxy import berth_proxy
    log_path = tmp_path / "proxy.log"
    with berth_proxy(lambda_registry, log_path, "--quiet", docker_config=tmp_path / "no-docker-login") \
            as (proc, host):
        yield proc, host, log_path


def _vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.e2e
@needs_skopeo
def test_skopeo_push_of_a_200_mib_layer_directly_fails_with_413(huge_image, lambda_registry):
    from tests.support.clients import ClientError, skopeo_copy
    host = urlsplit(lambda_registry).netloc
    with pytest.raises(ClientError) as failure:
        skopeo_copy(huge_image.oci_ref, f"docker://{host}/proxy/direct:v1", creds=_creds())
    stderr = failure.value.stderr
    assert "413" in stderr or "exceeds the gateway limit" in stderr, stderr


@pytest.mark.e2e
@needs_skopeo
def test_skopeo_push_through_the_proxy_in_bounded_memory(huge_image, lambda_registry, proxy_process,
                                                         tmp_path):
    from tests.support.clients import layout_digests, skopeo_copy
    proc, proxy_host, log_path = proxy_process
    pushed = skopeo_copy(huge_image.oci_ref, f"docker://{proxy_host}/proxy/skopeo:v1", creds=_creds())
    assert pushed.digest == huge_image.manifest_digest
    peak = _vm_hwm_mib(proc.pid)
    print(f"skopeo push through the proxy: {pushed.seconds:.1f} s, proxy peak RSS {peak:.0f} MiB")
    assert peak < 200, f"the proxy's peak RSS was {peak:.0f} MiB"
    assert "Traceback" not in log_path.read_text()
    host = urlsplit(lambda_registry).netloc
    skopeo_copy(f"docker://{host}/proxy/skopeo:v1", f"oci:{tmp_path / 'pulled'}:v1", creds=_creds())
    got = layout_digests(tmp_path / "pulled", "v1")   # re-hashes every pulled blob
    assert got["manifest_digest"] == huge_image.manifest_digest
    assert got["config_digest"] == huge_image.config_digest
    assert got["layer_digests"] == huge_image.layer_digests


@pytest.mark.e2e
@needs_skopeo
@needs_podman
def test_podman_push_through_the_proxy_and_not_without(huge_image, lambda_registry, tmp_path):
    from tests.support.clients import ClientError, Podman, image_identity
    host = urlsplit(lambda_registry).netloc
    server, port = start_proxy(lambda_registry)
    pusher, puller = Podman(tmp_path / "push"), Podman(tmp_path / "pull")
    try:
        local = pusher.load_oci(huge_image.path, huge_image.tag, name="proxy-huge")
        loaded = pusher.identity(local)
        started = time.monotonic()
        with pytest.raises(ClientError) as failure:
            pusher.push(local, f"{host}/proxy/podman-direct:v1", creds=_creds())
        assert "413" in failure.value.stderr or "exceeds the gateway limit" in failure.value.stderr
        failed_after = time.monotonic() - started
        # podman compresses on the fly and sends each layer with Transfer-Encoding: chunked
        pushed = pusher.push(local, f"127.0.0.1:{port}/proxy/podman:v1", creds=_creds())
        print(f"podman: direct push failed after {failed_after:.1f} s; "
              f"push through the proxy {pushed.seconds:.1f} s")
        stored = image_identity(f"docker://{host}/proxy/podman:v1", creds=_creds())
        assert stored.manifest_digest == pushed.digest
        assert stored.content() == loaded.content()
        image_id = puller.pull(f"{host}/proxy/podman:v1", creds=_creds())
        assert "sha256:" + image_id == huge_image.config_digest
        got = puller.identity(f"{host}/proxy/podman:v1")
        assert got.manifest_digest == pushed.digest and got.content() == loaded.content()
    finally:
        server.stop()
        pusher.cleanup()
        puller.cleanup()
