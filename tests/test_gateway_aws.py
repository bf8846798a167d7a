"""The local gateway's aws mode, rule by rule (berth_local/aws_rules.py, chalicelib/frontdoor.py).

A small Chalice app with a TOKEN authorizer stands in for Berth, so each rule of the deployed path
is seen from both sides: the event the "Lambda" gets and the answer the HTTP client gets.
"""
from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from typing import Any, Iterator

import pytest
import requests
from chalice import AuthResponse, Chalice, Response

from berth_local import aws_rules, gateway, serve
from chalicelib import frontdoor

ALL_METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
NOT_UTF8 = bytes(range(256)) * 4
GOOD = "Bearer good.token"


class AuthorizedDouble:
    def __init__(self) -> None:
        self.app = Chalice("aws-rules", configure_logs=False)
        self.authorizer_calls = 0
        self.events: list[dict] = []
        self.lock = threading.Lock()

        @self.app.authorizer(ttl_seconds=300)
        def auth(request):
            with self.lock:
                self.authorizer_calls += 1
            if request.token == GOOD:
                return AuthResponse(routes=["*"], principal_id="alice", context={"subject": "alice"})
            if request.token == "Bearer deny.me":
                return AuthResponse(routes=[], principal_id="mallory")
            raise Exception("Unauthorized")

        self.app.route("/{proxy+}", methods=ALL_METHODS, content_types=["*/*"], authorizer=auth)(self.view)
        self.app.route("/_berth/{proxy+}", methods=ALL_METHODS, content_types=["*/*"])(self.view)

    def view(self) -> Any:
        request = self.app.current_request
        event = request.to_original_event()
        with self.lock:
            self.events.append(event)
        path = request.uri_params["proxy"]
        if path == "sleep":
            time.sleep(1.5)
        if path == "challenge":
            return Response(body={"errors": []}, status_code=401, headers={
                "WWW-Authenticate": 'Bearer realm="x"', "Via": "1.1 app", "Server": "app",
                "Content-Type": "application/json"})
        if path == "binary":   # a response Chalice base64-encodes (its type is a binary type)
            return Response(body=NOT_UTF8, headers={"Content-Type": "application/octet-stream"})
        if path == "huge":
            return {"pad": "x" * (aws_rules.LAMBDA_MAX_PAYLOAD + 10)}
        return {"isBase64Encoded": event["isBase64Encoded"],
                "body": base64.b64encode(request.raw_body).decode(),
                "headers": event["headers"],
                "authorizer": event["requestContext"].get("authorizer")}

    def last_event(self) -> dict:
        with self.lock:
            return self.events[-1]


def _serve(**options) -> Iterator[tuple[AuthorizedDouble, str]]:
    double = AuthorizedDouble()
    wsgi = gateway.make_wsgi_app(double.app, mode="aws", **options)
    server, port = serve.start_in_thread(wsgi)
    wsgi.public_url = f"http://127.0.0.1:{port}"
    try:
        yield double, wsgi.public_url
    finally:
        server.close()


@pytest.fixture(scope="module")
def aws() -> Iterator[tuple[AuthorizedDouble, str]]:
    yield from _serve(integration_timeout=1.0)


@pytest.fixture(scope="module")
def bare() -> Iterator[tuple[AuthorizedDouble, str]]:
    yield from _serve(front_door=False)


AUTH = {"Authorization": GOOD}


# -- the front door's authorizer --------------------------------------------------------------


def test_no_token_gets_api_gateways_challenge_without_calling_any_function(aws):
    double, url = aws
    before = (double.authorizer_calls, len(double.events))
    for headers in ({}, {"Authorization": "Basic YWxpY2U6cHc="}):
        r = requests.get(url + "/v2/alice/app/manifests/v1", headers=headers)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == frontdoor.challenge(url, "berth")
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert (double.authorizer_calls, len(double.events)) == before


def test_a_refused_token_gets_the_challenge_and_a_valid_one_reaches_the_app(aws):
    double, url = aws
    r = requests.get(url + "/v2/x/tags/list", headers={"Authorization": "Bearer forged.token"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer realm=")
    r = requests.get(url + "/v2/x/tags/list", headers=AUTH)
    assert r.status_code == 200
    assert r.json()["authorizer"]["principalId"] == "alice"
    assert r.json()["authorizer"]["subject"] == "alice"


def test_a_deny_policy_is_a_403(aws):
    _, url = aws
    r = requests.get(url + "/v2/x/tags/list", headers={"Authorization": "Bearer deny.me"})
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"


def test_the_authorizers_answer_is_cached_per_token(aws):
    double, url = aws
    token = {"Authorization": "Bearer cached.forged"}
    requests.get(url + "/v2/x/tags/list", headers=token)
    calls = double.authorizer_calls
    for _ in range(3):
        assert requests.get(url + "/v2/x/tags/list", headers=token).status_code == 401
    assert double.authorizer_calls == calls


def test_berth_routes_have_no_authorizer(aws):
    _, url = aws
    assert requests.get(url + "/v2/_berth/token").status_code == 200


# -- request bodies ---------------------------------------------------------------------------


def test_with_the_front_door_a_body_without_content_type_arrives_base64_and_intact(aws):
    _, url = aws
    r = requests.patch(url + "/v2/x/blobs/uploads/1", data=NOT_UTF8, headers=AUTH)
    assert r.json()["isBase64Encoded"] is True
    assert base64.b64decode(r.json()["body"]) == NOT_UTF8


def test_without_the_front_door_it_arrives_as_mangled_text(bare):
    _, url = bare
    r = requests.patch(url + "/v2/x/blobs/uploads/1", data=NOT_UTF8, headers=AUTH)
    assert r.json()["isBase64Encoded"] is False
    assert base64.b64decode(r.json()["body"]) == NOT_UTF8.decode("utf-8", "replace").encode()
    # ... but a type in Chalice's default binary types is still passed intact
    r = requests.patch(url + "/v2/x/blobs/uploads/1", data=NOT_UTF8,
                       headers={**AUTH, "Content-Type": "application/octet-stream"})
    assert base64.b64decode(r.json()["body"]) == NOT_UTF8


def test_a_chunked_body_is_buffered_and_its_transfer_encoding_not_passed_on(aws):
    double, url = aws
    r = requests.patch(url + "/v2/x/blobs/uploads/1", data=iter([NOT_UTF8[:100], NOT_UTF8[100:]]),
                       headers=AUTH)
    assert r.request.headers["Transfer-Encoding"] == "chunked"
    assert base64.b64decode(r.json()["body"]) == NOT_UTF8
    assert "Transfer-Encoding" not in r.json()["headers"]


def test_an_event_over_lambdas_6_mb_is_refused_by_api_gateway(aws):
    """4.8 MB of body is 6.4 MB once base64-encoded in the event."""
    double, url = aws
    calls = len(double.events)
    r = requests.patch(url + "/v2/x/blobs/uploads/1", data=b"\0" * 4_800_000, headers=AUTH)
    assert (r.status_code, r.json()) == (413, {"message": "Request Too Long"})
    assert len(double.events) == calls
    r = requests.patch(url + "/v2/x/blobs/uploads/1", data=b"\0" * 4_400_000, headers=AUTH)
    assert r.status_code == 200


def test_a_body_over_api_gateways_10_mb_is_refused_before_the_authorizer(aws):
    double, url = aws
    calls = double.authorizer_calls
    r = requests.patch(url + "/v2/x/blobs/uploads/1", data=b"\0" * 10_000_001,
                       headers={"Authorization": "Bearer never.seen"})
    assert (r.status_code, r.json()) == (413, {"message": "Request Too Long"})
    assert double.authorizer_calls == calls


# -- responses ---------------------------------------------------------------------------------


def test_response_headers_are_remapped_and_dropped_as_the_known_issues_table_says(aws):
    _, url = aws
    r = requests.get(url + "/v2/_berth/challenge")
    assert "WWW-Authenticate" not in r.headers
    assert r.headers["X-Amzn-Remapped-WWW-Authenticate"] == 'Bearer realm="x"'
    assert r.headers["X-Amzn-Remapped-Server"] == "app"
    assert "Via" not in r.headers


def _get_binary(url: str, accept: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(url.split("//")[1])
    conn.putrequest("GET", "/v2/_berth/binary", skip_accept_encoding=True)
    if accept is not None:
        conn.putheader("Accept", accept)
    conn.endheaders()
    response = conn.getresponse()
    try:
        return response.status, response.read()
    finally:
        conn.close()


def test_a_base64_response_is_decoded_only_when_the_first_accept_type_matches(aws, bare):
    _, url = aws
    assert _get_binary(url, "*/*") == (200, NOT_UTF8)
    assert _get_binary(url, "application/json, application/octet-stream") == (200, NOT_UTF8)
    # Without the front door's */*, only the FIRST Accept type counts for API Gateway (Chalice
    # accepts any of them): the client gets the base64 text.
    _, bare_url = bare
    assert _get_binary(bare_url, "application/octet-stream") == (200, NOT_UTF8)
    assert _get_binary(bare_url, "application/json, application/octet-stream") == (
        200, base64.b64encode(NOT_UTF8))
    # No Accept at all (skopeo, podman): Chalice itself refuses a binary-typed response, which
    # is why Berth never answers the registry API with one.
    status, body = _get_binary(url, None)
    assert status == 400 and b"Accept" in body


def test_a_slow_integration_gets_api_gateways_504(aws):
    _, url = aws
    started = time.monotonic()
    r = requests.get(url + "/v2/_berth/sleep")
    assert (r.status_code, r.json()) == (504, {"message": "Endpoint request timed out"})
    assert time.monotonic() - started < 1.4


def test_a_response_over_lambdas_6_mb_is_a_502(aws):
    _, url = aws
    r = requests.get(url + "/v2/_berth/huge")
    assert (r.status_code, r.json()) == (502, {"message": "Internal server error"})


def test_the_default_integration_timeout_is_api_gateways_29_seconds():
    assert aws_rules.INTEGRATION_TIMEOUT_SECONDS == 29.0
    wsgi = gateway.make_wsgi_app(Chalice("t", configure_logs=False), mode="aws")
    assert wsgi.integration_timeout == 29.0
    assert json.loads(aws_rules.REQUEST_TOO_LONG[1]) == {"message": "Request Too Long"}
