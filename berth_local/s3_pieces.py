"""`berth proxy`'s fast path: a layer's bytes go straight to S3, not through API Gateway + Lambda.

Berth advertises `Berth-Upload-Piece: s3` on its upload sessions (chalicelib/oci.py). Then the
proxy cuts the layer into pieces of PIECE_SIZE, and for each: hashes it, asks the registry for a
presigned S3 PUT for exactly those bytes (a PATCH with no body, authenticated and scoped as any
chunk), PUTs the piece to S3, and asks the registry to take it in, in order (again a PATCH with
no body); the registry reads it once, continues the upload's hash and makes it a part of the
upload, so the digest is still verified at the commit and nothing is visible before. Several
pieces travel at once (IN_FLIGHT); taking in is strictly in order.

Why: a chunk through API Gateway is at most 4 MiB of binary (6 MB Lambda payload in base64), and
each costs an API Gateway request, a Lambda invocation, base64 both ways and a tail object in S3.
A piece is 16 MiB, goes to S3 at S3's speed, and costs Lambda only one read from S3 in its region.

S3 must be reachable from the proxy's machine. When a PUT to S3 fails (blocked by a firewall, a
proxy, DNS ...), that piece and every later one are sent as ordinary chunks through the registry
instead, and the proxy says so once. The registry's token never goes to S3: a PUT carries only
the signed Content-Length and x-amz-checksum-sha256 (S3 refuses other bytes). With an https
upstream, an http piece URL is refused.

The S3 requests use urllib3 (botocore's HTTP library, installed with it): pooled keep-alive
connections, TLS verification and retries of the idempotent PUT.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections import deque
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Callable, Optional
from urllib.parse import urlsplit

from chalicelib import oci

if TYPE_CHECKING:
    from berth_local.proxy import ClientBody, _PieceSender

log = logging.getLogger("berth_local.proxy.s3")   # shown as the proxy's own messages

MIB = 1 << 20
PIECE_SIZE = 16 * MIB       # a part of S3's multipart upload; at most chalicelib.uploads.PIECE_MAX
IN_FLIGHT = 3               # pieces of one layer put in S3 at once (and held in memory)
S3_TIMEOUT = 300.0          # seconds without progress on one PUT


class S3Unreachable(Exception):
    """A piece could not be put in S3 (the registry itself answered)."""


class S3Pieces:
    """The S3 side: PUTs of pieces to presigned URLs, shared by all uploads of one proxy."""

    def __init__(self, require_https: bool) -> None:
        import urllib3
        self.require_https = require_https
        self.http = urllib3.PoolManager(
            maxsize=8, timeout=urllib3.Timeout(connect=10.0, read=S3_TIMEOUT),
            retries=urllib3.Retry(total=3, connect=3, read=2, status=3, backoff_factor=0.5,
                                  allowed_methods={"PUT"}, status_forcelist={500, 502, 503, 504},
                                  raise_on_status=False))
        self.usable = True          # until a PUT fails: then chunks through the registry
        self._warned = threading.Event()

    def close(self) -> None:
        self.http.clear()

    def put(self, url: str, piece: bytes, sha256_hex: str) -> None:
        """PUT `piece` at its presigned `url`; S3Unreachable on any failure."""
        import urllib3
        if self.require_https and urlsplit(url).scheme != "https":
            raise S3Unreachable(f"the registry gave a piece URL that is not https: "
                                f"{urlsplit(url).netloc}")
        checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        try:
            answer = self.http.request("PUT", url, body=piece, preload_content=True,
                                       headers={"Content-Length": str(len(piece)),
                                                "x-amz-checksum-sha256": checksum})
        except urllib3.exceptions.HTTPError as exc:
            raise S3Unreachable(f"S3 at {urlsplit(url).netloc} unreachable: {exc}") from exc
        if answer.status != 200:
            raise S3Unreachable(f"S3 at {urlsplit(url).netloc} answered {answer.status}: "
                                f"{answer.data[:300]!r}")

    def give_up(self, reason: str) -> None:
        """Send every later piece through the registry; say why once."""
        self.usable = False
        if not self._warned.is_set():
            self._warned.set()
            log.warning("putting layers straight to S3 failed (%s); sending them through the "
                        "registry in chunks instead (slower)", reason)


def send_via_s3(s3: S3Pieces, sender: "_PieceSender", body: "ClientBody", pool: Executor,
                read_piece: Callable[["ClientBody", int], bytearray],
                send_chunks: Callable[[bytearray], None]) -> None:
    """Send the rest of `body` as pieces put in S3, IN_FLIGHT at a time, taken in in order.
    A piece S3 did not take goes through the registry (`send_chunks`), and so do the rest."""
    in_flight: deque[tuple[int, bytearray, Optional[Future]]] = deque()
    offset = sender.offset
    while True:
        piece = read_piece(body, PIECE_SIZE)
        if piece:
            future = pool.submit(_put_piece, s3, sender, offset, piece) if s3.usable else None
            in_flight.append((offset, piece, future))
            offset += len(piece)
        done = len(piece) < PIECE_SIZE
        while in_flight and (done or len(in_flight) >= IN_FLIGHT):
            start, data, future = in_flight.popleft()
            sha256_hex = _outcome(s3, future)
            if sha256_hex is None:
                send_chunks(data)
            else:
                sender.stored(start, len(data), sha256_hex)
        if done:
            return


def _put_piece(s3: S3Pieces, sender: "_PieceSender", start: int, piece: bytearray) -> str:
    """Ask the registry for the piece's URL and put it there; its SHA-256 (hex)."""
    sha256_hex = hashlib.sha256(piece).hexdigest()
    url = sender.piece_url(start, len(piece), sha256_hex)
    s3.put(url, piece, sha256_hex)
    return sha256_hex


def _outcome(s3: S3Pieces, future: Optional[Future]) -> Optional[str]:
    """The piece's SHA-256 once it is in S3; None if it must go through the registry.
    The registry's own refusals (UploadFailed) are the client's answer, as for any chunk."""
    if future is None:
        return None
    try:
        return future.result()
    except S3Unreachable as exc:
        s3.give_up(str(exc))
        return None


def piece_header(kind: str, start: int, length: int, sha256_hex: str) -> tuple[str, str]:
    """The `Berth-Upload-Piece` request header (chalicelib/oci.py)."""
    return (oci.UPLOAD_PIECE_HEADER, f"{kind}; start={start}; length={length}; sha256={sha256_hex}")


def offers_pieces(value: Optional[str]) -> bool:
    """Whether an upload answer's `Berth-Upload-Piece` header offers pieces put in S3."""
    return (value or "").strip().lower() == oci.PIECE_S3
