"""Tests for the local API Gateway emulation (berth_local.gateway / berth_local.serve).

A tiny Chalice app stands in for the registry: it records every event it gets and emulates the
blob-upload protocol, so the tests can check both what reaches "Lambda" and what the HTTP client
sees. Everything runs on 127.0.0.1 with waitress; no AWS.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import http.client
import io
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from chalice import Chalice, Response

from berth_local import gateway, serve

MIB = 1024 * 1024
ALL_METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"  # not in Chalice's default binary types
REPO_ROOT = Path(__file__).resolve().parents[1]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pseudo_random(size: int, seed: int = 1) -> bytes:
    """Incompressible-looking bytes without paying for os.urandom on every test run."""
    block = hashlib.sha512(str(seed).encode()).digest() * 16384  # 1 MiB
    block = bytes(b ^ (i & 0xFF) for i, b in enumerate(block[:4096])) + block[4096:]
    repeats = size // len(block) + 1
    return (block * repeats)[:size]


def oci_error(status: int, code: str, message: str) -> Response:
    body = {"errors": [{"code": code, "message": message, "detail": {}}]}
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json"})


# ----------------------------------------------------------------------------------------------
# The app behind the gateway
# ----------------------------------------------------------------------------------------------


class RegistryDouble:
    """A Chalice app that records the events it receives and emulates blob uploads."""

    def __init__(self) -> None:
        self.app = Chalice("gateway-test", configure_logs=False)
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.uploads: dict[str, bytearray] = {}
        self.blobs: dict[str, int] = {}
        # Routes relative to the API Gateway stage "v2", as Berth's app writes them.
        self.app.route("/", methods=ALL_METHODS, content_types=["*/*"])(self.root)
        self.app.route("/{proxy+}", methods=ALL_METHODS, content_types=["*/*"])(self.proxy)

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.uploads.clear()
            self.blobs.clear()

    def recorded(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.events)

    # -- views ----------------------------------------------------------------------------------

    def root(self) -> Response:
        self._record()
        return Response(body={}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    def proxy(self) -> Response:
        request = self.app.current_request
        self._record()
        path = request.uri_params["proxy"]
        if path.startswith("echo/"):
            return self._echo()
        if path.startswith("sleep/"):
            return self._sleep(path.split("/", 1)[1])
        if path.startswith("sized/"):
            return self._sized(int(path.split("/", 1)[1]))
        upload = re.match(r"^(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$", path)
        if upload:
            return self._upload(upload["name"], upload["id"])
        blob = re.match(r"^(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$", path)
        if blob:
            return self._blob(blob["digest"])
        return oci_error(404, "NAME_UNKNOWN", f"nothing at {path}")

    # -- helpers ------------------------------------------------------------------------------

    def _record(self) -> None:
        request = self.app.current_request
        event = dict(request.to_original_event())
        event.pop("body")
        event["bodyLength"] = len(request.raw_body)
        with self.lock:
            self.events.append(event)

    def _echo(self) -> dict[str, Any]:
        request = self.app.current_request
        event = dict(request.to_original_event())
        event.pop("body")
        return {"event": event, "body_b64": base64.b64encode(request.raw_body).decode("ascii")}

    def _sleep(self, tag: str) -> dict[str, Any]:
        context_id = self.app.lambda_context.aws_request_id
        time.sleep(0.3)  # long enough for all other requests to overwrite shared state
        request = self.app.current_request
        return {
            "tag": tag,
            "header": request.headers.get("x-tag"),
            "query": request.query_params.get("n") if request.query_params else None,
            "context_unchanged": self.app.lambda_context.aws_request_id == context_id,
            "context_id": context_id,
        }

    def _sized(self, size: int) -> Response:
        if self.app.current_request.method == "HEAD":
            return Response(body="", headers={"Content-Length": str(size), "Content-Type": "text/plain"})
        return Response(body="x" * size, headers={"Content-Type": "text/plain"})

    def _upload(self, name: str, upload_id: str) -> Response:
        request = self.app.current_request
        if request.method == "POST" and not upload_id:
            return self._start_upload(name)
        with self.lock:
            buffer = self.uploads.get(upload_id)
        if buffer is None:
            return oci_error(404, "BLOB_UPLOAD_UNKNOWN", upload_id)
        if request.method == "PATCH":
            return self._append(name, upload_id, buffer)
        if request.method == "PUT":
            return self._commit(name, upload_id, buffer)
        return oci_error(405, "UNSUPPORTED", request.method)

    def _start_upload(self, name: str) -> Response:
        request = self.app.current_request
        query = request.query_params or {}
        if "digest" in query:  # one-shot upload: POST ?digest= with the whole blob
            data = request.raw_body
            if sha256_digest(data) != query["digest"]:
                return oci_error(400, "DIGEST_INVALID", "digest mismatch")
            self.blobs[query["digest"]] = len(data)
            return Response(body="", status_code=201, headers={"Docker-Content-Digest": query["digest"]})
        upload_id = uuid.uuid4().hex
        with self.lock:
            self.uploads[upload_id] = bytearray()
        return Response(body="", status_code=202, headers={
            "Location": f"/v2/{name}/blobs/uploads/{upload_id}?_state=s{upload_id[:6]}",
            "Docker-Upload-UUID": upload_id,
            "Range": "0-0",
        })

    def _append(self, name: str, upload_id: str, buffer: bytearray) -> Response:
        request = self.app.current_request
        content_range = request.headers.get("content-range")
        if content_range is not None and int(content_range.split("-")[0]) != len(buffer):
            return oci_error(416, "RANGE_INVALID", f"expected start {len(buffer)}, got {content_range}")
        buffer += request.raw_body
        return Response(body="", status_code=202, headers={
            "Location": f"/v2/{name}/blobs/uploads/{upload_id}?_state=s{upload_id[:6]}",
            "Range": f"0-{len(buffer) - 1}",
            "Docker-Upload-UUID": upload_id,
        })

    def _commit(self, name: str, upload_id: str, buffer: bytearray) -> Response:
        request = self.app.current_request
        buffer += request.raw_body
        digest = (request.query_params or {}).get("digest")
        actual = sha256_digest(bytes(buffer))
        if digest != actual:
            return oci_error(400, "DIGEST_INVALID", f"got {actual}")
        with self.lock:
            del self.uploads[upload_id]
            self.blobs[actual] = len(buffer)
        return Response(body="", status_code=201, headers={
            "Docker-Content-Digest": actual, "Location": f"/v2/{name}/blobs/{actual}",
        })

    def _blob(self, digest: str) -> Response:
        size = self.blobs.get(digest)
        if size is None:
            return oci_error(404, "BLOB_UNKNOWN", digest)
        return Response(body="", headers={
            "Content-Length": str(size), "Docker-Content-Digest": digest, "Content-Type": LAYER_TYPE,
        })


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@dataclass
class Running:
    double: RegistryDouble
    url: str
    port: int

    def events(self, method: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.double.recorded() if method is None or e["httpMethod"] == method]

    def start_upload(self, name: str = "library/big") -> str:
        response = requests.post(f"{self.url}/v2/{name}/blobs/uploads/")
        assert response.status_code == 202, response.text
        return self.url + response.headers["Location"]


def _running(**options: Any) -> Iterator[Running]:
    double = RegistryDouble()
    server, port = serve.start_in_thread(gateway.make_wsgi_app(double.app, **options))
    try:
        yield Running(double, f"http://127.0.0.1:{port}", port)
    finally:
        server.close()


@pytest.fixture(scope="module")
def _default_server() -> Iterator[Running]:
    yield from _running()


@pytest.fixture(scope="module")
def _small_piece_server() -> Iterator[Running]:
    yield from _running(piece_bytes=1 * MIB)


@pytest.fixture(scope="module")
def _lambda_server() -> Iterator[Running]:
    yield from _running(max_body_bytes=1 * MIB)


@pytest.fixture
def default(_default_server: Running) -> Running:
    """Convenience mode, default 8 MiB pieces."""
    _default_server.double.reset()
    return _default_server


@pytest.fixture
def small(_small_piece_server: Running) -> Running:
    """Convenience mode with 1 MiB pieces, so splitting is cheap to exercise."""
    _small_piece_server.double.reset()
    return _small_piece_server


@pytest.fixture
def emulated(_lambda_server: Running) -> Running:
    """Lambda emulation with a 1 MiB body limit."""
    _lambda_server.double.reset()
    return _lambda_server


def call_wsgi(app: Any, method: str, path: str, body: bytes = b"") -> tuple[str, dict[str, str], bytes]:
    """Call a WSGI app in-process (no server), for cases that need no network."""
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"], captured["headers"] = status, dict(headers)

    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "REQUEST_URI": path, "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)), "HTTP_HOST": "localhost",
    }
    result = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], result


# ----------------------------------------------------------------------------------------------
# Routing, event shape, response shape
# ----------------------------------------------------------------------------------------------


def test_match_resource_prefers_literal_then_param_then_greedy() -> None:
    resources = ["/v2", "/v2/{proxy+}", "/v2/_catalog", "/v2/{name}/tags/list", "/_berth/{proxy+}", "/token"]

    def match(path: str) -> tuple[str, dict | None] | None:
        found = gateway.match_resource(resources, path)
        return (found.resource, found.path_parameters) if found else None

    assert match("/v2") == ("/v2", None)
    assert match("/v2/") == ("/v2", None)
    assert match("/v2/_catalog") == ("/v2/_catalog", None)
    assert match("/v2/alpine/tags/list") == ("/v2/{name}/tags/list", {"name": "alpine"})
    assert match("/v2/my%20repo/tags/list") == ("/v2/{name}/tags/list", {"name": "my repo"})
    assert match("/v2/library/alpine/tags/list") == ("/v2/{proxy+}", {"proxy": "library/alpine/tags/list"})
    assert match("/v2/a/blobs/uploads/") == ("/v2/{proxy+}", {"proxy": "a/blobs/uploads/"})
    assert match("/v2/a%2Fb") == ("/v2/{proxy+}", {"proxy": "a/b"})
    assert match("/_berth/ui/index.html") == ("/_berth/{proxy+}", {"proxy": "ui/index.html"})
    assert match("/token") == ("/token", None)
    assert match("/tokens") is None
    assert match("/_berth") is None  # greedy needs at least one segment
    assert match("/") is None


def test_query_path_headers_and_request_context(default: Running) -> None:
    response = requests.get(
        f"{default.url}/v2/echo/library/my%20repo/a%2Fb/?x=1&x=2&y=hello%20world&z=",
        headers={"Content-Type": "text/plain", "X-Custom-Thing": "yes"},
    )
    assert response.status_code == 200, response.text
    event = response.json()["event"]
    assert event["resource"] == "/{proxy+}"
    assert event["httpMethod"] == "GET"
    assert event["path"] == "/echo/library/my%20repo/a%2Fb/"   # the stage is not part of it
    assert event["pathParameters"] == {"proxy": "echo/library/my repo/a/b/"}
    assert event["queryStringParameters"] == {"x": "2", "y": "hello world", "z": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": ["hello world"], "z": [""]}
    assert event["headers"]["Content-Type"] == "text/plain"
    assert event["headers"]["X-Custom-Thing"] == "yes"
    assert event["multiValueHeaders"]["X-Custom-Thing"] == ["yes"]
    assert event["stageVariables"] is None
    context = event["requestContext"]
    assert context["resourcePath"] == "/{proxy+}"
    assert context["httpMethod"] == "GET"
    assert context["stage"] == "v2"
    assert context["path"] == "/v2/echo/library/my%20repo/a%2Fb/"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert uuid.UUID(context["requestId"])
    assert abs(context["requestTimeEpoch"] / 1000 - time.time()) < 60
    assert event["isBase64Encoded"] is False

    plain = requests.get(f"{default.url}/v2/echo/x").json()["event"]
    assert plain["queryStringParameters"] is None
    assert plain["multiValueQueryStringParameters"] is None


def test_v2_root_with_and_without_trailing_slash(default: Running) -> None:
    for path in ("/v2", "/v2/"):
        response = requests.get(default.url + path)
        assert response.status_code == 200
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert response.headers["Content-Type"] == "application/json"
    assert [e["resource"] for e in default.events()] == ["/", "/"]


@pytest.mark.parametrize("method,path", [("GET", "/nope"), ("GET", "/v3/x"), ("POST", "/"), ("OPTIONS", "/v2/x")])
def test_unknown_resource_or_method_is_missing_authentication_token(default: Running, method: str, path: str) -> None:
    response = requests.request(method, default.url + path)
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/json"
    assert response.content == b'{"message":"Missing Authentication Token"}'
    assert default.events() == []


def test_reason_phrases_and_custom_headers(small: Running) -> None:
    location = small.start_upload()
    connection = http.client.HTTPConnection("127.0.0.1", small.port, timeout=10)
    connection.request("PATCH", location.removeprefix(small.url), body=b"abc", headers={"Content-Range": "7-9"})
    response = connection.getresponse()
    assert (response.status, response.reason) == (416, http.HTTPStatus(416).phrase)
    assert json.loads(response.read())["errors"][0]["code"] == "RANGE_INVALID"
    connection.request("PATCH", location.removeprefix(small.url), body=b"abc")
    response = connection.getresponse()
    response.read()
    assert (response.status, response.reason) == (202, "Accepted")
    assert response.getheader("Range") == "0-2"
    assert response.getheader("Docker-Upload-UUID")
    connection.close()


def test_response_headers_are_merged_like_api_gateway() -> None:
    response = gateway.response_from_lambda({
        "statusCode": 200,
        "headers": {"X-One": "single", "X-Both": "from-headers"},
        "multiValueHeaders": {"X-Both": ["a", "b"], "Set-Cookie": ["c=1", "d=2"]},
        "body": base64.b64encode(b"\x00\xff").decode(),
        "isBase64Encoded": True,
    })
    assert response.body == b"\x00\xff"
    assert ("X-One", "single") in response.headers
    assert [v for n, v in response.headers if n == "X-Both"] == ["a", "b"]
    assert [v for n, v in response.headers if n == "Set-Cookie"] == ["c=1", "d=2"]
    assert response.header("content-type") == "application/json"


# ----------------------------------------------------------------------------------------------
# HEAD, chunked bodies, Expect: 100-continue
# ----------------------------------------------------------------------------------------------


def test_head_keeps_the_apps_content_length_and_sends_no_body(default: Running) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", default.port, timeout=10)
    connection.request("HEAD", "/v2/sized/123456")
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Length") == "123456"
    assert response.read() == b""
    # Same connection: had any body bytes followed the HEAD response, this GET would misparse.
    connection.request("GET", "/v2/sized/5")
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"xxxxx")
    connection.request("HEAD", "/v2/echo/x")  # app sets no Content-Length: the body's length
    response = connection.getresponse()
    assert int(response.getheader("Content-Length")) > 0
    assert response.read() == b""
    connection.close()


def test_head_on_a_pushed_blob_reports_its_size(small: Running) -> None:
    data = b"layer bytes" * 100
    location = small.start_upload()
    assert requests.put(location + "&digest=" + sha256_digest(data), data=data).status_code == 201
    response = requests.head(f"{small.url}/v2/library/big/blobs/{sha256_digest(data)}")
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["Docker-Content-Digest"] == sha256_digest(data)
    assert response.content == b""


def test_chunked_request_body_arrives_whole(default: Running) -> None:
    parts = [b"first-", b"second-", b"\x00\xff" * 1000, b"last"]
    response = requests.patch(f"{default.url}/v2/echo/chunked", data=iter(parts),
                              headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 200
    assert base64.b64decode(response.json()["body_b64"]) == b"".join(parts)
    event = response.json()["event"]
    assert event["isBase64Encoded"] is True
    assert event["headers"]["Content-Length"] == str(len(b"".join(parts)))
    assert "Transfer-Encoding" not in event["headers"]

    connection = http.client.HTTPConnection("127.0.0.1", default.port, timeout=10)
    connection.request("PUT", "/v2/echo/again", body=iter([b"a" * 70000, b"b"]), encode_chunked=True)
    response = connection.getresponse()
    assert base64.b64decode(json.loads(response.read())["body_b64"]) == b"a" * 70000 + b"b"
    connection.close()


def test_expect_100_continue_is_answered_by_waitress(default: Running) -> None:
    body = b"z" * 1000
    with socket.create_connection(("127.0.0.1", default.port), timeout=10) as sock:
        sock.sendall(
            b"PUT /v2/echo/expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        )
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        reply = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    echoed = json.loads(payload)
    assert base64.b64decode(echoed["body_b64"]) == body
    assert "Expect" not in echoed["event"]["headers"]


def test_tls_on_the_plain_http_port_is_refused_at_once(default: Running) -> None:
    """skopeo/podman and the docker CLI try HTTPS first; a hanging handshake used to cost them
    10 s per run, and only a reply that looks like HTTP makes the docker CLI fall back."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", default.port), timeout=5) as sock:
        with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER|record layer failure"):
            context.wrap_socket(sock)
    with socket.create_connection(("127.0.0.1", default.port), timeout=5) as sock:
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]))
        assert sock.recv(100).startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert time.monotonic() - started < 1
    assert requests.get(default.url + "/v2/").status_code == 200


# ----------------------------------------------------------------------------------------------
# Large uploads through the chunked-upload protocol (convenience mode)
# ----------------------------------------------------------------------------------------------


def assert_pieces(events: list[dict[str, Any]], total: int, piece_bytes: int) -> None:
    assert sum(e["bodyLength"] for e in events) == total
    assert len(events) == -(-total // piece_bytes)
    for event in events:
        assert 0 < event["bodyLength"] <= piece_bytes
        assert event["headers"]["Content-Length"] == str(event["bodyLength"])


def test_large_patch_is_split_into_lambda_sized_pieces(default: Running) -> None:
    data = pseudo_random(50 * 1000 * 1000)
    location = default.start_upload()
    response = requests.patch(location, data=data, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 202, response.text
    assert response.headers["Range"] == f"0-{len(data) - 1}"
    patches = default.events("PATCH")
    assert_pieces(patches, len(data), 8 * MIB)
    assert all("Content-Range" not in e["headers"] for e in patches)
    assert all(e["isBase64Encoded"] for e in patches)
    assert {e["requestContext"]["path"] for e in patches} == {location.removeprefix(default.url).split("?")[0]}
    assert {e["queryStringParameters"]["_state"] for e in patches} == {location.split("_state=")[1]}

    committed = requests.put(location + "&digest=" + sha256_digest(data))
    assert committed.status_code == 201, committed.text
    assert committed.headers["Docker-Content-Digest"] == sha256_digest(data)


def test_large_patch_with_content_range_gets_a_range_per_piece(small: Running) -> None:
    head, data = b"h" * 100, pseudo_random(5 * MIB + 12345, seed=2)
    location = small.start_upload()
    assert requests.patch(location, data=head, headers={"Content-Range": "0-99"}).status_code == 202
    response = requests.patch(location, data=data, headers={"Content-Range": f"100-{100 + len(data) - 1}"})
    assert response.status_code == 202, response.text
    patches = small.events("PATCH")[1:]
    assert_pieces(patches, len(data), 1 * MIB)
    offset = 100
    for event in patches:
        assert event["headers"]["Content-Range"] == f"{offset}-{offset + event['bodyLength'] - 1}"
        offset += event["bodyLength"]
    committed = requests.put(location + "&digest=" + sha256_digest(head + data))
    assert committed.status_code == 201, committed.text


def test_split_patch_stops_at_the_first_error(small: Running) -> None:
    data = pseudo_random(3 * MIB, seed=3)
    location = small.start_upload()
    response = requests.patch(location, data=data, headers={"Content-Range": f"5-{5 + len(data) - 1}"})
    assert response.status_code == 416
    assert response.json()["errors"][0]["code"] == "RANGE_INVALID"
    assert len(small.events("PATCH")) == 1


def test_unusable_content_range_on_a_large_patch_is_refused(small: Running) -> None:
    location = small.start_upload()
    response = requests.patch(location, data=b"x" * (2 * MIB), headers={"Content-Range": "0-10"})
    assert response.status_code == 416
    assert response.json()["errors"][0]["code"] == "RANGE_INVALID"
    assert small.events("PATCH") == []


def test_large_put_becomes_patches_then_an_empty_put(small: Running) -> None:
    data = pseudo_random(5 * MIB + 777, seed=4)
    location = small.start_upload()
    response = requests.put(location + "&digest=" + sha256_digest(data), data=data,
                            headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == sha256_digest(data)
    events = small.events()
    assert [e["httpMethod"] for e in events] == ["POST"] + ["PATCH"] * 6 + ["PUT"]
    assert_pieces(events[1:-1], len(data), 1 * MIB)
    for patch in events[1:-1]:
        assert "digest" not in patch["queryStringParameters"]
        assert "_state" in patch["queryStringParameters"]
    put = events[-1]
    assert put["bodyLength"] == 0
    assert put["queryStringParameters"]["digest"] == sha256_digest(data)
    assert put["headers"]["Content-Length"] == "0"


def test_large_monolithic_post_becomes_post_patches_put(small: Running) -> None:
    data = pseudo_random(5 * MIB + 1, seed=5)
    response = requests.post(f"{small.url}/v2/library/mono/blobs/uploads/?digest={sha256_digest(data)}",
                             data=data, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == sha256_digest(data)
    events = small.events()
    assert [e["httpMethod"] for e in events] == ["POST"] + ["PATCH"] * 6 + ["PUT"]
    post, patches, put = events[0], events[1:-1], events[-1]
    assert post["queryStringParameters"] is None and post["bodyLength"] == 0
    assert_pieces(patches, len(data), 1 * MIB)
    upload_path = patches[0]["path"]
    assert upload_path.startswith("/library/mono/blobs/uploads/") and len(upload_path) > 32
    assert all(p["path"] == upload_path and "_state" in p["queryStringParameters"] for p in patches)
    assert put["path"] == upload_path
    assert set(put["queryStringParameters"]) == {"_state", "digest"}
    assert put["bodyLength"] == 0


def test_small_monolithic_post_goes_through_untouched(small: Running) -> None:
    data = b"tiny layer"
    response = requests.post(f"{small.url}/v2/library/mono/blobs/uploads/?digest={sha256_digest(data)}", data=data)
    assert response.status_code == 201
    assert [(e["httpMethod"], e["bodyLength"]) for e in small.events()] == [("POST", len(data))]


def test_large_monolithic_post_with_a_wrong_digest_returns_the_apps_error(small: Running) -> None:
    data = pseudo_random(2 * MIB + 5, seed=6)
    response = requests.post(f"{small.url}/v2/library/mono/blobs/uploads/?digest={sha256_digest(b'other')}", data=data)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_other_large_bodies_are_read_whole_up_to_16_mib_then_refused(small: Running) -> None:
    medium = pseudo_random(3 * MIB, seed=7)
    response = requests.put(f"{small.url}/v2/echo/manifest", data=medium)
    assert response.status_code == 200
    assert base64.b64decode(response.json()["body_b64"]) == medium
    assert len(small.events()) == 1

    response = requests.put(f"{small.url}/v2/echo/manifest", data=b"m" * (17 * MIB))
    assert response.status_code == 413
    error = response.json()["errors"][0]
    assert error["code"] == "SIZE_INVALID" and error["message"].startswith("request body too large")
    assert len(small.events()) == 1


# ----------------------------------------------------------------------------------------------
# Lambda emulation mode
# ----------------------------------------------------------------------------------------------


def expected_limit_error(size: int, limit: int) -> dict[str, Any]:
    return {"errors": [{
        "code": "SIZE_INVALID",
        "message": (f"Request body of {size} bytes exceeds the gateway limit of {limit} bytes (the API "
                    "Gateway/Lambda payload limit). Push large layers in chunks, e.g. through `berth proxy`."),
        "detail": {"limit": limit},
    }]}


def test_emulation_refuses_bodies_over_the_limit_without_calling_the_app(emulated: Running) -> None:
    location = f"{emulated.url}/v2/library/x/blobs/uploads/someid"
    over = b"o" * (1 * MIB + 1)
    response = requests.patch(location, data=over)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == expected_limit_error(len(over), 1 * MIB)

    chunked = requests.patch(location, data=iter([b"c" * MIB, b"c" * MIB]))
    assert chunked.status_code == 413
    assert chunked.json() == expected_limit_error(2 * MIB, 1 * MIB)
    assert emulated.events() == []

    at_limit = requests.put(f"{emulated.url}/v2/echo/limit", data=b"a" * MIB)
    assert at_limit.status_code == 200
    assert len(emulated.events()) == 1


def test_binary_bodies_are_mangled_only_when_emulating_api_gateway(emulated: Running, default: Running) -> None:
    data = bytes(range(256)) * 16

    def echo(running: Running, content_type: str) -> tuple[bytes, bool]:
        response = requests.put(f"{running.url}/v2/echo/bin", data=data, headers={"Content-Type": content_type})
        assert response.status_code == 200
        payload = response.json()
        return base64.b64decode(payload["body_b64"]), payload["event"]["isBase64Encoded"]

    mangled, encoded = echo(emulated, LAYER_TYPE)
    assert encoded is False and mangled != data and "\ufffd".encode() in mangled
    assert echo(emulated, "application/octet-stream") == (data, True)
    assert echo(emulated, "image/png; charset=binary") == (data, True)
    assert echo(default, LAYER_TYPE) == (data, True)


def test_binary_media_type_matching() -> None:
    types = ["application/octet-stream", "image/*"]
    assert gateway.is_binary_media_type("Application/Octet-Stream; x=y", types)
    assert gateway.is_binary_media_type("image/webp", types)
    assert not gateway.is_binary_media_type(LAYER_TYPE, types)
    assert not gateway.is_binary_media_type(None, types)
    assert gateway.is_binary_media_type(None, ["*/*"])


# ----------------------------------------------------------------------------------------------
# Thread safety and failure handling
# ----------------------------------------------------------------------------------------------


def test_current_request_and_lambda_context_are_per_thread(default: Running) -> None:
    def one(i: int) -> dict[str, Any]:
        response = requests.get(f"{default.url}/v2/sleep/{i}?n={i}", headers={"X-Tag": str(i)})
        assert response.status_code == 200
        return response.json()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert time.monotonic() - started < 2.0  # they really ran concurrently
    for i, result in enumerate(results):
        assert (result["tag"], result["header"], result["query"]) == (str(i), str(i), str(i))
        assert result["context_unchanged"] is True
    assert len({r["context_id"] for r in results}) == 8


def test_thread_local_state_is_per_app_and_idempotent() -> None:
    first, second = Chalice("one"), Chalice("two")
    gateway.make_wsgi_app(first)
    subclass = type(first)
    gateway.make_wsgi_app(first)
    assert type(first) is subclass and isinstance(first, Chalice)
    assert type(second) is Chalice
    first.current_request = "main"
    seen = []
    worker = threading.Thread(target=lambda: seen.append(first.current_request))
    worker.start()
    worker.join()
    assert seen == [None] and first.current_request == "main"


class ExplodingChalice(Chalice):
    def __call__(self, event: Any, context: Any) -> Any:
        raise RuntimeError("secret internals")


class GarbageChalice(Chalice):
    def __call__(self, event: Any, context: Any) -> Any:
        return "not a proxy response"


def _with_route(app: Chalice) -> Chalice:
    app.route("/", methods=["GET"])(lambda: {})
    return app


def test_app_exception_becomes_an_oci_500_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    wsgi = gateway.make_wsgi_app(_with_route(ExplodingChalice("boom")))
    with caplog.at_level(logging.ERROR, logger="berth_local.gateway"):
        status, headers, body = call_wsgi(wsgi, "GET", "/v2")
    assert status == "500 Internal Server Error"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["errors"][0]["code"] == "UNKNOWN"
    assert b"secret" not in body and b"Traceback" not in body
    assert "secret internals" in caplog.text


def test_malformed_lambda_response_is_a_502_like_api_gateway() -> None:
    wsgi = gateway.make_wsgi_app(_with_route(GarbageChalice("garbage")))
    status, _, body = call_wsgi(wsgi, "GET", "/v2")
    assert status == "502 Bad Gateway"
    assert json.loads(body) == {"message": "Internal server error"}


# ----------------------------------------------------------------------------------------------
# Memory stays bounded for a big streamed push
# ----------------------------------------------------------------------------------------------

# Runs in its own process so its peak RSS (VmHWM) is not polluted by the rest of the suite.
_MEMORY_SERVER = r"""
import hashlib, sys
from chalice import Chalice
from berth_local import gateway, serve

def vmhwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

app = Chalice("memory", configure_logs=False)
state = {"hash": hashlib.sha256(), "size": 0, "events": 0, "largest": 0}

@app.route("/{proxy+}", methods=["GET", "PATCH"], content_types=["*/*"])
def proxy():
    request = app.current_request
    if request.method == "GET":
        return {"vmhwm_kib": vmhwm_kib(), "sha256": state["hash"].hexdigest(), "size": state["size"],
                "events": state["events"], "largest": state["largest"]}
    body = request.raw_body
    state["hash"].update(body)
    state["size"] += len(body)
    state["events"] += 1
    state["largest"] = max(state["largest"], len(body))
    return {}

server, port = serve.start_in_thread(gateway.make_wsgi_app(app))
print(port, flush=True)
sys.stdin.read()
"""


def test_streamed_200_mb_patch_keeps_peak_memory_bounded() -> None:
    total, chunk = 200 * MIB, pseudo_random(1 * MIB, seed=9)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen([sys.executable, "-c", _MEMORY_SERVER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT, text=True)
    try:
        url = f"http://127.0.0.1:{int(process.stdout.readline())}/v2/library/huge/blobs/uploads/u1"
        assert requests.patch(url, data=b"warm-up").status_code == 200
        baseline = requests.get(url).json()

        def stream() -> Iterator[bytes]:
            for _ in range(total // len(chunk)):
                yield chunk

        response = requests.patch(url, data=stream(), headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 200, response.text
        after = requests.get(url).json()
    finally:
        process.stdin.close()
        process.wait(timeout=10)

    expected = hashlib.sha256(b"warm-up")
    for _ in range(total // len(chunk)):
        expected.update(chunk)
    assert after["sha256"] == expected.hexdigest()
    assert after["size"] == total + len(b"warm-up")
    assert after["events"] - baseline["events"] == total // (8 * MIB)
    assert after["largest"] == 8 * MIB
    growth_mib = (after["vmhwm_kib"] - baseline["vmhwm_kib"]) / 1024
    assert growth_mib < 100, f"peak RSS grew by {growth_mib:.0f} MiB while pushing {total // MIB} MiB"
