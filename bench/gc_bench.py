"""What one garbage-collection sweep costs in DynamoDB, against the size of the registry.

Builds, on moto in this process (mock_aws), a registry of --manifests image manifests (default
10,000) in repositories of 50, each with 3 blobs: a config and an application layer of its own
and one of 50 base layers shared across the registry; items are written directly in batches,
with the counts and links a push would have left, in the steady state a registry reaches when
sweeps run regularly (no event pending). Then it measures, counting every AWS request in
botocore:
  idle      a sweep with nothing to do (no image deleted since the last sweep);
  deletes   the 10 manifest deletes themselves (their share of the GC bookkeeping);
  sweep     a sweep after those 10 deletes (20 blobs freed, shared base layers kept);
  uploads   a sweep after 1,000 blob uploads older than the grace period (all referenced);
  scan      for comparison: one full scan of the table, the least a mark-and-sweep GC reads
            (computed from the size of the items written, not run: moto scans slowly).

Read and write units: moto reports fixed numbers, so besides what it reports the bench applies
DynamoDB's rules to the bytes of the items read and written (4 KB per read unit, halved for
eventually consistent reads; 1 KB per write unit, doubled in transactions): "estimated" below.
usage: gc_bench.py [--manifests N] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

for _name in ("BERTH_AWS_ENDPOINT", "AWS_CA_BUNDLE", "BERTH_GC_GRACE",
              "BERTH_GC_UNTAGGED_MAX_AGE", "BERTH_GC_UPLOAD_MAX_AGE"):
    os.environ.pop(_name, None)
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                  AWS_DEFAULT_REGION="us-east-1", BERTH_TABLE="berth-gc-bench",
                  BERTH_BUCKET="berth-gc-bench")

REPO_SIZE = 50
BASES = 50


# ---------------------------------------------------------------- request meter

def _value_size(value: dict) -> int:
    (kind, v), = value.items()
    if kind in ("S", "N"):
        return len(str(v).encode())
    if kind == "B":
        return len(v) if isinstance(v, (bytes, bytearray)) else len(v) * 3 // 4
    if kind == "BOOL" or kind == "NULL":
        return 1
    if kind == "L":
        return 3 + sum(_value_size(x) + 1 for x in v)
    if kind == "M":
        return 3 + sum(len(k) + _value_size(x) + 1 for k, x in v.items())
    if kind in ("SS", "NS"):
        return sum(len(str(x)) for x in v)
    return 8


def item_size(item: dict) -> int:
    return sum(len(name) + _value_size(value) for name, value in (item or {}).items())


class Meter:
    """Every AWS request of this process, with estimated DynamoDB capacity units."""

    def __init__(self) -> None:
        self.requests: Counter = Counter()
        self.read_units = self.write_units = self.reported_units = 0.0
        self.active = False
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.requests.clear()
        self.read_units = self.write_units = self.reported_units = 0.0

    def record(self, service: str, op: str, params: dict, answer: dict) -> None:
        self.requests[f"{service}:{op}"] += 1
        if service != "dynamodb":
            return
        consumed = answer.get("ConsumedCapacity")
        for c in consumed if isinstance(consumed, list) else [consumed] if consumed else []:
            self.reported_units += float(c.get("CapacityUnits") or 0)
        factor = 1.0 if params.get("ConsistentRead") else 0.5
        if op == "GetItem":
            self.read_units += factor * max(1, math.ceil(item_size(answer.get("Item")) / 4096))
        elif op in ("Query", "Scan"):
            size = sum(item_size(i) for i in answer.get("Items", []))
            self.read_units += factor * max(1, math.ceil(size / 4096))
        elif op == "BatchGetItem":
            consistent = any(t.get("ConsistentRead") for t in params["RequestItems"].values())
            for items in answer.get("Responses", {}).values():
                for i in items:
                    self.read_units += (1.0 if consistent else 0.5) * max(
                        1, math.ceil(item_size(i) / 4096))
        elif op in ("PutItem", "UpdateItem", "DeleteItem"):
            self.write_units += max(1, math.ceil(item_size(params.get("Item")) / 1024))
        elif op == "BatchWriteItem":
            for requests in params["RequestItems"].values():
                for r in requests:
                    item = r.get("PutRequest", {}).get("Item")
                    self.write_units += max(1, math.ceil(item_size(item) / 1024))
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                (kind, body), = entry.items()
                self.write_units += 2 * max(1, math.ceil(item_size(body.get("Item")) / 1024))

    def install(self) -> None:
        from botocore.client import BaseClient
        original = BaseClient._make_api_call
        meter = self

        def metered(client, operation_name, api_params):
            answer = original(client, operation_name, api_params)
            if meter.active:
                with meter._lock:
                    meter.record(client.meta.service_model.service_name, operation_name,
                                 api_params, answer)
            return answer
        BaseClient._make_api_call = metered

    def measure(self, what, *args, **kwargs):
        self.reset()
        self.active = True
        started = time.perf_counter()
        try:
            result = what(*args, **kwargs)
        finally:
            self.active = False
        elapsed = time.perf_counter() - started
        dynamodb = {k: v for k, v in self.requests.items() if k.startswith("dynamodb:")}
        return result, {
            "dynamodb_requests": sum(dynamodb.values()),
            "dynamodb_read_units_estimated": round(self.read_units, 1),
            "dynamodb_write_units_estimated": round(self.write_units, 1),
            "dynamodb_units_reported_by_moto": round(self.reported_units, 1),
            "s3_requests": sum(v for k, v in self.requests.items() if k.startswith("s3:")),
            "requests": dict(sorted(self.requests.items())),
            "seconds_on_moto": round(elapsed, 2),
        }


# ---------------------------------------------------------------- the registry

def digest_of(text: str) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest_body(config: str, layers) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                   "size": 1469},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d,
                    "size": s} for d, s in layers]}, indent=3).encode()


def build(n_manifests: int, rnd: random.Random):
    """Write the registry's items in batches; returns [(repo, tag, digest, blobs)]."""
    from chalicelib.storage.models import (BLOB_SK, BlobItem, BlobLinkItem, LinkItem,
                                           ManifestItem, REPOS_PK, RepoItem, TagItem,
                                           blob_link_sk, blob_pk, link_sk, manifest_sk,
                                           repo_pk, tag_sk)
    now = time.time() - 30 * 86400
    bases = [(digest_of(f"base-{i}"), 30_000_000 + i) for i in range(BASES)]
    refs: Counter = Counter()
    sizes = dict(bases)
    images = []
    links = set()
    manifests, tags, repos = [], [], []
    for m in range(n_manifests):
        repo = f"team{m // (REPO_SIZE * 10)}/app{m // REPO_SIZE}"
        tag = f"v{m % REPO_SIZE}"
        config = (digest_of(f"config-{m}"), 1469)
        app = (digest_of(f"app-{m}"), rnd.randint(1000, 50_000_000))
        base = rnd.choice(bases)
        layers = [base, app]
        body = manifest_body(config[0], layers)
        digest = digest_of(body.decode())
        blobs = [config[0], base[0], app[0]]
        for d, s in (config, app):
            sizes[d] = s
        for d in blobs:
            refs[d] += 1
            links.add((repo, d))
        if m % REPO_SIZE == 0:
            repos.append(RepoItem(REPOS_PK, repo, created=now, updated=now))
        manifests.append(ManifestItem(repo_pk(repo), manifest_sk(digest), body=body,
                                      media_type="application/vnd.oci.image.manifest.v1+json",
                                      size=len(body), blobs=blobs, children=[], created=now,
                                      version=1, pushed=now))
        tags.append(TagItem(repo_pk(repo), tag_sk(tag), digest=digest,
                            media_type="application/vnd.oci.image.manifest.v1+json",
                            size=len(body), updated=now))
        images.append((repo, tag, digest, blobs))
    table_bytes = 0
    for model, items in ((RepoItem, repos), (ManifestItem, manifests), (TagItem, tags)):
        with model.batch_write() as batch:
            for item in items:
                batch.save(item)
                table_bytes += item_size(item.serialize())
    with BlobItem.batch_write() as batch:
        for d, n in refs.items():
            item = BlobItem(blob_pk(d), BLOB_SK, size=sizes[d], created=now, refs=n, touched=now)
            batch.save(item)
            table_bytes += item_size(item.serialize())
    with LinkItem.batch_write() as batch:
        for repo, d in links:
            item = LinkItem(repo_pk(repo), link_sk(d), size=sizes[d], created=now)
            batch.save(item)
            table_bytes += item_size(item.serialize())
    with BlobLinkItem.batch_write() as batch:
        for repo, d in links:
            item = BlobLinkItem(blob_pk(d), blob_link_sk(repo), created=now)
            batch.save(item)
            table_bytes += item_size(item.serialize())
    counts = {"manifests": len(manifests), "tags": len(tags), "repositories": len(repos),
              "blobs": len(refs), "links": len(links)}
    counts["items"] = (counts["manifests"] + counts["tags"] + counts["repositories"]
                       + counts["blobs"] + 2 * counts["links"])
    counts["table_bytes"] = table_bytes
    return images, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=int, default=10_000)
    parser.add_argument("--deletes", type=int, default=10)
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--out")
    args = parser.parse_args()
    from moto import mock_aws
    from berth_local.moto_dynamodb import serialized
    started = time.perf_counter()
    with mock_aws(), serialized():
        from chalicelib import gc
        from chalicelib.storage import blobstore, metadata
        from chalicelib.storage.setup import ensure_resources
        ensure_resources()
        meter = Meter()
        meter.install()
        rnd = random.Random(42)
        images, counts = build(args.manifests, rnd)
        built = time.perf_counter() - started

        results = {"registry": counts, "build_seconds": round(built, 1)}
        report, results["idle"] = meter.measure(gc.sweep)
        assert report.blobs_deleted == 0

        victims = rnd.sample(images, args.deletes)
        own = set()
        for repo, tag, digest, blobs in victims:
            own.update([blobs[0], blobs[2]])
            for blob in (blobs[0], blobs[2]):
                blobstore.put_object(blobstore.blob_key(blob), b"x")

        def delete_all():
            for repo, tag, digest, blobs in victims:
                assert metadata.delete_manifest(repo, digest)
        _, results["deletes"] = meter.measure(delete_all)
        report, results["sweep"] = meter.measure(gc.sweep)
        assert report.blobs_deleted == len(own), report
        results["sweep"]["blobs_deleted"] = report.blobs_deleted
        results["sweep"]["links_deleted"] = report.links_deleted

        # 1,000 uploads an hour and more ago, all referenced by a manifest since
        from chalicelib.storage.models import GC_PK, TOUCH, GcQueueItem, gc_blob_sk
        t = time.time() - 7200
        alive = [image for image in images if image not in victims]
        touched = [blob for _, _, _, blobs in rnd.sample(alive, args.uploads // 3 + 1)
                   for blob in blobs][:args.uploads]
        with GcQueueItem.batch_write() as batch:
            for i, blob in enumerate(touched):
                batch.save(GcQueueItem(GC_PK, gc_blob_sk(TOUCH, t + i / 1000, blob)))
        report, results["uploads"] = meter.measure(gc.sweep)
        results["uploads"]["events_read"] = report.events_read
        assert report.events_read == len(touched)
        assert report.blobs_deleted == 0

        results["scan"] = {   # Scan pages stop at 1 MB; eventually consistent: 0.5 unit per 4 KB
            "dynamodb_requests": math.ceil(counts["table_bytes"] / (1 << 20)),
            "dynamodb_read_units_estimated": math.ceil(counts["table_bytes"] / 4096) * 0.5,
            "dynamodb_write_units_estimated": 0, "s3_requests": 0, "computed": True}
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(results, indent=2))
    print()
    print(f"registry: {counts['manifests']} manifests, {counts['blobs']} blobs, "
          f"{counts['links']} links, {counts['items']} items")
    print(f"{'case':<10} {'DynamoDB requests':>18} {'read units (est.)':>18} "
          f"{'write units (est.)':>19} {'S3 requests':>12}")
    for case, label in (("idle", "idle"), ("deletes", f"{args.deletes} deletes"),
                        ("sweep", "sweep"), ("uploads", "1k events"), ("scan", "full scan")):
        r = results[case]
        print(f"{label:<10} {r['dynamodb_requests']:>18} {r['dynamodb_read_units_estimated']:>18} "
              f"{r['dynamodb_write_units_estimated']:>19} {r['s3_requests']:>12}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
