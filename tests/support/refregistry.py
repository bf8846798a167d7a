"""A reference registry (Debian's `docker-registry`, CNCF distribution 2.8.x) for self-checks and
comparisons, plus a small recording HTTP proxy to see what real clients send.

    url, stop = start_docker_registry(tmp_path)      # "http://127.0.0.1:PORT"
    ...
    stop()

    with RecordingProxy(url) as proxy:               # point clients at proxy.netloc instead
        skopeo_copy(img.oci_ref, f"docker://{proxy.netloc}/foo:latest")
    [r for r in proxy.requests if r.method == "PATCH" and r.chunked]
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

__all__ = ["start_docker_registry", "RefRegistry", "RecordingProxy", "RecordedExchange",
           "docker_registry_binary", "free_port"]


def docker_registry_binary() -> str | None:
    return shutil.which("docker-registry")


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the caller must cope with a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except urllib.error.HTTPError as e:  # 401 with auth configured: it is up
            if e.code == 401:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class RefRegistry:
    """docker-registry with filesystem storage under `tmpdir`, deletes enabled, on a free
    127.0.0.1 port. `extra_config` is merged (top level keys replaced) into the generated config,
    e.g. {"auth": {"htpasswd": {"realm": "r", "path": "/x/htpasswd"}}}."""

    def __init__(self, tmpdir: Path, *, extra_config: dict | None = None,
                 binary: str | None = None, start_timeout: float = 15.0):
        self.tmpdir = Path(tmpdir)
        self.binary = binary or docker_registry_binary()
        if not self.binary:
            raise FileNotFoundError("docker-registry is not installed "
                                    "(apt-get install docker-registry)")
        self.extra_config = extra_config or {}
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.data_dir = self.tmpdir / "data"
        self.config_path = self.tmpdir / "config.yml"
        self.log_path = self.tmpdir / "registry.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def netloc(self) -> str:
        """host:port, as used in image references (127.0.0.1:PORT/repo:tag)."""
        return f"127.0.0.1:{self.port}"

    def _config(self, port: int) -> dict:
        cfg = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"127.0.0.1:{port}",
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        cfg.update(self.extra_config)
        return cfg

    def start(self) -> "RefRegistry":
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        # distribution reads REGISTRY_* variables as config overrides: do not inherit any
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env.pop("AWS_CA_BUNDLE", None)  # panics distribution's S3 driver (docs/client-behaviour.md)
        last_log = ""
        for _attempt in range(5):  # a free port can be taken between probe and bind
            port = free_port()
            self.config_path.write_text(json.dumps(self._config(port), indent=1))  # JSON is YAML
            log = open(self.log_path, "ab")
            proc = subprocess.Popen([self.binary, "serve", str(self.config_path)], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
            log.close()
            if _wait_http(f"http://127.0.0.1:{port}/v2/", proc, self.start_timeout):
                self.proc, self.port = proc, port
                return self
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            last_log = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"docker-registry did not start; log {self.log_path}:\n{last_log}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def start_docker_registry(tmpdir: Path, *, extra_config: dict | None = None
                          ) -> tuple[str, Callable[[], None]]:
    """Start docker-registry (filesystem storage under tmpdir, deletes enabled) on a free
    127.0.0.1 port; wait until GET /v2/ answers. Returns (url, stop)."""
    reg = RefRegistry(tmpdir, extra_config=extra_config).start()
    return reg.url, reg.stop


# ------------------------------------------------------------------------------ recording proxy

@dataclass
class RecordedExchange:
    method: str
    target: str                         # path and query, as sent
    headers: dict[str, str]             # request headers, names lower-cased
    chunked: bool                       # request body sent with Transfer-Encoding: chunked
    body_bytes: int                     # request body size (de-chunked)
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class _Closed(Exception):
    pass


def _read_head(f) -> bytes:
    lines = []
    while True:
        line = f.readline(65537)
        if not line:
            if lines:
                raise _Closed("connection closed inside a header block")
            raise _Closed("connection closed")
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    text = head.decode("latin-1")
    first, *rest = text.split("\r\n")
    headers: dict[str, str] = {}
    for line in rest:
        if ":" in line:
            k, v = line.split(":", 1)
            k = k.strip().lower()
            headers[k] = f"{headers[k]}, {v.strip()}" if k in headers else v.strip()
    return first, headers


def _relay_exact(src, dst: socket.socket, n: int) -> int:
    left = n
    while left:
        piece = src.read(min(left, 1 << 16))
        if not piece:
            raise _Closed("connection closed inside a body")
        dst.sendall(piece)
        left -= len(piece)
    return n


def _relay_chunked(src, dst: socket.socket) -> int:
    total = 0
    while True:
        line = src.readline(1024)
        if not line:
            raise _Closed("connection closed inside a chunked body")
        dst.sendall(line)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the empty line
                t = src.readline(65537)
                if not t:
                    raise _Closed("connection closed inside chunked trailers")
                dst.sendall(t)
                if t in (b"\r\n", b"\n"):
                    return total
        total += _relay_exact(src, dst, size)
        dst.sendall(src.readline(16))  # CRLF after the chunk data


def _relay_until_close(src, dst: socket.socket) -> int:
    total = 0
    while piece := src.read1(1 << 16):
        dst.sendall(piece)
        total += len(piece)
    return total


class RecordingProxy:
    """A plain-HTTP/1.1 forward-to-one-upstream proxy on 127.0.0.1 that records every request
    (method, target, headers, chunked or not, body size) and the response status and headers.
    Bodies are streamed, never held. Clients see the proxy as the registry: image references must
    use `proxy.netloc`; Location headers the upstream returns are relative or name the upstream
    (distribution returns absolute URLs built from the Host header, which the proxy forwards
    unchanged, so they point back at the proxy). Not supported: Expect: 100-continue."""

    def __init__(self, upstream_url: str):
        u = urlsplit(upstream_url)
        self.upstream = (u.hostname, u.port or 80)
        self.requests: list[RecordedExchange] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "RecordingProxy":
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="recording-proxy", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(timeout=5)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.errors.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept_loop(self):
        while self._sock is not None:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, client: socket.socket):
        try:
            first = client.recv(1, socket.MSG_PEEK)
        except OSError:
            first = b""
        if first in (b"", b"\x16"):
            # b"\x16": a TLS ClientHello (containers/image tries HTTPS first, even with
            # --tls-verify=false). Answer as Go's net/http does on a plain port, so that the
            # client falls back to HTTP at once instead of waiting for its handshake timeout.
            if first:
                try:
                    client.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n"
                                   b"Client sent an HTTP request to an HTTPS server.\n")
                except OSError:
                    pass
            client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=300)
        except OSError as e:
            self.errors.append(f"connect upstream: {e}")
            client.close()
            return
        with self._lock:
            self._conns.update((client, upstream))
        cin, uin = client.makefile("rb"), upstream.makefile("rb")
        try:
            while True:
                head = _read_head(cin)
                first, headers = _parse_head(head)
                method, target = first.split(" ")[:2]
                chunked = "chunked" in headers.get("transfer-encoding", "").lower()
                ex = RecordedExchange(method, target, headers, chunked, 0)
                with self._lock:
                    self.requests.append(ex)
                upstream.sendall(head)
                if chunked:
                    ex.body_bytes = _relay_chunked(cin, upstream)
                elif "content-length" in headers:
                    ex.body_bytes = _relay_exact(cin, upstream, int(headers["content-length"]))
                while True:  # skip interim 1xx responses
                    rhead = _read_head(uin)
                    status_line, rheaders = _parse_head(rhead)
                    client.sendall(rhead)
                    status = int(status_line.split(" ")[1])
                    if status >= 200 or status == 101:
                        break
                ex.status, ex.response_headers = status, rheaders
                if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                    pass
                elif "chunked" in rheaders.get("transfer-encoding", "").lower():
                    _relay_chunked(uin, client)
                elif "content-length" in rheaders:
                    _relay_exact(uin, client, int(rheaders["content-length"]))
                else:
                    _relay_until_close(uin, client)
                    return
                if "close" in rheaders.get("connection", "").lower() or \
                        "close" in headers.get("connection", "").lower():
                    return
        except _Closed:
            pass
        except (OSError, ValueError, IndexError) as e:
            if self._sock is not None:
                self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._conns.difference_update((client, upstream))
            for s in (cin, uin, client, upstream):
                try:
                    s.close()
                except OSError:
                    pass
