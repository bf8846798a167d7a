"""Repository metadata operations over the DynamoDB table (see models.py for the key design).

Writes that must not be seen half-done (a tag and its manifest, a manifest and its referrer link)
go in one DynamoDB transaction; deletes that race with writes are guarded by conditions.

The blob lifecycle that garbage collection relies on lives here too, next to the writes it must
agree with (chalicelib/gc.py has the whole argument):
  - a blob becomes stored, or is linked into a repository, only through `publish_blob` (uploads)
    and `add_link` (mounts): both refresh BlobItem.touched and queue a `touch` GC event, in the same
    transaction as the link and its reverse item, and only while the blob is live;
  - a manifest item that is new in its repository increments BlobItem.refs of every blob it
    references, with the condition that the blob is live (not claimed by a sweep): a manifest PUT
    and a sweep deleting one of its blobs cannot both succeed;
  - deleting a manifest item decrements those counts and queues a `deref` GC event per blob.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib import oci
from chalicelib.config import settings
from chalicelib.errors import RegistryError
from chalicelib.storage import blobstore
from chalicelib.storage.models import (BLOB_SK, DELETING, DEREF, GC_PK, REPOS_PK, TOUCH,
                                       UPLOADS_PK, BlobItem, BlobLinkItem, GcQueueItem, LinkItem,
                                       ManifestItem, NamespaceItem, ReferrerItem, RepoItem,
                                       TableModel, TagItem, UploadItem, blob_link_sk, blob_pk,
                                       gc_blob_sk, gc_untag_sk, link_sk, manifest_sk, ns_pk,
                                       referrer_prefix, repo_pk, stamp, tag_sk)

_TRANSACTION_MAX = 100
REFERRER_ANNOTATIONS_MAX = 64 * 1024   # bigger ones stay in the manifest only
_DELETE_RETRIES = 8
_PUT_RETRIES = 10
_CONFLICT_RETRIES = 8

# The lease of a sweep on a blob it claimed (BlobItem.state = deleting, .since = its wall clock):
# the sweep deletes S3 objects only until since + LEASE_SECONDS - DELETE_MARGIN; after
# since + LEASE_SECONDS another sweep may claim the blob again, or an upload may take it over.
LEASE_SECONDS = 15.0
DELETE_MARGIN = 5.0


def wall_clock() -> float:
    """The clock of the lease protocol (a function, so that tests can move it)."""
    return time.time()


@lru_cache(maxsize=1)
def connection() -> Connection:
    cfg = settings()
    return Connection(region=cfg.region, host=cfg.endpoint)


def is_condition_failure(exc: Exception) -> bool:
    """Whether a PynamoDB write failed because its condition expression did not hold."""
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


# ---------------------------------------------------------------- transactions

class TxFailed(Exception):
    """A transaction was cancelled because conditions failed; `failed` holds their labels."""

    def __init__(self, failed: List[tuple]) -> None:
        super().__init__(f"transaction conditions failed: {failed}")
        self.failed = failed

    def kinds(self) -> Set[str]:
        return {label[0] for label in self.failed}

    def subjects(self, kind: str) -> List[str]:
        return [label[1] for label in self.failed if label[0] == kind and len(label) > 1]


class Tx:
    """A DynamoDB transaction built item by item, each with a label (a tuple such as
    ("blob", digest)) so that a cancellation says which conditions failed. A cancellation caused
    by a conflicting concurrent transaction (TransactionConflict) is retried with backoff."""

    _ORDER = ("check", "delete", "put", "update")   # PynamoDB sends its items in this order

    def __init__(self) -> None:
        self._ops: Dict[str, List[Tuple[tuple, Callable]]] = {k: [] for k in self._ORDER}

    def __len__(self) -> int:
        return sum(len(ops) for ops in self._ops.values())

    def put(self, label: tuple, model, condition=None) -> None:
        self._ops["put"].append((label, lambda tx: tx.save(model, condition=condition)))

    def check(self, label: tuple, model_class, hash_key: str, range_key: str, condition) -> None:
        self._ops["check"].append((label, lambda tx: tx.condition_check(
            model_class, hash_key, range_key, condition=condition)))

    def delete(self, label: tuple, model, condition=None) -> None:
        self._ops["delete"].append((label, lambda tx: tx.delete(model, condition=condition)))

    def update(self, label: tuple, model, actions, condition=None) -> None:
        self._ops["update"].append(
            (label, lambda tx: tx.update(model, actions=actions, condition=condition)))

    def commit(self) -> None:
        if not len(self):
            return
        labels = [label for kind in self._ORDER for label, _ in self._ops[kind]]
        for attempt in range(_CONFLICT_RETRIES):
            try:
                with TransactWrite(connection=connection()) as tx:
                    for kind in self._ORDER:
                        for _, apply in self._ops[kind]:
                            apply(tx)
                return
            except TransactWriteError as exc:
                reasons = list(getattr(exc, "cancellation_reasons", None) or [])
                codes = [getattr(r, "code", None) for r in reasons]
                failed = [label for label, code in zip(labels, codes)
                          if code == "ConditionalCheckFailed"]
                if failed:
                    raise TxFailed(failed) from exc
                conflict = "TransactionConflict" in codes or getattr(
                    exc, "cause_response_code", None) in ("TransactionConflictException",
                                                          "TransactionInProgressException")
                if not conflict or attempt == _CONFLICT_RETRIES - 1:
                    raise
                _pause_before_retry(attempt)


def _pause_before_retry(attempt: int) -> None:
    """Full-jitter exponential backoff (10 ms doubling, capped at 0.5 s) between optimistic
    retries: writers that lost a race to the same item retry at once otherwise, and lose again
    together (four clients pushing one tag exhausted immediate retries)."""
    time.sleep(random.uniform(0, min(0.5, 0.01 * 2 ** attempt)))


def _chunks(items: List, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _get_many(keys: Sequence[Tuple[type, str, str]]) -> List:
    """Strongly consistent reads of several items of any models in one BatchGetItem."""
    conn = TableModel._get_connection()
    wanted = [{"pk": {"S": pk}, "sk": {"S": sk}} for _, pk, sk in keys]
    found: Dict[Tuple[str, str], dict] = {}
    while wanted:
        answer = conn.batch_get_item(wanted, consistent_read=True)
        for raw in answer.get("Responses", {}).get(settings().table, []):
            found[(raw["pk"]["S"], raw["sk"]["S"])] = raw
        wanted = answer.get("UnprocessedKeys", {}).get(settings().table, {}).get("Keys", [])
    return [model.from_raw_data(found[(pk, sk)]) if (pk, sk) in found else None
            for model, pk, sk in keys]


# ---------------------------------------------------------------- blob lifecycle

_LIVE = BlobItem.sk.exists() & BlobItem.state.does_not_exist()


class BlobBeingDeleted(RegistryError):
    """The blob is being deleted by garbage collection: it cannot be mounted, only uploaded."""

    def __init__(self, digest: str) -> None:
        super().__init__("BLOB_UNKNOWN", "the blob is being deleted by garbage collection: "
                         "upload it instead of mounting it", detail={"digest": digest})


def _blob(digest: str) -> BlobItem:
    return BlobItem(blob_pk(digest), BLOB_SK)


def get_blob(digest: str) -> Optional[BlobItem]:
    try:
        return BlobItem.get(blob_pk(digest), BLOB_SK, consistent_read=True)
    except DoesNotExist:
        return None


def _queue_touch(tx: Tx, digest: str, touched: float, still_queued: bool = False) -> None:
    """The `touch` GC event of `digest` at `touched`; with `still_queued`, on the condition that
    the event saved before the object was written is still there (no sweep consumed it)."""
    tx.put(("queue", digest), GcQueueItem(GC_PK, gc_blob_sk(TOUCH, touched, digest)),
           condition=GcQueueItem.sk.exists() if still_queued else None)


def link_blob(tx: Tx, repo: str, digest: str, size: int, now: float,
              key: Optional[str] = None) -> None:
    """Make `digest` visible in `repo`: the link (with the blob's S3 key, so a GET reads nothing
    else) and its reverse item, in the same transaction, and the repository's item (so that a
    repository holding only blobs is listed, and deleting it, or its namespace, cannot miss them)."""
    tx.put(("link", repo), LinkItem(repo_pk(repo), link_sk(digest), size=size, created=now,
                                    key=_stored_key(digest, key)))
    tx.put(("rlink", repo), BlobLinkItem(blob_pk(digest), blob_link_sk(repo), created=now))
    touch_repository(tx, repo, now, [RepoItem.blob_only.set(RepoItem.blob_only | True)])


def touch_repository(tx: Tx, repo: str, now: float, more: Sequence = ()) -> None:
    """Bump the repository's `updated` (a delete in progress then sees the change)."""
    tx.update(("repo",), RepoItem(REPOS_PK, repo), [RepoItem.created.set(RepoItem.created | now),
                                                    RepoItem.updated.set(now), *more])


class RepositoryLimit(RegistryError):
    def __init__(self, namespace: str, limit: int) -> None:
        super().__init__("DENIED", f"namespace {namespace!r} has {limit} repositories, the "
                         "limit of this registry (BERTH_REPOS_PER_NAMESPACE): delete one first",
                         detail={"namespace": namespace, "limit": limit})


def ensure_repository(repo: str, created: Optional[RepoItem] = None) -> bool:
    """Create the repository's item unless it exists, counting it against its namespace's
    limit in the same transaction (no check-then-write); True if it was created.
    RepositoryLimit when the namespace is full. `created`: the item to write (a description…)."""
    if repo_exists(repo):
        return False
    namespace = oci.namespace_of(repo)
    limit = settings().repos_per_namespace
    now = time.time()
    tx = Tx()
    created = created or RepoItem(REPOS_PK, repo, created=now, updated=now, blob_only=True)
    tx.put(("exists",), created, condition=RepoItem.sk.does_not_exist())
    count = NamespaceItem.repositories
    tx.update(("namespace",), NamespaceItem(ns_pk(namespace), "ns"), [count.add(1)],
              condition=NamespaceItem.owner.exists() & (count.does_not_exist() | (count < limit)))
    try:
        tx.commit()
        return True
    except TxFailed as failed:
        if "exists" in failed.kinds():
            return False
    try:
        NamespaceItem.get(ns_pk(namespace), "ns", consistent_read=True)
    except DoesNotExist:       # no namespace item (an admin's push to a bare name): no count
        try:
            created.save(condition=RepoItem.sk.does_not_exist())
            return True
        except PutError as exc:
            if is_condition_failure(exc):
                return False
            raise
    raise RepositoryLimit(namespace, limit)


def forget_repository(repo: str, seen_updated: Optional[float], extra: Sequence = ()) -> None:
    """Delete the repository's item, if nothing was pushed since `seen_updated`, lowering its
    namespace's count in the same transaction; `extra`: more items to delete with it.
    TxFailed(("changed",)) if it was pushed to meanwhile."""
    try:
        _forget_repository(repo, seen_updated, extra, lower_count=True)
    except TxFailed as failed:
        if failed.kinds() != {"namespace"}:
            raise
        # a namespace from before repositories were counted, or none at all
        _forget_repository(repo, seen_updated, extra, lower_count=False)


def _forget_repository(repo: str, seen_updated: Optional[float], extra: Sequence,
                       lower_count: bool) -> None:
    tx = Tx()
    tx.delete(("changed",), RepoItem(REPOS_PK, repo),
              condition=(RepoItem.updated == seen_updated) if seen_updated is not None
              else RepoItem.sk.exists())
    for item in extra:
        tx.delete(("extra",), item)
    if lower_count:
        count = NamespaceItem.repositories
        tx.update(("namespace",), NamespaceItem(ns_pk(oci.namespace_of(repo)), "ns"),
                  [count.add(-1)], condition=count > 0)
    tx.commit()


def delete_leftovers(repo: str, deadline: float) -> bool:
    """Remove what a repository's manifests and tags leave behind: blob links (uploaded or
    mounted blobs no manifest references) and referrer entries. False if out of time."""
    while True:
        keys = [item.sk for item in LinkItem.query(
            repo_pk(repo), limit=100, attributes_to_get=["pk", "sk"], consistent_read=True)
            if item.sk.startswith(("blob#", "ref#"))]
        if not keys:
            return True
        for sk in keys:
            if sk.startswith("blob#"):
                remove_link(repo, sk[len("blob#"):])
            else:
                _delete_existing(ReferrerItem(repo_pk(repo), sk))
            if time.monotonic() > deadline:
                return False


def _stored_key(digest: str, key: Optional[str]) -> Optional[str]:
    """What BlobItem.key/LinkItem.key hold: nothing for the content address (the old layout)."""
    return None if key is None or key == blobstore.blob_key(digest) else key


def object_key(digest: str, item) -> str:
    """The S3 key of a blob's bytes, from its BlobItem or one of its LinkItems."""
    return getattr(item, "key", None) or blobstore.blob_key(digest)


def _key_is(digest: str, key: Optional[str]):
    """Condition: the BlobItem's object is still `key` (it changes only when an upload takes
    over a blob whose sweep lease expired, after the sweep unlinked it everywhere)."""
    stored = _stored_key(digest, key)
    return BlobItem.key.does_not_exist() if stored is None else BlobItem.key == stored


def publish_blob(repo: Optional[str], digest: str, size: int,
                 write_object: Callable[[Optional[str]], str],
                 session_id: Optional[str] = None) -> str:
    """Make blob `digest` stored (its S3 object written by `write_object(target)` when needed:
    at `target`, or where the writer chooses when None; it returns the key it wrote), linked
    into `repo` (if given), touched (its grace period starts again) and, with `session_id`, end
    that upload session: all in one transaction, conditioned on the BlobItem's state. Returns
    the key of the blob's object.

    - no BlobItem: write the object, then create the item (refs 0) if still absent;
    - live: the object exists (a live BlobItem always has its object): touch it if still live;
      an object this call wrote meanwhile (a concurrent upload of the same bytes won) is deleted;
    - claimed by a sweep (deleting): wait until the sweep is done (the item is gone) or its lease
      has expired; then write the object again, at the key the blob already has (links a dead
      sweep did not remove yet name it), and make the blob live, on the condition that no sweep
      claimed it again meanwhile. A sweep stops deleting S3 objects DELETE_MARGIN seconds before
      its lease ends, so an object written after the lease cannot be deleted by it.
    An object at the content address is written again on every pass: a sweep of the blob's
    previous life may have deleted it since (the key is shared); an upload's own key is not.
    When no BlobItem existed, the transaction also requires the `touch` event saved before the
    write to be still queued: a sweep that collected the digest meanwhile (a concurrent upload
    of the same bytes created the blob, a sweep deleted it, object included) consumed that event
    (oldest first, with the BlobItem), so we write again instead of recording a live blob whose
    object is gone.
    """
    give_up = wall_clock() + LEASE_SECONDS + 10
    written: Optional[str] = None
    while True:
        blob = get_blob(digest)
        touched = stamp(time.time())
        tx = Tx()
        if blob is None:
            # The event first: should we die between writing the object and the transaction, it
            # leads a sweep to the orphaned object (gc.collect_blob).
            GcQueueItem(GC_PK, gc_blob_sk(TOUCH, touched, digest)).save()
            if written is None or written == blobstore.blob_key(digest):
                written = write_object(None)
            key = written
            tx.put(("blob", digest), BlobItem(blob_pk(digest), BLOB_SK, size=size, created=touched,
                                              refs=0, touched=touched, key=_stored_key(digest, key)),
                   condition=BlobItem.sk.does_not_exist())
        elif blob.state is None:
            key = object_key(digest, blob)
            tx.update(("blob", digest), _blob(digest), [BlobItem.touched.set(touched)],
                      condition=_LIVE & _key_is(digest, key))
        elif wall_clock() <= (blob.since or 0) + LEASE_SECONDS:
            if wall_clock() > give_up:
                raise RegistryError("TOOMANYREQUESTS", "the blob is being deleted by garbage "
                                    "collection; retry", detail={"digest": digest})
            time.sleep(0.1)
            continue
        else:   # the sweep's lease has expired: take the blob over, at its own key
            key = object_key(digest, blob)
            written = write_object(key)
            tx.update(("blob", digest), _blob(digest),
                      [BlobItem.state.remove(), BlobItem.since.remove(),
                       BlobItem.touched.set(touched), BlobItem.size.set(size),
                       BlobItem.refs.set(BlobItem.refs | 0)],
                      condition=(BlobItem.state == DELETING) & (BlobItem.since == blob.since))
        if repo is not None:
            link_blob(tx, repo, digest, size, touched, key)
        _queue_touch(tx, digest, touched, still_queued=blob is None)
        if session_id is not None:
            tx.delete(("session", session_id), UploadItem(UPLOADS_PK, session_id))
        try:
            tx.commit()
            break
        except TxFailed as failed:
            if not failed.kinds() & {"blob", "queue"}:
                raise
            # the blob changed state between our read and our write, or a sweep consumed the
            # event saved before our write (it may have deleted that object): look again
    if written is not None and written != key and written != blobstore.blob_key(digest):
        blobstore.delete_object(written)   # another upload of the same bytes was published first
    return key


def add_link(repo: str, digest: str, size: int, key: Optional[str] = None) -> None:
    """Link an existing blob, whose object is `key` (from the source's link), into `repo` (a
    cross-repository mount), touching it.

    Raises BlobBeingDeleted when the blob is not live (a sweep is deleting it, so the client
    must upload it: a mount must not link to bytes about to vanish) or no longer at `key`.
    """
    touched = stamp(time.time())
    tx = Tx()
    tx.update(("blob", digest), _blob(digest), [BlobItem.touched.set(touched)],
              condition=_LIVE & _key_is(digest, key))
    link_blob(tx, repo, digest, size, touched, key)
    _queue_touch(tx, digest, touched)
    try:
        tx.commit()
    except TxFailed:
        raise BlobBeingDeleted(digest) from None


def get_link(repo: str, digest: str) -> Optional[LinkItem]:
    try:
        return LinkItem.get(repo_pk(repo), link_sk(digest))
    except DoesNotExist:
        return None


def _delete_existing(item) -> bool:
    """Delete `item`; False (and no write) if it did not exist."""
    try:
        item.delete(condition=type(item).sk.exists())
        return True
    except DeleteError as exc:
        if is_condition_failure(exc):
            return False
        raise


def remove_link(repo: str, digest: str) -> bool:
    """Unlink a blob from `repo` (blob DELETE), with the reverse item; False if not linked."""
    tx = Tx()
    tx.delete(("link", repo), LinkItem(repo_pk(repo), link_sk(digest)),
              condition=LinkItem.sk.exists())
    tx.delete(("rlink", repo), BlobLinkItem(blob_pk(digest), blob_link_sk(repo)))
    try:
        tx.commit()
        return True
    except TxFailed:
        return False


def _missing(model, repo: str, sort_keys: Dict[str, str]) -> Set[str]:
    """Which of `sort_keys` (digest -> sort key) have no item in `repo` (one BatchGet per 100)."""
    if not sort_keys:
        return set()
    found = {item.sk for item in model.batch_get(
        [(repo_pk(repo), sk) for sk in sort_keys.values()], attributes_to_get=["pk", "sk"])}
    return {digest for digest, sk in sort_keys.items() if sk not in found}


def missing_blobs(repo: str, digests: Iterable[str]) -> Set[str]:
    return _missing(LinkItem, repo, {d: link_sk(d) for d in digests})


def missing_manifests(repo: str, digests: Iterable[str]) -> Set[str]:
    return _missing(ManifestItem, repo, {d: manifest_sk(d) for d in digests})


# ---------------------------------------------------------------- manifests and tags

@dataclass
class ManifestRecord:
    """What a manifest PUT stores, parsed and validated by chalicelib.manifests."""
    digest: str
    media_type: str
    body: bytes
    blobs: List[str] = field(default_factory=list)
    children: List[str] = field(default_factory=list)
    subject: Optional[str] = None
    artifact_type: Optional[str] = None
    annotations: Optional[dict] = None


def get_tag(repo: str, tag: str, consistent: bool = False) -> Optional[TagItem]:
    try:
        return TagItem.get(repo_pk(repo), tag_sk(tag), consistent_read=consistent)
    except DoesNotExist:
        return None


def get_manifest(repo: str, digest: str, consistent: bool = False) -> Optional[ManifestItem]:
    try:
        return ManifestItem.get(repo_pk(repo), manifest_sk(digest), consistent_read=consistent)
    except DoesNotExist:
        return None


def manifest_bytes(item: ManifestItem) -> bytes:
    if item.body is not None:
        return item.body
    return blobstore.get_object(item.s3_key)


def manifest_refs(digest: str, item: ManifestItem) -> List[str]:
    """The blobs whose BlobItem.refs count this manifest item: its config and layers, and its own
    bytes when they are stored in S3 (a big manifest's body is a blob, shared by every repository
    holding that manifest)."""
    refs = list(item.blobs or [])
    if item.s3_key and item.s3_key == blobstore.blob_key(digest):
        refs.append(digest)
    return refs


class _Changed(Exception):
    """The manifest or its tag changed between our reads and our transaction: read again."""


class _BodyGone(Exception):
    """The blob holding a big manifest's bytes was claimed by a sweep: store it again."""


def _store_manifest_body(record: ManifestRecord) -> None:
    def write(target: Optional[str]) -> str:
        key = target or blobstore.blob_key(record.digest)
        blobstore.put_object(key, record.body)
        return key
    publish_blob(None, record.digest, len(record.body), write)


def put_manifest(repo: str, record: ManifestRecord, tag: Optional[str]) -> None:
    """Store a manifest, and point `tag` at it, atomically: a tag never names a missing manifest.

    A manifest item new in `repo` takes a reference on each of its blobs (and its index children)
    in the same transaction, conditioned on them being live; when they do not fit in one
    transaction (100 items), the references are taken first, in their own transactions, and
    released again if the manifest transaction fails: a failure can over-count (a blob kept too
    long), never under-count (a blob deleted while used).
    """
    inline = len(record.body) <= settings().inline_manifest_max
    refs = list(record.blobs)
    if not inline:
        _store_manifest_body(record)
        refs.append(record.digest)
    for attempt in range(_PUT_RETRIES):
        if attempt:
            _pause_before_retry(attempt)
        now = time.time()
        keys = [(ManifestItem, repo_pk(repo), manifest_sk(record.digest))]
        if tag is not None:
            keys.append((TagItem, repo_pk(repo), tag_sk(tag)))
        found = _get_many(keys)
        existing = found[0]
        old = found[1].digest if tag is not None and found[1] is not None else None
        try:
            if existing is None:
                _put_new_manifest(repo, record, tag, old, refs, inline, now)
            else:
                _put_manifest_again(repo, record, tag, old, now)
            return
        except _Changed:
            continue
        except _BodyGone:
            _store_manifest_body(record)
    raise RegistryError("TOOMANYREQUESTS", "the manifest or its tag kept changing; retry")


def _tag_and_companions(tx: Tx, repo: str, record: ManifestRecord, tag: Optional[str],
                        old: Optional[str], now: float) -> None:
    """The items every manifest PUT writes besides the manifest: tag, referrer, repository, and
    the `untag` GC event of a manifest that may have become untagged."""
    if tag is not None:
        tx.put(("tag",), TagItem(repo_pk(repo), tag_sk(tag), digest=record.digest,
                                 media_type=record.media_type, size=len(record.body),
                                 updated=now),
               condition=(TagItem.digest == old) if old else TagItem.sk.does_not_exist())
        if old and old != record.digest:
            tx.put(("untag", old), GcQueueItem(GC_PK, gc_untag_sk(now, repo, old)))
    else:
        tx.put(("untag", record.digest), GcQueueItem(GC_PK, gc_untag_sk(now, repo, record.digest)))
    if record.subject:
        small = len(json.dumps(record.annotations or {})) <= REFERRER_ANNOTATIONS_MAX
        tx.put(("referrer",), ReferrerItem(
            repo_pk(repo), referrer_prefix(record.subject) + record.digest,
            media_type=record.media_type, size=len(record.body),
            artifact_type=record.artifact_type,
            annotations=(record.annotations or None) if small else None,
            annotations_in_manifest=None if small else True))
    touch_repository(tx, repo, now, [RepoItem.blob_only.remove()])


def _take_ref(tx: Tx, kind: str, repo: str, digest: str) -> None:
    if kind == "blob":
        tx.update(("blob", digest), _blob(digest), [BlobItem.refs.add(1)], condition=_LIVE)
    else:
        tx.update(("child", digest), ManifestItem(repo_pk(repo), manifest_sk(digest)),
                  [ManifestItem.parents.add(1)], condition=ManifestItem.sk.exists())


def _put_new_manifest(repo: str, record: ManifestRecord, tag: Optional[str], old: Optional[str],
                      refs: List[str], inline: bool, now: float) -> None:
    item = ManifestItem(
        repo_pk(repo), manifest_sk(record.digest),
        body=record.body if inline else None,
        s3_key=None if inline else blobstore.blob_key(record.digest),
        media_type=record.media_type, size=len(record.body), blobs=record.blobs,
        children=record.children, subject=record.subject, created=now, version=1, pushed=now)
    tx = Tx()
    tx.put(("manifest",), item, condition=ManifestItem.sk.does_not_exist())
    _tag_and_companions(tx, repo, record, tag, old, now)
    wanted = [("blob", d) for d in refs] + [("child", c) for c in record.children]
    taken: List[Tuple[str, str]] = []
    try:
        if len(tx) + len(wanted) <= _TRANSACTION_MAX:
            for kind, digest in wanted:
                _take_ref(tx, kind, repo, digest)
            tx.commit()
            return
        for chunk in _chunks(wanted, _TRANSACTION_MAX):   # too many for one transaction
            refs_tx = Tx()
            for kind, digest in chunk:
                _take_ref(refs_tx, kind, repo, digest)
            refs_tx.commit()
            taken.extend(chunk)
        tx.commit()
    except TxFailed as failed:
        _release_taken(repo, taken, now)
        _raise_for_put(failed, record, inline)
    except BaseException:
        _release_taken(repo, taken, now)
        raise


def _release_taken(repo: str, taken: List[Tuple[str, str]], now: float) -> None:
    if taken:
        release(repo, [d for k, d in taken if k == "blob"], [d for k, d in taken if k == "child"],
                now, enqueue_children=False)


def _raise_for_put(failed: TxFailed, record: ManifestRecord, inline: bool):
    kinds = failed.kinds()
    if kinds & {"manifest", "tag"}:
        raise _Changed() from None
    blobs = failed.subjects("blob")
    if not inline and record.digest in blobs:
        raise _BodyGone() from None
    if blobs:
        raise RegistryError("MANIFEST_BLOB_UNKNOWN", "the manifest references blobs that are being "
                            "deleted by garbage collection: push them again",
                            detail={"digests": sorted(blobs)}) from None
    children = failed.subjects("child")
    if children:
        raise RegistryError("MANIFEST_UNKNOWN", "the index references manifests that are not in "
                            "this repository: push them first",
                            detail={"digests": sorted(children)}, status=400) from None
    raise _Changed() from None


def _put_manifest_again(repo: str, record: ManifestRecord, tag: Optional[str],
                        old: Optional[str], now: float) -> None:
    """PUT of a manifest already in `repo`: it holds its references already; bump its version."""
    tx = Tx()
    tx.update(("manifest",), ManifestItem(repo_pk(repo), manifest_sk(record.digest)),
              [ManifestItem.version.add(1), ManifestItem.pushed.set(now)],
              condition=ManifestItem.sk.exists())
    _tag_and_companions(tx, repo, record, tag, old, now)
    try:
        tx.commit()
    except TxFailed:
        raise _Changed() from None


def _unref(tx: Tx, digest: str, now: float) -> None:
    tx.update(("blob", digest), _blob(digest), [BlobItem.refs.add(-1)],
              condition=BlobItem.sk.exists())
    tx.put(("queue", digest), GcQueueItem(GC_PK, gc_blob_sk(DEREF, now, digest)))


def release(repo: str, blobs: List[str], children: List[str], now: float,
            enqueue_children: bool = True) -> None:
    """Give back references a deleted (or never stored) manifest item held: decrement the blobs'
    refs, queueing a `deref` GC event for each, and the children's parents (queueing an `untag`
    event: an index's child may now be an unreferenced untagged manifest). Items that no longer
    exist are skipped."""
    for chunk in _chunks(blobs, _TRANSACTION_MAX // 2):
        tx = Tx()
        for digest in chunk:
            _unref(tx, digest, now)
        try:
            tx.commit()
        except TxFailed:   # some BlobItem is missing (should not happen): one by one
            for digest in chunk:
                one = Tx()
                _unref(one, digest, now)
                try:
                    one.commit()
                except TxFailed:
                    pass
    for child in children:
        tx = Tx()
        tx.update(("child", child), ManifestItem(repo_pk(repo), manifest_sk(child)),
                  [ManifestItem.parents.add(-1)], condition=ManifestItem.sk.exists())
        if enqueue_children:
            tx.put(("untag", child), GcQueueItem(GC_PK, gc_untag_sk(now, repo, child)))
        try:
            tx.commit()
        except TxFailed:
            pass


def delete_manifest(repo: str, digest: str, *, expect_version: Optional[int] = None,
                    only_if_unused: bool = False) -> bool:
    """Delete a manifest with every tag that points to it; False if it does not exist.

    A concurrent tag write bumps the manifest's version, which fails this transaction's condition;
    we then look again, so no tag is left pointing at a deleted manifest. The references the
    manifest held are released in the same transaction when they fit, else right after it.

    For garbage collection: with `expect_version`, delete only that version (False if it changed),
    and with `only_if_unused`, only while no tag points to it and no index lists it.
    """
    refs_inline = True
    for attempt in range(_DELETE_RETRIES):
        if attempt:
            _pause_before_retry(attempt)
        item = get_manifest(repo, digest, consistent=True)
        if item is None:
            return False
        if expect_version is not None and int(item.version) != expect_version:
            return False
        if only_if_unused and (item.parents or 0) > 0:
            return False
        tags = [t for t in TagItem.query(repo_pk(repo), TagItem.sk.startswith("tag#"),
                                         filter_condition=TagItem.digest == digest,
                                         consistent_read=True)]
        if only_if_unused and tags:
            return False
        room = _TRANSACTION_MAX - 2
        for extra in _chunks(tags[room:], _TRANSACTION_MAX):   # very many tags: drop them first
            with TransactWrite(connection=connection()) as tx:
                for tag in extra:
                    tx.delete(tag, condition=TagItem.digest == digest)
        now = time.time()
        refs = manifest_refs(digest, item)
        condition = ManifestItem.version == item.version
        if only_if_unused:
            condition &= ManifestItem.parents.does_not_exist() | (ManifestItem.parents <= 0)
        tx = Tx()
        tx.delete(("manifest",), item, condition=condition)
        for tag in tags[:room]:
            tx.delete(("tag",), tag, condition=TagItem.digest == digest)
        if item.subject:
            tx.delete(("referrer",), ReferrerItem(repo_pk(repo),
                                                  referrer_prefix(item.subject) + digest))
        inline_refs = refs[:(_TRANSACTION_MAX - len(tx)) // 2] if refs_inline else []
        for blob in inline_refs:
            _unref(tx, blob, now)
        try:
            tx.commit()
        except TxFailed as failed:
            if expect_version is not None:
                return False
            if "blob" in failed.kinds():
                refs_inline = False     # a BlobItem is missing: release them one by one after
            continue
        release(repo, refs[len(inline_refs):], list(item.children or []), now)
        if item.s3_key and item.s3_key != blobstore.blob_key(digest):
            blobstore.delete_object(item.s3_key)     # the layout before big bodies were blobs
        return True
    if expect_version is not None:
        return False
    raise RegistryError("TOOMANYREQUESTS", "the manifest kept changing while being deleted; retry")


def delete_tag(repo: str, tag: str) -> bool:
    """Delete a tag; its manifest may now be untagged (an `untag` GC event records it)."""
    for attempt in range(_DELETE_RETRIES):
        if attempt:
            _pause_before_retry(attempt)
        item = get_tag(repo, tag, consistent=True)
        if item is None:
            return False
        tx = Tx()
        tx.delete(("tag",), item, condition=TagItem.digest == item.digest)
        tx.put(("untag", item.digest),
               GcQueueItem(GC_PK, gc_untag_sk(time.time(), repo, item.digest)))
        try:
            tx.commit()
            return True
        except TxFailed:
            continue
    raise RegistryError("TOOMANYREQUESTS", "the tag kept changing while being deleted; retry")


# ---------------------------------------------------------------- listings

def repo_exists(repo: str) -> bool:
    try:
        RepoItem.get(REPOS_PK, repo, attributes_to_get=["pk"])
        return True
    except DoesNotExist:
        return False


def repo_has_content(repo: str) -> bool:
    """Whether the repository exists for its tag list: a manifest was pushed, or it was
    created explicitly (console), not only blobs uploaded."""
    try:
        return not RepoItem.get(REPOS_PK, repo, attributes_to_get=["pk", "blob_only"]).blob_only
    except DoesNotExist:
        return False


def _page(model, hash_key: str, prefix: str, last: Optional[str], n: int) -> Tuple[List[str], bool]:
    """Up to `n` sort keys after `last` under `prefix`, in order, and whether more follow."""
    if last is not None:
        condition = model.sk > prefix + last
    elif prefix:
        condition = model.sk.startswith(prefix)
    else:
        condition = None
    names: List[str] = []
    for item in model.query(hash_key, condition, limit=n + 1, attributes_to_get=["sk"],
                            page_size=min(n + 1, 1000)):
        if not item.sk.startswith(prefix):
            break
        names.append(item.sk[len(prefix):])
        if len(names) > n:
            break
    return names[:n], len(names) > n


def list_tags(repo: str, n: int, last: Optional[str]) -> Tuple[List[str], bool]:
    return _page(TagItem, repo_pk(repo), "tag#", last, n)


def list_repositories(n: int, last: Optional[str]) -> Tuple[List[str], bool]:
    return _page(RepoItem, REPOS_PK, "", last, n)


def referrer_annotations(repo: str, item: ReferrerItem) -> Optional[dict]:
    """A referrer's annotations: copied into its item, or, when too big, from its manifest."""
    if not item.annotations_in_manifest:
        return item.annotations
    manifest = get_manifest(repo, item.sk.rsplit("#", 1)[1])
    if manifest is None:
        return None
    return json.loads(manifest_bytes(manifest)).get("annotations")


def list_referrers(repo: str, subject: str) -> List[ReferrerItem]:
    prefix = referrer_prefix(subject)
    return list(ReferrerItem.query(repo_pk(repo), ReferrerItem.sk.startswith(prefix)))
