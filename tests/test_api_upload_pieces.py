"""Pieces put in S3 by the client (`Berth-Upload-Piece`, chalicelib/oci.py): what `berth proxy`
does instead of sending a layer's bytes through API Gateway and Lambda."""
from __future__ import annotations

import base64
import hashlib
import os
from urllib.parse import urlsplit

import pytest
import requests

from tests.support.registry_api import absolute, error_code, http, sha256
from tests.support.registry_api import pull_blob as pull
from tests.support.registry_api import start_upload as start

MiB = 1024 * 1024


@pytest.fixture
def registry(any_registry):
    """On one Lambda instance and on a fleet of three (BERTH_INSTANCES=3)."""
    return any_registry


def piece_header(kind: str, start: int, data: bytes) -> dict:
    return {"Berth-Upload-Piece": f"{kind}; start={start}; length={len(data)}; "
                                  f"sha256={hashlib.sha256(data).hexdigest()}"}


def piece_url(url: str, start: int, data: bytes) -> str:
    r = http.patch(url, headers=piece_header("url", start, data))
    assert r.status_code == 202, r.text
    return r.headers["Berth-Piece-Url"]


def put_piece(s3_url: str, data: bytes, claimed: bytes = None) -> requests.Response:
    """The client's PUT to S3: exactly the signed length and checksum, and no registry token."""
    checksum = base64.b64encode(hashlib.sha256(claimed if claimed is not None else data).digest())
    return requests.put(s3_url, data=data, headers={"x-amz-checksum-sha256": checksum.decode()})


def stored(url: str, start: int, data: bytes) -> requests.Response:
    return http.patch(url, headers=piece_header("stored", start, data))


def test_pieces_put_in_s3_become_the_blob_and_are_verified(registry):
    """Three pieces, the later ones put before the first is taken in (as the proxy does); each
    is taken in order; the blob is the bytes sent and the digest still covers all of them."""
    pieces = [os.urandom(6 * MiB), os.urandom(5 * MiB + 7), os.urandom(1 * MiB)]
    url = start(registry, "up/pieces")
    assert http.get(url).headers["Berth-Upload-Piece"] == "s3"        # offered on every session
    starts = [0, len(pieces[0]), len(pieces[0]) + len(pieces[1])]
    urls = [piece_url(url, s, p) for s, p in zip(starts, pieces)]
    assert all(urlsplit(u).netloc != urlsplit(registry).netloc for u in urls)   # S3, not Berth
    for u, p in zip(reversed(urls), reversed(pieces)):
        assert put_piece(u, p).status_code == 200
    for s, p in zip(starts, pieces):
        r = stored(url, s, p)
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{s + len(p) - 1}"
        url = absolute(registry, r.headers["Location"])
    data = b"".join(pieces)
    assert http.put(url, params={"digest": sha256(data[:-1] + b"x")}).status_code == 400
    url = start(registry, "up/pieces")
    for s, p in zip(starts, pieces):
        assert put_piece(piece_url(url, s, p), p).status_code == 200
        assert stored(url, s, p).status_code == 202
    assert http.put(url, params={"digest": sha256(data)}).status_code == 201
    assert pull(registry, "up/pieces", sha256(data)) == data


def test_pieces_mix_with_ordinary_chunks(registry):
    """A piece after a chunk that left a tail under 5 MiB, a small piece that becomes the tail,
    and a chunk after it: the proxy falls back to chunks when S3 cannot be reached."""
    a, b, c, d = os.urandom(3 * MiB), os.urandom(6 * MiB), os.urandom(2 * MiB), os.urandom(4 * MiB)
    url = start(registry, "up/pieces-mixed")
    r = http.patch(url, data=a, headers={"Content-Type": "application/octet-stream"})
    url = absolute(registry, r.headers["Location"])
    offset = len(a)
    for piece in (b, c):
        assert put_piece(piece_url(url, offset, piece), piece).status_code == 200
        r = stored(url, offset, piece)
        assert r.status_code == 202, r.text
        offset += len(piece)
    r = http.patch(url, data=d, headers={"Content-Range": f"{offset}-{offset + len(d) - 1}",
                                         "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    data = a + b + c + d
    assert http.put(absolute(registry, r.headers["Location"]),
                    params={"digest": sha256(data)}).status_code == 201
    assert pull(registry, "up/pieces-mixed", sha256(data)) == data


def test_a_piece_that_is_not_what_was_announced_is_refused_and_the_session_goes_on(registry):
    good, other = os.urandom(5 * MiB), os.urandom(5 * MiB)
    url = start(registry, "up/pieces-bad")
    s3_url = piece_url(url, 0, good)
    # S3 refuses a body that does not match the signed checksum (as moto does here, too)
    assert put_piece(s3_url, other, claimed=good).status_code == 400
    # bytes that S3 did not check (a store that took them anyway): refused when taken in
    from chalicelib.storage import blobstore
    upload_id = url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    key = f"uploads/{upload_id}/piece-0-{len(good)}-{hashlib.sha256(good).hexdigest()}"
    blobstore.put_object(key, other)
    r = stored(url, 0, good)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID", r.text
    assert r.headers["Range"] == "0-0"
    # taking in a piece that was never put: 400, and nothing changed
    r = stored(url, 0, good)
    assert r.status_code == 400 and error_code(r) == "BLOB_UPLOAD_INVALID", r.text
    assert r.headers["Range"] == "0-0"
    # out of order: 416 with where the upload stands
    r = stored(url, 5 * MiB, good)
    assert r.status_code == 416 and r.headers["Range"] == "0-0"
    assert put_piece(s3_url, good).status_code == 200
    assert stored(url, 0, good).status_code == 202
    assert http.put(url, params={"digest": sha256(good)}).status_code == 201


def test_piece_requests_are_bounded_and_well_formed(registry):
    from chalicelib.uploads import PIECE_MAX, PIECE_WINDOW
    url = start(registry, "up/pieces-bounds")
    digest = "0" * 64
    cases = [
        (f"url; start=0; length={PIECE_MAX + 1}; sha256={digest}", 400, "SIZE_INVALID"),
        (f"url; start=0; length=0; sha256={digest}", 400, "SIZE_INVALID"),
        (f"url; start={PIECE_WINDOW + 1}; length=10; sha256={digest}", 416, "RANGE_INVALID"),
        (f"url; start=0; length=10; sha256={digest[:-1]}", 400, "BLOB_UPLOAD_INVALID"),
        (f"sideways; start=0; length=10; sha256={digest}", 400, "BLOB_UPLOAD_INVALID"),
        ("url", 400, "BLOB_UPLOAD_INVALID"),
    ]
    for value, status, code in cases:
        r = http.patch(url, headers={"Berth-Upload-Piece": value})
        assert (r.status_code, error_code(r)) == (status, code), (value, r.text)
        assert r.headers["Range"] == "0-0"
    # a piece request carries no body
    r = http.patch(url, data=b"x" * 10, headers={"Berth-Upload-Piece": f"url; start=0; length=10; sha256={digest}"})
    assert r.status_code == 400 and error_code(r) == "BLOB_UPLOAD_INVALID"
    # a piece request needs push access, as every chunk does
    anonymous = requests.patch(url, headers={"Berth-Upload-Piece": f"url; start=0; length=10; sha256={digest}"})
    assert anonymous.status_code == 401


def test_a_commit_after_pieces_reads_nothing_back(fleet_registry, fleet):
    """Each piece is read once, when taken in; the commit reads nothing and copies nothing."""
    pieces = [os.urandom(8 * MiB), os.urandom(8 * MiB), os.urandom(3 * MiB)]
    url = start(fleet_registry, "up/pieces-fleet")
    offset = 0
    for p in pieces:
        assert put_piece(piece_url(url, offset, p), p).status_code == 200
        r = stored(url, offset, p)
        assert r.status_code == 202, r.text
        offset += len(p)
    fleet.aws_calls()
    data = b"".join(pieces)
    assert http.put(url, params={"digest": sha256(data)}).status_code == 201
    s3 = {k: n for k, n in fleet.aws_calls().items() if k[0] == "s3"}
    assert not [k for k in s3 if k[1] in ("GetObject", "CopyObject")], s3
    assert pull(fleet_registry, "up/pieces-fleet", sha256(data)) == data


def test_a_piece_that_changes_between_its_read_and_its_copy_is_refused(in_process_registry, monkeypatch):
    """S3 copies the piece only if it is still what was read and hashed (CopySourceIfMatch):
    bytes written in between (which S3's signed checksum already prevents) never enter the blob."""
    from chalicelib.storage import blobstore
    original = blobstore.open_object

    def overwritten_after_the_read(key):
        data, etag, size = original(key)

        def chunks():
            yield from data
            blobstore.put_object(key, os.urandom(size))
        return chunks(), etag, size
    monkeypatch.setattr(blobstore, "open_object", overwritten_after_the_read)
    piece = os.urandom(6 * MiB)
    url = start(in_process_registry, "up/pieces-changed")
    assert put_piece(piece_url(url, 0, piece), piece).status_code == 200
    r = stored(url, 0, piece)
    assert r.status_code == 400 and error_code(r) == "BLOB_UPLOAD_INVALID", r.text
    assert r.headers["Range"] == "0-0"
    monkeypatch.setattr(blobstore, "open_object", original)
    assert put_piece(piece_url(url, 0, piece), piece).status_code == 200
    assert stored(url, 0, piece).status_code == 202
    assert http.put(url, params={"digest": sha256(piece)}).status_code == 201
    assert pull(in_process_registry, "up/pieces-changed", sha256(piece)) == piece
