"""Mirror rules (pull-through caches of other registries) and their bookkeeping in DynamoDB.

  pk                 sk                 item
  _mirrors           <namespace>        MirrorRuleItem  (one rule: namespace -> upstream)
  _mirrors           ~seeded            the default rules were written once (removing one sticks)
  _mirror_copy       <digest>           CopyClaimItem   (one copy of a blob from upstream at a time)
  repo#<name>        mirror#<digest>    MirrorHoldItem  (the cache's own reference on a blob)
  repo#<name>        mirror             MirrorRepoItem  (when a client last pulled from it)

A cached blob is an ordinary content-addressed blob (BlobItem, LinkItem, S3 object). The cache
holds it with one reference per (repository, blob) (BlobItem.refs + 1, like a manifest item), so
garbage collection's grace period does not evict it; the mirror eviction (chalicelib/gc.py) drops
holds of images not pulled for BERTH_MIRROR_MAX_IDLE, and then the ordinary sweep frees blobs
that no pushed image references.

Upstream credentials are never in the table: a rule only records that it has some. They live in
SSM (SecureString `<BERTH_MIRROR_CREDENTIALS_PARAM><namespace>`, AWS) or in a file readable by its
owner only (`<BERTH_MIRROR_CREDENTIALS_DIR>/<namespace>.json`, `make run`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from pynamodb.attributes import BooleanAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib import oci
from chalicelib.errors import RegistryError
from chalicelib.storage.models import BLOB_SK, BlobItem, _Base, blob_pk, repo_pk

RULES_PK = "_mirrors"
SEEDED_SK = "~seeded"          # "~" never starts a namespace
COPY_PK = "_mirror_copy"
HOLD_PREFIX = "mirror#"
RULES_CACHE_SECONDS = 5.0      # a rule change reaches every Lambda instance within this
DEFAULT_TAG_TTL = 600.0

# What every deployment starts with: Docker Hub's official images, anonymous pull.
DEFAULT_RULES = ({"namespace": "library", "upstream": "https://registry-1.docker.io",
                  "prefix": "library/", "public": True, "tag_ttl": DEFAULT_TAG_TTL},)


class MirrorRuleItem(_Base):
    upstream = UnicodeAttribute(null=True)
    prefix = UnicodeAttribute(null=True)
    public = BooleanAttribute(null=True)
    tag_ttl = NumberAttribute(null=True)
    has_credentials = BooleanAttribute(null=True)
    created = NumberAttribute(null=True)


class CopyClaimItem(_Base):
    since = NumberAttribute()


class MirrorHoldItem(_Base):
    created = NumberAttribute()
    pulled = NumberAttribute(null=True)


class MirrorRepoItem(_Base):
    pulled = NumberAttribute()


REPO_SK = "mirror"
PULL_RESOLUTION = 3600.0    # "last pulled" is written at most once an hour per repository


@dataclass(frozen=True)
class Rule:
    namespace: str
    upstream: str            # https://host[:port], no path
    prefix: str              # prepended to the rest of the name upstream, e.g. "library/"
    public: bool
    tag_ttl: float
    has_credentials: bool

    def upstream_name(self, repository: str) -> str:
        return self.prefix + repository[len(self.namespace) + 1:]

    def to_dict(self) -> dict:
        return {"namespace": self.namespace, "upstream": self.upstream, "prefix": self.prefix,
                "public": self.public, "tag_ttl": self.tag_ttl,
                "credentials": self.has_credentials}


class MirrorError(RegistryError):
    def __init__(self, message: str) -> None:
        super().__init__("DENIED", message, status=400)


def _rule_of(item: MirrorRuleItem) -> Rule:
    return Rule(item.sk, item.upstream, item.prefix or "", bool(item.public),
                float(item.tag_ttl if item.tag_ttl is not None else DEFAULT_TAG_TTL),
                bool(item.has_credentials))


# ---------------------------------------------------------------- rules

_cache: Dict[str, object] = {"at": -1e9, "rules": {}}
_cache_lock = threading.Lock()


def _seed_defaults() -> None:
    """Write the default rules once per deployment (a marker item makes a removal stick)."""
    try:
        MirrorRuleItem(RULES_PK, SEEDED_SK, created=time.time()).save(
            condition=MirrorRuleItem.sk.does_not_exist())
    except PutError:
        return          # seeded before (or concurrently)
    for rule in DEFAULT_RULES:
        _save_rule(rule["namespace"], rule["upstream"], rule["prefix"], rule["public"],
                   rule["tag_ttl"], False)


def rules(fresh: bool = False) -> Dict[str, Rule]:
    """Every rule by namespace: one Query per RULES_CACHE_SECONDS per process."""
    now = time.monotonic()
    with _cache_lock:
        if fresh or now - _cache["at"] > RULES_CACHE_SECONDS:
            items = list(MirrorRuleItem.query(RULES_PK))
            if not any(i.sk == SEEDED_SK for i in items):
                _seed_defaults()
                items = list(MirrorRuleItem.query(RULES_PK))
            _cache["rules"] = {i.sk: _rule_of(i) for i in items if i.sk != SEEDED_SK}
            _cache["at"] = now
        return dict(_cache["rules"])


def rule_for(repository: str) -> Optional[Rule]:
    """The rule whose namespace is `repository`'s first component, if any."""
    if "/" not in repository:
        return None
    return rules().get(oci.namespace_of(repository))


def check_upstream_url(url: str) -> str:
    from urllib.parse import urlsplit
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise MirrorError("the upstream must be an https:// URL, e.g. https://registry-1.docker.io")
    if parts.path.strip("/") not in ("", "v2") or parts.query or parts.fragment or parts.username:
        raise MirrorError("the upstream is the registry's base URL only (no path, query or user)")
    return f"{parts.scheme}://{parts.netloc}"


def _save_rule(namespace: str, upstream: str, prefix: str, public: bool, tag_ttl: float,
               has_credentials: bool) -> Rule:
    item = MirrorRuleItem(RULES_PK, namespace, upstream=upstream, prefix=prefix, public=public,
                          tag_ttl=tag_ttl, has_credentials=has_credentials, created=time.time())
    item.save()
    return _rule_of(item)


def add_rule(namespace: str, upstream: str, *, prefix: str = "", public: bool = False,
             tag_ttl: float = DEFAULT_TAG_TTL,
             credentials: Optional[Tuple[str, str]] = None) -> Rule:
    """Create or replace the rule of `namespace` (its credentials are stored outside the table)."""
    if not oci.is_valid_namespace(namespace):
        raise MirrorError(f"{namespace!r} is not a valid namespace (lowercase letters, digits, "
                          "'.', '_', '-')")
    upstream = check_upstream_url(upstream)
    if prefix and (not oci.is_valid_name(prefix.rstrip("/")) or not prefix.endswith("/")):
        raise MirrorError("the upstream prefix is a repository path ending in '/', e.g. library/")
    if tag_ttl < 0:
        raise MirrorError("the tag TTL cannot be negative")
    rules()     # seed the defaults first, so that they do not overwrite this rule later
    if credentials is not None:
        save_credentials(namespace, credentials)
    elif get_rule(namespace) is not None:
        delete_credentials(namespace)
    rule = _save_rule(namespace, upstream, prefix, public, tag_ttl, credentials is not None)
    rules(fresh=True)
    return rule


def get_rule(namespace: str) -> Optional[Rule]:
    try:
        item = MirrorRuleItem.get(RULES_PK, namespace, consistent_read=True)
    except DoesNotExist:
        return None
    return _rule_of(item) if namespace != SEEDED_SK else None


def remove_rule(namespace: str) -> bool:
    rules()
    if get_rule(namespace) is None:
        return False
    MirrorRuleItem(RULES_PK, namespace).delete()
    delete_credentials(namespace)
    rules(fresh=True)
    return True


def list_rules() -> List[Rule]:
    return sorted(rules(fresh=True).values(), key=lambda r: r.namespace)


# ---------------------------------------------------------------- credentials (never in the table)

def _credentials_dir() -> Optional[Path]:
    value = os.environ.get("BERTH_MIRROR_CREDENTIALS_DIR")
    return Path(value) if value else None


def _credentials_param(namespace: str) -> str:
    prefix = os.environ.get("BERTH_MIRROR_CREDENTIALS_PARAM")
    if not prefix:
        raise MirrorError("no store for upstream credentials is configured (set "
                          "BERTH_MIRROR_CREDENTIALS_PARAM in AWS or BERTH_MIRROR_CREDENTIALS_DIR)")
    return prefix + namespace


def _ssm():
    import boto3
    from chalicelib.config import settings
    cfg = settings()
    ssm = boto3.client("ssm", region_name=cfg.region, endpoint_url=cfg.endpoint)
    return ssm


def save_credentials(namespace: str, credentials: Tuple[str, str]) -> None:
    username, password = credentials
    if not username or not password or ":" in username:
        raise MirrorError("upstream credentials are a user name (without ':') and a password")
    secret = json.dumps({"username": username, "password": password})
    directory = _credentials_dir()
    if directory is not None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"{namespace}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
        return
    _ssm().put_parameter(Name=_credentials_param(namespace), Value=secret, Type="SecureString",
                         Overwrite=True)


def load_credentials(namespace: str) -> Optional[Tuple[str, str]]:
    directory = _credentials_dir()
    try:
        if directory is not None:
            doc = json.loads((directory / f"{namespace}.json").read_text())
        else:
            doc = json.loads(_ssm().get_parameter(Name=_credentials_param(namespace),
                                                  WithDecryption=True)["Parameter"]["Value"])
    except (OSError, ValueError, KeyError):
        return None
    except Exception as exc:    # SSM's ParameterNotFound and friends
        if "ParameterNotFound" in type(exc).__name__ or "ParameterNotFound" in str(exc):
            return None
        raise
    return doc["username"], doc["password"]


def delete_credentials(namespace: str) -> None:
    directory = _credentials_dir()
    if directory is not None:
        (directory / f"{namespace}.json").unlink(missing_ok=True)
        return
    if not os.environ.get("BERTH_MIRROR_CREDENTIALS_PARAM"):
        return
    try:
        _ssm().delete_parameter(Name=_credentials_param(namespace))
    except Exception as exc:
        if "ParameterNotFound" not in type(exc).__name__ and "ParameterNotFound" not in str(exc):
            raise


# ---------------------------------------------------------------- copies and holds

def claim_copy(digest: str, lease: float) -> bool:
    """Whether this caller may copy `digest` from upstream: a conditional put that one caller
    wins until the claim is released or its lease (the copy's time budget) runs out."""
    now = time.time()
    try:
        CopyClaimItem(COPY_PK, digest, since=now).save(
            condition=CopyClaimItem.sk.does_not_exist() | (CopyClaimItem.since < now - lease))
        return True
    except PutError as exc:
        if getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException":
            return False
        raise


def release_copy(digest: str) -> None:
    CopyClaimItem(COPY_PK, digest).delete()


def hold_sk(digest: str) -> str:
    return HOLD_PREFIX + digest


def hold_blob(repository: str, digest: str) -> None:
    """The cache's reference on a blob linked into a mirrored repository (at most one per
    repository): refs + 1 while the blob is live, and the hold item, in one transaction."""
    from chalicelib.storage.metadata import Tx, TxFailed, _LIVE
    now = time.time()
    tx = Tx()
    tx.put(("hold", repository), MirrorHoldItem(repo_pk(repository), hold_sk(digest),
                                                created=now, pulled=now),
           condition=MirrorHoldItem.sk.does_not_exist())
    tx.update(("blob", digest), BlobItem(blob_pk(digest), BLOB_SK), [BlobItem.refs.add(1)],
              condition=_LIVE)
    try:
        tx.commit()
    except TxFailed:
        pass    # held already; or the blob is being collected: the next pull copies it again


# ---------------------------------------------------------------- eviction (garbage collection)

_noted: Dict[str, float] = {}


def note_pull(repository: str) -> None:
    """Record that a client pulled from a mirrored repository: one conditional write that only
    succeeds once per PULL_RESOLUTION (eviction counts idle days, not seconds), and then a GC
    queue event with the same time, which the sweep looks at once BERTH_MIRROR_MAX_IDLE has
    passed (so an idle sweep pays one Query for eviction, whatever the cache's size)."""
    from pynamodb.exceptions import UpdateError
    from chalicelib.storage.models import GC_PK, MIRROR, GcQueueItem, queue_time, stamp
    now = stamp(time.time())
    if _noted.get(repository, 0.0) > now - PULL_RESOLUTION:
        return      # this process saw it recorded within the hour: no write at all
    _noted[repository] = now
    try:
        MirrorRepoItem(repo_pk(repository), REPO_SK).update(
            actions=[MirrorRepoItem.pulled.set(now)],
            condition=MirrorRepoItem.pulled.does_not_exist()
            | (MirrorRepoItem.pulled < now - PULL_RESOLUTION))
    except UpdateError:
        return
    GcQueueItem(GC_PK, f"{MIRROR}#{queue_time(now)}#{repository}").save()


def last_pulled(repository: str) -> Optional[float]:
    try:
        return float(MirrorRepoItem.get(repo_pk(repository), REPO_SK,
                                        consistent_read=True).pulled)
    except DoesNotExist:
        return None


def evict_repository(repository: str) -> int:
    """Drop a mirrored repository from the cache: its manifests and tags, its links, and the
    cache's holds on its blobs (refs - 1 and a `deref` GC event each: the sweep then frees the
    blobs no other manifest, pushed or cached, references). Returns the manifests deleted."""
    from chalicelib.storage import metadata
    from chalicelib.storage.models import (REPOS_PK, ManifestItem, RepoItem, manifest_sk)
    deleted = 0
    for item in ManifestItem.query(repo_pk(repository), ManifestItem.sk.startswith("manifest#"),
                                   attributes_to_get=["pk", "sk"]):
        if metadata.delete_manifest(repository, item.sk[len(manifest_sk("")):]):
            deleted += 1
    for hold in MirrorHoldItem.query(repo_pk(repository),
                                     MirrorHoldItem.sk.startswith(HOLD_PREFIX)):
        digest = hold.sk[len(HOLD_PREFIX):]
        metadata.remove_link(repository, digest)
        tx = metadata.Tx()
        tx.delete(("hold", repository), hold, condition=MirrorHoldItem.sk.exists())
        metadata._unref(tx, digest, time.time())
        try:
            tx.commit()
        except metadata.TxFailed:
            pass    # released concurrently
    MirrorRepoItem(repo_pk(repository), REPO_SK).delete()
    RepoItem(REPOS_PK, repository).delete()
    return deleted
