"""A switchable HTTP front of a real upstream registry, for the mirror tests.

It forwards every request to `target` (Debian's docker-registry), unless told to misbehave as
real upstreams do: answer 429 with Retry-After (Docker Hub's pull limit), or redirect blob GETs
to an address Berth must never contact (the cloud metadata service).
"""
from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

PASS, RATE_LIMITED, METADATA_REDIRECT = "pass", "429", "metadata-redirect"


def reply(handler: BaseHTTPRequestHandler, status: int, headers: dict, body: bytes) -> None:
    """Answer a request with `body` (none to a HEAD, with its Content-Length all the same)."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def serve_locally(handler: type) -> tuple:
    """An HTTP server of `handler` on a free port of 127.0.0.1, in a daemon thread: (server, url)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
METADATA_URL = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


class UpstreamGate:
    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.mode = PASS
        self.requests: list = []
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                gate.requests.append((self.command, self.path))
                if gate.mode == RATE_LIMITED:
                    self._reply(429, {"Retry-After": "30", "Content-Type": "application/json"},
                                b'{"errors":[{"code":"TOOMANYREQUESTS","message":"pull limit"}]}')
                    return
                if gate.mode == METADATA_REDIRECT and "/blobs/" in self.path:
                    self._reply(307, {"Location": METADATA_URL}, b"")
                    return
                self._forward()

            def _reply(self, status: int, headers: dict, body: bytes) -> None:
                reply(self, status, headers, body)

            def _forward(self) -> None:
                conn = http.client.HTTPConnection(gate.target.hostname, gate.target.port,
                                                  timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, headers=headers)
                answer = conn.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)) if self.command != "HEAD"
                                 else answer.getheader("Content-Length", "0"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                conn.close()

            do_GET = do_HEAD = _answer

        self.server, self.url = serve_locally(Handler)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "UpstreamGate":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
