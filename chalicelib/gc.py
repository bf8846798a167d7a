"""Garbage collection: a sweep that frees the blobs no image uses any more, and never a live one.

It runs on a schedule (app.py, every BERTH_GC_RATE_MINUTES) and on demand (`berth gc`). What it
deletes:
  - blobs that no manifest item of any repository references (after manifest and image
    deletes), and blobs uploaded or mounted but never referenced once their grace period
    (BERTH_GC_GRACE, default 1h) has passed: their links in every repository, their S3 object,
    their BlobItem;
  - untagged manifests last pushed more than BERTH_GC_UNTAGGED_MAX_AGE ago (default: never, the
    policy is off), except those an index of their repository lists and those with a subject
    (referrers: signatures, SBOMs...);
  - upload sessions not written to for BERTH_GC_UPLOAD_MAX_AGE (default 24h), with their S3
    multipart upload and staged objects.

Durations are written 0, 90s, 30m, 1h, 2d (a bare number is seconds; `never` turns a policy off).

Keys (models.py)
----------------
  blob#<digest>   blob                BlobItem: size, created, refs, touched, state, since
  blob#<digest>   link#<repo>         BlobLinkItem: the reverse of repo#<repo>/blob#<digest>
  _gc             touch#<ms>#<digest>          the blob was uploaded or mounted at <ms>
  _gc             deref#<ms>#<digest>          a manifest item referencing it was deleted
  _gc             untag#<ms>#<repo>#<digest>   the manifest may have become untagged
  _gc             mirror#<ms>#<repo>           a mirrored repository was pulled (at most hourly)

Reference counts
----------------
BlobItem.refs is the number of manifest items, over all repositories, that reference the blob
(config, layers, and the S3-stored body of a big manifest). metadata.put_manifest, when the
manifest item is new in its repository, increments it in the manifest's own transaction with the
condition `attribute_exists(sk) AND attribute_not_exists(state)`: the blob exists and no sweep
has claimed it; if the condition fails the client gets MANIFEST_BLOB_UNKNOWN (push the blob
again). A manifest with more than ~95 references takes them first in their own transactions (100
items at most each) and releases them if the manifest's transaction then fails; a crash between
the two leaves counts too high, which keeps blobs too long but never deletes a used one.
metadata.delete_manifest decrements in the delete's transaction (or right after it when they do
not fit: again erring on the high side) and writes a `deref` event per blob.
ManifestItem.parents counts, the same way, the index manifests of the repository that list a
manifest; the untagged-manifest policy never deletes a manifest with parents.

The queue
---------
Every touch of a blob (upload commit, mount) sets BlobItem.touched and writes a `touch` event with
the same time, in the same transaction as the link; every release writes a `deref` event. A
sweep with grace G reads only `touch` events older than now - G and `deref` events up to now (two
Queries of the `_gc` partition's key ranges), so its cost is proportional to what happened since
the last sweep, not to the size of the registry. The time in the key is when the event happened,
not when it becomes due, so `berth gc --grace 0` sees every event. An event is dropped once
looked at: a blob found in use gets a new event whenever that could change (its last reference
released: `deref`; its grace period restarted: `touch`). Untagged-manifest events work alike.

Deleting a blob: claim, unlink, delete the object, forget
---------------------------------------------------------
 1. claim: UpdateItem state=deleting, since=<wall clock> with the condition
    `attribute_not_exists(state) AND refs = 0 AND touched <= now - grace`. From here on no
    manifest can reference the blob (the increment's condition fails), no mount can link it
    (metadata.add_link's condition fails: the client is told to upload instead), and no upload
    can touch it (see below). A manifest PUT and a claim are two conditional writes on the same
    item: whichever comes second fails, so they never both succeed.
 2. unlink: Query blob#<digest> for link# items; delete the repositories' LinkItems, then those
    reverse items (so a crash never leaves a link without its reverse item).
 3. delete the S3 object. Links go before the object, so a blob GET (which reads the link only:
    still 1 DynamoDB read) never redirects to a deleted object, except for a request that read
    the link just before step 2 and whose client follows the redirect after step 3: it gets
    S3's 404 for a blob that was garbage anyway.
 4. forget: one transaction deletes the BlobItem, on the condition that it is still in this
    claim (state and since unchanged), and the event.
Every step is idempotent, and a sweep killed anywhere leaves the blob in `deleting` with its
event: the next sweep claims it again (below) and finishes the job.

The lease
---------
A claim is a lease of LEASE_SECONDS (metadata.py): the sweep performs steps 2 and 3 only while
wall clock < since + LEASE_SECONDS - DELETE_MARGIN, checked before each request. After since +
LEASE_SECONDS the claim is stale: another sweep may claim it again (condition: since unchanged),
and an upload of the same bytes may take it over (metadata.publish_blob: write the object, then
make the item live, on the condition that since is unchanged). So a sweep that stalls cannot
delete an object that was written again after its lease: S3 deletes cannot be conditional, the
lease bounds them in time instead. An upload that meets a valid claim waits (at most
LEASE_SECONDS) for the sweep to finish or the lease to expire; then it stores the blob afresh.
Two sweeps may run at once (schedule and CLI): a blob claimed by one is skipped by the other.
What remains is a bound, not a proof: a DeleteObject issued just before the lease's margin and
delayed in flight for more than DELETE_MARGIN seconds, past a takeover, would still land.

Orphans: an upload writes the S3 object before the transaction that records the blob. It writes
its `touch` event first, on its own; if it dies in between, the sweep finds that event without
BlobItem, creates the item already claimed (so that an upload recording the blob meanwhile
waits, as for any claim) and deletes the object like a claimed blob's.

Untagged manifests: an `untag` event is written by a PUT without tag, a tag moved away, a tag
deleted, and for each child of a deleted index. The sweep deletes the manifest if no tag points
to it (a Query), it has no subject, no parents, and was last pushed before the cutoff, with
delete_manifest conditioned on the version it read (every tag write bumps it) and on parents =
0; the blobs it released are collected in the same run (their `deref` events are due).

Upload sessions
---------------
A session untouched for the max age is claimed by a conditional update (its `updated` unchanged),
then uploads.finish aborts its multipart upload, deletes its staged objects and the item; a
crash in between leaves a claimed item that the next sweep finishes. Found with a Query of the
`_uploads` partition, which holds only sessions in progress.

Costs and limits
----------------
A sweep with nothing due makes 4 Queries (5 with the untagged policy; the fourth is mirror
eviction's `mirror` events) that return no item
(bench/gc_bench.py, measured before mirror eviction: 3 requests, 1.5 read units, on a registry
of 10,000 manifests). The `_gc`
partition receives one write per upload, mount, manifest delete and tag move: a single
partition sustains 1,000 writes/s. `untag` events are written whether the policy is on or not
(turned on, it then finds the manifests untagged before); with it off they accumulate, about
100 bytes each. Blobs stored before refs existed have no count and are never
collected (the claim requires refs = 0); Berth had no deployment before this design, so no
migration exists. audit() below checks the invariants with a full scan, for tests and
`berth gc --check`.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from pynamodb.exceptions import PutError, UpdateError

from chalicelib import uploads
from chalicelib.storage import blobstore, metadata
from chalicelib.storage.metadata import Tx, TxFailed, get_blob, is_condition_failure
from chalicelib.storage.models import (BLOB_LINK_PREFIX, BLOB_SK, DELETING, DEREF, GC_PK, MIRROR,
                                       TOUCH, UNTAG, UPLOADS_PK, BlobItem, BlobLinkItem, GcQueueItem,
                                       LinkItem, TagItem, UploadItem, blob_link_sk, blob_pk,
                                       gc_upto, link_sk, millis, repo_pk, stamp)

log = logging.getLogger("berth.gc")

DEFAULT_GRACE = 3600.0
DEFAULT_UPLOAD_MAX_AGE = 24 * 3600.0
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_NEVER = ("never", "off", "none")
_UNSET = object()


def parse_duration(text: str, allow_never: bool = False) -> Optional[float]:
    """Seconds in "0", "90s", "30m", "1h", "2d" (or a bare number); None for "never"."""
    if allow_never and text.strip().lower() in _NEVER:
        return None
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (examples: 0, 90s, 30m, 1h, 2d"
                         + (", never)" if allow_never else ")"))
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


@dataclass(frozen=True)
class Policy:
    grace: float = DEFAULT_GRACE
    untagged_max_age: Optional[float] = None     # None: untagged manifests are kept
    upload_max_age: float = DEFAULT_UPLOAD_MAX_AGE
    mirror_max_idle: Optional[float] = 30 * 86400.0   # None: cached images are never evicted

    @classmethod
    def from_env(cls) -> "Policy":
        def env(name: str, default: str, allow_never: bool = False) -> Optional[float]:
            return parse_duration(os.environ.get(name) or default, allow_never)
        return cls(grace=env("BERTH_GC_GRACE", "1h"),
                   untagged_max_age=env("BERTH_GC_UNTAGGED_MAX_AGE", "never", True),
                   upload_max_age=env("BERTH_GC_UPLOAD_MAX_AGE", "24h"),
                   mirror_max_idle=env("BERTH_MIRROR_MAX_IDLE", "30d", True))


@dataclass
class Report:
    """What a sweep did (or, dry run, would do)."""
    dry_run: bool
    grace_seconds: float
    untagged_max_age_seconds: Optional[float]
    upload_max_age_seconds: float
    blobs_deleted: int = 0
    bytes_deleted: int = 0
    links_deleted: int = 0
    manifests_deleted: int = 0
    sessions_deleted: int = 0
    orphans_deleted: int = 0      # S3 objects of uploads that died before recording them
    mirror_repositories_evicted: int = 0   # cached images not pulled for BERTH_MIRROR_MAX_IDLE
    events_read: int = 0          # GC queue items looked at
    blobs_in_use: int = 0         # events about blobs found referenced or within grace
    blobs_busy: int = 0           # claimed by another sweep, or our lease ran out: next run
    complete: bool = True         # False: the time budget ran out, the next run continues
    seconds: float = 0.0
    dynamodb_requests: int = 0
    dynamodb_read_units: float = 0.0
    dynamodb_write_units: float = 0.0
    s3_requests: int = 0
    requests: Dict[str, int] = field(default_factory=dict)
    deleted_blobs: List[str] = field(default_factory=list)       # first 100
    deleted_manifests: List[str] = field(default_factory=list)   # first 100, repo@digest

    def to_dict(self) -> dict:
        return asdict(self)


class _OutOfTime(Exception):
    pass


class _LeaseExpired(Exception):
    pass


# ---------------------------------------------------------------- request metering

class _Active(threading.local):
    counts: Optional[dict] = None
    inside = False


_active = _Active()
_meter_lock = threading.Lock()
_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}


def _capacity(answer) -> float:
    consumed = answer.get("ConsumedCapacity") if isinstance(answer, dict) else None
    if isinstance(consumed, dict):
        consumed = [consumed]
    return sum(float(c.get("CapacityUnits") or 0) for c in consumed or [])


def _install_meter() -> None:
    """Count the AWS requests (and DynamoDB's reported consumed capacity) of the thread that runs
    a sweep, in botocore, where every request of PynamoDB and of the S3 client passes."""
    from botocore.client import BaseClient
    with _meter_lock:
        # (again if something replaced it since, e.g. a test's own counter being undone)
        if getattr(BaseClient._make_api_call, "_berth_gc_meter", False):
            return
        original = BaseClient._make_api_call

        def metered(self, operation_name, api_params):
            counts = _active.counts
            if counts is None or _active.inside:
                return original(self, operation_name, api_params)
            service = self.meta.service_model.service_name
            key = f"{service}:{operation_name}"
            counts["requests"][key] = counts["requests"].get(key, 0) + 1
            _active.inside = True        # once per request, even if installed twice
            try:
                answer = original(self, operation_name, api_params)
            finally:
                _active.inside = False
            if service == "dynamodb":
                kind = "read_units" if operation_name in _READS else "write_units"
                counts[kind] += _capacity(answer)
            return answer
        metered._berth_gc_meter = True
        BaseClient._make_api_call = metered


@contextmanager
def metered() -> Iterator[dict]:
    _install_meter()
    counts = {"requests": {}, "read_units": 0.0, "write_units": 0.0}
    previous, _active.counts = _active.counts, counts
    try:
        yield counts
    finally:
        _active.counts = previous


# ---------------------------------------------------------------- the sweep

def sweep(*, now: Optional[float] = None, grace: Optional[float] = None,
          untagged_max_age=_UNSET, upload_max_age: Optional[float] = None,
          dry_run: bool = False, budget_seconds: Optional[float] = None) -> Report:
    """One garbage-collection run. `now` is the time policies are judged at (tests pass a later
    one instead of waiting); the claims' leases always use the wall clock. Settings not given
    come from the environment (Policy.from_env)."""
    env = Policy.from_env()
    policy = Policy(grace=env.grace if grace is None else grace,
                    untagged_max_age=(env.untagged_max_age if untagged_max_age is _UNSET
                                      else untagged_max_age),
                    upload_max_age=env.upload_max_age if upload_max_age is None
                    else upload_max_age)
    now = time.time() if now is None else now
    started = time.monotonic()
    deadline = started + budget_seconds if budget_seconds is not None else None
    report = Report(dry_run=dry_run, grace_seconds=policy.grace,
                    untagged_max_age_seconds=policy.untagged_max_age,
                    upload_max_age_seconds=policy.upload_max_age)
    with metered() as counts:
        try:
            _sweep_sessions(report, now - policy.upload_max_age, dry_run, deadline)
            if policy.untagged_max_age is not None:
                _sweep_untagged(report, now - policy.untagged_max_age, dry_run, deadline)
            if env.mirror_max_idle is not None:     # before the blobs: its derefs are due now
                _sweep_mirrors(report, now - env.mirror_max_idle, dry_run, deadline)
            _sweep_blobs(report, now, now - policy.grace, dry_run, deadline)
        except _OutOfTime:
            report.complete = False
    report.seconds = round(time.monotonic() - started, 3)
    report.requests = dict(sorted(counts["requests"].items()))
    report.dynamodb_requests = sum(n for k, n in counts["requests"].items()
                                   if k.startswith("dynamodb:"))
    report.s3_requests = sum(n for k, n in counts["requests"].items() if k.startswith("s3:"))
    report.dynamodb_read_units = round(counts["read_units"], 2)
    report.dynamodb_write_units = round(counts["write_units"], 2)
    return report


def _sweep_mirrors(report: Report, cutoff: float, dry_run: bool,
                   deadline: Optional[float]) -> None:
    """Evict mirrored repositories nobody pulled from since `cutoff` (storage/mirrors.py): a
    `mirror` event is written whenever "last pulled" moves (at most hourly), with that time, so a
    due event whose repository was not pulled again since means idle. The blob phase below then
    frees the blobs that nothing else references (their `deref` events are due at once)."""
    from chalicelib.storage import mirrors
    drops = _Drops()
    try:
        for event in _events(MIRROR, cutoff):
            _check_time(deadline)
            report.events_read += 1
            _, when, repository = event.sk.split("#", 2)
            pulled = mirrors.last_pulled(repository)
            if pulled is not None and millis(pulled) > int(when):
                drops.add(event.sk)          # pulled again since: a later event covers it
                continue
            report.mirror_repositories_evicted += 1
            if not dry_run:
                report.manifests_deleted += mirrors.evict_repository(repository)
                drops.add(event.sk)
    finally:
        if not dry_run:
            drops.flush()


def _check_time(deadline: Optional[float]) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise _OutOfTime()


class _Drops:
    """Queue items to delete, in BatchWriteItem requests of 25."""

    def __init__(self) -> None:
        self._keys: List[str] = []

    def add(self, sk: str) -> None:
        self._keys.append(sk)
        if len(self._keys) >= 25:
            self.flush()

    def flush(self) -> None:
        keys, self._keys = self._keys, []
        if keys:
            with GcQueueItem.batch_write() as batch:
                for sk in keys:
                    batch.delete(GcQueueItem(GC_PK, sk))


def _events(kind: str, upto: float) -> Iterator[GcQueueItem]:
    """The `kind` events of the queue with a time up to `upto`, oldest first."""
    return GcQueueItem.query(GC_PK, GcQueueItem.sk.between(f"{kind}#", gc_upto(kind, upto)),
                             page_size=500)


# ---- upload sessions

def _sweep_sessions(report: Report, cutoff: float, dry_run: bool,
                    deadline: Optional[float]) -> None:
    for session in UploadItem.query(UPLOADS_PK, filter_condition=UploadItem.updated < cutoff):
        _check_time(deadline)
        if dry_run or expire_session(session):
            report.sessions_deleted += 1


def expire_session(session: UploadItem) -> bool:
    """Claim an abandoned session (nobody wrote to it since we read it), then let uploads.finish
    abort its multipart upload and delete its staged objects and its item."""
    try:
        session.update(actions=[UploadItem.updated.set(0)],
                       condition=UploadItem.updated == session.updated)
    except UpdateError as exc:
        if is_condition_failure(exc):
            return False      # written to meanwhile: in use after all, or already gone
        raise
    uploads.finish(session)
    return True


# ---- untagged manifests

def _sweep_untagged(report: Report, cutoff: float, dry_run: bool,
                    deadline: Optional[float]) -> None:
    drops = _Drops()
    seen = set()
    try:
        for event in _events(UNTAG, cutoff):
            _check_time(deadline)
            report.events_read += 1
            repo, digest = event.sk.split("#", 2)[2].rsplit("#", 1)
            if (repo, digest) not in seen:
                seen.add((repo, digest))
                if collect_manifest(repo, digest, cutoff, dry_run):
                    report.manifests_deleted += 1
                    if len(report.deleted_manifests) < 100:
                        report.deleted_manifests.append(f"{repo}@{digest}")
            if not dry_run:
                drops.add(event.sk)
    finally:
        if not dry_run:
            drops.flush()


def collect_manifest(repo: str, digest: str, cutoff: float, dry_run: bool = False) -> bool:
    """Delete manifest `digest` of `repo` if the untagged policy allows: no tag points to it, no
    index lists it, it has no subject and was last pushed before `cutoff`. The delete is
    conditioned on the version read here, which every tag write bumps."""
    item = metadata.get_manifest(repo, digest, consistent=True)
    if item is None or item.subject or (item.parents or 0) > 0:
        return False
    if (item.pushed or item.created) > cutoff:
        return False      # pushed again since: that push left its own event if untagged
    for _ in TagItem.query(repo_pk(repo), TagItem.sk.startswith("tag#"),
                           filter_condition=TagItem.digest == digest, consistent_read=True,
                           attributes_to_get=["pk", "sk"]):
        return False      # tagged: a later tag move or delete leaves a new event
    if dry_run:
        return True
    return metadata.delete_manifest(repo, digest, expect_version=int(item.version),
                                    only_if_unused=True)


# ---- blobs

def _sweep_blobs(report: Report, now: float, cutoff: float, dry_run: bool,
                 deadline: Optional[float]) -> None:
    drops = _Drops()
    outcome: Dict[str, str] = {}
    try:
        for kind, upto in ((DEREF, now), (TOUCH, cutoff)):
            for event in _events(kind, upto):
                _check_time(deadline)
                report.events_read += 1
                digest = event.sk.split("#", 2)[2]
                if digest in outcome:
                    if not dry_run and outcome[digest] != "busy":
                        drops.add(event.sk)      # settled earlier in this run
                    continue
                outcome[digest] = collect_blob(digest, event.sk, cutoff, report, dry_run)
                if not dry_run and outcome[digest] in ("gone", "in use"):
                    drops.add(event.sk)          # "deleted": forget() deleted the event
    finally:
        if not dry_run:
            drops.flush()


def collect_blob(digest: str, event_sk: str, cutoff: float, report: Report,
                 dry_run: bool = False) -> str:
    """Delete blob `digest` if it is garbage; the outcome: "deleted" (with the event), "gone"
    (nothing stored), "in use" (referenced, or touched after `cutoff`), or "busy" (claimed by
    another sweep whose lease holds, or our lease ran out: left, with its event, for later)."""
    blob = get_blob(digest)
    if blob is None:
        if dry_run or not event_sk.startswith(TOUCH + "#"):
            return "gone"
        # A touch event without BlobItem: an upload died between writing the object and
        # recording it (or is still at it: then it waits for our lease and stores it again).
        since = claim_orphan(digest)
        if since is None:
            return "in use"          # recorded meanwhile: it has its own touch event
        blob = BlobItem(blob_pk(digest), BLOB_SK, size=0)
        orphan = True
    elif blob.state is None:
        orphan = False
        if blob.refs is None or int(blob.refs) != 0 or blob.touched is None \
                or blob.touched > stamp(cutoff):
            report.blobs_in_use += 1
            return "in use"
        if dry_run:
            _count_deleted(report, digest, blob)
            return "deleted"
        since = claim(digest, cutoff)
        if since is None:
            report.blobs_in_use += 1
            return "in use"
    elif dry_run or metadata.wall_clock() <= (blob.since or 0) + metadata.LEASE_SECONDS:
        report.blobs_busy += 1
        return "busy"
    else:
        orphan = False
        since = reclaim(digest, blob.since)
        if since is None:
            report.blobs_busy += 1
            return "busy"
    try:
        report.links_deleted += unlink(digest, since)
        delete_object(digest, since, metadata.object_key(digest, blob))
    except _LeaseExpired:
        report.blobs_busy += 1
        return "busy"
    if not forget(digest, since, event_sk):
        report.blobs_in_use += 1      # an upload took it over after our lease: live again
        return "in use"
    if orphan:
        report.orphans_deleted += 1
    else:
        _count_deleted(report, digest, blob)
    return "deleted"


def _count_deleted(report: Report, digest: str, blob: BlobItem) -> None:
    report.blobs_deleted += 1
    report.bytes_deleted += int(blob.size or 0)
    if len(report.deleted_blobs) < 100:
        report.deleted_blobs.append(digest)


def _lease_holds(since: float) -> None:
    if metadata.wall_clock() >= since + metadata.LEASE_SECONDS - metadata.DELETE_MARGIN:
        raise _LeaseExpired()


def claim(digest: str, cutoff: float) -> Optional[float]:
    """Step 1: mark a live, unreferenced blob untouched since `cutoff` as being deleted by us;
    returns the claim's time (its lease), or None when the blob is not garbage (any more)."""
    since = metadata.wall_clock()
    try:
        BlobItem(blob_pk(digest), BLOB_SK).update(
            actions=[BlobItem.state.set(DELETING), BlobItem.since.set(since)],
            condition=(BlobItem.sk.exists() & BlobItem.state.does_not_exist()
                       & (BlobItem.refs == 0) & (BlobItem.touched <= stamp(cutoff))))
        return since
    except UpdateError as exc:
        if is_condition_failure(exc):
            return None
        raise


def claim_orphan(digest: str) -> Optional[float]:
    """Step 1 for an object without BlobItem: create the item already claimed, so that an upload
    recording the blob meanwhile waits for our lease like for any claimed blob."""
    since = metadata.wall_clock()
    try:
        BlobItem(blob_pk(digest), BLOB_SK, size=0, created=since, refs=0, state=DELETING,
                 since=since).save(condition=BlobItem.sk.does_not_exist())
        return since
    except PutError as exc:
        if is_condition_failure(exc):
            return None
        raise


def reclaim(digest: str, stale_since: float) -> Optional[float]:
    """Step 1 again, for a blob whose claim's lease expired (its sweep died or overran)."""
    since = metadata.wall_clock()
    try:
        BlobItem(blob_pk(digest), BLOB_SK).update(
            actions=[BlobItem.since.set(since)],
            condition=(BlobItem.state == DELETING) & (BlobItem.since == stale_since))
        return since
    except UpdateError as exc:
        if is_condition_failure(exc):
            return None
        raise


_UNLINK_PAGE = 100


def unlink(digest: str, since: float) -> int:
    """Step 2: delete the blob's link in every repository: the LinkItems first, then their
    reverse items (a crash between leaves reverse items without links, harmless and found again
    by the next attempt; never a link without its reverse item). No link can be added meanwhile:
    the blob is not live."""
    count = 0
    while True:
        _lease_holds(since)
        page = list(BlobLinkItem.query(blob_pk(digest), BlobLinkItem.sk.startswith(
            BLOB_LINK_PREFIX), consistent_read=True, limit=_UNLINK_PAGE, page_size=_UNLINK_PAGE))
        if not page:
            return count
        repos = [reverse.sk[len(BLOB_LINK_PREFIX):] for reverse in page]
        _lease_holds(since)
        delete_links(digest, repos)
        delete_reverse_links(digest, repos)
        count += len(page)
        if len(page) < _UNLINK_PAGE:
            return count         # that was all of them: none can appear while claimed


def delete_links(digest: str, repos: List[str]) -> None:
    with LinkItem.batch_write() as batch:
        for repo in repos:
            batch.delete(LinkItem(repo_pk(repo), link_sk(digest)))


def delete_reverse_links(digest: str, repos: List[str]) -> None:
    with BlobLinkItem.batch_write() as batch:
        for repo in repos:
            batch.delete(BlobLinkItem(blob_pk(digest), blob_link_sk(repo)))


def delete_object(digest: str, since: float, key: Optional[str] = None) -> None:
    """Step 3: delete the blob's S3 object (where its upload assembled it: BlobItem.key), only
    while our lease holds (with its margin). The key cannot change meanwhile: only an upload
    taking over after our lease changes it."""
    _lease_holds(since)
    blobstore.delete_object(key or blobstore.blob_key(digest))


def forget(digest: str, since: float, event_sk: str) -> bool:
    """Step 4: delete the BlobItem, if still in our claim, together with the event."""
    tx = Tx()
    tx.delete(("blob", digest), BlobItem(blob_pk(digest), BLOB_SK),
              condition=(BlobItem.state == DELETING) & (BlobItem.since == since))
    tx.delete(("event",), GcQueueItem(GC_PK, event_sk))
    try:
        tx.commit()
        return True
    except TxFailed:
        return False


# ---------------------------------------------------------------- scheduled entry point

class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (Lambda's, or a test's capture)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging() -> None:
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.INFO)


def scheduled(event=None) -> dict:
    """The body of app.py's scheduled function: one sweep with the environment's policy, in the
    time the Lambda has left (minus a margin), logged as one JSON line."""
    budget = None
    context = getattr(event, "context", None)
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        budget = max(context.get_remaining_time_in_millis() / 1000 - 30, 10)
    report = sweep(budget_seconds=budget).to_dict()
    configure_logging()
    log.info(json.dumps({"gc": report}, sort_keys=True))
    return report


# ---------------------------------------------------------------- stats and audit

def stats() -> dict:
    """Stored blobs (S3 objects under blobs/): count and bytes; and the pending GC events."""
    s3 = blobstore.client()
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=blobstore.settings().bucket,
                                                             Prefix="blobs/"):
        for obj in page.get("Contents", []):
            count += 1
            size += obj["Size"]
    events = sum(1 for _ in GcQueueItem.query(GC_PK, attributes_to_get=["pk", "sk"]))
    sessions = sum(1 for _ in UploadItem.query(UPLOADS_PK, attributes_to_get=["pk", "sk"]))
    return {"blobs": count, "bytes": size, "gc_events_pending": events,
            "upload_sessions": sessions}


def _audited_kinds() -> List[Tuple[str, type, str, str]]:
    """What audit reads, by item type: (group, model, pk prefix, sk prefix); the sk of a blob
    item is BLOB_SK itself."""
    from chalicelib.storage.mirrors import HOLD_PREFIX, MirrorHoldItem
    from chalicelib.storage.models import ManifestItem
    return [("blobs", BlobItem, "blob#", BLOB_SK), ("holds", MirrorHoldItem, "", HOLD_PREFIX),
            ("reverse", BlobLinkItem, "blob#", BLOB_LINK_PREFIX),
            ("links", LinkItem, "repo#", "blob#"),
            ("manifests", ManifestItem, "repo#", "manifest#"), ("tags", TagItem, "repo#", "tag#")]


def _kind_of(pk: str, sk: str, kinds) -> Optional[Tuple[str, type]]:
    for group, model, pk_prefix, sk_prefix in kinds:
        if pk.startswith(pk_prefix) and (sk == BLOB_SK if sk_prefix == BLOB_SK
                                         else sk.startswith(sk_prefix)):
            return group, model
    return None


def _items_by_type() -> Dict[str, list]:
    """The items audit checks, grouped by type, from one consistent scan: a scan reads (and
    DynamoDB bills) the whole table whatever its filter, so audit reads it once rather than once
    per item type."""
    from pynamodb.pagination import ResultIterator
    from chalicelib.storage.models import TableModel
    kinds = _audited_kinds()
    pk, sk = TableModel.pk, TableModel.sk
    wanted = None
    for _, _, pk_prefix, sk_prefix in kinds:
        match = (sk == BLOB_SK) if sk_prefix == BLOB_SK else sk.startswith(sk_prefix)
        match = match & pk.startswith(pk_prefix) if pk_prefix else match
        wanted = match if wanted is None else wanted | match
    found: Dict[str, list] = {group: [] for group, _, _, _ in kinds}
    for raw in ResultIterator(TableModel._get_connection().scan, (),
                              {"filter_condition": wanted, "consistent_read": True}):
        kind = _kind_of(raw["pk"]["S"], raw["sk"]["S"], kinds)
        if kind is not None:
            found[kind[0]].append(kind[1].from_raw_data(raw))
    return found


def audit() -> Dict[str, list]:
    """Check the invariants garbage collection relies on, with one full table scan and a bucket
    listing (cost proportional to the registry: for tests and `berth gc --check`). Empty lists
    mean consistent; "unreferenced_blobs" are garbage a sweep will collect after their grace."""
    from chalicelib.storage.mirrors import HOLD_PREFIX
    objects = set(blobstore.list_keys("blobs/"))
    found = _items_by_type()
    blobs = {b.pk[5:]: b for b in found["blobs"]}
    reverse = {(r.sk[len(BLOB_LINK_PREFIX):], r.pk[5:]) for r in found["reverse"]}
    link_items = {(li.pk[5:], li.sk[5:]): li for li in found["links"]}
    links = set(link_items)
    manifests = {(m.pk[5:], m.sk[9:]): m for m in found["manifests"]}
    tags = [(t.pk[5:], t.sk[4:], t.digest) for t in found["tags"]]
    refs: Dict[str, int] = {}
    for hold in found["holds"]:
        refs[hold.sk[len(HOLD_PREFIX):]] = refs.get(hold.sk[len(HOLD_PREFIX):], 0) + 1
    parents: Dict[Tuple[str, str], int] = {}
    for (repo, digest), item in manifests.items():
        for blob in metadata.manifest_refs(digest, item):
            refs[blob] = refs.get(blob, 0) + 1
        for child in item.children or []:
            parents[(repo, child)] = parents.get((repo, child), 0) + 1
    live = {d for d, b in blobs.items() if b.state is None}
    keys = {d: metadata.object_key(d, b) for d, b in blobs.items()}
    stored = set(keys.values())
    return {
        "links_to_missing_blobs": sorted(
            f"{r}@{d}" for (r, d), li in link_items.items()
            if d not in live or metadata.object_key(d, li) != keys[d] or keys[d] not in objects),
        "links_without_reverse": sorted(f"{r}@{d}" for r, d in links - reverse),
        "reverse_without_link": sorted(f"{r}@{d}" for r, d in reverse - links),
        "live_blobs_without_object": sorted(d for d in live if keys[d] not in objects),
        "objects_without_blob": sorted(k for k in objects if k not in stored),
        "blobs_being_deleted": sorted(d for d, b in blobs.items() if b.state is not None),
        "refs_mismatch": sorted(f"{d}: stored {b.refs}, actual {refs.get(d, 0)}"
                                for d, b in blobs.items() if b.state is None
                                and int(b.refs or 0) != refs.get(d, 0)),
        "parents_mismatch": sorted(f"{r}@{d}: stored {m.parents}, actual {parents.get((r, d), 0)}"
                                   for (r, d), m in manifests.items()
                                   if int(m.parents or 0) != parents.get((r, d), 0)),
        "referenced_blobs_missing": sorted(d for d in refs if d not in live),
        "manifest_blobs_not_linked": sorted(
            f"{r}@{m}: {b}" for (r, m), item in manifests.items() for b in item.blobs or []
            if (r, b) not in links),
        "tags_to_missing_manifests": sorted(f"{r}:{t}" for r, t, d in tags
                                            if (r, d) not in manifests),
        "unreferenced_blobs": sorted(d for d in live if refs.get(d, 0) == 0),
    }
