"""PynamoDB models of Berth's single DynamoDB table.

One table, keyed by (pk, sk), so that everything one request needs sits under one or two keys:

  pk                     sk                               item
  _repos                 <repository name>                RepoItem      (catalog, sorted by name)
  repo#<name>            tag#<tag>                        TagItem       (tags list, sorted)
  repo#<name>            manifest#<digest>                ManifestItem  (bytes inline)
  repo#<name>            blob#<digest>                    LinkItem      (blob visible in repo)
  repo#<name>            ref#<subject digest>#<digest>    ReferrerItem  (referrers API)
  blob#<digest>          blob                             BlobItem      (bytes stored in S3)
  blob#<digest>          link#<repository name>           BlobLinkItem  (reverse of a LinkItem)
  _uploads               <upload id>                      UploadItem    (upload sessions)
  _gc                    touch#<ms>#<digest>              GcQueueItem   (blob touched: due after grace)
  _gc                    deref#<ms>#<digest>              GcQueueItem   (a manifest let go of a blob)
  _gc                    untag#<ms>#<repo>#<digest>       GcQueueItem   (a manifest became untagged)
  _gc                    mirror#<ms>#<repo>               GcQueueItem   (a mirrored repo was pulled)

A manifest GET by tag reads TagItem then ManifestItem; a blob GET or HEAD reads LinkItem only
(it carries the blob's S3 key), so neither touches S3 before answering. A blob's S3 object is
where its upload assembled it (`key` on BlobItem and on every LinkItem of it; absent: the
content address blobstore.blob_key(digest)), so a commit never copies a blob.

Garbage collection (chalicelib/gc.py explains the protocol): BlobItem.refs counts the manifest
items, over all repositories, that reference the blob (as config, layer, or as the S3-stored body
of a big manifest); BlobItem.state is absent while the blob is live and "deleting" once a sweep
has claimed it. Every LinkItem has a BlobLinkItem under the blob's own partition, written and
deleted in the same transaction, so a sweep finds a blob's links with one Query. The `_gc` items
are the sweep's work queue: a sweep reads only the due ones, never the whole table.
"""
from __future__ import annotations

import threading

from pynamodb.attributes import (BinaryAttribute, BooleanAttribute, JSONAttribute, ListAttribute,
                                 NumberAttribute,
                                 UnicodeAttribute)
from pynamodb.models import Model

from chalicelib.config import settings

REPOS_PK = "_repos"
UPLOADS_PK = "_uploads"
GC_PK = "_gc"
BLOB_SK = "blob"
DELETING = "deleting"       # BlobItem.state of a blob a sweep is deleting

# GC queue kinds (sort key prefixes under GC_PK)
TOUCH = "touch"             # a blob was uploaded or mounted: garbage if unreferenced after grace
DEREF = "deref"             # a manifest item that referenced a blob was deleted
UNTAG = "untag"             # a manifest may have become untagged (untagged-manifest policy)
MIRROR = "mirror"           # a client pulled from a mirrored repository (storage/mirrors.py)


def repo_pk(name: str) -> str:
    return f"repo#{name}"


def tag_sk(tag: str) -> str:
    return f"tag#{tag}"


def manifest_sk(digest: str) -> str:
    return f"manifest#{digest}"


def link_sk(digest: str) -> str:
    return f"blob#{digest}"


def referrer_prefix(subject: str) -> str:
    return f"ref#{subject}#"


def blob_pk(digest: str) -> str:
    return f"blob#{digest}"


def blob_link_sk(repo: str) -> str:
    return f"link#{repo}"


BLOB_LINK_PREFIX = "link#"


def millis(t: float) -> int:
    return int(t * 1000)


def stamp(t: float) -> float:
    """`t` rounded down to the millisecond: the time written both in a GC queue key and in the
    item it is about, so that the two compare exactly."""
    return millis(t) / 1000


def queue_time(t: float) -> str:
    return f"{millis(t):015d}"


def gc_blob_sk(kind: str, t: float, digest: str) -> str:
    return f"{kind}#{queue_time(t)}#{digest}"


def gc_untag_sk(t: float, repo: str, digest: str) -> str:
    return f"{UNTAG}#{queue_time(t)}#{repo}#{digest}"


def gc_upto(kind: str, t: float) -> str:
    """The greatest sort key of `kind` due at `t` ("~" sorts after every digest character)."""
    return f"{kind}#{queue_time(t)}#~"


_CONNECTION_LOCK = threading.Lock()


class _Base(Model):
    class Meta:
        table_name = settings().table
        region = settings().region
        host = settings().endpoint
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)

    @classmethod
    def _get_connection(cls):
        """Every item type uses TableModel's connection: one botocore DynamoDB client per
        process. PynamoDB makes one per model class, each from the botocore session of the
        thread that first uses it, and each new session parses botocore's DynamoDB model again:
        in `make run`'s threaded server that held about 40 MiB more per thread (measured: a
        token request on a fresh thread, +47 MiB), and each client costs a Lambda cold start
        time. Every item type has the table's key schema (pk, sk) and no index, so the
        connection's description of the table is the same for all."""
        if cls._connection is None:
            with _CONNECTION_LOCK:
                if TableModel._connection is None:
                    super(_Base, TableModel)._get_connection()
                cls._connection = TableModel._connection
        return cls._connection


class TableModel(_Base):
    """The table itself, for creating it (every item model shares its key schema)."""


class RepoItem(_Base):
    created = NumberAttribute()
    updated = NumberAttribute()
    public = BooleanAttribute(null=True)    # anonymous pull allowed (see also NamespaceItem)
    # True while only blobs were pushed (no manifest yet): the repository exists, so deleting
    # it or its namespace finds them, but its tag list is NAME_UNKNOWN, as distribution's is
    blob_only = BooleanAttribute(null=True)


class TagItem(_Base):
    digest = UnicodeAttribute()
    media_type = UnicodeAttribute()
    size = NumberAttribute()
    updated = NumberAttribute()


class ManifestItem(_Base):
    body = BinaryAttribute(legacy_encoding=False, null=True)   # inline bytes, when small enough
    s3_key = UnicodeAttribute(null=True)                        # else where the bytes are
    media_type = UnicodeAttribute()
    size = NumberAttribute()
    blobs = ListAttribute(of=UnicodeAttribute, default=list)    # config + layers
    children = ListAttribute(of=UnicodeAttribute, default=list)  # an index's manifests
    subject = UnicodeAttribute(null=True)
    created = NumberAttribute()
    version = NumberAttribute(default=0)   # bumped by every tag write; guards deletes
    pushed = NumberAttribute(null=True)    # last PUT of this manifest (untagged-manifest policy)
    parents = NumberAttribute(null=True)   # index manifests of this repository that list it


class LinkItem(_Base):
    size = NumberAttribute()
    created = NumberAttribute()
    key = UnicodeAttribute(null=True)     # the blob's S3 object; absent: blob_key(digest)


class ReferrerItem(_Base):
    media_type = UnicodeAttribute()
    size = NumberAttribute()
    artifact_type = UnicodeAttribute(null=True)
    annotations = JSONAttribute(null=True)
    # Annotations too big to copy here (items stop at 400 KB) are read from the manifest.
    annotations_in_manifest = BooleanAttribute(null=True)


class BlobItem(_Base):
    size = NumberAttribute()
    created = NumberAttribute()
    refs = NumberAttribute(null=True)      # manifest items (all repositories) that reference it
    touched = NumberAttribute(null=True)   # last upload or mount (stamp()); grace runs from here
    state = UnicodeAttribute(null=True)    # absent: live; DELETING: claimed by a sweep
    since = NumberAttribute(null=True)     # when the sweep claimed it (wall clock; its lease)
    key = UnicodeAttribute(null=True)      # its S3 object; absent: blob_key(digest)


class BlobLinkItem(_Base):
    """pk blob#<digest>, sk link#<repo>: the reverse of LinkItem, for a sweep to find links."""
    created = NumberAttribute(null=True)


class GcQueueItem(_Base):
    """pk _gc: an event a sweep must look at; everything it needs is in the sort key."""


class UploadItem(_Base):
    repo = UnicodeAttribute()
    offset = NumberAttribute(default=0)          # bytes received so far
    mpu_id = UnicodeAttribute(null=True)         # S3 multipart upload, once a part was written
    parts = JSONAttribute(default=list)          # [[part number, etag, size], ...]
    tail_key = UnicodeAttribute(null=True)       # S3 object of bytes not yet in a part (< 5 MiB)
    tail_size = NumberAttribute(default=0)
    created = NumberAttribute()
    updated = NumberAttribute()
    # The SHA-256 (or SHA-512) state of the `offset` bytes so far (chalicelib/resumable_hash.py), so whichever
    # instance gets the next chunk continues it; absent: the commit reads the blob back.
    hash_state = BinaryAttribute(null=True, legacy_encoding=False)
    # A chunk being written: the request holding the session, and until when (a lease), so that
    # two requests never write the same S3 part.
    writer = UnicodeAttribute(null=True)
    writer_until = NumberAttribute(null=True)


# ---------------------------------------------------------------- accounts (auth)
#
#  _users             <name>               UserIndexItem  (the admin's user list)
#  user#<name>        user                 UserItem
#  user#<name>        ns#<namespace>       MembershipItem (the user's view: "my namespaces")
#  user#<name>        token#<id>           AccessTokenItem
#  ns#<namespace>     ns                   NamespaceItem
#  ns#<namespace>     member#<user>        MembershipItem (the namespace's view)
#  ns#<namespace>     deleted              NamespaceTombstoneItem (a deleted namespace; TTL)
#  lock#<kind>#<key>  lock                 LoginFailureItem (login backoff per source; TTL)

def user_pk(name: str) -> str:
    return f"user#{name}"


def ns_pk(namespace: str) -> str:
    return f"ns#{namespace}"


USERS_PK = "_users"


class UserIndexItem(_Base):
    """pk `_users`, sk <name>: the list of users, sorted, without scanning the table."""


class UserItem(_Base):
    password_hash = UnicodeAttribute()
    created = NumberAttribute()
    disabled = BooleanAttribute(default=False)
    admin = BooleanAttribute(default=False)
    # Console sessions carry the version they were opened under; sign-out and a password change
    # raise it, which ends every console session of the user (chalicelib/api/manage/core.py).
    session_version = NumberAttribute(null=True)
    # namespaces this user activated and still has: the per-user limit, kept by conditional
    # writes in the activation and deletion transactions
    namespaces_created = NumberAttribute(null=True)


class InviteItem(_Base):
    """pk invite#<sha256 of the code>, sk invite: a single-use sign-up invitation (BERTH_SIGNUP=
    invite) made by an administrator; `used_by` is set, conditionally, by the sign-up it admits."""
    created_by = UnicodeAttribute()
    created = NumberAttribute()
    expires = NumberAttribute()
    used_by = UnicodeAttribute(null=True)


class NamespaceItem(_Base):
    owner = UnicodeAttribute()
    created = NumberAttribute()
    public = BooleanAttribute(default=False)
    # RepoItems of this namespace: the per-namespace limit, kept by conditional writes in the
    # transactions that create and delete a RepoItem
    repositories = NumberAttribute(null=True)


TOMBSTONE_SK = "deleted"


class NamespaceTombstoneItem(_Base):
    """Left by a namespace delete: nobody may activate the name again while a registry token
    issued for it may still be valid (tokens are checked without a database read)."""
    deleted_at = NumberAttribute()
    expires = NumberAttribute()      # DynamoDB TTL attribute


class MembershipItem(_Base):
    role = UnicodeAttribute()        # owner | push | pull


class AccessTokenItem(_Base):
    name = UnicodeAttribute()
    scope = UnicodeAttribute()       # pull | push
    secret_hash = UnicodeAttribute()  # sha256 of a 256-bit random secret: no slow KDF needed
    created = NumberAttribute()
    last_used = NumberAttribute(null=True)
    revoked = BooleanAttribute(default=False)


class LoginFailureItem(_Base):
    failures = NumberAttribute(default=0)
    first_failure = NumberAttribute(null=True)
    last_failure = NumberAttribute(null=True)   # the backoff runs from here
    known = BooleanAttribute(null=True)         # pair: this user signed in from this address
    expires = NumberAttribute(null=True)        # DynamoDB TTL attribute: it cleans itself up
