"""Repository metadata operations over the DynamoDB table (see models.py for the key design).

Writes that must not be seen half-done (a tag and its manifest, a manifest and its referrer link)
go in one DynamoDB transaction; deletes that race with writes are guarded by conditions.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Set, Tuple

from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.config import settings
from chalicelib.errors import RegistryError
from chalicelib.storage import blobstore
from chalicelib.storage.models import (REPOS_PK, LinkItem, ManifestItem, ReferrerItem, RepoItem,
                                       TagItem, link_sk, manifest_sk, referrer_prefix, repo_pk,
                                       tag_sk)

_TRANSACTION_MAX = 100
_DELETE_RETRIES = 5


@lru_cache(maxsize=1)
def connection() -> Connection:
    cfg = settings()
    return Connection(region=cfg.region, host=cfg.endpoint)


# ---------------------------------------------------------------- blobs linked to repositories

def link_blob(tx: TransactWrite, repo: str, digest: str, size: int, now: float) -> None:
    tx.save(LinkItem(repo_pk(repo), link_sk(digest), size=size, created=now))


def add_link(repo: str, digest: str, size: int) -> None:
    LinkItem(repo_pk(repo), link_sk(digest), size=size, created=time.time()).save()


def get_link(repo: str, digest: str) -> Optional[LinkItem]:
    try:
        return LinkItem.get(repo_pk(repo), link_sk(digest))
    except DoesNotExist:
        return None


def is_condition_failure(exc: Exception) -> bool:
    """Whether a PynamoDB write failed because its condition expression did not hold."""
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


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
    return _delete_existing(LinkItem(repo_pk(repo), link_sk(digest)))


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


def get_tag(repo: str, tag: str) -> Optional[TagItem]:
    try:
        return TagItem.get(repo_pk(repo), tag_sk(tag))
    except DoesNotExist:
        return None


def get_manifest(repo: str, digest: str) -> Optional[ManifestItem]:
    try:
        return ManifestItem.get(repo_pk(repo), manifest_sk(digest))
    except DoesNotExist:
        return None


def manifest_bytes(item: ManifestItem) -> bytes:
    if item.body is not None:
        return item.body
    return blobstore.get_object(item.s3_key)


def put_manifest(repo: str, record: ManifestRecord, tag: Optional[str]) -> None:
    """Store a manifest, and point `tag` at it, atomically: a tag never names a missing manifest."""
    now = time.time()
    inline = len(record.body) <= settings().inline_manifest_max
    if not inline:
        blobstore.put_object(blobstore.manifest_key(record.digest), record.body)
    item = ManifestItem(repo_pk(repo), manifest_sk(record.digest))
    with TransactWrite(connection=connection()) as tx:
        tx.update(item, actions=[
            ManifestItem.body.set(record.body) if inline else ManifestItem.body.remove(),
            ManifestItem.s3_key.remove() if inline
            else ManifestItem.s3_key.set(blobstore.manifest_key(record.digest)),
            ManifestItem.media_type.set(record.media_type),
            ManifestItem.size.set(len(record.body)),
            ManifestItem.blobs.set(record.blobs),
            ManifestItem.children.set(record.children),
            ManifestItem.subject.set(record.subject) if record.subject
            else ManifestItem.subject.remove(),
            ManifestItem.created.set(ManifestItem.created | now),
            ManifestItem.version.add(1),
        ])
        if tag is not None:
            tx.save(TagItem(repo_pk(repo), tag_sk(tag), digest=record.digest,
                            media_type=record.media_type, size=len(record.body), updated=now))
        if record.subject:
            tx.save(ReferrerItem(repo_pk(repo), referrer_prefix(record.subject) + record.digest,
                                 media_type=record.media_type, size=len(record.body),
                                 artifact_type=record.artifact_type,
                                 annotations=record.annotations or None))
        tx.update(RepoItem(REPOS_PK, repo), actions=[RepoItem.created.set(RepoItem.created | now),
                                                     RepoItem.updated.set(now)])


def delete_manifest(repo: str, digest: str) -> bool:
    """Delete a manifest with every tag that points to it; False if it does not exist.

    A concurrent tag write bumps the manifest's version, which fails this transaction's condition;
    we then look again, so no tag is left pointing at a deleted manifest.
    """
    for _ in range(_DELETE_RETRIES):
        item = get_manifest(repo, digest)
        if item is None:
            return False
        tags = [t for t in TagItem.query(repo_pk(repo), TagItem.sk.startswith("tag#"),
                                         filter_condition=TagItem.digest == digest,
                                         consistent_read=True)]
        room = _TRANSACTION_MAX - 2
        for extra in _chunks(tags[room:], _TRANSACTION_MAX):   # very many tags: drop them first
            with TransactWrite(connection=connection()) as tx:
                for tag in extra:
                    tx.delete(tag, condition=TagItem.digest == digest)
        try:
            with TransactWrite(connection=connection()) as tx:
                tx.delete(item, condition=ManifestItem.version == item.version)
                for tag in tags[:room]:
                    tx.delete(tag, condition=TagItem.digest == digest)
                if item.subject:
                    tx.delete(ReferrerItem(repo_pk(repo), referrer_prefix(item.subject) + digest))
        except TransactWriteError:
            continue
        if item.s3_key:
            blobstore.delete_object(item.s3_key)
        return True
    raise RegistryError("TOOMANYREQUESTS", "the manifest kept changing while being deleted; retry")


def delete_tag(repo: str, tag: str) -> bool:
    return _delete_existing(TagItem(repo_pk(repo), tag_sk(tag)))


def _chunks(items: List, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


# ---------------------------------------------------------------- listings

def repo_exists(repo: str) -> bool:
    try:
        RepoItem.get(REPOS_PK, repo, attributes_to_get=["pk"])
        return True
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


def list_referrers(repo: str, subject: str) -> List[ReferrerItem]:
    prefix = referrer_prefix(subject)
    return list(ReferrerItem.query(repo_pk(repo), ReferrerItem.sk.startswith(prefix)))
