"""Run the local gateway under waitress, tuned for registry traffic.

waitress is used because it de-chunks `Transfer-Encoding: chunked` bodies (podman sends them),
spools large bodies to a temp file instead of RAM, answers `Expect: 100-continue` by itself and
is pure Python. Its defaults are tuned for web pages, so limits are raised for layer pushes,
TLS attempts on the plain-HTTP port are refused at once (see PlainHTTPChannel), and bodies of
requests the registry refuses (no or no acceptable token) are never spooled
(RegistryRequestParser): only a request whose token grants it spools its body.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable, Union

import waitress
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, MultiSocketServer

log = logging.getLogger(__name__)

GIB = 1024 ** 3

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
Server = Union[BaseWSGIServer, MultiSocketServer]

# Adjustments shared by serve() and start_in_thread().
WAITRESS_OPTIONS: dict[str, Any] = {
    # waitress refuses bodies >= 1 GiB by default; layers can be bigger.
    "max_request_body_size": 64 * GIB,
    # Idle connections only; a slow client still uploading is active and unaffected.
    "channel_timeout": 900,
    # Bigger socket reads: a 500 MB layer is ~7600 reads instead of ~61000 at the 8 KiB default.
    "recv_bytes": 65536,
    "clear_untrusted_proxy_headers": True,
    "expose_tracebacks": False,
    "ident": "berth-local",
}

TLS_HANDSHAKE_RECORD = 0x16
# What a plain-HTTP port answers to a TLS ClientHello. Go's TLS client reports a reply that looks
# like HTTP as "server gave HTTP response to HTTPS client", the one error on which the docker CLI
# (`docker manifest ...`) falls back to plain HTTP; a TLS alert made it give up instead.
# skopeo/podman fall back to HTTP on either. Used by `make run` and `berth proxy`.
PLAIN_HTTP_ANSWER_TO_TLS = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                            b"Connection: close\r\n\r\nThis port speaks plain HTTP, not TLS.\n")


def refuses_body(method: str, path: str, headers: dict) -> bool:
    """Whether the registry would answer this request 401 (or 4xx) without reading its body:
    the app's own routing and token check (chalicelib/api/access.py; no database read)."""
    if not path.startswith("/v2/"):
        return False
    from chalicelib.api import dispatch  # noqa: F401  (registers the routes)
    from chalicelib.api.access import authorize
    from chalicelib.api.router import Request, resolve
    from chalicelib.errors import RegistryError
    request = Request(method=method, path=path[len("/v2/"):], params={}, query={},
                      headers={k.lower().replace("_", "-"): v for k, v in headers.items()})
    try:
        route, request.params = resolve(method, request.path)
        authorize(request, route)
    except RegistryError:
        return True
    return False


class RegistryRequestParser(HTTPRequestParser):
    """Refuses the body of a request the registry will refuse anyway, as soon as its headers are
    parsed: waitress would otherwise spool the whole body (64 GiB allowed) to a temp file
    before the app could answer 401. The request goes on with an empty body (so the app gives
    its own answer: the 401 challenge), the connection closes after that answer, and the
    channel drops whatever else the client sends."""

    refused = False

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if (self.headers_finished and not self.completed and self.body_rcv is not None
                and refuses_body(self.command, self.path, self.headers)):
            self.refused = True
            self.body_rcv = None
            self.chunked = False
            self.content_length = 0
            self.expect_continue = False
            self.headers["CONTENT_LENGTH"] = "0"
            self.headers["CONNECTION"] = "close"
            self.completed = True
            return len(data)            # the rest of this read is body: dropped
        return consumed


class PlainHTTPChannel(HTTPChannel):
    """An HTTP channel that turns TLS away immediately.

    skopeo/podman with `--tls-verify=false`, and the docker CLI, first try HTTPS on the
    registry's port and fall back to HTTP only when that fails. waitress would keep waiting for
    the end of an HTTP header that a TLS ClientHello never contains, so every client run stalled
    for Go's 10 s TLS handshake timeout. Answering with a plain HTTP 400 ends the handshake at once.
    """

    _first_bytes_seen = False
    _dropping = False        # a refused body is arriving: nothing more is read as a request

    def received(self, data: bytes) -> bool:
        if not self._first_bytes_seen and data:
            self._first_bytes_seen = True
            if data[0] == TLS_HANDSHAKE_RECORD:
                self._refuse_tls()
                return False
        if self._dropping:
            return True
        answer = super().received(data)
        if any(getattr(r, "refused", False) for r in self.requests):
            self._dropping = True
        return answer

    def _refuse_tls(self) -> None:
        log.debug("answering a TLS handshake from %s with plain HTTP 400", self.addr)
        try:
            self.socket.send(PLAIN_HTTP_ANSWER_TO_TLS)
        except OSError:
            pass
        self.handle_close()


def _options(threads: int) -> dict[str, Any]:
    return {**WAITRESS_OPTIONS, "threads": threads}


def _listeners(server: Server) -> list[BaseWSGIServer]:
    if isinstance(server, MultiSocketServer):  # a host name that resolved to several addresses
        return [s for s in server.map.values() if isinstance(s, BaseWSGIServer)]
    return [server]


class RegistryChannel(PlainHTTPChannel):
    parser_class = RegistryRequestParser


def create_server(wsgi_app: WSGIApp, host: str, port: int, threads: int = 8,
                  guard_bodies: bool = False) -> Server:
    """A waitress server with Berth's adjustments; it does not serve until `.run()`.
    `guard_bodies`: the app is Berth's registry; bodies it would refuse are not spooled."""
    server = waitress.create_server(wsgi_app, host=host, port=port, **_options(threads))
    for listener in _listeners(server):
        listener.channel_class = RegistryChannel if guard_bodies else PlainHTTPChannel
    return server


def serve(wsgi_app: WSGIApp, host: str, port: int, threads: int = 8,
          guard_bodies: bool = False) -> None:
    """Serve until interrupted (blocking)."""
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    server = create_server(wsgi_app, host, port, threads, guard_bodies)
    server.print_listen("Serving on http://{}:{}")
    server.run()  # returns on Ctrl-C (waitress catches KeyboardInterrupt and shuts its threads down)


def start_in_thread(
    wsgi_app: WSGIApp, host: str = "127.0.0.1", port: int = 0, threads: int = 8,
    guard_bodies: bool = False
) -> tuple[Server, int]:
    """Start serving in a daemon thread; return (server, actual port). `server.close()` stops it.

    Port 0 picks a free port, so parallel test runs do not collide. Give a literal address:
    a name resolving to several addresses would get one ephemeral port each.
    """
    server = create_server(wsgi_app, host, port, threads, guard_bodies)
    actual_port = int(_listeners(server)[0].effective_port)
    closed = threading.Event()
    close = server.close

    def close_and_mark() -> None:
        closed.set()
        close()

    def run() -> None:
        try:
            server.run()
        except OSError:
            # close() from another thread pulls the sockets out from under the select() of
            # waitress's loop (EBADF): the expected end of a server stopped this way
            if not closed.is_set():
                raise
    server.close = close_and_mark
    thread = threading.Thread(target=run, name=f"berth-gateway-{actual_port}", daemon=True)
    thread.start()
    return server, actual_port
