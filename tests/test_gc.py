"""Garbage collection (chalicelib/gc.py): what a sweep frees, what it must never free, crashes
at every step, a manifest PUT racing a sweep at every point, and everything at once on threads.

Berth is the in-process `registry` fixture over moto. moto's DynamoDB is made linearizable for
this module (berth_local/moto_dynamodb.py): unpatched, a failed transaction in moto undoes
other threads' writes. Sweeps run in this process against the same moto; `now=` judges the
policies at a later time instead of waiting, and the `clock` fixture moves the wall clock of the
claims' leases (and makes waiting for a lease instantaneous).
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Dict, List, Set

import pytest
import requests

from chalicelib import gc, manifests, uploads
from chalicelib.errors import RegistryError
from chalicelib.storage import blobstore, metadata
from chalicelib.storage.models import DELETING, UPLOADS_PK, UploadItem
from berth_local.moto_dynamodb import serialized
from tests.support.registry_api import (ADMIN, RegistryClient, absolute, error_code, http,
                                        image_manifest, push_blob, sha256)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX,
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json"])
MiB = 1 << 20

# Invariants that must hold after any sequence of pushes, deletes, sweeps and crashes.
INVARIANTS = ("links_to_missing_blobs", "links_without_reverse", "live_blobs_without_object",
              "refs_mismatch", "referenced_blobs_missing", "tags_to_missing_manifests")


@pytest.fixture(scope="module", autouse=True)
def linearizable_moto(registry):
    with serialized():
        yield


class FakeTime:
    """metadata's `time` module and lease clock: real time plus an offset that sleeping adds to."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += seconds

    def expire_leases(self) -> None:
        self.offset += metadata.LEASE_SECONDS + 1


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(metadata, "time", fake)
    monkeypatch.setattr(metadata, "wall_clock", fake.time)
    return fake


# ---------------------------------------------------------------- helpers

def stored() -> Set[str]:
    """Digests whose object is in S3 (listed with boto3 in the test's moto): content-addressed
    objects, and objects assembled by chunked uploads (named by their BlobItem's key; one that no
    BlobItem names shows as `orphan:<key>`)."""
    from chalicelib.storage.models import BLOB_SK, BlobItem
    keys = set(blobstore.list_keys("blobs/"))
    assembled = {k for k in keys if k.startswith("blobs/u/")}
    digests = {f"{k.split('/')[1]}:{k.split('/')[3]}" for k in keys - assembled}
    for blob in BlobItem.scan(BlobItem.sk == BLOB_SK, consistent_read=True):
        if blob.key in assembled:
            digests.add(blob.pk[5:])
            assembled.discard(blob.key)
    return digests | {f"orphan:{k}" for k in assembled}


def push(base: str, repo: str, tag: str, layers, config: bytes = None,
         client: RegistryClient = http) -> Dict:
    """Push an image of these layer bytes (and a unique config); its digests."""
    config = config if config is not None else os.urandom(32)
    config_digest = push_blob(base, repo, config, client)
    layer_digests = [(push_blob(base, repo, data, client), len(data)) for data in layers]
    body = image_manifest(config_digest, len(config), layer_digests)
    r = client.put(f"{base}/v2/{repo}/manifests/{tag}", data=body,
                   headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return {"digest": r.headers["Docker-Content-Digest"], "body": body,
            "blobs": [config_digest] + [d for d, _ in layer_digests]}


def pull_complete(base: str, repo: str, ref: str, client: RegistryClient = http) -> str:
    """Pull `ref` and every blob it needs, through the redirects, checking every digest."""
    r = client.get(f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
    assert r.status_code == 200, (repo, ref, r.text)
    digest = r.headers["Docker-Content-Digest"]
    assert digest == sha256(r.content)
    doc = r.json()
    if "manifests" in doc:
        for child in doc["manifests"]:
            pull_complete(base, repo, child["digest"], client)
        return digest
    for blob in [doc["config"]["digest"]] + [layer["digest"] for layer in doc["layers"]]:
        r = client.get(f"{base}/v2/{repo}/blobs/{blob}", allow_redirects=False)
        assert r.status_code == 307, (repo, blob, r.text)
        data = requests.get(r.headers["Location"], timeout=60)
        assert data.status_code == 200, (repo, blob, data.status_code)
        assert sha256(data.content) == blob
    return digest


def assert_consistent(no_garbage: bool = False) -> dict:
    problems = gc.audit()
    broken = {k: problems[k] for k in INVARIANTS if problems[k]}
    assert not broken, broken
    if no_garbage:
        assert not problems["objects_without_blob"], problems["objects_without_blob"]
        assert not problems["unreferenced_blobs"], problems["unreferenced_blobs"]
        assert not problems["blobs_being_deleted"], problems["blobs_being_deleted"]
    return problems


def final_sweep(clock: FakeTime = None) -> gc.Report:
    """A clean sweep with grace 0 after every lease has expired: nothing unreferenced is left."""
    if clock is not None:
        clock.expire_leases()
    report = gc.sweep(now=clock.time() if clock else None, grace=0)
    assert report.complete and report.blobs_busy == 0, report
    return report


def blob_state(digest: str):
    item = metadata.get_blob(digest)
    return None if item is None else (item.state or "live")


def head_blob(base: str, repo: str, digest: str) -> int:
    return http.head(f"{base}/v2/{repo}/blobs/{digest}").status_code


# ---------------------------------------------------------------- (a) what a sweep frees

def test_deleting_an_image_frees_its_own_blobs_and_keeps_shared_ones(any_registry):
    registry = any_registry   # on one instance and on a fleet of three
    shared = os.urandom(3000)
    a = push(registry, "gc/a", "v1", [shared, os.urandom(2000)])
    b = push(registry, "gc/b", "v1", [shared, os.urandom(2100)])
    own_a = set(a["blobs"]) - set(b["blobs"])
    assert len(own_a) == 2 and set(a["blobs"]) | set(b["blobs"]) <= stored()

    assert http.delete(f"{registry}/v2/gc/a/manifests/{a['digest']}").status_code == 202
    dry = gc.sweep(grace=0, dry_run=True)
    assert own_a <= set(dry.deleted_blobs) and own_a <= stored()   # a dry run deletes nothing
    report = gc.sweep(grace=0)

    assert not own_a & stored()                        # A's own blobs: gone from S3
    assert set(b["blobs"]) <= stored()                 # the shared layer and all of B stay
    assert own_a <= set(report.deleted_blobs) and report.bytes_deleted >= 2000 + 32
    assert report.links_deleted >= 2
    assert pull_complete(registry, "gc/b", "v1") == b["digest"]
    for digest in own_a:                               # their links went before the objects
        assert head_blob(registry, "gc/a", digest) == 404
        assert blob_state(digest) is None
    assert head_blob(registry, "gc/a", sha256(shared)) == 200   # still stored: still linked
    assert_consistent()


def test_a_blob_shared_by_two_manifests_of_one_repository_needs_both_deleted(any_registry):
    registry = any_registry   # on one instance and on a fleet of three
    shared = os.urandom(1000)
    one = push(registry, "gc/two", "one", [shared])
    two = push(registry, "gc/two", "two", [shared])
    layer = sha256(shared)
    assert int(metadata.get_blob(layer).refs) == 2
    assert http.delete(f"{registry}/v2/gc/two/manifests/{one['digest']}").status_code == 202
    gc.sweep(grace=0)
    assert layer in stored() and int(metadata.get_blob(layer).refs) == 1
    assert pull_complete(registry, "gc/two", "two") == two["digest"]
    # deleting a tag keeps the manifest, and so its blobs
    assert http.delete(f"{registry}/v2/gc/two/manifests/two").status_code == 202
    gc.sweep(grace=0)
    assert layer in stored()
    assert pull_complete(registry, "gc/two", two["digest"]) == two["digest"]
    assert http.delete(f"{registry}/v2/gc/two/manifests/{two['digest']}").status_code == 202
    gc.sweep(grace=0)
    assert layer not in stored() and blob_state(layer) is None
    assert_consistent()


def test_a_manifest_too_big_to_keep_inline_is_a_shared_counted_blob(any_registry):
    registry = any_registry   # on one instance and on a fleet of three
    """Its bytes are stored once for every repository holding it (they used to be deleted with
    the first repository's copy of the manifest) and freed with the last one."""
    layer = os.urandom(500)
    layers = [(push_blob(registry, repo, layer), len(layer)) for repo in ("gc/big1", "gc/big2")]
    config = os.urandom(32)
    for repo in ("gc/big1", "gc/big2"):
        push_blob(registry, repo, config)
    body = image_manifest(sha256(config), len(config), layers[:1],
                          annotations={"pad": "x" * (400 * 1024)})
    digest = sha256(body)
    for repo in ("gc/big1", "gc/big2"):
        r = http.put(f"{registry}/v2/{repo}/manifests/v1", data=body,
                     headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
    assert digest in stored() and int(metadata.get_blob(digest).refs) == 2
    assert http.delete(f"{registry}/v2/gc/big1/manifests/{digest}").status_code == 202
    gc.sweep(grace=0)
    assert pull_complete(registry, "gc/big2", "v1") == digest
    assert http.delete(f"{registry}/v2/gc/big2/manifests/{digest}").status_code == 202
    gc.sweep(grace=0)
    assert digest not in stored() and sha256(layer) not in stored()
    assert_consistent()


def test_a_manifest_with_more_references_than_a_transaction_holds(registry, clock):
    """Over 95 blobs: references are taken in their own transactions first, and given back when
    the manifest's transaction fails."""
    repo = "gc/many"
    blobs = [os.urandom(64) for _ in range(130)]
    for data in blobs:                      # uploaded in-process: the HTTP path is tested above
        uploads.store_blob(repo, sha256(data), data)
    layers = [(sha256(data), len(data)) for data in blobs]
    config = os.urandom(32)
    push_blob(registry, repo, config)
    body = image_manifest(sha256(config), len(config), layers)

    # One blob is claimed by a sweep: the PUT fails and gives back every reference it took.
    victim = layers[120][0]
    assert gc.claim(victim, clock.time()) is not None
    r = http.put(f"{registry}/v2/{repo}/manifests/v1", data=body,
                 headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN", r.text
    assert r.json()["errors"][0]["detail"]["digests"] == [victim]
    assert {int(metadata.get_blob(d).refs) for d, _ in layers if d != victim} == {0}
    # the client uploads it again (after the sweep's lease) and pushes the manifest again
    assert push_blob(registry, repo, blobs[120]) == victim
    r = http.put(f"{registry}/v2/{repo}/manifests/v1", data=body,
                 headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert {int(metadata.get_blob(d).refs) for d, _ in layers} == {1}
    gc.sweep(grace=0, now=clock.time())
    assert {d for d, _ in layers} <= stored()
    assert pull_complete(registry, repo, "v1") == sha256(body)
    assert http.delete(f"{registry}/v2/{repo}/manifests/{sha256(body)}").status_code == 202
    gc.sweep(grace=0, now=clock.time())
    assert not {d for d, _ in layers} & stored()
    assert_consistent()


@pytest.mark.e2e
@pytest.mark.needs("skopeo")
def test_skopeo_images_sharing_layers(registry, image_cache, tmp_path):
    from tests.support.clients import layout_digests, skopeo_copy, skopeo_delete
    from tests.support.images import build_image, build_index
    creds = ":".join(ADMIN)
    host = registry.split("//")[1]
    shared = build_image(image_cache / "gc-shared", layers=[256 * 1024, 8 * 1024], seed="gc-sh")
    other = build_image(image_cache / "gc-other", layers=[128 * 1024], seed="gc-other")
    multi = build_index(image_cache / "gc-multi", platforms=[("linux", "amd64"),
                                                             ("linux", "arm64")],
                        layers=[64 * 1024], seed="gc-multi")
    skopeo_copy(shared.oci_ref, f"docker://{host}/gc/sk-a:v1", creds=creds)
    skopeo_copy(other.oci_ref, f"docker://{host}/gc/sk-a:v2", creds=creds)
    skopeo_copy(shared.oci_ref, f"docker://{host}/gc/sk-b:v1", creds=creds)
    skopeo_copy(multi.oci_ref, f"docker://{host}/gc/sk-b:multi", all_images=True, creds=creds)
    skopeo_delete(f"docker://{host}/gc/sk-a@{shared.manifest_digest}", creds=creds)
    skopeo_delete(f"docker://{host}/gc/sk-a@{other.manifest_digest}", creds=creds)
    # the policy for untagged manifests on, at its strictest: the index's children stay
    report = gc.sweep(grace=0, untagged_max_age=0, now=time.time() + 1)
    assert not set(other.blob_digests) & stored()
    assert set(shared.blob_digests) <= stored()
    assert report.blobs_deleted >= len(other.blob_digests)
    skopeo_copy(f"docker://{host}/gc/sk-b:v1", f"oci:{tmp_path / 'b'}:v1", creds=creds)
    got = layout_digests(tmp_path / "b", "v1")          # re-hashes every pulled blob
    assert (got["manifest_digest"], got["config_digest"], got["layer_digests"]) == (
        shared.manifest_digest, shared.config_digest, shared.layer_digests)
    skopeo_copy(f"docker://{host}/gc/sk-b:multi", f"oci:{tmp_path / 'm'}:multi",
                all_images=True, creds=creds)
    assert layout_digests(tmp_path / "m", "multi")["manifest_digest"] == multi.index_digest
    assert_consistent()


# ---------------------------------------------------------------- (b) the grace period

def test_an_unreferenced_blob_survives_its_grace_period_then_goes(registry, clock):
    t0 = clock.time()
    data = os.urandom(700)
    digest = push_blob(registry, "gc/grace-src", data)
    hour = 3600
    gc.sweep(now=t0 + 30 * 60, grace=hour)
    assert digest in stored() and head_blob(registry, "gc/grace-src", digest) == 200
    # a mount 50 minutes later restarts its grace period
    clock.offset += 50 * 60
    r = http.post(f"{registry}/v2/gc/grace-dst/blobs/uploads/",
                  params={"mount": digest, "from": "gc/grace-src"})
    assert r.status_code == 201, r.text
    report = gc.sweep(now=t0 + 70 * 60, grace=hour)
    assert digest in stored() and digest not in report.deleted_blobs
    report = gc.sweep(now=t0 + 111 * 60, grace=hour)
    assert digest in report.deleted_blobs and digest not in stored()
    for repo in ("gc/grace-src", "gc/grace-dst"):
        assert head_blob(registry, repo, digest) == 404
    # uploaded again later: stored afresh
    clock.offset += 2 * hour
    assert push_blob(registry, "gc/grace-src", data) == digest
    assert digest in stored() and blob_state(digest) == "live"
    assert_consistent()
    # its touch lies hours ahead of the real clock: collect it now, so that later tests' sweeps
    # (on the real clock) do not find it unreferenced and not yet due
    clock.offset += 2 * hour
    assert digest in final_sweep(clock).deleted_blobs


def test_grace_from_the_environment_and_durations(monkeypatch):
    assert [gc.parse_duration(t) for t in ("0", "90s", "30m", "1h", "2d", "1.5h", "42")] == [
        0, 90, 1800, 3600, 172800, 5400, 42]
    assert gc.parse_duration("never", allow_never=True) is None
    for bad in ("", "1w", "-1h", "h", "never"):
        with pytest.raises(ValueError):
            gc.parse_duration(bad)
    monkeypatch.setenv("BERTH_GC_GRACE", "2h")
    monkeypatch.setenv("BERTH_GC_UNTAGGED_MAX_AGE", "7d")
    monkeypatch.delenv("BERTH_GC_UPLOAD_MAX_AGE", raising=False)
    assert gc.Policy.from_env() == gc.Policy(grace=7200, untagged_max_age=7 * 86400,
                                             upload_max_age=86400)
    monkeypatch.delenv("BERTH_GC_GRACE")
    monkeypatch.delenv("BERTH_GC_UNTAGGED_MAX_AGE")
    assert gc.Policy.from_env() == gc.Policy(grace=3600, untagged_max_age=None,
                                             upload_max_age=86400)


def test_a_sweep_with_nothing_due_reads_nothing_but_its_queue(registry):
    gc.sweep(grace=0)                      # settle whatever earlier tests left
    push(registry, "gc/idle", "v1", [os.urandom(100)])
    report = gc.sweep()                    # default grace: the new blobs are not due yet
    assert report.blobs_deleted == 0 and report.events_read == 0
    # sessions, deref, mirror (eviction of idle mirrored repositories), touch
    assert report.requests == {"dynamodb:Query": 4}, report.requests


def test_the_scheduled_function_sweeps_within_the_lambda_time_and_logs_json(registry, capsys,
                                                                          monkeypatch):
    import app
    assert [s.schedule_expression.to_string() for s in app.app.event_sources
            if s.name == "gc"] == ["rate(60 minutes)"]
    monkeypatch.setenv("BERTH_GC_GRACE", "0")
    digest = push_blob(registry, "gc/scheduled", os.urandom(123))

    class Context:
        def get_remaining_time_in_millis(self):
            return 900_000
    event = {"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events",
             "account": "123456789012", "time": "2026-11-27T00:00:00Z", "region": "us-east-1",
             "resources": [], "detail": {}}
    report = app.gc_sweep(event, Context())
    assert digest in report["deleted_blobs"] and report["complete"]
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()
              if line.startswith('{"gc"')]
    assert logged and logged[-1]["gc"]["blobs_deleted"] == report["blobs_deleted"]
    assert logged[-1]["gc"]["dynamodb_requests"] > 0


# ---------------------------------------------------------------- untagged manifests

def test_untagged_manifests_policy(any_registry):
    registry = any_registry   # on one instance and on a fleet of three
    repo = "gc/untagged"
    kept = push(registry, repo, "kept", [os.urandom(100)])
    moved = push(registry, repo, "moving", [os.urandom(100)])
    newer = push(registry, repo, "moving", [os.urandom(100)])     # the tag moves: `moved` untagged
    by_digest = push(registry, repo, "tmp", [os.urandom(100)])
    assert http.delete(f"{registry}/v2/{repo}/manifests/tmp").status_code == 202
    # an index and its child, pushed by digest: the child is listed, so it stays
    child = push(registry, repo, "child-tmp", [os.urandom(100)])
    http.delete(f"{registry}/v2/{repo}/manifests/child-tmp")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child["digest"], "size": len(child["body"])}]})
    r = http.put(f"{registry}/v2/{repo}/manifests/{sha256(index.encode())}", data=index,
                 headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 201, r.text
    # a referrer (it has a subject) pushed by digest: kept
    config = os.urandom(20)
    push_blob(registry, repo, config)
    referrer = image_manifest(sha256(config), len(config), [],
                              subject={"mediaType": OCI_MANIFEST, "digest": kept["digest"],
                                       "size": len(kept["body"])})
    r = http.put(f"{registry}/v2/{repo}/manifests/{sha256(referrer)}", data=referrer,
                 headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text

    def present(digest):
        return metadata.get_manifest(repo, digest, consistent=True) is not None

    off = gc.sweep(grace=0, untagged_max_age=None, now=time.time() + 86400)
    assert off.manifests_deleted == 0 and present(moved["digest"])
    young = gc.sweep(grace=0, untagged_max_age=3600)
    assert not [m for m in young.deleted_manifests if m.startswith(repo + "@")]
    report = gc.sweep(grace=0, untagged_max_age=3600, now=time.time() + 7200)
    deleted = {m.split("@", 1)[1] for m in report.deleted_manifests if m.startswith(repo + "@")}
    assert deleted >= {moved["digest"], by_digest["digest"], sha256(index.encode())}
    assert present(kept["digest"]) and present(newer["digest"]) and present(sha256(referrer))
    assert not present(moved["digest"]) and not set(moved["blobs"]) & stored()
    # the index is gone: its child is no longer listed (its own event was looked at while the
    # index listed it; the index's delete left a new one), so it goes too, at the latest now
    gc.sweep(grace=0, untagged_max_age=3600, now=time.time() + 7200)
    assert not present(child["digest"]) and not set(child["blobs"]) & stored()
    for tag in ("kept", "moving"):
        pull_complete(registry, repo, tag)
    assert_consistent()


# ---------------------------------------------------------------- (f) upload sessions

def _start_session(base: str, repo: str, data: bytes) -> str:
    r = http.post(f"{base}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    url = absolute(base, r.headers["Location"])
    r = http.patch(url, data=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    return url


def test_abandoned_upload_sessions_are_aborted_and_young_ones_kept(any_registry):
    registry = any_registry   # on one instance and on a fleet of three
    repo = "gc/sessions"
    old_url = _start_session(registry, repo, os.urandom(5 * MiB + 100))   # a multipart part
    r = http.patch(old_url, data=os.urandom(100))                           # and a tail object
    assert r.status_code == 202, r.text
    young_data = os.urandom(1000)
    young_url = _start_session(registry, repo, young_data)
    old_id, young_id = old_url.rsplit("/", 1)[1], young_url.rsplit("/", 1)[1]
    old = UploadItem.get(UPLOADS_PK, old_id)
    assert old.mpu_id and blobstore.list_keys(blobstore.upload_prefix(old_id))
    old.update(actions=[UploadItem.updated.set(time.time() - 25 * 3600)])   # idle for 25 h

    report = gc.sweep(grace=3600)
    assert report.sessions_deleted >= 1
    with pytest.raises(UploadItem.DoesNotExist):
        UploadItem.get(UPLOADS_PK, old_id)
    assert blobstore.list_keys(blobstore.upload_prefix(old_id)) == []
    s3 = blobstore.client()
    uploads_left = s3.list_multipart_uploads(Bucket=blobstore.settings().bucket,
                                             Prefix=blobstore.assembled_key(old_id))
    assert not uploads_left.get("Uploads")
    assert blobstore.list_keys(blobstore.assembled_key(old_id)) == []
    assert error_code(http.get(old_url)) == "BLOB_UPLOAD_UNKNOWN"
    # the young session carries on
    assert UploadItem.get(UPLOADS_PK, young_id)
    r = http.put(young_url, params={"digest": sha256(young_data)})
    assert r.status_code == 201, r.text
    # and a session that is written to between the sweep's read and its claim is kept
    session = UploadItem.get(UPLOADS_PK, _start_session(registry, repo, b"x").rsplit("/", 1)[1])
    stale = UploadItem.get(UPLOADS_PK, session.sk)
    session.update(actions=[UploadItem.updated.set(time.time())])
    assert gc.expire_session(stale) is False
    assert UploadItem.get(UPLOADS_PK, session.sk)


# ---------------------------------------------------------------- mounts and uploads meet a sweep

def test_a_mount_of_a_blob_being_deleted_becomes_an_upload_that_takes_it_back(registry, clock):
    data = os.urandom(900)
    digest = push_blob(registry, "gc/claimed-src", data)
    since = gc.claim(digest, clock.time())
    assert since is not None and blob_state(digest) == DELETING
    # a mount must not link bytes about to vanish: it becomes an ordinary upload session
    r = http.post(f"{registry}/v2/gc/claimed-dst/blobs/uploads/",
                  params={"mount": digest, "from": "gc/claimed-src"})
    assert r.status_code == 202 and "Docker-Upload-UUID" in r.headers, r.text
    assert head_blob(registry, "gc/claimed-dst", digest) == 404
    # an upload of the same bytes waits out the sweep's lease, then stores them again
    gc.unlink(digest, since)
    gc.delete_object(digest, since)
    assert digest not in stored()
    assert push_blob(registry, "gc/claimed-dst", data) == digest
    assert blob_state(digest) == "live" and digest in stored()
    assert clock.time() > since + metadata.LEASE_SECONDS    # it did wait for the lease
    # the stalled sweep can no longer delete anything, nor forget the item
    with pytest.raises(gc._LeaseExpired):
        gc.delete_object(digest, since)
    assert gc.forget(digest, since, "touch#0#" + digest) is False
    r = http.get(f"{registry}/v2/gc/claimed-dst/blobs/{digest}", allow_redirects=False)
    assert sha256(requests.get(r.headers["Location"]).content) == digest
    assert_consistent()


def test_an_upload_that_died_before_recording_its_blob_leaves_no_orphan(registry, monkeypatch):
    data = os.urandom(400)
    digest = sha256(data)

    def die():
        raise RuntimeError("Lambda killed")
    metadata.ensure_repository("gc/orphan")     # the repository item: not what this is about
    monkeypatch.setattr(metadata.Tx, "commit", lambda self: die())
    r = http.post(f"{registry}/v2/gc/orphan/blobs/uploads/", params={"digest": digest},
                  data=data)
    assert r.status_code == 500
    monkeypatch.undo()
    assert digest in stored() and metadata.get_blob(digest) is None       # an orphaned object
    report = gc.sweep(grace=0)
    assert report.orphans_deleted >= 1 and digest not in stored()
    assert_consistent()
    assert push_blob(registry, "gc/orphan", data) == digest and digest in stored()


def test_an_upload_beaten_by_a_twin_whose_blob_a_sweep_then_deleted_stores_its_bytes_again(
        registry, monkeypatch):
    """The interleaving the GC soak once found, made deterministic: an upload writes the blob's
    content-addressed object; before its transaction commits, a concurrent upload of the same
    bytes publishes the blob, and a grace-0 sweep deletes that unreferenced blob, object and all
    (the key is shared). The first upload's transaction then fails, and its retry finds no blob:
    it must write the object again, never record a live blob whose bytes are gone."""
    data = os.urandom(700)
    digest = sha256(data)
    metadata.ensure_repository("gc/twin")
    real_commit = metadata.Tx.commit
    interleaved: List[str] = []

    def commit_after_a_twin_and_a_sweep(tx):
        if not interleaved:
            interleaved.append("twin")
            assert push_blob(registry, "gc/twin-other", data) == digest
            gc.sweep(grace=0)
            assert digest not in stored() and metadata.get_blob(digest) is None
        return real_commit(tx)
    monkeypatch.setattr(metadata.Tx, "commit", commit_after_a_twin_and_a_sweep)

    def write(target):
        key = target or blobstore.blob_key(digest)
        blobstore.put_object(key, data)
        return key
    metadata.publish_blob("gc/twin", digest, len(data), write)
    monkeypatch.undo()
    assert interleaved == ["twin"]
    assert blob_state(digest) == "live" and digest in stored()
    r = http.get(f"{registry}/v2/gc/twin/blobs/{digest}", allow_redirects=False)
    assert r.status_code == 307 and sha256(requests.get(r.headers["Location"]).content) == digest
    assert_consistent()


# ---------------------------------------------------------------- (c) crashes at every step

class Crash(Exception):
    pass


CRASH_POINTS = ["claim", "reclaim", "unlink", "delete_links", "delete_reverse_links",
                "delete_object", "forget", "expire_session", "collect_manifest",
                "metadata.delete_manifest", "metadata.release", "uploads.finish", "_Drops.flush"]


def _crash_scenario(base: str, name: str) -> dict:
    shared = os.urandom(800)
    a = push(base, f"{name}/a", "v1", [shared, os.urandom(800)])
    b = push(base, f"{name}/b", "v1", [shared, os.urandom(800)])
    untagged = push(base, f"{name}/b", "tmp", [os.urandom(800)])
    assert http.delete(f"{base}/v2/{name}/b/manifests/tmp").status_code == 202
    unreferenced = push_blob(base, f"{name}/a", os.urandom(300))
    assert http.delete(f"{base}/v2/{name}/a/manifests/{a['digest']}").status_code == 202
    url = _start_session(base, f"{name}/a", os.urandom(100))
    session = UploadItem.get(UPLOADS_PK, url.rsplit("/", 1)[1])
    session.update(actions=[UploadItem.updated.set(time.time() - 2 * 86400)])
    return {"a": a, "b": b, "untagged": untagged, "unreferenced": unreferenced,
            "session": session.sk, "name": name}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_sweep_killed_at_any_step_is_finished_by_the_next(registry, clock, monkeypatch,
                                                            point, when):
    gc.sweep(grace=0, now=clock.time())          # nothing else in the queue but this scenario
    s = _crash_scenario(registry, f"gc/crash/{point.replace('.', '-').strip('_').lower()}-{when}")
    owner = {"metadata": metadata, "uploads": uploads, "_Drops": gc._Drops}.get(
        point.split(".")[0], gc)
    attr = point.split(".")[-1]
    original = getattr(owner, attr)
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if when == "after":
            original(*args, **kwargs)
        raise Crash(point)
    monkeypatch.setattr(owner, attr, crashing)
    if point == "reclaim":      # a claim from a sweep that died, for reclaim() to take over
        gc.claim(s["unreferenced"], clock.time())
    clock.expire_leases()
    with pytest.raises(Crash):
        gc.sweep(grace=0, untagged_max_age=0, now=clock.time())
    assert calls["n"] == 1
    monkeypatch.setattr(owner, attr, original)

    clock.expire_leases()        # the dead sweep's claims are stale now
    gc.sweep(grace=0, untagged_max_age=0, now=clock.time())
    gone = (set(s["a"]["blobs"]) - set(s["b"]["blobs"])) | set(s["untagged"]["blobs"]) | {
        s["unreferenced"]}
    assert not gone & stored()
    assert set(s["b"]["blobs"]) <= stored()
    assert pull_complete(registry, f"{s['name']}/b", "v1") == s["b"]["digest"]
    assert metadata.get_manifest(f"{s['name']}/b", s["untagged"]["digest"]) is None
    with pytest.raises(UploadItem.DoesNotExist):
        UploadItem.get(UPLOADS_PK, s["session"])
    assert blobstore.list_keys(blobstore.upload_prefix(s["session"])) == []
    assert_consistent()
    final_sweep(clock)
    assert_consistent(no_garbage=True)


# ---------------------------------------------------------------- (d) a PUT racing a sweep

SWEEP_STEPS = ["get_blob", "claim", "unlink", "delete_object", "forget"]
INTERLEAVINGS = [(p, q) for p in range(6) for q in range(p, 6)]


def _race_setup(base: str, repo: str):
    x = os.urandom(600)
    x_digest = push_blob(base, repo, x)
    config = os.urandom(32)
    push_blob(base, repo, config)
    body = image_manifest(sha256(config), len(config), [(x_digest, len(x))])
    record = manifests.parse(body, OCI_MANIFEST, sha256(body))
    return x_digest, record


@pytest.mark.parametrize("check_at,put_at", INTERLEAVINGS)
def test_a_manifest_put_and_a_sweep_never_both_win(registry, monkeypatch, check_at, put_at):
    """The PUT is two phases (check_references: the links; put_manifest: the transaction taking
    the references); the sweep of blob X is five steps. Each phase runs before step i (6: after
    the sweep). Either the PUT fails with MANIFEST_BLOB_UNKNOWN, or X survives, whole."""
    repo = f"gc/race/{check_at}-{put_at}"
    x, record = _race_setup(registry, repo)
    outcome = {}

    def check():
        try:
            manifests.check_references(repo, record)
        except RegistryError as error:
            outcome["put"] = error.code

    def put():
        if "put" in outcome:
            return
        try:
            metadata.put_manifest(repo, record, "v1")
            outcome["put"] = "ok"
        except RegistryError as error:
            outcome["put"] = error.code
    phases = {check_at: [check], put_at: [put]} if check_at != put_at else {check_at: [check, put]}

    for i, step in enumerate(SWEEP_STEPS):
        original = getattr(gc, step)

        def hooked(*args, _i=i, _original=original, **kwargs):
            for phase in phases.get(_i, []):
                phase()
            return _original(*args, **kwargs)
        monkeypatch.setattr(gc, step, hooked)
    report = gc.Report(dry_run=False, grace_seconds=0, untagged_max_age_seconds=None,
                       upload_max_age_seconds=0)
    result = gc.collect_blob(x, "touch#000000000000000#" + x, time.time() + 1, report)
    for phase in phases.get(5, []):
        phase()
    monkeypatch.undo()

    deleted = result == "deleted"
    assert outcome["put"] in ("ok", "MANIFEST_BLOB_UNKNOWN"), outcome
    assert not (outcome["put"] == "ok" and deleted), (outcome, result)
    # which one wins is decided by the order of the two conditional writes on X's BlobItem:
    # the PUT's reference (its transaction) and the sweep's claim (step 1)
    assert (outcome["put"] == "ok") == (put_at <= 1) and deleted == (put_at >= 2), (outcome,
                                                                                   result)
    if outcome["put"] == "ok":
        assert x in stored() and blob_state(x) == "live"
        assert int(metadata.get_blob(x).refs) == 1
        assert pull_complete(registry, repo, "v1") == record.digest
    else:
        assert metadata.get_manifest(repo, record.digest) is None
    if deleted:
        assert x not in stored() and blob_state(x) is None
        assert head_blob(registry, repo, x) == 404
    assert_consistent()


def test_an_upload_during_a_sweep_of_the_same_blob_at_every_step(registry, clock, monkeypatch):
    """An upload of X's bytes lands before each step of a sweep deleting X (X was garbage until
    then): the upload always ends with X stored, live and linked, waiting out the sweep's lease
    when it must, and the sweep backs off."""
    for i, step in enumerate(SWEEP_STEPS + ["end"]):
        repo = f"gc/reupload/{i}"
        data = os.urandom(500)
        x = push_blob(registry, repo, data)
        clock.offset += 10
        cutoff = clock.time() - 5            # X is garbage by this cutoff; the upload is not

        def upload():
            assert push_blob(registry, repo + "-again", data) == x
        with monkeypatch.context() as mp:
            if step != "end":
                original = getattr(gc, step)

                def hooked(*args, _original=original, **kwargs):
                    upload()
                    return _original(*args, **kwargs)
                mp.setattr(gc, step, hooked)
            report = gc.Report(dry_run=False, grace_seconds=0, untagged_max_age_seconds=None,
                               upload_max_age_seconds=0)
            outcome = gc.collect_blob(x, "touch#000000000000000#" + x, cutoff, report)
        if step == "end":
            assert outcome == "deleted"
            upload()
        else:
            assert outcome in ("in use", "busy"), (step, outcome)
        assert blob_state(x) == "live" and x in stored(), step
        assert head_blob(registry, repo + "-again", x) == 200, step
        r = http.get(f"{registry}/v2/{repo}-again/blobs/{x}", allow_redirects=False)
        assert sha256(requests.get(r.headers["Location"]).content) == x
    final_sweep(clock)
    assert_consistent()


# ---------------------------------------------------------------- (e) everything at once

@pytest.mark.e2e
def test_concurrent_pushes_moves_deletes_and_sweeps(registry, monkeypatch):
    duration = float(os.environ.get("BERTH_GC_STRESS_SECONDS", "60"))
    repos = [f"gc/stress/r{i}" for i in range(3)]
    tags = [f"t{i}" for i in range(4)]
    bases = [os.urandom(4096) for _ in range(3)]
    stop = time.monotonic() + duration
    errors: List[str] = []
    counts = {"pushes": 0, "retries": 0, "moves": 0, "deletes": 0, "sweeps": 0, "deleted": 0}
    lock = threading.Lock()

    def note(key, n=1):
        with lock:
            counts[key] += n

    def pusher(seed):
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            repo, tag = rnd.choice(repos), rnd.choice(tags)
            layers = [rnd.choice(bases), os.urandom(rnd.randint(100, 3000))]
            for attempt in range(10):
                try:
                    push(registry, repo, tag, layers)
                    note("pushes")
                    break
                except AssertionError as failure:
                    if "MANIFEST_BLOB_UNKNOWN" not in str(failure):
                        raise
                    note("retries")     # a sweep took a just-uploaded blob (grace 0): again
            else:
                raise AssertionError("10 attempts to push failed")

    def mover(seed):
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            repo = rnd.choice(repos)
            r = http.get(f"{registry}/v2/{repo}/manifests/{rnd.choice(tags)}",
                         headers={"Accept": ACCEPT})
            if r.status_code != 200:
                continue
            r = http.put(f"{registry}/v2/{repo}/manifests/{rnd.choice(tags)}", data=r.content,
                         headers={"Content-Type": r.headers["Content-Type"]})
            # the manifest may have been deleted meanwhile, and its blobs collected
            assert r.status_code == 201 or error_code(r) in (
                "MANIFEST_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"), r.text
            note("moves")

    def deleter(seed):
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            repo = rnd.choice(repos)
            r = http.head(f"{registry}/v2/{repo}/manifests/{rnd.choice(tags)}",
                          headers={"Accept": ACCEPT})
            if r.status_code == 200:
                ref = r.headers["Docker-Content-Digest"] if rnd.random() < 0.7 else rnd.choice(tags)
                r = http.delete(f"{registry}/v2/{repo}/manifests/{ref}")
                assert r.status_code in (202, 404), r.text
                note("deletes")
            time.sleep(0.2)

    def sweeper(_):
        while time.monotonic() < stop:
            report = gc.sweep(grace=0)
            note("sweeps")
            note("deleted", report.blobs_deleted)
            time.sleep(0.1)

    def run(target, arg):
        try:
            target(arg)
        except BaseException as error:    # noqa: B902 - reported below
            errors.append(f"{target.__name__}: {error!r}"[:2000])

    workers = [(pusher, 1), (pusher, 2), (pusher, 3), (mover, 4), (deleter, 5), (sweeper, 6),
               (sweeper, 7)]
    threads = [threading.Thread(target=run, args=w) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert counts["pushes"] > 10 and counts["sweeps"] > 2 and counts["deleted"] > 0, counts

    for repo in repos:
        r = http.get(f"{registry}/v2/{repo}/tags/list")
        for tag in (r.json().get("tags") or []) if r.status_code == 200 else []:
            pull_complete(registry, repo, tag)
    clock = FakeTime()
    monkeypatch.setattr(metadata, "wall_clock", clock.time)
    final_sweep(clock)
    assert_consistent(no_garbage=True)
    problems = gc.audit()
    assert not problems["manifest_blobs_not_linked"] or not [
        p for p in problems["manifest_blobs_not_linked"] if p.startswith("gc/stress/")]
    print(counts)
