"""`berth proxy`: push big layers to a registry behind API Gateway + Lambda.

docker, podman and skopeo send a whole layer in ONE request (a PATCH with Content-Length, or
`Transfer-Encoding: chunked` from podman, or a monolithic POST/PUT with `?digest=`), and never
retry smaller; API Gateway + Lambda refuse request bodies over 6 MB (about 4.4 MB of binary after
base64). This proxy runs on the user's machine, is pushed to as `127.0.0.1:5001/<name>` (plain
HTTP, which docker allows for 127.0.0.0/8), and forwards everything to the real registry:

* to Berth, which offers it (`Berth-Upload-Piece: s3`), a whole-layer upload body goes straight
  to S3 in pieces of 16 MiB with presigned URLs, each then taken in by the registry
  (berth_local/s3_pieces.py); where S3 cannot be reached, and to other registries, as follows:
* a whole-layer upload body is cut into chunked-upload PATCHes (`Content-Range: start-end`) of
  at most `--chunk-size` bytes, read from the client socket piece by piece, each following the
  `Location` of the previous 202. When the registry offers it (Berth's `Berth-Upload-Chunk:
  ahead`, chalicelib/oci.py), two go at a time: while one in-order piece is written, the piece
  after the next is stored ahead (on another Lambda instance), and the next in-order piece
  takes it in (`join`), so a layer's pieces keep two instances busy; the registry still hashes
  every byte in order and verifies the digest at the commit. Bounded memory: at most four
  pieces per upload (one piece with other registries);
* every upload body it forwards, cut or whole, goes as `Content-Type: application/octet-stream`:
  dockerd sends none, and API Gateway passes a body whose type is not a binary media type to
  Lambda as text, which mangles it (a deployment with the front door's `*/*` would not, but the
  proxy must not depend on it);
* every other request (and every body of at most one piece) is passed through unchanged;
  redirects are never followed (a 307 to S3 on a blob GET goes back to the client); absolute
  `Location`s pointing at the upstream are made relative, so that clients stay on the proxy.

Authentication. docker keys its logins by the host of the image reference, so a push to
`127.0.0.1:5001/...` would need a second `docker login` for the proxy's address. Instead, a
request that comes WITHOUT Authorization is authenticated by the proxy itself with the
credentials docker stores for the upstream (berth_local/dockercreds.py: config.json `auths` and
credential helpers, as skopeo and crane read them): it learns the upstream's challenge from the
401 of `GET /v2/`, asks the realm for a token with the scope the request needs (pull to read,
pull,push to upload, delete to delete, on the repository of the path; pull on the source of a
cross-repository mount: least privilege, and an admin's pull through the proxy never creates a
namespace on Berth, whose token endpoint creates one for an admin's push scope), caches it per
scope until shortly before it expires, and adds it to every request it sends upstream (each
piece of a long upload gets a current one; a 401 to one of them is retried once with a new
token). The
client then never sees a challenge: `GET /v2/` answers 200 and docker sends no credentials at
all. Why here rather than by rewriting the challenge so that docker would ask the proxy: docker
would still look up credentials for the proxy's host, not the upstream's. A request that carries
its own Authorization (a client logged in to the proxy's address) is forwarded unchanged, and
with no stored login the upstream's 401 reaches the client as before. The credentials go only to
the realm the upstream names (never to a plain-http one for an https upstream) and are never
logged. The proxy listens on 127.0.0.1 by default: any local process can push through it as the
user, as any local process of the user can read docker's own credential store.

The server is the standard library's ThreadingHTTPServer speaking HTTP/1.1 with keep-alive
(chunked request bodies are de-chunked here), rather than waitress, which spools a whole body
to disk before the application sees it (the client's upload and the upstream upload would then
run one after the other instead of overlapping). A TLS ClientHello on the plain port (skopeo and
podman try HTTPS first) is answered at once with a plain HTTP 400, so that they (and the docker CLI) fall back to HTTP
without waiting for their 10 s handshake timeout.
"""
from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import logging
import re
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Iterator, Optional, TextIO
from urllib.parse import unquote, urljoin, urlsplit

from berth_local.bodies import PieceReader
from berth_local.malloc import one_malloc_arena
from berth_local.s3_pieces import S3Pieces, offers_pieces, piece_header, send_via_s3
from berth_local.dockercreds import RegistryAuth, ScopedAuth, docker_config_dir, find_credentials, scopes_for
from berth_local.gateway import split_query
from berth_local.serve import PLAIN_HTTP_ANSWER_TO_TLS, TLS_HANDSHAKE_RECORD
from berth_local.cli import CliError, command
from chalicelib import oci

__all__ = ["ProxyServer", "Upstream", "start_proxy", "parse_upstream", "parse_listen",
           "parse_size", "DEFAULT_CHUNK_SIZE", "DEFAULT_LISTEN"]

log = logging.getLogger(__name__)  # not under "berth": Chalice stops that one propagating

KIB, MIB = 1 << 10, 1 << 20
# 4 MiB of binary is 5.33 MiB of base64, under Lambda's 6 MB synchronous payload limit.
DEFAULT_CHUNK_SIZE = 4 * MIB
LAMBDA_PAYLOAD_LIMIT = 6 * MIB       # synchronous invocation payload, event JSON included
LAMBDA_EVENT_OVERHEAD = 64 * KIB     # headers, request context ... around the body
DEFAULT_LISTEN = "127.0.0.1:5001"
UPSTREAM_TIMEOUT = 300.0        # seconds without progress on one upstream request
CLIENT_TIMEOUT = 900.0          # idle keep-alive connections from clients
DRAIN_SECONDS = 30.0            # after an upstream error, read the rest of a body this long at most
COPY_BYTES = 1 * MIB            # response bodies are relayed in pieces of this size
MAX_IDLE_CONNECTIONS = 16
OCTET_STREAM = "application/octet-stream"
TRACKED_UPLOADS = 4096
AHEAD_WORKERS = 16              # pieced uploads that can each have one piece in flight ahead

UPLOAD_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$")
_CONTENT_RANGE = re.compile(r"^\s*(?:bytes[ =]\s*)?(\d+)-(\d+)(?:/(?:\d+|\*))?\s*$", re.IGNORECASE)
_RANGE = re.compile(r"^\s*(?:bytes[ =]\s*)?(\d+)-(\d+)\s*$", re.IGNORECASE)

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "trailers", "transfer-encoding",
                        "upgrade"})
# Request headers of the client->proxy hop that are never forwarded as they are.
_NOT_FORWARDED = HOP_BY_HOP | {"host", "expect", "content-length"}
# Headers describing a request body: replaced when the proxy re-cuts or drops the body.
_BODY_HEADERS = frozenset({"content-length", "content-range", "content-type", "content-md5",
                           "digest", "content-encoding"})


Headers = list[tuple[str, str]]


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def header(headers: Iterable[tuple[str, str]], name: str) -> Optional[str]:
    """The last value of header `name` (case-insensitive), or None."""
    wanted, found = name.lower(), None
    for key, value in headers:
        if key.lower() == wanted:
            found = value
    return found


def without(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> Headers:
    dropped = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in dropped]


def connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names listed in Connection (hop-by-hop by declaration), plus the tokens themselves."""
    tokens: set[str] = set()
    for key, value in headers:
        if key.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def join_target(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def add_query(target: str, extra: str) -> str:
    if not extra:
        return target
    return f"{target}&{extra}" if "?" in target else f"{target}?{extra}"


def oci_error_body(code: str, message: str, detail: object = None) -> bytes:
    error = {"code": code, "message": message, "detail": detail if detail is not None else {}}
    return json.dumps({"errors": [error]}, separators=(",", ":")).encode()


def human_bytes(n: float) -> str:
    if n >= 1000 * MIB:
        return f"{n / (1 << 30):.2f} GiB"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= KIB:
        return f"{n / KIB:.1f} KiB"
    return f"{int(n)} B"


def parse_size(text: str) -> int:
    """`4194304`, `4MiB`, `4M`, `512k`, `4.5MB`: a byte count (k/M/G are binary; kB/MB/GB decimal)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?)(b?)\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 4194304, 4MiB, 4MB)")
    number, unit, binary, b = m.groups()
    power = " kmg".index(unit.lower()) if unit else 0
    base = 1000 if (unit and b and not binary) else 1024
    value = int(float(number) * base ** power)
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


# --------------------------------------------------------------------------------------------
# The upstream registry
# --------------------------------------------------------------------------------------------


class UpstreamError(Exception):
    """The upstream could not be reached or broke a connection (answered as 502)."""


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int

    @property
    def default_port(self) -> int:
        return 443 if self.scheme == "https" else 80

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == self.default_port else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}"

    def same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme.lower() != self.scheme or not parts.hostname:
            return False
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            return False
        return parts.hostname.lower() == self.host.lower() and port == self.port


def parse_upstream(url: str) -> Upstream:
    """`https://registry.example.com` (or http://host:port) -> Upstream; ValueError if unusable.

    A registry answers at the root of its host (an image reference cannot carry a path before
    /v2/), so a path other than `/` or `/v2/` is refused.
    """
    text = (url or "").strip()
    if not text:
        raise ValueError("the upstream URL is empty")
    if "://" not in text:
        raise ValueError(f"{url!r} has no scheme: write https://{text} (or http:// for a local registry)")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the scheme must be http or https, not {parts.scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r}: credentials do not belong in the URL; "
                         f"run `docker login {parts.hostname}` instead (the proxy uses that login)")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    if parts.path.rstrip("/") not in ("", "/v2"):
        raise ValueError(f"{url!r}: a registry is served at the root of its host; "
                         f"drop the path {parts.path!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: remove the query string or fragment")
    return Upstream(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:5001`, `[::1]:5001`, `:5001` or `5001` -> (host, port)."""
    value = text.strip()
    if value.isdigit():
        host, port_text = "127.0.0.1", value
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:5001")
        host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen {text!r}: bad port {port_text!r}")
    return host, int(port_text)


class UpstreamPool:
    """Keep-alive connections to the upstream, shared by all handler threads."""

    def __init__(self, upstream: Upstream, timeout: float = UPSTREAM_TIMEOUT,
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        self.upstream = upstream
        self.timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._ssl = ssl_context
        if upstream.scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()

    def new(self) -> http.client.HTTPConnection:
        if self.upstream.scheme == "https":
            return http.client.HTTPSConnection(self.upstream.host, self.upstream.port,
                                               timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(self.upstream.host, self.upstream.port, timeout=self.timeout)

    def get(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was used before (then it may have been closed meanwhile)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self.new(), False

    def put(self, conn: http.client.HTTPConnection) -> None:
        if conn.sock is None:
            return
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@dataclass
class Reply:
    """An upstream answer whose body was read whole (small: upload steps, errors)."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        return header(self.headers, name)


_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                     ConnectionAbortedError, http.client.BadStatusLine)


class UpstreamClient:
    def __init__(self, upstream: Upstream, pool: Optional[UpstreamPool] = None) -> None:
        self.upstream = upstream
        self.pool = pool or UpstreamPool(upstream)

    def open(self, method: str, target: str, headers: Headers,
             body: "bytes | memoryview | Iterable[bytes] | None" = None,
             *, chunked: bool = False,
             auth: Optional[ScopedAuth] = None
             ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send one request; return the connection and the response (body not yet read).

        `headers` are sent as given (plus Host, and the Authorization of `auth` when given); the
        caller sets Content-Length or, with `chunked`, an iterable body is sent with
        Transfer-Encoding: chunked. A request with an in-memory body is sent again once on a
        reused connection the upstream closed meanwhile, and once with a new token when the
        upstream answers 401 to the proxy's own Authorization (a token revoked or expired early).
        """
        authorization = auth.header() if auth is not None else None
        conn, response = self._send(method, target, _authorized(headers, authorization), body, chunked)
        if authorization and response.status == 401 and _in_memory(body):
            try:
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
            else:
                self.release(conn, response)
            auth.refresh()
            conn, response = self._send(method, target, _authorized(headers, auth.header()), body, chunked)
        return conn, response

    def _send(self, method: str, target: str, headers: Headers,
              body: "bytes | memoryview | Iterable[bytes] | None",
              chunked: bool) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        retryable = _in_memory(body)
        attempts = 2 if retryable else 1
        for attempt in range(attempts):
            # a body streamed from the client cannot be sent twice: give it a fresh connection
            conn, reused = self.pool.get() if attempt == 0 and retryable else (self.pool.new(), False)
            try:
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", self.upstream.host_header)
                for name, value in headers:
                    conn.putheader(name, value)
                if chunked:
                    conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders(message_body=body, encode_chunked=chunked)
                return conn, conn.getresponse()
            except _STALE_CONNECTION as exc:
                conn.close()
                if reused and attempt + 1 < attempts:
                    log.debug("reused upstream connection was closed (%s); retrying", exc)
                    continue
                raise UpstreamError(f"upstream {self.upstream.url} closed the connection "
                                    f"during {method} {target.split('?')[0]}: {exc or type(exc).__name__}") from exc
            except (OSError, http.client.HTTPException) as exc:
                connected = conn.sock is not None
                conn.close()
                if connected:
                    raise UpstreamError(f"upstream {self.upstream.url} failed during {method} "
                                        f"{target.split('?')[0]}: {exc}") from exc
                raise UpstreamError(f"upstream {self.upstream.url} unreachable: {exc}") from exc
            except BaseException:      # e.g. the client went away while its body was streamed
                conn.close()
                raise
        raise AssertionError("not reached")

    def release(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        """Give the connection back once its response was read to the end."""
        if response.isclosed() and not response.will_close and conn.sock is not None:
            self.pool.put(conn)
        else:
            conn.close()

    def call(self, method: str, target: str, headers: Headers,
             body: "bytes | memoryview | None" = None, *, auth: Optional[ScopedAuth] = None) -> Reply:
        """One request whose response is read whole."""
        conn, response = self.open(method, target, headers, body, auth=auth)
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise UpstreamError(f"upstream {self.upstream.url} broke off its answer to "
                                f"{method} {target.split('?')[0]}: {exc}") from exc
        self.release(conn, response)
        return Reply(response.status, response.reason, list(response.getheaders()), data)

    def to_target(self, location: str, base_target: str) -> str:
        """The request target (path?query) of an upstream Location, relative or absolute."""
        absolute = urljoin(self.upstream.url + base_target, location.strip())
        if not self.upstream.same_origin(absolute):
            raise UpstreamError(f"upstream sent an upload Location on another host: {location!r}")
        parts = urlsplit(absolute)
        return join_target(parts.path or "/", parts.query)

    def rewrite_location(self, location: str) -> str:
        """An absolute Location naming the upstream becomes a path, so clients stay on the proxy."""
        value = location.strip()
        if "://" in value and self.upstream.same_origin(value):
            parts = urlsplit(value)
            return join_target(parts.path or "/", parts.query)
        return location


def _in_memory(body: object) -> bool:
    return body is None or isinstance(body, (bytes, bytearray, memoryview))


def _authorized(headers: Headers, authorization: Optional[str]) -> Headers:
    return headers + [("Authorization", authorization)] if authorization else headers


# --------------------------------------------------------------------------------------------
# The client's request body
# --------------------------------------------------------------------------------------------


class BadBody(Exception):
    """The client's body framing is broken (answered 400, connection closed)."""


class ClientGone(Exception):
    """The client closed the connection in the middle of a body."""


class ClientBody(PieceReader):
    """A request body read from the client socket: Content-Length, chunked (de-chunked here) or
    none. `readinto` fills the whole buffer unless the body ends first."""

    def __init__(self, rfile, length: Optional[int], chunked: bool) -> None:
        self._rfile = rfile
        self._chunked = chunked
        self._remaining = None if chunked else (length or 0)   # Content-Length bytes left
        self._chunk_left = 0                                   # chunked: bytes left in this chunk
        self._ended = not chunked and not length
        self._pending = bytearray()                            # read ahead by exceeds()
        self.length = None if chunked else (length or 0)
        self.consumed = 0

    @classmethod
    def from_headers(cls, rfile, headers: Headers) -> "ClientBody":
        encoding = (header(headers, "transfer-encoding") or "").strip().lower()
        if encoding:
            codings = [c.strip() for c in encoding.split(",") if c.strip()]
            if codings[-1:] != ["chunked"] or len(codings) > 1:
                raise BadBody(f"unsupported Transfer-Encoding {encoding!r}")
            return cls(rfile, None, True)
        raw = (header(headers, "content-length") or "").strip()
        if raw and not raw.isdigit():
            raise BadBody(f"bad Content-Length {raw!r}")
        return cls(rfile, int(raw) if raw else 0, False)

    @property
    def chunked(self) -> bool:
        return self._chunked

    @property
    def exhausted(self) -> bool:
        return self._ended and not self._pending

    def exceeds(self, limit: int) -> bool:
        """Whether the body has more than `limit` bytes (reads up to limit+1 bytes ahead if the
        size is unknown)."""
        if self.length is not None:
            return self.length > limit
        while len(self._pending) <= limit and not self._ended:
            want = limit + 1 - len(self._pending)
            buf = bytearray(min(want, COPY_BYTES))
            n = self._raw_readinto(memoryview(buf))
            if n == 0:
                break
            self._pending += buf[:n]
        return len(self._pending) > limit

    def readinto(self, view: memoryview) -> int:
        """Fill `view`; fewer bytes only at the end of the body."""
        filled = 0
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            del self._pending[:n]
            filled = n
        while filled < len(view):
            n = self._raw_readinto(view[filled:])
            if n == 0:
                break
            filled += n
        self.consumed += filled
        return filled

    def read(self, size: int) -> bytes:
        buf = bytearray(size)
        n = self.readinto(memoryview(buf))
        del buf[n:]
        return bytes(buf)

    def drain(self, seconds: float = DRAIN_SECONDS) -> bool:
        """Read and discard the rest; False when it did not end within `seconds` (or broke)."""
        deadline = time.monotonic() + seconds
        buf = memoryview(bytearray(COPY_BYTES))
        try:
            while not self.exhausted:
                if time.monotonic() > deadline:
                    return False
                if self.readinto(buf) == 0:
                    break
        except (BadBody, ClientGone, OSError):
            return False
        return self.exhausted

    # -- the wire ---------------------------------------------------------------------------------

    def _raw_readinto(self, view: memoryview) -> int:
        if self._ended or not len(view):
            return 0
        if not self._chunked:
            want = min(len(view), self._remaining)
            n = self._rfile.readinto(view[:want])
            if not n:
                raise ClientGone(f"client closed the connection with {self._remaining} body bytes unsent")
            self._remaining -= n
            self._ended = self._remaining == 0
            return n
        if self._chunk_left == 0:
            self._chunk_left = self._next_chunk_size()
            if self._chunk_left == 0:
                self._read_trailers()
                self._ended = True
                return 0
        want = min(len(view), self._chunk_left)
        n = self._rfile.readinto(view[:want])
        if not n:
            raise ClientGone("client closed the connection inside a chunked body")
        self._chunk_left -= n
        if self._chunk_left == 0:
            if self._rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadBody("chunk data not followed by CRLF")
        return n

    def _next_chunk_size(self) -> int:
        line = self._rfile.readline(1026)
        if not line:
            raise ClientGone("client closed the connection inside a chunked body")
        if not line.endswith(b"\n"):
            raise BadBody("chunk size line too long")
        text = line.split(b";", 1)[0].strip()
        try:
            size = int(text, 16)
        except ValueError:
            raise BadBody(f"bad chunk size line {line[:40]!r}") from None
        if size < 0 or not re.fullmatch(rb"[0-9a-fA-F]+", text):
            raise BadBody(f"bad chunk size line {line[:40]!r}")
        return size

    def _read_trailers(self) -> None:
        for _ in range(101):
            line = self._rfile.readline(65537)
            if not line:
                raise ClientGone("client closed the connection inside chunked trailers")
            if line in (b"\r\n", b"\n"):
                return
        raise BadBody("too many chunked trailer lines")


# --------------------------------------------------------------------------------------------
# Upload sessions seen through the proxy, and progress
# --------------------------------------------------------------------------------------------


@dataclass
class UploadRecord:
    path: str
    name: str
    offset: Optional[int] = 0           # bytes the upstream holds, when known
    sent: int = 0                       # bytes this proxy forwarded
    pieces: int = 0
    started: Optional[float] = None
    last: Optional[float] = None
    to_s3: bool = False                 # the upstream takes pieces put in S3 (s3_pieces.py)


class UploadTracker:
    """upload path -> UploadRecord (LRU): offsets, so pieces carry the right Content-Range
    without asking the upstream, and statistics for the per-blob line."""

    def __init__(self, size: int = TRACKED_UPLOADS) -> None:
        self._items: "OrderedDict[str, UploadRecord]" = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, path: str) -> Optional[UploadRecord]:
        with self._lock:
            record = self._items.get(path)
            if record is not None:
                self._items.move_to_end(path)
            return record

    def ensure(self, path: str, name: str, offset: Optional[int]) -> UploadRecord:
        with self._lock:
            record = self._items.get(path)
            if record is None:
                record = self._items[path] = UploadRecord(path, name, offset)
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
            self._items.move_to_end(path)
            return record

    def pop(self, path: str) -> Optional[UploadRecord]:
        with self._lock:
            return self._items.pop(path, None)


@dataclass
class _Transfer:
    label: str
    total: Optional[int]
    sent: int = 0
    started: float = field(default_factory=time.monotonic)


class Progress:
    """Progress of blob uploads on stderr.

    mode "bars": one live line per upload in flight (redrawn at most every 0.2 s) and one
    permanent line per finished blob; "lines": only the line per finished blob; "off": nothing.
    """

    REDRAW_SECONDS = 0.2
    BAR_WIDTH = 24
    MAX_BARS = 6

    def __init__(self, stream: Optional[TextIO] = None, mode: str = "off") -> None:
        self.stream = stream or sys.stderr
        self.mode = mode
        self._lock = threading.Lock()
        self._transfers: dict[int, _Transfer] = {}
        self._next = 0
        self._drawn = 0
        self._last_draw = 0.0

    @classmethod
    def for_terminal(cls, quiet: bool, stream: Optional[TextIO] = None) -> "Progress":
        stream = stream or sys.stderr
        if quiet:
            return cls(stream, "off")
        return cls(stream, "bars" if _isatty(stream) else "lines")

    def begin(self, label: str, total: Optional[int]) -> int:
        with self._lock:
            self._next += 1
            self._transfers[self._next] = _Transfer(label, total)
            if self.mode == "bars":
                self._draw(force=True)
            return self._next

    def advance(self, token: int, n: int) -> None:
        with self._lock:
            transfer = self._transfers.get(token)
            if transfer is not None:
                transfer.sent += n
                if self.mode == "bars":
                    self._draw()

    def end(self, token: int) -> None:
        with self._lock:
            self._transfers.pop(token, None)
            if self.mode == "bars":
                self._draw(force=True)

    def message(self, text: str, *, always: bool = False) -> None:
        """A permanent line (above the live bars); with `always`, even when progress is off."""
        if self.mode == "off" and not always:
            return
        with self._lock:
            if self.mode == "bars":
                self._clear()
            self.stream.write(text + "\n")
            if self.mode == "bars":
                self._draw(force=True)
            self.stream.flush()

    def blob_done(self, record: UploadRecord, digest: str) -> None:
        if self.mode == "off" or record.sent == 0:
            return
        seconds = max((record.last or time.monotonic()) - (record.started or time.monotonic()), 1e-6)
        rate = record.sent / seconds / 1e6
        pieces = f", {record.pieces} pieces" if record.pieces > 1 else ""
        self.message(f"pushed {record.name}@{digest[:19]}: {human_bytes(record.sent)} "
                     f"in {seconds:.1f} s ({rate:.1f} MB/s{pieces})")

    # -- drawing (lock held) ------------------------------------------------------------------------

    def _line(self, t: _Transfer, now: float) -> str:
        seconds = max(now - t.started, 1e-6)
        rate = t.sent / seconds / 1e6
        label = t.label if len(t.label) <= 40 else "…" + t.label[-39:]
        if t.total:
            done = min(t.sent / t.total, 1.0)
            filled = int(done * self.BAR_WIDTH)
            bar = "=" * filled + (">" if filled < self.BAR_WIDTH else "") + " " * (self.BAR_WIDTH - filled - 1)
            return (f"{label:<40} [{bar[:self.BAR_WIDTH]}] {human_bytes(t.sent):>10} / "
                    f"{human_bytes(t.total):<10} {rate:7.1f} MB/s")
        return f"{label:<40} {human_bytes(t.sent):>10} sent {rate:7.1f} MB/s"

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
        self._drawn = 0

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.REDRAW_SECONDS:
            return
        self._last_draw = now
        lines = [self._line(t, now) for t in list(self._transfers.values())[:self.MAX_BARS]]
        if len(self._transfers) > self.MAX_BARS:
            lines.append(f"… and {len(self._transfers) - self.MAX_BARS} more uploads")
        self._clear()
        for line in lines:
            self.stream.write(line + "\n")
        self._drawn = len(lines)
        self.stream.flush()


class ProgressLogHandler(logging.Handler):
    """Log lines go through Progress, so that they do not land in the middle of a live bar."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.message(self.format(record), always=True)
        except Exception:
            self.handleError(record)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# What the proxy answers the client
# --------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """A response to relay: either a Reply already read, or an upstream response to stream."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    stream: Optional[http.client.HTTPResponse] = None
    release: Optional[Callable[[], None]] = None     # called once the stream was relayed whole
    discard: Optional[Callable[[], None]] = None     # called if relaying failed


def answer_from_reply(reply: Reply) -> Answer:
    return Answer(reply.status, reply.reason, reply.headers, reply.body)


def error_answer(status: int, code: str, message: str) -> Answer:
    body = oci_error_body(code, message)
    return Answer(status, http.client.responses.get(status, "Error"),
                  [("Content-Type", "application/json")], body)


# --------------------------------------------------------------------------------------------
# The proxy logic (independent of the HTTP server)
# --------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str                 # path?query as the client sent it (origin-form)
    headers: Headers            # as received
    auth: Optional[ScopedAuth] = None   # the proxy's own Authorization (the client sent none)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def forward_headers(self) -> Headers:
        """End-to-end headers to pass on (body framing and hop-by-hop ones are set per request)."""
        drop = _NOT_FORWARDED | connection_tokens(self.headers)
        return [(k, v) for k, v in self.headers if k.lower() not in drop]


class UploadFailed(Exception):
    """An upstream non-2xx in the middle of a pieced upload: relay `reply` to the client."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"upstream answered {reply.status}")
        self.reply = reply


class Proxy:
    def __init__(self, upstream: Upstream, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 progress: Optional[Progress] = None,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 auth: Optional[RegistryAuth] = None) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.upstream = upstream
        self.client = UpstreamClient(upstream, UpstreamPool(upstream, ssl_context=ssl_context))
        self.chunk_size = chunk_size
        self.progress = progress or Progress(mode="off")
        self.uploads = UploadTracker()
        self.auth = auth
        # pieces sent ahead, one in flight per pieced upload (the in-order one is the handler's)
        self._ahead_pool = ThreadPoolExecutor(max_workers=AHEAD_WORKERS,
                                              thread_name_prefix="berth-proxy-ahead")
        # pieces put straight in S3 when the upstream offers it (s3_pieces.py)
        self.s3 = S3Pieces(require_https=upstream.scheme == "https")
        self._s3_pool = ThreadPoolExecutor(max_workers=AHEAD_WORKERS,
                                           thread_name_prefix="berth-proxy-s3")

    def close(self) -> None:
        self._ahead_pool.shutdown(wait=False, cancel_futures=True)
        self._s3_pool.shutdown(wait=False, cancel_futures=True)
        self.s3.close()
        self.client.pool.close()
        if self.auth is not None:
            self.auth.close()

    # -- entry point --------------------------------------------------------------------------------

    def handle(self, request: Request, body: ClientBody) -> Answer:
        """Forward one client request; the answer's body may still be streaming from upstream.

        On return the client body has been read whole unless `body.exhausted` is False (then the
        caller closes the connection)."""
        if self.auth is not None and header(request.headers, "authorization") is None:
            request.auth = self.auth.for_scopes(scopes_for(request.method, request.path, request.query))
        try:
            if body.exceeds(self.chunk_size):
                pieced = self._pieced_upload(request, body)
                if pieced is not None:
                    return pieced
            return self._pass_through(request, body)
        except UploadFailed as failed:
            body.drain()
            return answer_from_reply(self._rewrite(failed.reply))
        except UpstreamError as exc:
            log.error("%s", exc)
            body.drain()
            return error_answer(502, "UNKNOWN", f"berth proxy: {exc}")

    # -- plain forwarding ---------------------------------------------------------------------------

    def _pass_through(self, request: Request, body: ClientBody) -> Answer:
        headers = request.forward_headers()
        if _is_upload_body(request, body):
            headers = without(headers, ["content-type"]) + [("Content-Type", OCTET_STREAM)]
        chunked = False
        payload: "bytes | Iterator[bytes] | None" = None
        if body.chunked and body.exceeds(self.chunk_size):
            payload, chunked = body.pieces(COPY_BYTES), True     # a big body that is no upload
        elif not body.chunked and body.length > self.chunk_size:
            payload = body.pieces(COPY_BYTES)
            headers.append(("Content-Length", str(body.length)))
        else:
            payload = body.read_all()
            if payload or body.chunked or header(request.headers, "content-length") is not None:
                headers.append(("Content-Length", str(len(payload))))
            if not payload:
                payload = None
        started = time.monotonic()
        conn, response = self.client.open(request.method, request.target, headers, payload,
                                          chunked=chunked, auth=request.auth)
        response_headers = list(response.getheaders())
        self._observe(request, response.status, response_headers, body.consumed, started)
        answer = Answer(response.status, response.reason, response_headers, stream=response,
                        release=lambda: self.client.release(conn, response), discard=conn.close)
        return self._rewrite(answer)

    def _rewrite(self, reply: "Reply | Answer"):
        location = header(reply.headers, "location")
        if location is not None:
            new = self.client.rewrite_location(location)
            if new != location:
                reply.headers = [(k, new if k.lower() == "location" else v) for k, v in reply.headers]
        return reply

    def _observe(self, request: Request, status: int, headers: Headers, body_bytes: int,
                 started: float) -> None:
        """Keep upload offsets and statistics up to date from passed-through requests."""
        match = UPLOAD_PATH.match(request.path)
        if match is None or not 200 <= status < 300:
            return
        name, upload_id = unquote(match.group("name")), match.group("id")
        if request.method == "POST" and not upload_id and status == 202:
            location = header(headers, "location")
            if location:
                try:
                    path = self.client.to_target(location, request.target).split("?", 1)[0]
                except UpstreamError:
                    return
                self.uploads.ensure(path, name, 0).to_s3 = offers_pieces(
                    header(headers, oci.UPLOAD_PIECE_HEADER))
            return
        if not upload_id:
            return
        if request.method == "PATCH":
            record = self.uploads.ensure(request.path, name, None)
            record.started = record.started or started
            record.last = time.monotonic()
            record.sent += body_bytes
            record.pieces += 1 if body_bytes else 0
            if body_bytes and record.offset is not None:
                record.offset += body_bytes
            elif body_bytes:
                record.offset = _range_end(header(headers, "range"))
        elif request.method == "PUT":
            record = self.uploads.pop(request.path)
            if record is not None:
                if body_bytes:
                    record.started = record.started or started
                    record.sent += body_bytes
                    record.pieces += 1
                    record.last = time.monotonic()
                digest = unquote(split_query(request.query, "digest")[0].partition("=")[2])
                self.progress.blob_done(record, digest)
        elif request.method == "DELETE":
            self.uploads.pop(request.path)

    # -- uploads in pieces --------------------------------------------------------------------------

    def _pieced_upload(self, request: Request, body: ClientBody) -> Optional[Answer]:
        match = UPLOAD_PATH.match(request.path)
        if match is None:
            return None
        name, upload_id = unquote(match.group("name")), match.group("id")
        if request.method == "PATCH" and upload_id:
            return self._patch(request, body, name)
        if request.method == "PUT" and upload_id:
            return self._put(request, body, name)
        if request.method == "POST" and not upload_id and split_query(request.query, "digest")[0]:
            return self._post_monolithic(request, body, name)
        return None

    def _patch(self, request: Request, body: ClientBody, name: str) -> Answer:
        start: Optional[int] = None
        content_range = header(request.headers, "content-range")
        if content_range is not None:
            start = _client_range_start(content_range, body.length)
            if start is None:
                body.drain()
                return error_answer(416, "RANGE_INVALID",
                                    f"berth proxy: unusable Content-Range {content_range!r}")
        last, _ = self._send_pieces(request, request.target, body, name, start)
        return answer_from_reply(self._rewrite(last))

    def _put(self, request: Request, body: ClientBody, name: str) -> Answer:
        digest_items, others = split_query(request.query, "digest")
        last, target = self._send_pieces(request, join_target(request.path, others), body, name, None)
        return self._commit(request, target, digest_items, name)

    def _post_monolithic(self, request: Request, body: ClientBody, name: str) -> Answer:
        digest_items, _ = split_query(request.query, "digest")
        opened = self.client.call("POST", request.path, self._bodyless(request), auth=request.auth)
        if not opened.ok:
            raise UploadFailed(opened)
        location = opened.header("location")
        if opened.status != 202 or not location:
            log.error("POST %s answered %s with Location %r: no upload session to send pieces to",
                      request.path, opened.status, location)
            body.drain()
            return error_answer(502, "UNKNOWN", "berth proxy: the registry did not open an upload "
                                                "session for a monolithic upload")
        target = self.client.to_target(location, request.path)
        record = self.uploads.ensure(target.split("?", 1)[0], name, 0)
        record.to_s3 = offers_pieces(opened.header(oci.UPLOAD_PIECE_HEADER))
        _, target = self._send_pieces(request, target, body, name, 0)
        return self._commit(request, target, digest_items, name)

    def _commit(self, request: Request, target: str, digest_items: str, name: str) -> Answer:
        put_target = add_query(target, digest_items)
        reply = self.client.call("PUT", put_target, self._bodyless(request), auth=request.auth)
        path = target.split("?", 1)[0]
        record = self.uploads.pop(path)
        if reply.ok and record is not None:
            digest = unquote(digest_items.partition("=")[2])
            self.progress.blob_done(record, digest)
        return answer_from_reply(self._rewrite(reply))

    @staticmethod
    def _bodyless(request: Request) -> Headers:
        return without(request.forward_headers(), _BODY_HEADERS) + [("Content-Length", "0")]

    def _upload_offset(self, request: Request, target: str) -> int:
        """Where the upload stands, from the proxy's own record or a GET of its status."""
        record = self.uploads.get(target.split("?", 1)[0])
        if record is not None and record.offset is not None:
            return record.offset
        status = self.client.call("GET", target, without(request.forward_headers(), _BODY_HEADERS),
                                  auth=request.auth)
        if not status.ok:
            raise UploadFailed(status)
        end = _range_end(status.header("range"))
        # "0-0" (end 1) means both "nothing yet" and "one byte" in the Docker Range convention;
        # an upload of one byte continued in pieces does not happen in practice.
        return 0 if end is None or end == 1 else end

    def _send_pieces(self, request: Request, target: str, body: ClientBody, name: str,
                     start: Optional[int]) -> tuple[Reply, str]:
        """PATCH the body to `target` in pieces of at most chunk_size bytes, each with its
        Content-Range, following each 202's Location. Returns (last reply, next target).

        When the upstream advertises chunks sent ahead (Berth, chalicelib/oci.py), the pieces
        after the first go two at a time: while one in-order piece is written (`join`), the
        piece after the next is stored ahead on another instance, and the in-order piece takes
        in the one stored ahead at its end. At most four pieces per upload are in memory."""
        path = target.split("?", 1)[0]
        offset = start if start is not None else self._upload_offset(request, target)
        record = self.uploads.ensure(path, name, offset)
        record.offset = offset
        template = without(request.forward_headers(), _BODY_HEADERS)
        template.append(("Content-Type", OCTET_STREAM))
        label = f"{name} {path.rsplit('/', 1)[-1][:12]}"
        sender = _PieceSender(self.client, request, target, offset, record, template, self.progress,
                              self.progress.begin(label, body.length))
        try:
            if record.to_s3 and self.s3.usable:
                send_via_s3(self.s3, sender, body, self._s3_pool, self._read_piece,
                            lambda data: self._send_chunks(sender, data))
                return self._sent(sender)
            first = self._read_piece(body)
            if first:
                reply = sender.in_order(first)
                if len(first) == self.chunk_size and _offers_ahead(reply):
                    self._send_paired(sender, body)
                elif len(first) == self.chunk_size:
                    self._send_in_order(sender, body)
        finally:
            self.progress.end(sender.token)
        return self._sent(sender)

    @staticmethod
    def _sent(sender: "_PieceSender") -> tuple[Reply, str]:
        if sender.last is None:  # cannot happen: only bodies larger than one piece come here
            raise UploadFailed(Reply(400, "Bad Request", [("Content-Type", "application/json")],
                                     oci_error_body("BLOB_UPLOAD_INVALID", "empty upload body")))
        return sender.last, sender.target

    def _read_piece(self, body: ClientBody, size: Optional[int] = None) -> bytearray:
        """The next piece of the client's body (shorter than `size`, by default chunk_size,
        only at its end)."""
        piece = bytearray(size or self.chunk_size)
        n = body.readinto(memoryview(piece))
        if n < len(piece):
            del piece[n:]
        return piece

    def _send_chunks(self, sender: "_PieceSender", data: bytearray) -> None:
        """`data` through the registry, in order, in chunks of at most chunk_size."""
        view = memoryview(data)
        for i in range(0, len(data), self.chunk_size):
            sender.in_order(view[i:i + self.chunk_size])

    def _send_in_order(self, sender: "_PieceSender", body: ClientBody) -> None:
        while True:
            piece = self._read_piece(body)
            if piece:
                sender.in_order(piece)
            if len(piece) < self.chunk_size:
                return

    def _send_paired(self, sender: "_PieceSender", body: ClientBody) -> None:
        """Pieces a, b, a2, b2 ...: b is stored ahead while the previous a is written, then a is
        written with `join` and takes b in. A b the upstream did not keep is sent in order."""
        a = self._read_piece(body)
        b = self._read_piece(body) if len(a) == self.chunk_size else bytearray()
        stored = bool(b) and _kept_ahead(sender.ahead(b, sender.target, sender.offset + len(a)))
        while a:
            a2 = self._read_piece(body) if len(b) == self.chunk_size else bytearray()
            b2 = self._read_piece(body) if len(a2) == self.chunk_size else bytearray()
            future = None
            if b2:
                future = self._ahead_pool.submit(sender.ahead, b2, sender.target,
                                                  sender.offset + len(a) + len(b) + len(a2))
            try:
                reply = sender.in_order(a, join=stored)
                if stored and _range_end(reply.header("range")) == sender.offset + len(b):
                    sender.taken_in(len(b))
                elif b:
                    sender.in_order(b)
            finally:
                stored = _kept_ahead(future)
            a, b = a2, b2


class _PieceSender:
    """The in-order PATCHes of one pieced upload, and the pieces sent ahead of them."""

    def __init__(self, client: UpstreamClient, request: Request, target: str, offset: int,
                 record: UploadRecord, template: Headers, progress: Progress, token: int) -> None:
        self.client, self.request, self.target, self.offset = client, request, target, offset
        self.record, self.template, self.progress, self.token = record, template, progress, token
        self.last: Optional[Reply] = None

    def _headers(self, start: int, n: int, kind: Optional[str]) -> Headers:
        headers = self.template + [("Content-Range", f"{start}-{start + n - 1}"),
                                   ("Content-Length", str(n))]
        return headers + [(oci.UPLOAD_CHUNK_HEADER, kind)] if kind else headers

    def in_order(self, piece: "bytearray | memoryview", join: bool = False) -> Reply:
        n = len(piece)
        self.record.started = self.record.started or time.monotonic()
        reply = self.client.call("PATCH", self.target,
                                 self._headers(self.offset, n, oci.CHUNK_JOIN if join else None),
                                 piece, auth=self.request.auth)
        return self._went_in(reply, n)

    def _went_in(self, reply: Reply, n: int) -> Reply:
        """The upstream's answer to an in-order PATCH of `n` bytes: follow it, or fail."""
        if not reply.ok:
            self.record.offset = None        # unknown now: ask the upstream next time
            raise UploadFailed(reply)
        self.last = reply
        self.taken_in(n)
        location = reply.header("location")
        if location:
            self.target = self.client.to_target(location, self.target)
        return reply

    def piece_url(self, start: int, n: int, sha256_hex: str) -> str:
        """The presigned S3 URL for a piece (s3_pieces.py); UploadFailed if refused."""
        reply = self.client.call("PATCH", self.target, self._bodyless(
            piece_header(oci.PIECE_URL, start, n, sha256_hex)), auth=self.request.auth)
        url = reply.header(oci.PIECE_URL_HEADER)
        if not reply.ok or not url:
            raise UploadFailed(reply)
        return url

    def stored(self, start: int, n: int, sha256_hex: str) -> Reply:
        """Have the upstream take in the piece put in S3 at `start` (the next in order)."""
        self.record.started = self.record.started or time.monotonic()
        reply = self.client.call("PATCH", self.target, self._bodyless(
            piece_header(oci.PIECE_STORED, start, n, sha256_hex)), auth=self.request.auth)
        return self._went_in(reply, n)

    def _bodyless(self, piece: tuple[str, str]) -> Headers:
        return self.template + [("Content-Length", "0"), piece]

    def taken_in(self, n: int) -> None:
        """`n` more bytes are part of the upload (sent in order, stored ahead and joined, or
        put in S3 and taken in)."""
        self.offset += n
        self.record.offset = self.offset
        self.record.sent += n
        self.record.pieces += 1
        self.record.last = time.monotonic()
        self.progress.advance(self.token, n)

    def ahead(self, piece: bytearray, target: str, start: int) -> Reply:
        return self.client.call("PATCH", target, self._headers(start, len(piece), oci.CHUNK_AHEAD),
                                piece, auth=self.request.auth)


def _offers_ahead(reply: Reply) -> bool:
    return (reply.header(oci.UPLOAD_CHUNK_HEADER) or "").strip().lower() == oci.CHUNK_AHEAD


def _kept_ahead(outcome: "Reply | Future[Reply] | None") -> bool:
    """Whether a piece sent ahead is stored upstream (waits for it if still in flight)."""
    if outcome is None:
        return False
    try:
        reply = outcome.result() if isinstance(outcome, Future) else outcome
    except UpstreamError as exc:
        log.info("a piece sent ahead failed (%s); it is sent in order instead", exc)
        return False
    return reply.status == 202


def _is_upload_body(request: Request, body: ClientBody) -> bool:
    """A non-empty body sent to /v2/<name>/blobs/uploads/...: blob bytes, whatever the client said
    (dockerd sends no Content-Type; without a binary one, API Gateway would pass it as text)."""
    has_body = body.chunked or bool(body.length)
    return has_body and request.method in ("PATCH", "PUT", "POST") and bool(UPLOAD_PATH.match(request.path))


def _range_end(value: Optional[str]) -> Optional[int]:
    """`0-N` -> N+1 (bytes held), None when absent or unparsable."""
    if not value:
        return None
    m = _RANGE.match(value)
    return int(m.group(2)) + 1 if m else None


def _client_range_start(content_range: str, length: Optional[int]) -> Optional[int]:
    m = _CONTENT_RANGE.match(content_range)
    if not m:
        return None
    start, end = int(m.group(1)), int(m.group(2))
    if end < start or (length is not None and end - start + 1 != length):
        return None
    return start


# --------------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------------


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "berth-proxy"
    disable_nagle_algorithm = True
    timeout = CLIENT_TIMEOUT
    server: "ProxyServer"

    def handle(self) -> None:
        try:
            first = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if not first:
            return
        if first[0] == TLS_HANDSHAKE_RECORD:
            # skopeo/podman and the docker CLI try TLS first: answer so they fall back to HTTP
            log.debug("answering a TLS handshake from %s with plain HTTP 400", self.client_address)
            try:
                self.connection.sendall(PLAIN_HTTP_ANSWER_TO_TLS)
            except OSError:
                pass
            self.close_connection = True
            return
        super().handle()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            self.close_connection = True

    def _proxy(self) -> None:
        target = self.path
        if not target.startswith("/"):  # absolute-form
            parts = urlsplit(target)
            target = join_target(parts.path or "/", parts.query)
        request = Request(self.command, target, list(self.headers.items()))
        try:
            body = ClientBody.from_headers(self.rfile, request.headers)
        except BadBody as exc:
            self._write(error_answer(400, "UNKNOWN", f"berth proxy: {exc}"), close=True)
            return
        try:
            answer = self.server.proxy.handle(request, body)
        except BadBody as exc:
            self._write(error_answer(400, "UNKNOWN", f"berth proxy: {exc}"), close=True)
            return
        except ClientGone as exc:
            log.info("client %s went away: %s", self.client_address[0], exc)
            self.close_connection = True
            return
        except Exception:  # never a traceback to the client
            log.exception("proxy failed on %s %s", request.method, request.path)
            body_ok = body.drain(5.0)
            self._write(error_answer(500, "UNKNOWN", "berth proxy: internal error"), close=not body_ok)
            return
        self._write(answer, close=not body.exhausted)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _proxy

    def _write(self, answer: Answer, close: bool = False) -> None:
        """Send the answer; stream its body from upstream if it has one in flight."""
        head_only = self.command == "HEAD" or answer.status in (204, 304) or answer.status < 200
        drop = HOP_BY_HOP | connection_tokens(answer.headers) | {"content-length"}
        headers = [(k, v) for k, v in answer.headers if k.lower() not in drop]
        declared = (header(answer.headers, "content-length") or "").strip()
        stream = answer.stream
        chunked = False
        if head_only:
            if declared.isdigit() and answer.status not in (204, 304) and answer.status >= 200:
                headers.append(("Content-Length", declared))
        elif stream is None:
            headers.append(("Content-Length", str(len(answer.body))))
        elif declared.isdigit():
            headers.append(("Content-Length", declared))
        else:
            headers.append(("Transfer-Encoding", "chunked"))
            chunked = True
        if close or self.close_connection:
            self.close_connection = True
            headers.append(("Connection", "close"))
        lines = [f"HTTP/1.1 {answer.status} {answer.reason or http.client.responses.get(answer.status, '')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        log.debug("%s %s -> %d", self.command, self.path.split("?")[0], answer.status)
        try:
            if stream is None or head_only:
                self.wfile.write(head + (b"" if head_only else answer.body))
                if stream is not None:
                    stream.read()       # nothing for HEAD/204; lets the connection be reused
                    answer.release and answer.release()
                return
            self.wfile.write(head)
            self._relay(stream, chunked)
            answer.release and answer.release()
        except (OSError, http.client.HTTPException) as exc:
            self.close_connection = True
            if answer.discard:
                answer.discard()
            log.debug("relaying the answer to %s failed: %s", self.client_address[0], exc)

    def _relay(self, stream: http.client.HTTPResponse, chunked: bool) -> None:
        buf = bytearray(COPY_BYTES)
        view = memoryview(buf)
        while True:
            n = stream.readinto(view)
            if not n:
                break
            if chunked:
                self.wfile.write(f"{n:x}\r\n".encode() + bytes(view[:n]) + b"\r\n")
            else:
                self.wfile.write(view[:n])
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        log.debug("%s %s", self.address_string(), format % args)


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: Proxy) -> None:
        self.proxy = proxy
        host = address[0]
        try:
            self.address_family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        except ValueError:
            infos = socket.getaddrinfo(host, address[1], type=socket.SOCK_STREAM)
            self.address_family = infos[0][0]
        super().__init__(address, ProxyHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can take seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.proxy.close()


def docker_auth(upstream: Upstream, config_dir: Path) -> RegistryAuth:
    """The proxy's own authentication, with what docker stores for the upstream in `config_dir`."""
    return RegistryAuth(upstream.url, upstream.host_header,
                        lookup=lambda: find_credentials(upstream.host_header, config_dir))


def start_proxy(upstream: str, listen: str = "127.0.0.1:0", chunk_size: int = DEFAULT_CHUNK_SIZE,
                progress: Optional[Progress] = None,
                ssl_context: Optional[ssl.SSLContext] = None,
                docker_config: Optional[Path] = None) -> tuple[ProxyServer, int]:
    """Serve the proxy in a daemon thread; return (server, port). `server.stop()` stops it.

    `ssl_context` verifies an https upstream (default: the system's trusted CAs). With
    `docker_config` (a folder holding docker's config.json; `berth proxy` uses $DOCKER_CONFIG or
    ~/.docker), requests without Authorization are authenticated with docker's stored
    credentials for the upstream; without it, only the clients' own Authorization is forwarded."""
    host, port = parse_listen(listen)
    parsed = parse_upstream(upstream)
    auth = docker_auth(parsed, docker_config) if docker_config is not None else None
    proxy = Proxy(parsed, chunk_size=chunk_size, progress=progress, ssl_context=ssl_context, auth=auth)
    server = ProxyServer((host, port), proxy)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"berth-proxy-{server.port}", daemon=True)
    thread.start()
    return server, server.port


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", required=True, metavar="URL",
                        help="the registry to push to, e.g. https://registry.example.com")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"where clients push to (default {DEFAULT_LISTEN})")
    parser.add_argument("--chunk-size", type=_size_argument, default=DEFAULT_CHUNK_SIZE,
                        metavar="BYTES",
                        help="largest request body sent upstream; 4MiB fits API Gateway + Lambda "
                             "(default 4194304)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _check_upstream(proxy: Proxy) -> Optional[str]:
    """A quick GET /v2/ so a wrong URL shows at start; returns a problem, or None."""
    try:
        reply = proxy.client.call("GET", "/v2/", [("User-Agent", "berth-proxy")])
    except UpstreamError as exc:
        return str(exc)
    if reply.status not in (200, 401):
        return f"GET {proxy.upstream.url}/v2/ answered {reply.status}: is this a registry?"
    return None


def _credentials_note(proxy: Proxy, upstream: Upstream, config_dir: Path) -> str:
    """Which login the proxy will use: docker's for the upstream, or the clients' own."""
    found = proxy.auth.stored_credentials() if proxy.auth is not None else None
    if found is not None:
        return (f"requests without credentials use the login docker stores for "
                f"{upstream.host_header} (user {found.username!r}, from {config_dir})")
    return (f"docker stores no login for {upstream.host_header} in {config_dir}: run "
            f"`docker login {upstream.host_header}` (the proxy picks it up), or clients must log in "
            "to the proxy's own address")


@command("proxy", "push big layers to a registry behind API Gateway/Lambda, in pieces",
         _add_arguments)
def run(args: argparse.Namespace) -> int:
    one_malloc_arena()      # pieces of 16 MiB pass between threads (s3_pieces.py)
    try:
        upstream = parse_upstream(args.upstream)
    except ValueError as exc:
        raise CliError(f"--upstream: {exc}") from None
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    progress = Progress.for_terminal(args.quiet)
    config_dir = docker_config_dir()
    proxy = Proxy(upstream, chunk_size=args.chunk_size, progress=progress,
                  auth=docker_auth(upstream, config_dir))
    try:
        server = ProxyServer((host, port), proxy)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    handler = ProgressLogHandler(progress)
    handler.setFormatter(logging.Formatter("berth proxy: %(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    try:
        problem = _check_upstream(proxy)
        if problem:
            log.warning("warning: %s (serving anyway)", problem)
        if (args.chunk_size + 2) // 3 * 4 + LAMBDA_EVENT_OVERHEAD > LAMBDA_PAYLOAD_LIMIT:
            log.warning("warning: pieces of %s are over API Gateway/Lambda's payload limit once "
                        "base64-encoded; a registry there will refuse them (413)",
                        human_bytes(args.chunk_size))
        if not args.quiet:
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
            progress.message(f"berth proxy: push to {shown}:{server.port}/<name>:<tag>; forwarding "
                             f"to {upstream.url}, layers straight to S3 where it offers that, "
                             f"else in chunks of at most {human_bytes(args.chunk_size)} (Ctrl-C to stop)")
            progress.message(f"berth proxy: {_credentials_note(proxy, upstream, config_dir)}")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        proxy.close()
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    return 0
