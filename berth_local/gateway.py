"""A local API Gateway (REST API, Lambda proxy integration) in front of a Chalice app, as WSGI.

Why not `chalice local`: it loses chunked request bodies (what podman sends), writes bodies on
HEAD, matches `{proxy+}` as one segment and emulates no size limit (docs/client-behaviour.md).
This module builds the same v1 proxy event API Gateway would, calls `chalice_app(event, context)`
exactly as Lambda does, and turns the returned dict back into an HTTP response.

Modes:

* aws (`mode="aws"`, `BERTH_GATEWAY=aws make run`): the deployed path, rule by rule
  (berth_local/aws_rules.py: payload limits counted on the event, body encoding by Content-Type
  against binaryMediaTypes, response header remapping, base64 responses decoded only for a
  matching Accept, the 29 s integration timeout, API Gateway's own 413/502/504 bodies) behind the
  front door of chalicelib/frontdoor.py (binaryMediaTypes `*/*`, the TOKEN authorizer of the
  registry routes run as API Gateway runs it, with its cache, and the UNAUTHORIZED Gateway
  Response). `front_door=False` keeps the rules and removes the front door, to show what it
  prevents.
* Lambda size only (`max_body_bytes` set, local mode): bodies over the limit get 413 and
  non-binary bodies are passed as lossy UTF-8 text.
* Convenience (default): every body is passed base64 (nothing is mangled), and a blob upload
  larger than `piece_bytes` is cut into pieces sent through the registry's own chunked-upload
  protocol (PATCH ... PATCH, then PUT) -- the same requests a chunking client would make against
  a Lambda deployment. So skopeo/podman can push big layers in one request, memory stays
  bounded, and the app only ever sees Lambda-sized events.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import fnmatch
import functools
import http
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Optional
from urllib.parse import parse_qsl, quote, unquote, urljoin, urlsplit

from berth_local import aws_rules
from berth_local.bodies import PieceReader

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# A non-upload request whose body is over piece_bytes is still read whole up to this size
# (e.g. a big manifest); beyond it nothing legitimate is expected, so it is refused.
FULL_READ_LIMIT = 16 * MIB

UPLOAD_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$")
_CONTENT_RANGE = re.compile(r"^\s*(?:bytes[ =]\s*)?(\d+)-(\d+)(?:/(?:\d+|\*))?\s*$", re.IGNORECASE)

# WSGI forbids applications from setting hop-by-hop headers (waitress asserts on them).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "trailers", "transfer-encoding", "upgrade"}
)
# Headers describing a request body; replaced whenever the gateway re-cuts or drops the body.
_BODY_HEADERS = frozenset({"content-length", "content-range", "content-type", "content-md5"})
# Headers that belong to the client<->gateway hop and that API Gateway does not pass on.
_NOT_FORWARDED = frozenset({"expect", "transfer-encoding", "connection", "keep-alive", "te"})

REMAINING_TIME_MS = 900_000

Headers = tuple[tuple[str, str], ...]
Invoke = Callable[["Call"], "GatewayResponse"]


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


MODES = ("local", "aws")


def make_wsgi_app(
    chalice_app: Any,
    *,
    mode: str = "local",
    max_body_bytes: int | None = None,
    piece_bytes: int = 8 * MIB,
    stage: str = "v2",
    front_door: bool = True,
    public_url: str | None = None,
    integration_timeout: float = aws_rules.INTEGRATION_TIMEOUT_SECONDS,
    fleet: Any = None,
) -> "Gateway":
    """Wrap a Chalice app as a WSGI callable that behaves like API Gateway + Lambda.

    The app is served under `/<stage>` as API Gateway serves a stage: Berth's stage is named
    `v2`, so the app's routes are `/` and `/{proxy+}` and `/v2/...` reaches them (a Docker image
    reference cannot carry a path before /v2/). Paths outside the stage get API Gateway's 403.

    `mode="aws"` applies every rule of the deployed path (see the module docstring);
    `front_door`, `public_url` (the realm of the Gateway Response's challenge; else taken from
    the request's Host) and `integration_timeout` belong to it. `max_body_bytes` refuses bodies
    over that size in either mode and, in local mode, mangles non-binary bodies as API Gateway
    would; `piece_bytes` is the largest body one event carries in convenience mode. With a
    `fleet` (berth_local/fleet.py) every invocation runs in one of its worker processes instead
    of in this one, as on a fleet of Lambda instances.
    The app's `current_request`/`lambda_context` are made thread-local, because a WSGI server
    calls the one shared app object from many threads at once while Lambda never does.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if piece_bytes <= 0:
        raise ValueError("piece_bytes must be positive")
    if max_body_bytes is not None and max_body_bytes < 0:
        raise ValueError("max_body_bytes must not be negative")
    make_request_state_thread_local(chalice_app)
    return Gateway(chalice_app, mode=mode, max_body_bytes=max_body_bytes, piece_bytes=piece_bytes,
                   stage=stage, front_door=front_door, public_url=public_url,
                   integration_timeout=integration_timeout, fleet=fleet)


# --------------------------------------------------------------------------------------------
# Thread-local request state on the Chalice app
# --------------------------------------------------------------------------------------------

_THREAD_LOCAL_ATTRIBUTES = ("current_request", "lambda_context")


class _ThreadLocalAttribute:
    """A data descriptor whose value is per thread.

    Data descriptors on the class take precedence over the instance __dict__, so Chalice's own
    `self.current_request = ...` assignments land here without any change to Chalice.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return getattr(self._local, "value", None)

    def __set__(self, instance: Any, value: Any) -> None:
        self._local.value = value

    def __delete__(self, instance: Any) -> None:
        self._local.__dict__.pop("value", None)


def make_request_state_thread_local(chalice_app: Any) -> None:
    """Give this app object per-thread `current_request` and `lambda_context` (idempotent).

    Swaps the instance's class for a one-off subclass holding the descriptors, so other
    instances of the same class are not affected.
    """
    cls = type(chalice_app)
    if cls.__dict__.get("_berth_thread_local_state"):
        return
    namespace: dict[str, Any] = {name: _ThreadLocalAttribute() for name in _THREAD_LOCAL_ATTRIBUTES}
    namespace["_berth_thread_local_state"] = True
    namespace["__module__"] = cls.__module__
    subclass = type(f"{cls.__name__}WithThreadLocalRequest", (cls,), namespace)
    for name in _THREAD_LOCAL_ATTRIBUTES:
        chalice_app.__dict__.pop(name, None)
    chalice_app.__class__ = subclass


# --------------------------------------------------------------------------------------------
# Resource matching (API Gateway picks the resource; Chalice only looks it up)
# --------------------------------------------------------------------------------------------

_LITERAL, _PARAM, _GREEDY = 0, 1, 2


@dataclass(frozen=True)
class RouteMatch:
    resource: str
    path_parameters: Optional[dict[str, str]]


@dataclass(frozen=True)
class _Template:
    resource: str
    segments: tuple[tuple[int, str], ...]

    @classmethod
    def compile(cls, resource: str) -> "_Template":
        segments = []
        for part in (p for p in resource.split("/") if p):
            if part.startswith("{") and part.endswith("+}"):
                segments.append((_GREEDY, part[1:-2]))
            elif part.startswith("{") and part.endswith("}"):
                segments.append((_PARAM, part[1:-1]))
            else:
                segments.append((_LITERAL, part))
        return cls(resource, tuple(segments))

    @property
    def specificity(self) -> tuple[int, ...]:
        """Lower sorts first: a literal beats a parameter beats a greedy parameter."""
        return tuple(kind for kind, _ in self.segments)

    def match(self, raw_segments: list[str]) -> Optional[dict[str, str]]:
        params: dict[str, str] = {}
        for index, (kind, text) in enumerate(self.segments):
            if kind == _GREEDY:
                if index != len(self.segments) - 1:
                    return None
                rest = "/".join(raw_segments[index:])
                if not rest:
                    return None
                params[text] = unquote(rest)
                return params
            if index >= len(raw_segments) or raw_segments[index] == "":
                return None
            value = unquote(raw_segments[index])
            if kind == _LITERAL and value != text:
                return None
            if kind == _PARAM:
                params[text] = value
        leftover = raw_segments[len(self.segments):]
        return params if leftover in ([], [""]) else None


_TEMPLATE_CACHE: dict[str, _Template] = {}


def match_resource(resources: Iterable[str], raw_path: str) -> Optional[RouteMatch]:
    """Find the most specific resource for a percent-encoded path, as API Gateway routes.

    Segments are split on the raw path (so `%2F` stays inside a segment) and decoded after;
    a greedy `{name+}` takes the rest of the path, slashes and any trailing slash included.
    """
    raw_segments = raw_path.split("/")[1:] if raw_path.startswith("/") else raw_path.split("/")
    best: Optional[tuple[tuple[int, ...], RouteMatch]] = None
    for resource in list(resources):
        template = _TEMPLATE_CACHE.get(resource)
        if template is None:
            template = _TEMPLATE_CACHE.setdefault(resource, _Template.compile(resource))
        params = template.match(raw_segments)
        if params is None:
            continue
        candidate = (template.specificity, RouteMatch(resource, params or None))
        if best is None or candidate[0] < best[0]:
            best = candidate
    return best[1] if best else None


# --------------------------------------------------------------------------------------------
# The incoming HTTP request
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One Lambda invocation's worth of request: what the gateway sends the app."""

    method: str
    raw_path: str
    query: str
    headers: Headers
    body: bytes = b""

    def replace(self, **changes: Any) -> "Call":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ClientRequest:
    """What the HTTP client sent, minus the body (which is read separately, in pieces)."""

    method: str
    raw_path: str
    query: str
    headers: Headers
    source_ip: str
    protocol: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> "ClientRequest":
        raw_path, query = _raw_target(environ)
        return cls(
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            raw_path=raw_path,
            query=query,
            headers=_headers_from_environ(environ),
            source_ip=environ.get("REMOTE_ADDR", "127.0.0.1"),
            protocol=environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        )

    def call(self, body: bytes = b"") -> Call:
        return Call(self.method, self.raw_path, self.query, self.headers, body)

    def header(self, name: str) -> Optional[str]:
        return _last_header(self.headers, name)


def _wsgi_str_to_text(value: str) -> str:
    """WSGI strings carry raw bytes as latin-1; URLs from real clients are UTF-8."""
    return value.encode("latin-1").decode("utf-8", "replace")


def _raw_target(environ: Mapping[str, Any]) -> tuple[str, str]:
    """The path as the client sent it (still percent-encoded) and the raw query string.

    PATH_INFO is already decoded, which would turn `%2F` into a segment separator, so the
    server's raw request URI is preferred when it offers one (waitress: REQUEST_URI).
    """
    query = _wsgi_str_to_text(environ.get("QUERY_STRING", ""))
    uri = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if uri:
        uri = _wsgi_str_to_text(uri)
        if not uri.startswith("/"):  # absolute-form request target
            uri = urlsplit(uri).path or "/"
        path = uri.split("#", 1)[0].split("?", 1)[0]
    else:
        decoded = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        path = quote(decoded.encode("latin-1"), safe="/:@!$&'()*+,;=-._~")
    return "/" + path.lstrip("/"), query


def _header_name(environ_key: str) -> str:
    """`HTTP_X_REQUEST_ID` -> `X-Request-Id`: the usual capitalisation, which WSGI has lost."""
    return "-".join(part.capitalize() for part in environ_key.split("_"))


def _headers_from_environ(environ: Mapping[str, Any]) -> Headers:
    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = _header_name(key[5:])
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = _header_name(key)
        else:
            continue
        if name.lower() not in _NOT_FORWARDED:
            headers.append((name, _wsgi_str_to_text(value)))
    _add_forwarding_headers(headers, environ)
    return tuple(headers)


def _add_forwarding_headers(headers: list[tuple[str, str]], environ: Mapping[str, Any]) -> None:
    """API Gateway adds X-Forwarded-*; apps build absolute URLs from them."""
    names = {name.lower() for name, _ in headers}
    remote = environ.get("REMOTE_ADDR", "127.0.0.1")
    forwarded_for = _last_header(headers, "x-forwarded-for")
    if forwarded_for:
        headers[:] = [(n, v) for n, v in headers if n.lower() != "x-forwarded-for"]
        headers.append(("X-Forwarded-For", f"{forwarded_for}, {remote}"))
    else:
        headers.append(("X-Forwarded-For", remote))
    if "x-forwarded-proto" not in names:
        headers.append(("X-Forwarded-Proto", environ.get("wsgi.url_scheme", "http")))
    if "x-forwarded-port" not in names and environ.get("SERVER_PORT"):
        headers.append(("X-Forwarded-Port", str(environ["SERVER_PORT"])))


def _last_header(headers: Iterable[tuple[str, str]], name: str) -> Optional[str]:
    wanted = name.lower()
    found = None
    for key, value in headers:
        if key.lower() == wanted:
            found = value
    return found


def _replace_headers(headers: Headers, drop: Iterable[str], add: Iterable[tuple[str, str]] = ()) -> Headers:
    dropped = {name.lower() for name in drop}
    return tuple((n, v) for n, v in headers if n.lower() not in dropped) + tuple(add)


# --------------------------------------------------------------------------------------------
# The request body, read in bounded pieces
# --------------------------------------------------------------------------------------------


class RequestBody(PieceReader):
    """`wsgi.input`, read in bounded pieces so a multi-GB layer never sits in memory.

    waitress de-chunks `Transfer-Encoding: chunked`, spools big bodies to a temp file and sets
    CONTENT_LENGTH, so the size is normally known; without it (other servers) the body is read
    to EOF and a small look-ahead buffer answers "is it bigger than N?".
    """

    _COPY_BYTES = 1 * MIB

    def __init__(self, stream: BinaryIO, length: Optional[int]) -> None:
        self._stream = stream
        self._remaining = length  # None: unknown, read to EOF
        self._length = length
        self._pending = b""

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> "RequestBody":
        stream = environ.get("wsgi.input")
        raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
        if raw_length.isdigit():
            length: Optional[int] = int(raw_length)
        elif environ.get("wsgi.input_terminated"):
            length = None
        else:
            length = 0  # PEP 3333: no CONTENT_LENGTH means no body
        if stream is None:
            length = 0
        return cls(stream, length)

    @property
    def known_length(self) -> Optional[int]:
        return self._length

    def exceeds(self, limit: int) -> bool:
        """Whether the body has more than `limit` bytes, peeking ahead when the size is unknown."""
        if self._length is not None:
            return self._length > limit
        if len(self._pending) <= limit:
            self._pending += self._read_raw(limit + 1 - len(self._pending))
        return len(self._pending) > limit

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; fewer only at the end of the body."""
        parts = []
        if self._pending:
            parts.append(self._pending[:size])
            self._pending = self._pending[size:]
            size -= len(parts[0])
        if size > 0:
            parts.append(self._read_raw(size))
        return b"".join(parts)

    def drain(self) -> int:
        """Discard the rest, returning how many bytes that was."""
        total = 0
        for piece in self.pieces(self._COPY_BYTES):
            total += len(piece)
        return total

    def _read_raw(self, size: int) -> bytes:
        if self._remaining is not None:
            size = min(size, self._remaining)
        parts = []
        while size > 0 and self._stream is not None:
            chunk = self._stream.read(size)
            if not chunk:
                break
            parts.append(chunk)
            size -= len(chunk)
            if self._remaining is not None:
                self._remaining -= len(chunk)
        return b"".join(parts)


# --------------------------------------------------------------------------------------------
# Event and context
# --------------------------------------------------------------------------------------------


@dataclass
class LocalLambdaContext:
    """The bits of the Lambda context object an app is likely to touch."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: str = "1024"  # the Lambda Python runtime hands out a str too
    function_version: str = "$LATEST"
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return REMAINING_TIME_MS


def make_context(function_name: str) -> LocalLambdaContext:
    return LocalLambdaContext(
        function_name=function_name,
        aws_request_id=str(uuid.uuid4()),
        invoked_function_arn=f"arn:aws:lambda:local:123456789012:function:{function_name}",
        log_group_name=f"/aws/lambda/{function_name}",
        log_stream_name="local",
    )


def is_binary_media_type(content_type: Optional[str], binary_types: Iterable[str]) -> bool:
    """API Gateway's test of a request Content-Type (or an Accept type) against binaryMediaTypes.

    Only the media type counts (parameters are ignored); `*/*` matches everything, including a
    missing Content-Type (API Gateway reads it as application/json); `type/*` wildcards are
    honoured.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    for pattern in binary_types:
        pattern = pattern.strip().lower()
        if pattern == "*/*":
            return True
        if media_type and fnmatch.fnmatchcase(media_type, pattern):
            return True
    return False


def encode_event_body(body: bytes, binary: bool, emulate_api_gateway: bool) -> tuple[Optional[str], bool]:
    """Return (event body, isBase64Encoded).

    Non-binary bodies become lossy UTF-8 text in emulation mode, which is what API Gateway does
    to them; in convenience mode they go base64 so nothing is damaged.
    """
    if not body:
        return None, False
    if binary or not emulate_api_gateway:
        return base64.b64encode(body).decode("ascii"), True
    return body.decode("utf-8", errors="replace"), False


def parse_query(query: str) -> tuple[Optional[dict[str, str]], Optional[dict[str, list[str]]]]:
    """queryStringParameters (last value wins) and multiValueQueryStringParameters, decoded."""
    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    if not pairs:
        return None, None
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for key, value in pairs:
        single[key] = value
        multi.setdefault(key, []).append(value)
    return single, multi


def strip_stage(raw_path: str, stage: str) -> Optional[str]:
    """The path inside the stage (`/v2/x` -> `/x`, `/v2` -> `/`), or None outside it."""
    prefix = f"/{stage}"
    if raw_path == prefix:
        return "/"
    if raw_path.startswith(prefix + "/"):
        return raw_path[len(prefix):]
    return None


def build_event(
    call: Call,
    route: RouteMatch,
    *,
    client: ClientRequest,
    stage: str,
    body: Optional[str],
    is_base64: bool,
    authorizer: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The API Gateway REST API (v1) Lambda proxy event for one call."""
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in call.headers:
        headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    query, multi_query = parse_query(call.query)
    now = time.time()
    request_id = str(uuid.uuid4())
    host = _last_header(call.headers, "host") or "localhost"
    return {
        "resource": route.resource,
        "path": strip_stage(call.raw_path, stage) or call.raw_path,
        "httpMethod": call.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": route.path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": route.resource,
            "httpMethod": call.method,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": call.raw_path,
            "accountId": "123456789012",
            "protocol": client.protocol,
            "stage": stage,
            "domainPrefix": host.split(".", 1)[0],
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {
                "sourceIp": client.source_ip,
                "userAgent": _last_header(call.headers, "user-agent"),
                "accountId": None, "apiKey": None, "apiKeyId": None, "caller": None,
                "cognitoAuthenticationProvider": None, "cognitoAuthenticationType": None,
                "cognitoIdentityId": None, "cognitoIdentityPoolId": None, "principalOrgId": None,
                "accessKey": None, "user": None, "userArn": None,
            },
            "domainName": host,
            "apiId": "local",
            **({"authorizer": authorizer} if authorizer is not None else {}),
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    headers: Headers = ()
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        return _last_header(self.headers, name)


class MalformedLambdaResponse(Exception):
    """The app returned something API Gateway could not turn into HTTP (it answers 502)."""


def json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> GatewayResponse:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return GatewayResponse(status, (("Content-Type", "application/json"),) + tuple(headers), body)


def oci_error(status: int, code: str, message: str, detail: Any = None) -> GatewayResponse:
    """An error in the OCI distribution envelope, which registry clients print to the user."""
    error = {"code": code, "message": message, "detail": detail if detail is not None else {}}
    return json_response(status, {"errors": [error]})


def missing_authentication_token() -> GatewayResponse:
    """API Gateway's answer for a path/method with no resource, word for word."""
    return json_response(403, {"message": "Missing Authentication Token"},
                         [("x-amzn-ErrorType", "MissingAuthenticationTokenException")])


def lambda_payload_too_large(size: int, limit: int) -> GatewayResponse:
    message = (
        f"Request body of {size} bytes exceeds the gateway limit of {limit} bytes (the API "
        "Gateway/Lambda payload limit). Push large layers in chunks, e.g. through `berth proxy`."
    )
    return oci_error(413, "SIZE_INVALID", message, {"limit": limit})


def response_from_lambda(result: Any, decode_base64: bool = True) -> GatewayResponse:
    """Turn a Lambda proxy response dict into HTTP, merging headers as API Gateway does.

    A header present in multiValueHeaders takes its values from there only; without any
    Content-Type the answer is labelled application/json, API Gateway's default. A base64 body
    is decoded when `decode_base64`, else passed on as its base64 text, as API Gateway does when
    the request's Accept does not match binaryMediaTypes.
    """
    if not isinstance(result, dict) or "statusCode" not in result:
        raise MalformedLambdaResponse(f"not a proxy response: {type(result).__name__}")
    try:
        status = int(result["statusCode"])
    except (TypeError, ValueError) as exc:
        raise MalformedLambdaResponse(f"bad statusCode {result['statusCode']!r}") from exc
    if not 100 <= status <= 599:
        raise MalformedLambdaResponse(f"bad statusCode {status}")
    multi = result.get("multiValueHeaders") or {}
    single = result.get("headers") or {}
    multi_names = {name.lower() for name in multi}
    headers = [(str(n), _header_value(v)) for n, v in single.items() if n.lower() not in multi_names]
    for name, values in multi.items():
        headers.extend((str(name), _header_value(v)) for v in (values or []))
    if _last_header(headers, "content-type") is None:
        headers.append(("Content-Type", "application/json"))
    return GatewayResponse(status, tuple(headers), _response_body(result, decode_base64))


def _response_body(result: Mapping[str, Any], decode_base64: bool = True) -> bytes:
    body = result.get("body")
    if body is None:
        return b""
    if result.get("isBase64Encoded") and decode_base64:
        try:
            return base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise MalformedLambdaResponse("isBase64Encoded body is not base64") from exc
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    raise MalformedLambdaResponse(f"body must be a string, got {type(body).__name__}")


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _latin1_safe(value: str) -> str:
    """WSGI header values must be latin-1; send anything else as its UTF-8 bytes."""
    try:
        value.encode("latin-1")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8").decode("latin-1")


def start_wsgi_response(response: GatewayResponse, method: str, start_response: Callable) -> list[bytes]:
    """Send status and headers; return the body iterable.

    Content-Length is always ours (len(body)) so the connection stays in sync, except on HEAD,
    where the app's value is kept: registries report blob and manifest sizes that way. waitress
    itself would write a body on HEAD, so it is dropped here.
    """
    headers = [
        (name, _latin1_safe(value))
        for name, value in response.headers
        if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length"
    ]
    body = response.body
    if method == "HEAD":
        declared = (response.header("content-length") or "").strip()
        headers.append(("Content-Length", declared if declared.isdigit() else str(len(body))))
        body = b""
    else:
        headers.append(("Content-Length", str(len(body))))
    start_response(f"{response.status} {_reason(response.status)}", headers)
    return [body] if body else []


# --------------------------------------------------------------------------------------------
# Blob uploads in pieces (convenience mode)
# --------------------------------------------------------------------------------------------


def _piece_call(template: Call, piece: bytes, content_range: Optional[str]) -> Call:
    add = [("Content-Length", str(len(piece)))]
    if content_range is not None:
        add.append(("Content-Range", content_range))
    headers = _replace_headers(template.headers, drop=("content-length", "content-range"), add=add)
    return template.replace(method="PATCH", headers=headers, body=piece)


def patch_in_pieces(invoke: Invoke, template: Call, pieces: Iterator[bytes], start: Optional[int]) -> GatewayResponse:
    """Send the body as consecutive PATCHes to the template's path and query.

    Without a start offset each PATCH carries no Content-Range (it appends, as skopeo/podman
    do); with one, each carries the inclusive `<start>-<end>` range oras-py would send.
    Stops at the first non-2xx answer, which is what a chunking client would see.
    """
    response: Optional[GatewayResponse] = None
    offset = start
    for piece in pieces:
        content_range = None
        if offset is not None:
            content_range = f"{offset}-{offset + len(piece) - 1}"
            offset += len(piece)
        response = invoke(_piece_call(template, piece, content_range))
        if not response.ok:
            return response
    if response is None:  # cannot happen for a body larger than a piece, but never return None
        return oci_error(400, "BLOB_UPLOAD_INVALID", "empty upload body")
    return response


def _bodyless(call: Call, method: str, raw_path: str, query: str) -> Call:
    headers = _replace_headers(call.headers, drop=_BODY_HEADERS, add=[("Content-Length", "0")])
    return Call(method, raw_path, query, headers, b"")


def split_query(query: str, name: str) -> tuple[str, str]:
    """Split a raw query into (items named `name`, the other items), keeping their encoding."""
    matching, others = [], []
    for item in (i for i in query.split("&") if i):
        key = unquote(item.split("=", 1)[0].replace("+", " "))
        (matching if key == name else others).append(item)
    return "&".join(matching), "&".join(others)


def add_query(query: str, extra: str) -> str:
    if not extra:
        return query
    return f"{query}&{extra}" if query else extra


def put_in_pieces(invoke: Invoke, call: Call, pieces: Iterator[bytes]) -> GatewayResponse:
    """A monolithic `PUT <upload>?digest=` with a large body becomes PATCH ... PATCH, empty PUT."""
    _, query_without_digest = split_query(call.query, "digest")
    patched = patch_in_pieces(invoke, call.replace(query=query_without_digest), pieces, None)
    if not patched.ok:
        return patched
    return invoke(_bodyless(call, "PUT", call.raw_path, call.query))


def _location_target(location: str, base_path: str) -> Optional[tuple[str, str]]:
    parts = urlsplit(urljoin(base_path, location.strip()))
    if not parts.path.startswith("/"):
        return None
    return parts.path, parts.query


def post_monolithic(invoke: Invoke, call: Call, pieces: Iterator[bytes]) -> GatewayResponse:
    """`POST .../blobs/uploads/?digest=` with a large body becomes POST, PATCH ... PATCH, PUT.

    The opening POST drops the whole query (a digest there would ask the app for a one-shot
    upload, and mount/from make no sense with a body).
    """
    opened = invoke(_bodyless(call, "POST", call.raw_path, ""))
    if not opened.ok:
        return opened
    location = opened.header("location")
    target = _location_target(location, call.raw_path) if location else None
    if opened.status != 202 or target is None:
        log.error("upload POST answered %s with Location %r; cannot continue", opened.status, location)
        return oci_error(500, "UNKNOWN", "the registry did not open an upload session for the monolithic upload")
    path, query = target
    template = call.replace(raw_path=path, query=query)
    patched = patch_in_pieces(invoke, template, pieces, None)
    if not patched.ok:
        return patched
    digest_items, _ = split_query(call.query, "digest")
    return invoke(_bodyless(call, "PUT", path, add_query(query, digest_items)))


def client_range_start(content_range: str, body_length: Optional[int]) -> Optional[int]:
    """The start offset of a client's Content-Range, or None when it is unusable."""
    match = _CONTENT_RANGE.match(content_range)
    if not match:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    if end < start or (body_length is not None and end - start + 1 != body_length):
        return None
    return start


# --------------------------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------------------------


class Gateway:
    """The WSGI callable returned by make_wsgi_app."""

    def __init__(self, chalice_app: Any, *, mode: str = "local", max_body_bytes: Optional[int],
                 piece_bytes: int, stage: str, front_door: bool = True,
                 public_url: Optional[str] = None,
                 integration_timeout: float = aws_rules.INTEGRATION_TIMEOUT_SECONDS,
                 fleet: Any = None) -> None:
        self.app = chalice_app
        self.mode = mode
        self.max_body_bytes = max_body_bytes
        self.piece_bytes = piece_bytes
        self.stage = stage
        self.front_door = front_door
        self.public_url = public_url
        self.integration_timeout = integration_timeout
        self.fleet = fleet
        self._authorizers = AuthorizerCache()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            response = self.handle(environ)
        except Exception:  # never let a traceback reach the client
            log.exception("gateway failed on %s %s", method, environ.get("PATH_INFO"))
            response = oci_error(500, "UNKNOWN", "internal error in the local gateway")
        return start_wsgi_response(response, method, start_response)

    @property
    def as_aws(self) -> bool:
        return self.mode == "aws"

    @property
    def emulating_lambda(self) -> bool:
        """Whether non-binary request bodies are mangled into UTF-8 text, as API Gateway does."""
        return self.as_aws or self.max_body_bytes is not None

    @property
    def binary_types(self) -> Iterable[str]:
        """The API's binaryMediaTypes: the front door's in aws mode, else what Chalice deploys."""
        if self.as_aws and self.front_door:
            from chalicelib import frontdoor
            return frontdoor.BINARY_MEDIA_TYPES
        return self.app.api.binary_types

    def handle(self, environ: Mapping[str, Any]) -> GatewayResponse:
        client = ClientRequest.from_environ(environ)
        body = RequestBody.from_environ(environ)
        if self._route(client.method, client.raw_path) is None:
            return missing_authentication_token()
        if self.max_body_bytes is not None and body.exceeds(self.max_body_bytes):
            return self._refuse_oversized(client, body, self.max_body_bytes)
        if self.as_aws:
            return self._handle_as_aws(client, body)
        if self.max_body_bytes is not None:
            return self.invoke(client.call(body.read_all()), client)
        return self._handle_with_pieces(client, body)

    # -- modes ---------------------------------------------------------------------------------

    def _refuse_oversized(self, client: ClientRequest, body: RequestBody, limit: int) -> GatewayResponse:
        size = body.known_length if body.known_length is not None else body.drain()
        log.info("413 for %s %s: %d bytes over the %d-byte limit", client.method, client.raw_path, size, limit)
        return lambda_payload_too_large(size, limit)

    def _handle_as_aws(self, client: ClientRequest, body: RequestBody) -> GatewayResponse:
        """API Gateway's order: payload size, then the authorizer, then the integration."""
        if body.exceeds(aws_rules.API_GATEWAY_MAX_PAYLOAD):
            size = body.known_length if body.known_length is not None else body.drain()
            log.info("413 (API Gateway payload limit) for %s %s: %d bytes", client.method, client.raw_path, size)
            return api_gateway_answer(aws_rules.REQUEST_TOO_LONG)
        call = client.call(body.read_all())
        authorized = self._authorize(call, client)
        if isinstance(authorized, GatewayResponse):
            return authorized
        return self.invoke(call, client, authorizer=authorized)

    def _handle_with_pieces(self, client: ClientRequest, body: RequestBody) -> GatewayResponse:
        if not body.exceeds(self.piece_bytes):
            return self.invoke(client.call(body.read_all()), client)
        upload = self._large_upload(client, body)
        if upload is not None:
            return upload
        if not body.exceeds(FULL_READ_LIMIT):
            return self.invoke(client.call(body.read_all()), client)
        size = body.known_length if body.known_length is not None else body.drain()
        message = (f"request body too large: {size} bytes for {client.method} {client.raw_path}; "
                   f"only blob uploads may exceed {FULL_READ_LIMIT} bytes")
        return oci_error(413, "SIZE_INVALID", message)

    def _large_upload(self, client: ClientRequest, body: RequestBody) -> Optional[GatewayResponse]:
        """Route a large blob-upload body through the chunked-upload protocol, if it is one."""
        match = UPLOAD_PATH.match(client.raw_path)
        if match is None:
            return None
        upload_id = match.group("id")
        pieces = body.pieces(self.piece_bytes)
        invoke: Invoke = functools.partial(self.invoke, client=client)
        call = client.call()
        if client.method == "PATCH" and upload_id:
            content_range = client.header("content-range")
            start = None
            if content_range is not None:
                start = client_range_start(content_range, body.known_length)
                if start is None:
                    return oci_error(416, "RANGE_INVALID", f"unusable Content-Range {content_range!r}")
            return patch_in_pieces(invoke, call, pieces, start)
        if client.method == "PUT" and upload_id:
            return put_in_pieces(invoke, call, pieces)
        if client.method == "POST" and not upload_id and split_query(client.query, "digest")[0]:
            return post_monolithic(invoke, call, pieces)
        return None

    # -- the front door's authorizer (aws mode) ------------------------------------------------

    def _authorize(self, call: Call, client: ClientRequest) -> "dict[str, Any] | GatewayResponse | None":
        """Run the route's TOKEN authorizer as API Gateway does: its context, or its refusal."""
        route = self._route(call.method, call.raw_path)
        entry = self.app.routes[route.resource][call.method] if route else None
        authorizer = getattr(entry, "authorizer", None)
        if not self.front_door or authorizer is None:
            return None
        from chalicelib import frontdoor
        token = _last_header(call.headers, frontdoor.AUTHORIZER_HEADER)
        if not token or not re.fullmatch(frontdoor.AUTHORIZER_TOKEN_PATTERN, token):
            return self._gateway_response("UNAUTHORIZED", call)   # the function is not called
        method_arn = (f"arn:aws:execute-api:local:123456789012:local/{self.stage}/{call.method}"
                      f"{strip_stage(call.raw_path, self.stage) or '/'}")
        ttl = getattr(authorizer.config, "ttl_seconds", None) or 0
        event = {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
        outcome = self._authorizers.get_or_run(token, ttl, lambda: self._run_authorizer(authorizer, event))
        if outcome == "Unauthorized":
            return self._gateway_response("UNAUTHORIZED", call)
        if not isinstance(outcome, dict):
            return api_gateway_answer(aws_rules.AUTHORIZER_FAILURE, "AuthorizerConfigurationException")
        if not _policy_allows(outcome.get("policyDocument"), method_arn):
            return self._gateway_response("ACCESS_DENIED", call)
        context = dict(outcome.get("context") or {})
        context["principalId"] = outcome.get("principalId")
        return context

    def _run_authorizer(self, authorizer: Any, event: dict[str, Any]) -> Any:
        """Invoke a TOKEN authorizer: its policy dict, "Unauthorized", or None on failure (API
        Gateway: the error message "Unauthorized" is a 401, any other failure a 500)."""
        try:
            if self.fleet is not None:
                return self.fleet.invoke(event, handler=authorizer.config.handler_string,
                                         timeout=self.integration_timeout)
            return authorizer(event, make_context(getattr(authorizer, "name", "authorizer")))
        except Exception as exc:
            if str(exc) == "Unauthorized":
                return "Unauthorized"
            log.exception("authorizer failed")
            return None

    def _gateway_response(self, kind: str, call: Call) -> GatewayResponse:
        from chalicelib import frontdoor
        from chalicelib.config import settings
        public_url = self.public_url or settings().public_url
        if not public_url:
            public_url = f"http://{_last_header(call.headers, 'host') or 'localhost'}"
        spec = frontdoor.GATEWAY_RESPONSES[kind]
        headers = frontdoor.gateway_response_headers(kind, public_url, settings().service)
        headers["Content-Type"] = frontdoor.GATEWAY_RESPONSE_MEDIA_TYPE
        error_type = "UnauthorizedException" if kind == "UNAUTHORIZED" else "AccessDeniedException"
        headers[aws_rules.ERROR_TYPE_HEADER] = error_type
        return GatewayResponse(spec["status"], tuple(headers.items()), spec["body"].encode())

    # -- one Lambda invocation -----------------------------------------------------------------

    def _route(self, method: str, raw_path: str) -> Optional[RouteMatch]:
        routes = self.app.routes
        path = strip_stage(raw_path, self.stage)
        if path is None:
            return None
        route = match_resource(routes.keys(), path)
        if route is None or method not in routes.get(route.resource, {}):
            return None
        return route

    def invoke(self, call: Call, client: ClientRequest,
               authorizer: Optional[dict[str, Any]] = None) -> GatewayResponse:
        """Build the event for one call, run the app as Lambda would, and read its answer."""
        route = self._route(call.method, call.raw_path)
        if route is None:
            return missing_authentication_token()
        content_type = _last_header(call.headers, "content-type")
        if content_type is None and self.as_aws:
            content_type = aws_rules.DEFAULT_REQUEST_CONTENT_TYPE
        binary = is_binary_media_type(content_type, self.binary_types)
        body, is_base64 = encode_event_body(call.body, binary, self.emulating_lambda)
        event = build_event(call, route, client=client, stage=self.stage, body=body,
                            is_base64=is_base64, authorizer=authorizer)
        if self.as_aws and _json_size(event) > aws_rules.LAMBDA_MAX_PAYLOAD:
            log.info("413 (Lambda payload limit) for %s %s", call.method, call.raw_path)
            return api_gateway_answer(aws_rules.REQUEST_TOO_LONG)
        started = time.monotonic()
        try:
            result = self._run_app(event)
        except IntegrationTimeout:
            log.warning("%s %s took over %.0f s: 504, as API Gateway answers", call.method,
                        call.raw_path, self.integration_timeout)
            return api_gateway_answer(aws_rules.ENDPOINT_TIMED_OUT)
        except Exception:
            log.exception("app raised on %s %s", call.method, call.raw_path)
            if self.as_aws:   # an unhandled exception is a failed invocation: API Gateway's 502
                return api_gateway_answer(aws_rules.INTERNAL_SERVER_ERROR)
            return oci_error(500, "UNKNOWN", "internal server error")
        try:
            response = self._read_result(result, call)
        except MalformedLambdaResponse as exc:
            log.error("malformed Lambda response for %s %s: %s", call.method, call.raw_path, exc)
            return api_gateway_answer(aws_rules.INTERNAL_SERVER_ERROR)
        log.debug("%s %s?%s -> %d (%d body bytes, %.1f ms)", call.method, call.raw_path, call.query,
                  response.status, len(call.body), (time.monotonic() - started) * 1000)
        return response

    def _run_app(self, event: dict[str, Any]) -> Any:
        """Call the app as Lambda does (in this process, or on a fleet instance); in aws mode
        give up after the integration timeout (the invocation runs on, as a Lambda does after
        API Gateway stopped waiting)."""
        if self.fleet is not None:
            from berth_local.fleet import InvocationTimeout
            try:
                return self.fleet.invoke(event, timeout=self.integration_timeout if self.as_aws else None)
            except InvocationTimeout:
                raise IntegrationTimeout() from None
        context = make_context(getattr(self.app, "app_name", "berth"))

        def call() -> Any:
            try:
                return self.app(event, context)
            finally:
                # Drop this thread's references to the request (and its body) right away.
                self.app.current_request = None
                self.app.lambda_context = None
        if not self.as_aws:
            return call()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = call()
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc
        worker = threading.Thread(target=run, name="berth-lambda", daemon=True)
        worker.start()
        worker.join(self.integration_timeout)
        if worker.is_alive():
            raise IntegrationTimeout()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def _read_result(self, result: Any, call: Call) -> GatewayResponse:
        if not self.as_aws:
            return response_from_lambda(result)
        try:
            size = _json_size(result)
        except (TypeError, ValueError) as exc:
            raise MalformedLambdaResponse(f"response is not JSON-serialisable: {exc}") from exc
        if size > aws_rules.LAMBDA_MAX_PAYLOAD:
            raise MalformedLambdaResponse(f"response of {size} bytes is over Lambda's limit")
        accept = (_last_header(call.headers, "accept") or "").split(",", 1)[0]
        decode = bool(accept.strip()) and is_binary_media_type(accept, self.binary_types)
        response = response_from_lambda(result, decode_base64=decode)
        headers = aws_rules.remap_response_headers(list(response.headers))
        headers.append(("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())))
        return dataclasses.replace(response, headers=tuple(headers))


class IntegrationTimeout(Exception):
    """The app took longer than API Gateway's integration timeout."""


def api_gateway_answer(answer: tuple[int, bytes], error_type: Optional[str] = None) -> GatewayResponse:
    """A response API Gateway makes itself (aws_rules): its status and JSON body, word for word."""
    status, body = answer
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    if error_type:
        headers += ((aws_rules.ERROR_TYPE_HEADER, error_type),)
    return GatewayResponse(status, headers, body)


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _policy_allows(policy: Any, method_arn: str) -> bool:
    """Whether an authorizer's IAM policy allows execute-api:Invoke on this method ARN."""
    if not isinstance(policy, dict):
        return False
    statements = policy.get("Statement") or []
    allowed = False
    for statement in statements if isinstance(statements, list) else [statements]:
        resources = statement.get("Resource") or []
        resources = resources if isinstance(resources, list) else [resources]
        if not any(fnmatch.fnmatchcase(method_arn, pattern) for pattern in resources):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


class AuthorizerCache:
    """API Gateway's authorizer cache: one answer per token for the authorizer's TTL."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get_or_run(self, token: str, ttl: float, run: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(token)
            if cached is not None and cached[0] > now:
                return cached[1]
        outcome = run()
        if ttl > 0 and outcome is not None:   # a failed invocation is not cached
            with self._lock:
                if len(self._entries) > 10_000:
                    self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                self._entries[token] = (now + ttl, outcome)
        return outcome
