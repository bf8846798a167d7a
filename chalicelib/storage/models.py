"""PynamoDB models of Berth's single DynamoDB table.

One table, keyed by (pk, sk), so that everything one request needs sits under one or two keys:

  pk                     sk                               item
  _repos                 <repository name>                RepoItem      (catalog, sorted by name)
  repo#<name>            tag#<tag>                        TagItem       (tags list, sorted)
  repo#<name>            manifest#<digest>                ManifestItem  (bytes inline)
  repo#<name>            blob#<digest>                    LinkItem      (blob visible in repo)
  repo#<name>            ref#<subject digest>#<digest>    ReferrerItem  (referrers API)
  blob#<digest>          blob                             BlobItem      (bytes stored in S3)
  _uploads               <upload id>                      UploadItem    (upload sessions)

A manifest GET by tag reads TagItem then ManifestItem; a blob GET or HEAD reads LinkItem only
(the S3 key derives from the digest), so neither touches S3 before answering.
"""
from __future__ import annotations

from pynamodb.attributes import (BinaryAttribute, BooleanAttribute, JSONAttribute, ListAttribute,
                                 NumberAttribute,
                                 UnicodeAttribute)
from pynamodb.models import Model

from chalicelib.config import settings

REPOS_PK = "_repos"
UPLOADS_PK = "_uploads"


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


class _Base(Model):
    class Meta:
        table_name = settings().table
        region = settings().region
        host = settings().endpoint
        billing_mode = "PAY_PER_REQUEST"

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)


class TableModel(_Base):
    """The table itself, for creating it (every item model shares its key schema)."""


class RepoItem(_Base):
    created = NumberAttribute()
    updated = NumberAttribute()
    public = BooleanAttribute(null=True)    # anonymous pull allowed (see also NamespaceItem)


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


class LinkItem(_Base):
    size = NumberAttribute()
    created = NumberAttribute()


class ReferrerItem(_Base):
    media_type = UnicodeAttribute()
    size = NumberAttribute()
    artifact_type = UnicodeAttribute(null=True)
    annotations = JSONAttribute(null=True)


class BlobItem(_Base):
    size = NumberAttribute()
    created = NumberAttribute()


class UploadItem(_Base):
    repo = UnicodeAttribute()
    offset = NumberAttribute(default=0)          # bytes received so far
    mpu_id = UnicodeAttribute(null=True)         # S3 multipart upload, once a part was written
    parts = JSONAttribute(default=list)          # [[part number, etag, size], ...]
    tail_key = UnicodeAttribute(null=True)       # S3 object of bytes not yet in a part (< 5 MiB)
    tail_size = NumberAttribute(default=0)
    created = NumberAttribute()
    updated = NumberAttribute()


# ---------------------------------------------------------------- accounts (auth)
#
#  user#<name>        user                 UserItem
#  user#<name>        ns#<namespace>       MembershipItem (the user's view: "my namespaces")
#  user#<name>        token#<id>           AccessTokenItem
#  ns#<namespace>     ns                   NamespaceItem
#  ns#<namespace>     member#<user>        MembershipItem (the namespace's view)
#  lock#<kind>#<key>  lock                 LoginFailureItem (brute-force throttling; TTL)

def user_pk(name: str) -> str:
    return f"user#{name}"


def ns_pk(namespace: str) -> str:
    return f"ns#{namespace}"


class UserItem(_Base):
    password_hash = UnicodeAttribute()
    created = NumberAttribute()
    disabled = BooleanAttribute(default=False)
    admin = BooleanAttribute(default=False)


class NamespaceItem(_Base):
    owner = UnicodeAttribute()
    created = NumberAttribute()
    public = BooleanAttribute(default=False)


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
    first_failure = NumberAttribute()
    expires = NumberAttribute()      # DynamoDB TTL attribute: the item cleans itself up
