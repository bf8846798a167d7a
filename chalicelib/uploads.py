"""The blob upload engine: sessions whose state lives in DynamoDB and S3, not in memory.

A session may be fed by many requests, each possibly served by a different Lambda instance, so
everything needed to resume it is in its UploadItem: the offset, the S3 multipart upload and its
parts, and a "tail" object holding bytes not yet in a part (S3 parts other than the last must be
at least 5 MiB; clients may send chunks of any size).

The digest is verified before a blob becomes visible. hashlib cannot save and resume its state, so
each process keeps the running hash of the sessions it fed in memory (`_hashes`); it is used only
when it covers exactly the session's current offset. Otherwise (another instance took part) the
assembled object is read back from S3 and hashed at commit time: slower, never wrong.
"""
from __future__ import annotations

import functools
import threading
import time
import uuid
from collections import OrderedDict
from typing import Optional, Tuple

from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib import oci
from chalicelib.errors import RegistryError
from chalicelib.storage import blobstore
from chalicelib.storage.metadata import is_condition_failure, publish_blob
from chalicelib.storage.models import UPLOADS_PK, UploadItem

PART_MIN = 5 * 1024 * 1024   # S3's minimum size of every part but the last
_HASH_CACHE_SIZE = 64


class _RunningHashes:
    """upload id -> (offset covered, sha256 object), a small thread-safe LRU."""

    def __init__(self, size: int) -> None:
        self._items: "OrderedDict[str, Tuple[int, object]]" = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, upload_id: str, offset: int):
        with self._lock:
            entry = self._items.get(upload_id)
            if entry is None or entry[0] != offset:
                return None
            self._items.move_to_end(upload_id)
            return entry[1]

    def put(self, upload_id: str, offset: int, hasher) -> None:
        with self._lock:
            self._items[upload_id] = (offset, hasher)
            self._items.move_to_end(upload_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        with self._lock:
            self._items.pop(upload_id, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_hashes = _RunningHashes(_HASH_CACHE_SIZE)


def forget_running_hashes() -> None:
    """Drop every in-memory hash, as a fresh Lambda instance would have none (tests use this)."""
    _hashes.clear()


def range_header(offset: int) -> str:
    """The Range header value for `offset` bytes received (distribution answers 0-0 when empty)."""
    return f"0-{max(offset - 1, 0)}"


def start(repo: str) -> UploadItem:
    now = time.time()
    session = UploadItem(UPLOADS_PK, uuid.uuid4().hex, repo=repo, offset=0, parts=[],
                         tail_size=0, created=now, updated=now)
    session.save(condition=UploadItem.sk.does_not_exist())
    _hashes.put(session.sk, 0, oci.new_hasher())
    return session


def load(repo: str, upload_id: str) -> UploadItem:
    """The session `upload_id` of `repo`, or BLOB_UPLOAD_UNKNOWN."""
    if not upload_id or len(upload_id) > 64 or not upload_id.isalnum():
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", detail={"uuid": upload_id[:64]})
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


def location(session: UploadItem) -> str:
    return f"/v2/{session.repo}/blobs/uploads/{session.sk}"


def _staging_key(session: UploadItem, what: str) -> str:
    return blobstore.upload_prefix(session.sk) + what


def _staging_gone(exc: Exception) -> bool:
    """S3 no longer has the session's multipart upload or tail: aborted by the bucket's
    lifecycle rule or by garbage collection of an abandoned session."""
    error = getattr(exc, "response", None) or {}
    return error.get("Error", {}).get("Code") in ("NoSuchUpload", "NoSuchKey")


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


@_expires_cleanly
def append(session: UploadItem, data: bytes, start_offset: Optional[int] = None) -> UploadItem:
    """Add `data` at the end of the session; `start_offset` (from Content-Range) must be the end."""
    if start_offset is not None and start_offset != session.offset:
        raise _range_error(session, f"chunk starts at {start_offset}, but {session.offset} bytes "
                                    "were received: chunks must be sent in order, without overlap")
    if not data:
        return session
    old_offset = session.offset
    hasher = _hashes.get(session.sk, old_offset)
    if hasher is not None:
        hasher = hasher.copy()
        hasher.update(data)
    pending = data
    if session.tail_key:
        pending = blobstore.get_object(session.tail_key) + data
    old_tail = session.tail_key
    if len(pending) >= PART_MIN:
        _write_part(session, pending)
        session.tail_key, session.tail_size = None, 0
    else:
        session.tail_key = _staging_key(session, f"tail-{uuid.uuid4().hex}")
        blobstore.put_object(session.tail_key, pending)
        session.tail_size = len(pending)
    session.offset = old_offset + len(data)
    session.updated = time.time()
    try:
        session.save(condition=(UploadItem.offset == old_offset))
    except PutError as exc:
        if is_condition_failure(exc):
            raise RegistryError("BLOB_UPLOAD_INVALID",
                                "another request changed this upload at the same time") from None
        raise
    if old_tail:
        blobstore.delete_object(old_tail)
    if hasher is not None:
        _hashes.put(session.sk, session.offset, hasher)
    else:
        _hashes.drop(session.sk)
    return session


def _write_part(session: UploadItem, data: bytes) -> None:
    key = _staging_key(session, "data")
    if session.mpu_id is None:
        session.mpu_id = blobstore.create_multipart(key)
    number = len(session.parts) + 1
    etag = blobstore.upload_part(key, session.mpu_id, number, data)
    session.parts = list(session.parts) + [[number, etag, len(data)]]


@_expires_cleanly
def commit(session: UploadItem, digest: str, final_data: bytes = b"") -> None:
    """Finish the upload as blob `digest`: verify, store content-addressed, link, clean up."""
    algorithm, _ = oci.parse_digest(digest)
    if final_data and session.offset == 0:
        store_blob(session.repo, digest, final_data, session)
        return
    session = append(session, final_data)
    hasher = _hashes.get(session.sk, session.offset) if algorithm == "sha256" else None
    if hasher is not None and f"sha256:{hasher.hexdigest()}" != digest:
        _reject(session, digest)
    source = _assemble(session)
    if hasher is None and _hash_object(source, session.offset, algorithm) != digest:
        _reject(session, digest)
    _publish(session.repo, digest, session.offset, source)
    finish(session)


def store_blob(repo: str, digest: str, data: bytes,
               session: Optional[UploadItem] = None) -> None:
    """Store a blob that came whole in one request (monolithic POST or PUT): no staging at all."""
    algorithm, _ = oci.parse_digest(digest)
    if oci.digest_of(data, algorithm) != digest:
        if session is not None:
            finish(session)
        raise _digest_mismatch(digest)
    publish_blob(repo, digest, len(data),
                 lambda: blobstore.put_object(blobstore.blob_key(digest), data),
                 session.sk if session is not None else None)
    if session is not None:
        _hashes.drop(session.sk)


def _digest_mismatch(digest: str) -> RegistryError:
    return RegistryError("DIGEST_INVALID", f"the uploaded content does not hash to {digest}",
                         detail={"digest": digest})


def _reject(session: UploadItem, digest: str) -> None:
    finish(session)
    raise _digest_mismatch(digest)


def _assemble(session: UploadItem) -> Optional[str]:
    """Make the session's bytes one S3 object and return its key (None when there are none)."""
    if session.mpu_id is None:
        return session.tail_key
    key = _staging_key(session, "data")
    parts = [(n, etag) for n, etag, _ in session.parts]
    if session.tail_key:
        parts.append((len(parts) + 1,
                      blobstore.upload_part_copy(key, session.mpu_id, len(parts) + 1,
                                                 session.tail_key)))
    blobstore.complete_multipart(key, session.mpu_id, parts)
    return key


def _hash_object(key: Optional[str], size: int, algorithm: str) -> str:
    hasher = oci.new_hasher(algorithm)
    if key is not None and size:
        for chunk in blobstore.iter_object(key):
            hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"


def _publish(repo: str, digest: str, size: int, source: Optional[str]) -> None:
    """Make the verified bytes at `source` blob `digest` of `repo` (see metadata.publish_blob:
    the content-addressed object is written only when the blob is not stored, or is being taken
    back from a garbage-collection sweep)."""
    def write_object() -> None:
        if source is None:
            blobstore.put_object(blobstore.blob_key(digest), b"")
        else:
            blobstore.copy_object(source, blobstore.blob_key(digest), size)
    publish_blob(repo, digest, size, write_object)


def finish(session: UploadItem) -> None:
    """Delete a session and everything it staged in S3 (after commit, cancel or rejection)."""
    _hashes.drop(session.sk)
    if session.mpu_id:
        blobstore.abort_multipart(_staging_key(session, "data"), session.mpu_id)
    blobstore.delete_prefix(blobstore.upload_prefix(session.sk))
    try:
        UploadItem(UPLOADS_PK, session.sk).delete()
    except Exception:  # already gone: the caller's outcome does not change
        pass
