"""The blob upload engine: sessions whose state lives in DynamoDB and S3, not in memory.

A session may be fed by many requests, each possibly served by a different Lambda instance, so
everything needed to resume it is in its UploadItem: the offset, the S3 multipart upload and its
parts, a "tail" object holding bytes not yet in a part (S3 parts other than the last must be at
least 5 MiB; clients may send chunks of any size), and the running hash state (SHA-256, or
SHA-512 for a session started with distribution-spec's `?digest-algorithm=sha512`)
(chalicelib/resumable_hash.py), so whichever instance gets the next chunk continues the hash.

Concurrency: a request that writes a chunk first takes the session's writer lease (a conditional
update: the offset it saw, no live lease), so two requests never write the same S3 part; the one
that loses answers 416 with the session's real Range and the session stays usable.

Chunks sent ahead (`Berth-Upload-Chunk`, chalicelib/oci.py; what `berth proxy` does): a chunk
that starts after the bytes received so far is stored as `uploads/<id>/ahead-<start>` and changes
nothing else; the in-order chunk that ends at <start>, sent with `join`, reads it back, hashes it
after its own bytes and writes both (a part of 8 MiB from two 4 MiB chunks). So two requests of
one upload run at once on two instances, with the same S3 traffic as a tail: the hash is still
updated strictly in order, and nothing is visible before the commit verified the digest.

Pieces put in S3 by the client (`Berth-Upload-Piece`, chalicelib/oci.py; what `berth proxy`
does when S3 is reachable): the bytes never pass through API Gateway or Lambda. piece_url() signs
a PUT of exactly that piece (length and SHA-256 are signed headers, so S3 refuses other bytes)
at `uploads/<id>/piece-<start>-<length>-<sha256>`; take_piece() then reads it once, in order,
under the writer lease, continues the hash, checks the piece's own SHA-256 (defence in depth:
a store that did not check the checksum), and has S3 copy it into the next part (UploadPartCopy,
only if its ETag is still the one read: what was hashed is what is copied). A piece under 5 MiB
becomes the tail as it is; after a tail, the piece's bytes are written with it as a chunk's.

Commit cost does not grow with the blob: the digest is checked against the saved hash state, and
the multipart upload is assembled at blobstore.assembled_key(upload id), which becomes the blob's
object (BlobItem.key): no copy, no read-back. Only what cannot take that path pays more: a tail
under 5 MiB with no part before it is copied to the content address (bounded), and a session
without a usable hash state (created before hash states existed, or committed with another
algorithm than the one it was started for) is read back from S3 to be hashed, as before.
"""
from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from chalicelib import oci, resumable_hash
from chalicelib.errors import RegistryError
from chalicelib.storage import blobstore
from chalicelib.storage.metadata import is_condition_failure, publish_blob
from chalicelib.storage.models import UPLOADS_PK, UploadItem

PART_MIN = 5 * 1024 * 1024   # S3's minimum size of every part but the last
# How far past the bytes received a chunk sent ahead may start: two chunks of a Lambda-sized body.
AHEAD_WINDOW = 16 * 1024 * 1024
# Pieces put in S3 by the client (`Berth-Upload-Piece`): taking one in reads it once, so its size
# bounds a request's time (64 MiB: about a second from S3 in the region); several may be in flight.
PIECE_MAX = 64 * 1024 * 1024
PIECE_WINDOW = 4 * PIECE_MAX
PIECE_URL_SECONDS = 900
# How long a request may hold a session while it writes a chunk: longer than the API function's
# timeout (120 s), so a lease outlives its writer only when the writer died.
WRITER_LEASE_SECONDS = 130


def range_header(offset: int) -> str:
    """The Range header value for `offset` bytes received (distribution answers 0-0 when empty)."""
    return f"0-{max(offset - 1, 0)}"


def _new_hash_state(algorithm: str) -> Optional[bytes]:
    return resumable_hash.ResumableHash(algorithm).state() if resumable_hash.available() else None


def start(repo: str, algorithm: str = "sha256") -> UploadItem:
    """A new session whose running hash is `algorithm`'s: what the commit's digest will use
    (distribution-spec's `digest-algorithm`; another one at commit costs a read-back)."""
    now = time.time()
    session = UploadItem(UPLOADS_PK, uuid.uuid4().hex, repo=repo, offset=0, parts=[],
                         tail_size=0, created=now, updated=now,
                         hash_state=_new_hash_state(algorithm))
    session.save(condition=UploadItem.sk.does_not_exist())
    return session


def _check_upload_id(upload_id: str) -> None:
    if not upload_id or len(upload_id) > 64 or not upload_id.isalnum():
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id[:64]})


def load(repo: str, upload_id: str) -> UploadItem:
    """The session `upload_id` of `repo`, or BLOB_UPLOAD_UNKNOWN."""
    _check_upload_id(upload_id)
    try:
        session = UploadItem.get(UPLOADS_PK, upload_id, consistent_read=True)
    except DoesNotExist:
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id}) from None
    if session.repo != repo:
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id})
    return session


def _range_error(session: UploadItem, message: str) -> RegistryError:
    return RegistryError("RANGE_INVALID", message, status=416,
                         headers={"Range": range_header(session.offset),
                                  "Location": location(session),
                                  "Docker-Upload-UUID": session.sk})


def _lost_race(session: UploadItem) -> RegistryError:
    """Another request changed or holds the session: 416 with where it really stands."""
    current = load(session.repo, session.sk)
    return _range_error(current, "another request is writing to this upload; resume at the "
                                 "offset in the Range header")


def location(session: UploadItem) -> str:
    return f"/v2/{session.repo}/blobs/uploads/{session.sk}"


def _staging_key(session: UploadItem, what: str) -> str:
    return blobstore.upload_prefix(session.sk) + what


def _s3_code(exc: Exception) -> Optional[str]:
    """The S3 error code of a botocore ClientError (NoSuchKey, PreconditionFailed ...)."""
    return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")


def _staging_gone(exc: Exception) -> bool:
    """S3 no longer has the session's multipart upload or tail: aborted by the bucket's
    lifecycle rule or by garbage collection of an abandoned session."""
    return _s3_code(exc) in ("NoSuchUpload", "NoSuchKey")


def _expires_cleanly(operation):
    """An upload whose staged data has expired is unknown now (404), not a server error."""
    @functools.wraps(operation)
    def wrapper(session: UploadItem, *args, **kwargs):
        from botocore.exceptions import ClientError
        try:
            return operation(session, *args, **kwargs)
        except ClientError as exc:
            if not _staging_gone(exc):
                raise
            finish(session)
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", "this upload expired (its staged data was "
                                "removed); start the upload again",
                                detail={"uuid": session.sk}) from None
    return wrapper


# ---------------------------------------------------------------- the writer lease


def _take_lease(session: UploadItem, condition) -> str:
    """Take the session's writer lease where `condition` holds and no live lease exists; the
    token that proves it is ours. A failed condition raises UpdateError."""
    token = uuid.uuid4().hex
    now = time.time()
    session.update(actions=[UploadItem.writer.set(token),
                            UploadItem.writer_until.set(now + WRITER_LEASE_SECONDS)],
                   condition=condition & (UploadItem.writer.does_not_exist()
                                          | (UploadItem.writer_until < now)))
    return token


def _load_held(repo: str, upload_id: str, start_offset: Optional[int]) -> tuple[UploadItem, str]:
    """Load the session and take its writer lease in ONE conditional update (a chunk's first
    DynamoDB round trip; the save is the second). Only when the condition fails is the
    session read to say why: unknown (404), or not at `start_offset` / busy (416)."""
    _check_upload_id(upload_id)
    condition = UploadItem.repo == repo
    if start_offset is not None:
        condition &= UploadItem.offset == start_offset
    session = UploadItem(UPLOADS_PK, upload_id)
    try:
        return session, _take_lease(session, condition)
    except UpdateError as exc:
        if not is_condition_failure(exc):
            raise
        current = load(repo, upload_id)
        if start_offset is not None and start_offset != current.offset:
            raise _out_of_order(current, start_offset) from None
        raise _lost_race(current) from None


def _hold(session: UploadItem) -> str:
    """Take the session's writer lease at the offset we saw; 416 if another request has it."""
    try:
        return _take_lease(session, UploadItem.offset == session.offset)
    except UpdateError as exc:
        if is_condition_failure(exc):
            raise _lost_race(session) from None
        raise


def _release(session: UploadItem, token: str) -> None:
    """Give the lease back after a failed write (best effort: it also expires by itself)."""
    try:
        session.update(actions=[UploadItem.writer.remove(), UploadItem.writer_until.remove()],
                       condition=UploadItem.writer == token)
    except Exception:   # gone, or no longer ours: nothing to give back
        pass


def _while_holding(session: UploadItem, token: str, work: Callable, *args) -> UploadItem:
    """`work(session, token, *args)` under our lease `token`, releasing it if the work fails."""
    try:
        return work(session, token, *args)
    except BaseException:
        _release(session, token)
        raise


def _holding(work: Callable[[UploadItem, str], UploadItem]):
    """Run `work(session, token)` under the writer lease taken first."""
    @functools.wraps(work)
    def wrapper(session: UploadItem, *args):
        return _while_holding(session, _hold(session), work, *args)
    return wrapper


# ---------------------------------------------------------------- chunks


def _resume_hash(session: UploadItem) -> Optional[resumable_hash.ResumableHash]:
    if session.hash_state is None or not resumable_hash.available():
        return None
    try:
        return resumable_hash.ResumableHash.resume(session.hash_state, int(session.offset))
    except resumable_hash.InvalidState:
        return None   # the commit reads the blob back instead


def append(session: UploadItem, data: bytes, start_offset: Optional[int] = None,
           join: bool = False) -> UploadItem:
    """Add `data` at the end of the session; `start_offset` (from Content-Range) must be the end.
    With `join`, a chunk stored ahead at the end of `data` is taken in too."""
    if start_offset is not None and start_offset != session.offset:
        raise _out_of_order(session, start_offset)
    if not data:
        return session
    return _write_chunk(session, data, join)


def write_chunk(repo: str, upload_id: str, data: bytes, start_offset: Optional[int] = None,
                join: bool = False) -> UploadItem:
    """A PATCH's chunk: append() for a session not loaded yet, one DynamoDB round trip
    cheaper (the lease update loads it)."""
    session, token = _load_held(repo, upload_id, start_offset)
    return _while_holding(session, token, _expires_cleanly(_write_held), data, join)


def _out_of_order(session: UploadItem, start_offset: int) -> RegistryError:
    return _range_error(session, f"chunk starts at {start_offset}, but {session.offset} bytes "
                                 "were received: chunks must be sent in order, without overlap")


def store_ahead(session: UploadItem, data: bytes, start_offset: int) -> UploadItem:
    """Keep a chunk that starts after the bytes received so far, for the in-order chunk that
    ends where it starts to take in (`join`). A chunk that is not ahead is an ordinary one."""
    if start_offset <= session.offset:
        return append(session, data, start_offset)
    if start_offset - session.offset > AHEAD_WINDOW or not data:
        raise _range_error(session, f"a chunk sent ahead must start within {AHEAD_WINDOW} bytes "
                                    f"after the {session.offset} bytes received and not be empty")
    blobstore.put_object(_ahead_key(session, start_offset), data)
    return session


def _ahead_key(session: UploadItem, start_offset: int) -> str:
    return _staging_key(session, f"ahead-{start_offset}")


def _take_ahead(session: UploadItem, start_offset: int) -> Optional[tuple[str, bytes]]:
    """The chunk stored ahead at `start_offset`, if any: (its key, its bytes)."""
    from botocore.exceptions import ClientError
    key = _ahead_key(session, start_offset)
    try:
        return key, blobstore.get_object(key)
    except ClientError as exc:
        if _s3_code(exc) == "NoSuchKey":
            return None
        raise


def _write_held(session: UploadItem, token: str, data: bytes, join: bool = False) -> UploadItem:
    """Write `data` (and with `join` the chunk stored ahead at its end) under the lease `token`."""
    old_offset = session.offset
    hasher = _resume_hash(session)
    ahead = _take_ahead(session, old_offset + len(data)) if join else None
    ahead_key = ahead[0] if ahead is not None else None
    pieces = [data] if ahead is None else [data, ahead[1]]
    received = sum(map(len, pieces))
    for piece in pieces:               # in order: the hash state goes on byte by byte
        if hasher is not None:
            hasher.update(piece)
    if session.tail_key:
        pieces.insert(0, blobstore.get_object(session.tail_key))
    pending = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    del ahead, pieces                  # only `pending` from here on: a Lambda's memory is small
    old_tail = session.tail_key
    _store_pending(session, pending)
    return _save_written(session, token, old_offset, received, hasher, old_tail,
                         [ahead_key] if ahead_key else [])


def _store_pending(session: UploadItem, pending: bytes) -> None:
    """Bytes not in a part yet (the old tail's and the new ones): a part if there are enough,
    else the session's new tail object."""
    if len(pending) >= PART_MIN:
        _write_part(session, pending)
        session.tail_key, session.tail_size = None, 0
    else:
        session.tail_key = _staging_key(session, f"tail-{uuid.uuid4().hex}")
        blobstore.put_object(session.tail_key, pending)
        session.tail_size = len(pending)


def _save_written(session: UploadItem, token: str, old_offset: int, received: int,
                  hasher: Optional[resumable_hash.ResumableHash], old_tail: Optional[str],
                  taken: list[str]) -> UploadItem:
    """Record `received` more bytes and give the lease back, if the lease `token` is still
    ours; then delete what the session no longer needs (the old tail, the staged objects
    `taken` in). A lost lease undoes a tail written for nothing and answers 416."""
    session.offset = old_offset + received
    session.updated = time.time()
    session.hash_state = hasher.state() if hasher is not None else None
    session.writer, session.writer_until = None, None
    try:
        session.save(condition=(UploadItem.offset == old_offset) & (UploadItem.writer == token))
    except PutError as exc:
        if not is_condition_failure(exc):
            raise
        if session.tail_key and session.tail_key != old_tail and session.tail_key not in taken:
            blobstore.delete_object(session.tail_key)
        raise _lost_race(session) from None   # our lease expired and another request went on
    for key in [old_tail] + taken:
        if key and key != session.tail_key:
            blobstore.delete_object(key)
    return session


_write_chunk = _expires_cleanly(_holding(_write_held))


def _next_part(session: UploadItem) -> tuple[str, int]:
    """(the assembled key, the next part's number), starting the multipart upload if needed."""
    key = blobstore.assembled_key(session.sk)
    if session.mpu_id is None:
        session.mpu_id = blobstore.create_multipart(key)
    return key, len(session.parts) + 1


def _write_part(session: UploadItem, data: bytes) -> None:
    key, number = _next_part(session)
    etag = blobstore.upload_part(key, session.mpu_id, number, data)
    session.parts = list(session.parts) + [[number, etag, len(data)]]


# ---------------------------------------------------------------- pieces sent straight to S3


@dataclass(frozen=True)
class Piece:
    """A piece of an upload that the client puts in S3 itself (`Berth-Upload-Piece`, oci.py)."""
    start: int
    length: int
    sha256: str        # hex, of the piece's bytes


def piece_url(session: UploadItem, piece: Piece) -> str:
    """The presigned PUT for `piece`: it may start up to PIECE_WINDOW after the bytes received
    (so several pieces of one upload travel at once) and hold up to PIECE_MAX bytes (so that
    taking it in stays far inside a Lambda's time); S3 takes only those bytes for that key."""
    if not 0 < piece.length <= PIECE_MAX:
        raise RegistryError("SIZE_INVALID", f"a piece holds 1 to {PIECE_MAX} bytes, not "
                                            f"{piece.length}")
    if not session.offset <= piece.start <= session.offset + PIECE_WINDOW:
        raise _range_error(session, f"a piece must start within {PIECE_WINDOW} bytes after the "
                                    f"{session.offset} bytes received, not at {piece.start}")
    return blobstore.presigned_put_url(_piece_key(session, piece), piece.length, piece.sha256,
                                       PIECE_URL_SECONDS)


def _piece_key(session: UploadItem, piece: Piece) -> str:
    # Every URL for this key signs the same length and checksum: its content cannot change.
    return _staging_key(session, f"piece-{piece.start}-{piece.length}-{piece.sha256}")


def take_piece(repo: str, upload_id: str, piece: Piece) -> UploadItem:
    """Take in a piece the client put at its URL; it must start at the bytes received so far."""
    session, token = _load_held(repo, upload_id, piece.start)
    return _while_holding(session, token, _expires_cleanly(_take_piece_held), piece)


def _take_piece_held(session: UploadItem, token: str, piece: Piece) -> UploadItem:
    """Read the piece once, hashing it in order (and checking it is the piece announced):
    with no tail pending, S3 copies it into the next part (or it becomes the tail itself);
    after a tail, its bytes are written with the tail's as any chunk's."""
    key, old_offset, old_tail = _piece_key(session, piece), session.offset, session.tail_key
    hasher, check = _resume_hash(session), oci.new_hasher("sha256")
    kept: Optional[list[bytes]] = [] if old_tail else None   # bytes needed only to join a tail
    data, etag, size = _open_piece(key, piece)
    for chunk in data:
        check.update(chunk)
        if hasher is not None:
            hasher.update(chunk)
        if kept is not None:
            kept.append(chunk)
    if check.hexdigest() != piece.sha256:
        blobstore.delete_object(key)
        raise RegistryError("DIGEST_INVALID", f"the piece at {piece.start} does not hash to the "
                                              f"sha256 announced for it; send it again")
    if kept is not None:
        kept.insert(0, blobstore.get_object(old_tail))
        pending = b"".join(kept)
        del kept                       # one copy of the bytes from here on
        _store_pending(session, pending)
    elif size >= PART_MIN:
        _copy_part(session, key, etag, size)
        session.tail_key, session.tail_size = None, 0
    else:
        session.tail_key, session.tail_size = key, size   # the piece itself is the tail
    return _save_written(session, token, old_offset, size, hasher, old_tail, [key])


def _open_piece(key: str, piece: Piece):
    """The piece's object: 400 if it was never put (or not whole), not an expired session."""
    from botocore.exceptions import ClientError
    try:
        data, etag, size = blobstore.open_object(key)
    except ClientError as exc:
        if _s3_code(exc) != "NoSuchKey":
            raise
        raise RegistryError("BLOB_UPLOAD_INVALID", f"no piece was put at the URL for the piece "
                                                   f"at {piece.start}; put it first") from None
    if size != piece.length:
        data.close()
        blobstore.delete_object(key)
        raise RegistryError("BLOB_UPLOAD_INVALID", f"the piece at {piece.start} holds {size} "
                                                   f"bytes, not {piece.length}")
    return data, etag, size


def _copy_part(session: UploadItem, source: str, etag: str, size: int) -> None:
    """The next part, copied by S3 from `source` as it was when read (its ETag); a piece
    that changed since is the client's 400, not a server error."""
    from botocore.exceptions import ClientError
    key, number = _next_part(session)
    try:
        part_etag = blobstore.upload_part_copy(key, session.mpu_id, number, source, if_match=etag)
    except ClientError as exc:
        if _s3_code(exc) != "PreconditionFailed":
            raise
        raise RegistryError("BLOB_UPLOAD_INVALID", "the piece changed while it was taken in; "
                                                   "put it again") from None
    session.parts = list(session.parts) + [[number, part_etag, size]]


# ---------------------------------------------------------------- commit


def commit(session: UploadItem, digest: str, final_data: bytes = b"",
           start_offset: Optional[int] = None) -> None:
    """Finish the upload as blob `digest`: verify, store, link, clean up."""
    oci.parse_digest(digest)
    if final_data and session.offset == 0 and start_offset in (None, 0):
        store_blob(session.repo, digest, final_data, session)
        return
    session = append(session, final_data, start_offset)
    _commit_held(session, digest)
    _clean_staging(session)


@_expires_cleanly
@_holding
def _commit_held(session: UploadItem, token: str, digest: str) -> None:
    algorithm, _ = oci.parse_digest(digest)
    hasher = _resume_hash(session)
    if hasher is not None and hasher.algorithm != algorithm:
        hasher = None                       # started for another algorithm: read back instead
    if hasher is not None and f"{algorithm}:{hasher.hexdigest()}" != digest:
        _reject(session, digest)
    if session.mpu_id is None:
        write = _tail_writer(session, digest, verified=hasher is not None)
    else:
        write = _AssembledWriter(session)   # assembles only if the blob is not stored yet
        if hasher is None:                  # no saved state: assemble now, to read it back
            if _hash_object(write.assemble(), session.offset, algorithm) != digest:
                _reject(session, digest)
    publish_blob(session.repo, digest, session.offset, write, session.sk)


class _AssembledWriter:
    """publish_blob's writer for a multipart session: the assembled object is the blob. Asked
    for another key (taking a blob back from a dead sweep, whose leftover links name its old
    key) it copies there, the one case where a commit copies."""

    def __init__(self, session: UploadItem) -> None:
        self.session = session
        self.key: Optional[str] = None

    def assemble(self) -> str:
        if self.key is None:
            self.key = _complete(self.session)
        return self.key

    def __call__(self, target: Optional[str]) -> str:
        assembled = self.assemble()
        if target is None or target == assembled:
            return assembled
        blobstore.copy_any(assembled, target, int(self.session.offset))
        blobstore.delete_object(assembled)
        self.key = target
        return target


def _tail_writer(session: UploadItem, digest: str, verified: bool) -> Callable[[Optional[str]], str]:
    """A blob under 5 MiB sits in the session's tail object: copied to its content address
    (at most 5 MiB, so the commit stays bounded), after hashing it if no state vouched for it."""
    algorithm, _ = oci.parse_digest(digest)
    if not verified and _hash_object(session.tail_key, session.offset, algorithm) != digest:
        _reject(session, digest)

    def write(target: Optional[str]) -> str:
        key = target or blobstore.blob_key(digest)
        if session.tail_key is None:
            blobstore.put_object(key, b"")
        else:
            blobstore.copy_object(session.tail_key, key)
        return key
    return write


def _complete(session: UploadItem) -> str:
    """Assemble the multipart upload where it stands (the tail, under 5 MiB, is copied in as
    the last part): that object is the blob. S3's refusals are the client's 400, not a 500."""
    from botocore.exceptions import ClientError
    key = blobstore.assembled_key(session.sk)
    parts = [(n, etag) for n, etag, _ in session.parts]
    try:
        if session.tail_key:
            parts.append((len(parts) + 1, blobstore.upload_part_copy(
                key, session.mpu_id, len(parts) + 1, session.tail_key)))
        blobstore.complete_multipart(key, session.mpu_id, parts)
    except ClientError as exc:
        if _staging_gone(exc):
            raise
        code = _s3_code(exc) or "error"
        finish(session)
        raise RegistryError("BLOB_UPLOAD_INVALID", f"the upload's parts could not be assembled "
                            f"({code}); start the upload again") from None
    return key


def store_blob(repo: str, digest: str, data: bytes,
               session: Optional[UploadItem] = None) -> None:
    """Store a blob that came whole in one request (monolithic POST or PUT): no staging at all."""
    algorithm, _ = oci.parse_digest(digest)
    if oci.digest_of(data, algorithm) != digest:
        if session is not None:
            finish(session)
        raise _digest_mismatch(digest)
    def write(target: Optional[str]) -> str:
        key = target or blobstore.blob_key(digest)
        blobstore.put_object(key, data)
        return key
    publish_blob(repo, digest, len(data), write, session.sk if session is not None else None)


def _digest_mismatch(digest: str) -> RegistryError:
    return RegistryError("DIGEST_INVALID", f"the uploaded content does not hash to {digest}",
                         detail={"digest": digest})


def _reject(session: UploadItem, digest: str) -> None:
    finish(session)
    raise _digest_mismatch(digest)


def _hash_object(key: Optional[str], size: int, algorithm: str) -> str:
    """The fallback: read the bytes back from S3 and hash them (cost grows with the blob)."""
    hasher = oci.new_hasher(algorithm)
    if key is not None and size:
        for chunk in blobstore.iter_object(key):
            hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"


def _clean_staging(session: UploadItem) -> None:
    """After a commit: the multipart upload if it was not needed (the blob was already stored)
    and the tail objects; the assembled object, if used, is the blob now."""
    if session.mpu_id:
        blobstore.abort_multipart(blobstore.assembled_key(session.sk), session.mpu_id)
    blobstore.delete_prefix(blobstore.upload_prefix(session.sk))


def finish(session: UploadItem) -> None:
    """Delete a session that did not become a blob and everything it staged in S3 (after a
    cancel, a rejection, or garbage collection of an abandoned session)."""
    try:
        UploadItem.get(UPLOADS_PK, session.sk, consistent_read=True)
    except DoesNotExist:
        # Published (the commit's transaction deleted the session): the assembled object is a
        # blob now. Only what staging is left may go.
        _clean_staging(session)
        return
    if session.mpu_id:
        blobstore.abort_multipart(blobstore.assembled_key(session.sk), session.mpu_id)
        blobstore.delete_object(blobstore.assembled_key(session.sk))   # assembled, not published
    blobstore.delete_prefix(blobstore.upload_prefix(session.sk))
    try:
        UploadItem(UPLOADS_PK, session.sk).delete()
    except Exception:  # already gone: the caller's outcome does not change
        pass
