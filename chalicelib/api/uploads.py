"""Blob uploads: sessions, monolithic and chunked uploads, and cross-repository mounts."""
from __future__ import annotations

import re
from typing import Optional

from chalice import Response

from chalicelib import oci, uploads
from chalicelib.api.access import may_pull
from chalicelib.api.router import Request, empty, route
from chalicelib.auth.scopes import PUSH
from chalicelib.errors import RegistryError
from chalicelib.storage import metadata

UPLOADS = r"(?P<name>.+)/blobs/uploads/"
SESSION = r"(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)"
_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


def _created(name: str, digest: str) -> Response:
    return empty(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})


def _session_headers(session) -> dict:
    return {"Location": uploads.location(session), "Docker-Upload-UUID": session.sk,
            "Range": uploads.range_header(session.offset),
            oci.UPLOAD_CHUNK_HEADER: oci.CHUNK_AHEAD,   # chunks may be sent ahead (oci.py)
            oci.UPLOAD_PIECE_HEADER: oci.PIECE_S3}      # and pieces put in S3 directly


def _mount(request: Request, digest: str, source: Optional[str]) -> Optional[Response]:
    """Link a blob from another repository; None when it cannot be mounted (then: a session)."""
    if source is None or not oci.is_valid_name(source) or not may_pull(request, source):
        return None   # not mountable, or not readable by the caller: an ordinary upload
    link = metadata.get_link(source, digest)
    if link is None:
        return None
    try:
        metadata.add_link(request.name, digest, int(link.size), link.key)
    except metadata.BlobBeingDeleted:
        return None   # being garbage-collected: the client uploads it again, as for any miss
    return _created(request.name, digest)


@route("POST", UPLOADS, "/v2/{name}/blobs/uploads/", PUSH)
def start_upload(request: Request) -> Response:
    metadata.ensure_repository(request.name)     # every push starts here: the namespace's limit
    mount = request.arg("mount")
    if mount is not None:
        answer = _mount(request, oci.check_digest(mount), request.arg("from"))
        if answer is not None:
            return answer
    digest = request.arg("digest")
    if digest is not None:
        oci.check_digest(digest)
        uploads.store_blob(request.name, digest, request.body)
        return _created(request.name, digest)
    algorithm = oci.check_algorithm(request.arg("digest-algorithm") or "sha256")
    session = uploads.start(request.name, algorithm)
    return empty(202, _session_headers(session))


@route("GET", SESSION, "/v2/{name}/blobs/uploads/{uuid}", PUSH)
def upload_status(request: Request) -> Response:
    session = uploads.load(request.name, request.params["uuid"])
    return empty(204, _session_headers(session))


def _chunk_start(request: Request, length: int) -> Optional[int]:
    """The start offset a Content-Range header claims, checked against the body's length."""
    raw = request.header("content-range")
    if raw is None:
        return None
    m = _CONTENT_RANGE.match(raw.strip())
    if not m or int(m.group(2)) < int(m.group(1)) or int(m.group(2)) - int(m.group(1)) + 1 != length:
        raise RegistryError("RANGE_INVALID", f"Content-Range {raw[:100]!r} does not describe the "
                            f"{length} bytes sent", status=416)
    return int(m.group(1))


_PIECE = re.compile(r"^\s*(url|stored)\s*;\s*start=(\d{1,15})\s*;\s*length=(\d{1,15})\s*;"
                    r"\s*sha256=([0-9a-f]{64})\s*$")


def _piece(request: Request, raw: str) -> tuple[str, uploads.Piece]:
    """(url | stored, the piece) from a `Berth-Upload-Piece` request header (oci.py)."""
    m = _PIECE.match(raw)
    if m is None or request.body:
        raise RegistryError("BLOB_UPLOAD_INVALID", f"{oci.UPLOAD_PIECE_HEADER} must be "
                            "'url|stored; start=N; length=N; sha256=HEX' on a PATCH with no body")
    return m.group(1), uploads.Piece(int(m.group(2)), int(m.group(3)), m.group(4))


def _upload_piece(request: Request, raw: str) -> Response:
    """A piece's URL, or a piece taken in; a refusal says where the upload stands."""
    upload_id = request.params["uuid"]
    try:
        kind, piece = _piece(request, raw)
        if kind == oci.PIECE_STORED:
            return empty(202, _session_headers(uploads.take_piece(request.name, upload_id, piece)))
        session = uploads.load(request.name, upload_id)
        url = uploads.piece_url(session, piece)
        return empty(202, {**_session_headers(session), oci.PIECE_URL_HEADER: url})
    except RegistryError as error:
        if error.code != "BLOB_UPLOAD_UNKNOWN" and "Range" not in error.headers:
            error.headers.update(_session_headers(uploads.load(request.name, upload_id)))
        raise


@route("PATCH", SESSION, "/v2/{name}/blobs/uploads/{uuid}", PUSH)
def upload_chunk(request: Request) -> Response:
    piece = request.header(oci.UPLOAD_PIECE_HEADER)
    if piece is not None:
        return _upload_piece(request, piece)
    upload_id, body = request.params["uuid"], request.body
    kind = (request.header(oci.UPLOAD_CHUNK_HEADER) or "").strip().lower()
    try:
        start = _chunk_start(request, len(body))
        if kind not in ("", oci.CHUNK_AHEAD, oci.CHUNK_JOIN) or (kind == oci.CHUNK_AHEAD and start is None):
            raise RegistryError("BLOB_UPLOAD_INVALID", f"{oci.UPLOAD_CHUNK_HEADER} must be "
                                f"{oci.CHUNK_AHEAD!r} (with a Content-Range) or {oci.CHUNK_JOIN!r}")
    except RegistryError as error:
        error.headers.update(_session_headers(uploads.load(request.name, upload_id)))
        raise
    if kind == oci.CHUNK_AHEAD:
        session = uploads.store_ahead(uploads.load(request.name, upload_id), body, start)
    elif body:   # the usual case: loading the session and taking its lease are one update
        session = uploads.write_chunk(request.name, upload_id, body, start, join=kind == oci.CHUNK_JOIN)
    else:
        session = uploads.append(uploads.load(request.name, upload_id), body, start)
    return empty(202, _session_headers(session))


@route("PUT", SESSION, "/v2/{name}/blobs/uploads/{uuid}", PUSH)
def finish_upload(request: Request) -> Response:
    session = uploads.load(request.name, request.params["uuid"])
    digest = request.arg("digest")
    if not digest:
        raise RegistryError("DIGEST_INVALID", "the digest query parameter is required")
    oci.check_digest(digest)
    body = request.body
    try:
        start = _chunk_start(request, len(body)) if body else None
    except RegistryError as error:
        error.headers.update(_session_headers(session))
        raise
    uploads.commit(session, digest, body, start)
    return _created(request.name, digest)


@route("DELETE", SESSION, "/v2/{name}/blobs/uploads/{uuid}", PUSH)
def cancel_upload(request: Request) -> Response:
    session = uploads.load(request.name, request.params["uuid"])
    uploads.finish(session)
    return empty(204)
