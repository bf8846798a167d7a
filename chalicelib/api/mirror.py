"""Serving a mirrored repository (`<rule namespace>/<rest>` -> upstream `<prefix><rest>`).

chalicelib/api/manifests.py and blobs.py call in here when a repository falls under a mirror
rule (chalicelib/storage/mirrors.py); chalicelib/upstream.py talks to the upstream.

Manifests: by digest fetched once (immutable); by tag served from Berth while younger than the
rule's tag TTL, then revalidated with a HEAD (Docker Hub does not count HEADs against its pull
limit) and fetched only when the digest moved. Upstream down or rate-limiting: a cached copy is
served stale; without one the client gets UNAVAILABLE / TOOMANYREQUESTS naming the upstream.

Blobs: the bytes never pass through a response (Lambda answers at most 6 MB). A miss copies the
blob into S3 (hashed on the way, written content-addressed and published only when the digest
matches), then answers the usual 307 to S3:
  - up to BERTH_MIRROR_SYNC_COPY_MAX bytes the copy runs inside the request (well inside API
    Gateway's 29 s at the throughput measured, see README "Docker Hub official images");
  - bigger blobs are copied asynchronously (a thread locally; in AWS an asynchronous invocation
    of the `mirror_copy` function, which has 15 minutes). Meanwhile the client is sent to the
    upstream itself when that discloses nothing of Berth's: for a rule without credentials, the
    URL the upstream redirects an anonymous client to (Docker Hub's CDN) or the upstream's blob
    URL when it needs no auth. With credentials nothing derived from them is handed out: the
    request waits for the copy up to BERTH_MIRROR_WAIT seconds, then answers 503 UNAVAILABLE with
    Retry-After (docker and containerd retry it).
A DynamoDB claim (mirrors.claim_copy) makes concurrent misses copy once; the others wait for it.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Optional, Tuple

from chalice import Response

from chalicelib import manifests, oci
from chalicelib.api.router import Request, empty
from chalicelib.errors import RegistryError
from chalicelib.storage import blobstore, metadata, mirrors
from chalicelib.storage.mirrors import Rule
from chalicelib.upstream import Upstream, UpstreamError

log = logging.getLogger("berth.mirror")
PART = 8 * 1024 * 1024
SYNC_LEASE = 60.0           # a copy claim inside a request: the request is over by then
ASYNC_LEASE = 900.0         # an asynchronous copy: the copy function's own timeout


def sync_copy_max() -> int:
    return int(os.environ.get("BERTH_MIRROR_SYNC_COPY_MAX", str(32 * 1024 * 1024)))


def wait_budget() -> float:
    return float(os.environ.get("BERTH_MIRROR_WAIT", "20"))


def upstream_of(rule: Rule) -> Upstream:
    credentials = mirrors.load_credentials(rule.namespace) if rule.has_credentials else None
    return Upstream(rule.upstream, credentials)


def client_error(rule: Rule, error: UpstreamError) -> RegistryError:
    """What the client sees when the upstream failed and Berth has no copy."""
    detail = {"upstream": rule.upstream}
    if error.kind == "toomanyrequests":
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
        return RegistryError("TOOMANYREQUESTS", f"the upstream {rule.upstream} is rate-limiting "
                             "Berth and no cached copy exists; retry later", detail=detail,
                             headers=headers)
    if error.kind == "unknown":
        return RegistryError("MANIFEST_UNKNOWN", f"not found upstream at {rule.upstream}",
                             detail=detail)
    if error.kind == "denied":
        return RegistryError("DENIED", f"the upstream {rule.upstream} refused access: "
                             f"{error.message}", detail=detail, status=403)
    if error.kind == "refused":
        return RegistryError("DENIED", f"Berth will not contact this upstream address: "
                             f"{error.message}", detail=detail, status=403)
    return RegistryError("UNAVAILABLE", f"the upstream {rule.upstream} is unavailable and no "
                         f"cached copy exists: {error.message}", detail=detail)


# ---------------------------------------------------------------- manifests

def _store_manifest(repository: str, digest: str, media_type: str, body: bytes,
                    tag: Optional[str]) -> None:
    """Cache a manifest. It takes no references on blobs not copied yet (a cache's blobs are held
    by mirrors.hold_blob instead), so no blob has to exist first."""
    # A generic Content-Type (application/json, some upstreams) says nothing: the body's
    # mediaType decides, as it would for a push.
    record = manifests.parse(body, media_type if media_type in oci.MANIFEST_TYPES else None,
                             digest)
    record.blobs, record.children = [], []
    metadata.put_manifest(repository, record, tag)


def _fetch(rule: Rule, request: Request, reference: str, expected: Optional[str]) -> str:
    """GET a manifest from upstream, check it, cache it; returns its digest."""
    upstream_repo = rule.upstream_name(request.name)
    stated, media_type, body = upstream_of(rule).manifest(upstream_repo, reference,
                                                          request.header("accept"))
    algorithm = oci.parse_digest(expected or stated or "sha256:0")[0]
    actual = oci.digest_of(body, algorithm)
    if (expected and actual != expected) or (stated and not expected and actual != stated):
        raise UpstreamError("invalid", f"the manifest from {rule.upstream} does not hash to "
                            "its digest")
    _store_manifest(request.name, actual, media_type, body, None if expected else reference)
    return actual


def manifest_digest(request: Request, rule: Rule, tag: Optional[str],
                    digest: Optional[str]) -> str:
    """The digest to serve for a manifest GET/HEAD in a mirrored repository (cached on the way)."""
    name = request.name
    mirrors.note_pull(name)
    if digest is not None:
        if metadata.get_manifest(name, digest) is not None:
            return digest
        try:
            return _fetch(rule, request, digest, digest)
        except UpstreamError as error:
            raise client_error(rule, error) from None
    cached = metadata.get_tag(name, tag, consistent=True)
    if cached is not None and time.time() - float(cached.updated) < rule.tag_ttl:
        return cached.digest
    try:
        if cached is not None:
            stated, _, _ = upstream_of(rule).manifest(rule.upstream_name(name), tag,
                                                      request.header("accept"), method="HEAD")
            if stated == cached.digest:
                _revalidated(name, tag, cached)
                return cached.digest
        return _fetch(rule, request, tag, None)
    except (UpstreamError, RegistryError) as error:
        if cached is not None:
            log.warning(json.dumps({"mirror": rule.namespace, "stale": True,
                                    "why": getattr(error, "kind", "invalid")}))
            return cached.digest
        if isinstance(error, RegistryError):
            raise
        raise client_error(rule, error) from None


def _revalidated(name: str, tag: str, cached) -> None:
    """The upstream still has this digest: the TTL starts again."""
    from pynamodb.exceptions import UpdateError
    from chalicelib.storage.models import TagItem
    try:
        cached.update(actions=[TagItem.updated.set(time.time())],
                      condition=TagItem.digest == cached.digest)
    except UpdateError:
        pass    # the tag moved meanwhile: the next request looks again


# ---------------------------------------------------------------- blobs

def _linked(request: Request, digest: str) -> Optional[Tuple[int, str]]:
    """Size and S3 key of the blob once it is stored and linked into this repository (linking a
    blob Berth already has, e.g. from another repository, costs no upstream request)."""
    link = metadata.get_link(request.name, digest)
    if link is not None:
        return int(link.size), metadata.object_key(digest, link)
    blob = metadata.get_blob(digest)
    if blob is None or blob.state is not None:
        return None
    key = metadata.object_key(digest, blob)
    try:
        metadata.add_link(request.name, digest, int(blob.size), key)
    except RegistryError:
        return None
    mirrors.hold_blob(request.name, digest)
    return int(blob.size), key


def _stored_answer(request: Request, digest: str, stored: Tuple[int, str]) -> Response:
    size, key = stored
    headers = {"Docker-Content-Digest": digest}
    if request.method == "HEAD":
        headers["Content-Length"] = str(size)
        return Response(body="", status_code=200, headers=headers)
    headers["Location"] = blobstore.presigned_get_url(key)
    return empty(307, headers)


def serve_blob(request: Request, rule: Rule, digest: str) -> Response:
    """A blob GET/HEAD in a mirrored repository that has no link to it yet."""
    stored = _linked(request, digest)
    if stored is not None:
        return _stored_answer(request, digest, stored)
    upstream = upstream_of(rule)
    upstream_repo = rule.upstream_name(request.name)
    try:
        expected = upstream.blob_size(upstream_repo, digest)
        if request.method == "HEAD" and expected is not None:
            return Response(body="", status_code=200, headers={
                "Docker-Content-Digest": digest, "Content-Length": str(expected)})
        small = expected is not None and expected <= sync_copy_max()
        if small:
            if mirrors.claim_copy(digest, SYNC_LEASE):
                try:
                    copy_blob(rule, request.name, digest, in_request=True)
                finally:
                    mirrors.release_copy(digest)
        else:
            if mirrors.claim_copy(digest, ASYNC_LEASE):
                start_async_copy(rule, request.name, digest)
            if not rule.has_credentials and request.method == "GET":
                location = upstream.blob_location(upstream_repo, digest)
                if location:
                    return empty(307, {"Location": location, "Docker-Content-Digest": digest})
    except UpstreamError as error:
        if error.kind == "unknown":
            raise RegistryError("BLOB_UNKNOWN", f"not found upstream at {rule.upstream}",
                                detail={"digest": digest, "upstream": rule.upstream}) from None
        raise client_error(rule, error) from None
    stored = _wait_for_copy(request, digest)
    if stored is None:
        raise RegistryError("UNAVAILABLE", f"the blob is being copied from {rule.upstream}; "
                            "retry shortly", detail={"digest": digest, "upstream": rule.upstream},
                            headers={"Retry-After": "10"})
    return _stored_answer(request, digest, stored)


def _wait_for_copy(request: Request, digest: str) -> Optional[Tuple[int, str]]:
    deadline = time.monotonic() + wait_budget()
    while True:
        stored = _linked(request, digest)
        if stored is not None or time.monotonic() > deadline:
            return stored
        time.sleep(0.25)


def copy_blob(rule: Rule, repository: str, digest: str, in_request: bool = False) -> int:
    """Copy one blob from upstream into S3, verified against its digest before it becomes
    visible (the multipart upload completes, or the object is put, only after the hash matched);
    then link it into `repository` and hold it. Returns its size.

    The copy is written at the blob's content address: a crash between writing and recording
    leaves an object the GC's orphan sweep finds there (gc.collect_blob). `in_request`: a copy of
    at most BERTH_MIRROR_SYNC_COPY_MAX bytes, put in one PutObject, so the API function never
    starts (nor has to abort) a multipart upload; bigger ones are the copy function's."""
    answer = upstream_of(rule).open_blob(rule.upstream_name(repository), digest)
    algorithm = oci.parse_digest(digest)[0]
    hasher = oci.new_hasher(algorithm)
    key = blobstore.blob_key(digest)
    parts, pending, size, mpu = [], bytearray(), 0, None
    done = {"written": False}
    try:
        for chunk in answer.chunks():
            hasher.update(chunk)
            size += len(chunk)
            pending += chunk
            if in_request and size > sync_copy_max():
                raise UpstreamError("invalid", f"the blob from {rule.upstream} is bigger than "
                                    "its announced size")
            if not in_request and len(pending) >= PART:
                mpu = mpu or blobstore.create_multipart(key)
                parts.append((len(parts) + 1, blobstore.upload_part(key, mpu, len(parts) + 1,
                                                                    bytes(pending))))
                pending = bytearray()
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if actual != digest:
            raise UpstreamError("invalid", f"the blob from {rule.upstream} hashes to {actual}, "
                                f"not {digest}")
        if mpu and pending:
            parts.append((len(parts) + 1, blobstore.upload_part(key, mpu, len(parts) + 1,
                                                                bytes(pending))))

        def write_object(target: Optional[str]) -> str:
            if mpu and done["written"] and target is None:
                # asked again: a sweep of the blob's previous life may have deleted the bytes
                # this copy assembled, and they cannot be assembled twice
                raise RegistryError("TOOMANYREQUESTS", "garbage collection raced this copy of "
                                    f"{digest}; pull again", detail={"digest": digest})
            if mpu and not done["written"]:
                blobstore.complete_multipart(key, mpu, parts)
            elif not mpu:
                blobstore.put_object(key, bytes(pending))
            done["written"] = True
            if target is not None and target != key:   # taking a blob back at its old key
                blobstore.copy_any(key, target, size)
                return target
            return key
        metadata.publish_blob(repository, digest, size, write_object)
    finally:
        if mpu and not done["written"]:
            blobstore.abort_multipart(key, mpu)
    mirrors.hold_blob(repository, digest)
    return size


def start_async_copy(rule: Rule, repository: str, digest: str) -> None:
    """Copy a big blob outside the request: the `mirror_copy` Lambda function (asynchronous
    invocation) when BERTH_MIRROR_COPY_FUNCTION names it, else a thread of this process."""
    event = {"namespace": rule.namespace, "repository": repository, "digest": digest}
    function = os.environ.get("BERTH_MIRROR_COPY_FUNCTION")
    if function:
        import boto3
        from chalicelib.config import settings
        cfg = settings()
        invoker = boto3.client("lambda", region_name=cfg.region, endpoint_url=cfg.endpoint)
        invoker.invoke(FunctionName=function, InvocationType="Event",
                       Payload=json.dumps(event).encode())
        return
    threading.Thread(target=copy_event, args=(event,), daemon=True,
                     name=f"mirror-copy-{digest[7:19]}").start()


def copy_event(event: dict) -> dict:
    """The asynchronous copy (the `mirror_copy` function's body, or a local thread)."""
    digest = event["digest"]
    try:
        rule = mirrors.rules(fresh=True).get(event["namespace"])
        if rule is None:
            return {"copied": False, "why": "rule removed"}
        size = copy_blob(rule, event["repository"], digest)
        return {"copied": True, "size": size}
    except Exception as error:   # reported, never raised: a thread or an asynchronous event
        log.warning(json.dumps({"mirror_copy": digest, "failed": type(error).__name__,
                                "why": str(error)[:300]}))
        return {"copied": False}
    finally:
        mirrors.release_copy(digest)
