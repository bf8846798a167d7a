"""`berth proxy` putting a layer's pieces straight in S3 (berth_local/s3_pieces.py), against Berth
with Lambda's 6 MiB request limit: the bytes bypass the registry, the registry still verifies
them, and when S3 cannot be reached the proxy falls back to chunks through the registry."""
from __future__ import annotations

import hashlib
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from berth_local.proxy import start_proxy
from tests.support.registry_api import RegistryClient, push_in_one_patch

MiB = 1 << 20


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_through(base: str, repo: str, data: bytes) -> None:
    client = RegistryClient()
    push_in_one_patch(base, repo, data, client)
    got = client.get(f"{base}/v2/{repo}/blobs/{sha256(data)}")
    assert got.status_code == 200 and got.content == data


@pytest.fixture
def proxy(lambda_registry):
    server, port = start_proxy(lambda_registry)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_a_layer_goes_to_s3_in_pieces_and_the_registry_takes_them_in(proxy, aws_calls):
    """No byte of the layer passes through the registry: the registry copies each piece into
    the upload's multipart upload (S3 does the copy) and writes no part or tail itself."""
    data = hashlib.sha256(b"seed").digest() * (41 * MiB // 32) + b"end"
    push_through(proxy, "proxy/s3-pieces", data)
    s3 = {op: n for (service, op), n in aws_calls.calls.items() if service == "s3"}
    assert s3.get("UploadPartCopy") == 3, s3              # pieces of 16, 16 and 9 MiB
    assert "UploadPart" not in s3 and "PutObject" not in s3, s3


class RefusingS3:
    """A stand-in for an S3 the proxy cannot use (a firewall's 403): records what it got."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_PUT(self):
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_when_s3_refuses_the_layer_goes_through_the_registry_and_the_user_is_told_once(
        proxy, monkeypatch, caplog):
    from chalicelib.storage import blobstore
    refusing = RefusingS3()
    monkeypatch.setattr(blobstore, "presigned_put_url",
                        lambda key, length, sha, expires: f"{refusing.url}/{key}?X-Amz-Signature=x")
    caplog.set_level(logging.WARNING, logger="berth_local.proxy.s3")
    try:
        first, second = b"a" * (20 * MiB + 5), b"b" * (18 * MiB)
        push_through(proxy, "proxy/s3-refused", first)
        push_through(proxy, "proxy/s3-refused", second)
    finally:
        refusing.stop()
    assert refusing.headers, "the proxy did not try S3"
    for put in refusing.headers:                           # pieces of 16 MiB and 4 MiB + 5
        assert "authorization" not in put                  # the registry's token stays home
        assert put["content-length"] in (str(16 * MiB), str(4 * MiB + 5))
        assert put["x-amz-checksum-sha256"]
    warnings = [r for r in caplog.records if "S3" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
