"""Garbage collection treats a mirror's content as a cache: images not pulled for
BERTH_MIRROR_MAX_IDLE are evicted, never a blob that a pushed image still references."""
from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest
import requests

from chalicelib import gc
from chalicelib.storage import blobstore, mirrors
from tests.support.clients import layout_digests, skopeo_copy
from tests.support.images import build_image
from tests.support.refregistry import RefRegistry
from tests.support.registry_api import ADMIN

pytestmark = pytest.mark.e2e
KiB = 1 << 10
DAY = 86400


def s3_has(digest: str) -> bool:
    return bool(blobstore.list_keys(blobstore.blob_key(digest)))


def test_idle_cached_images_are_evicted_but_blobs_of_pushed_images_stay(
        registry, monkeypatch, tmp_path, image_cache):
    monkeypatch.setenv("BERTH_MIRROR_ALLOW_LOOPBACK", "1")
    monkeypatch.delenv("BERTH_MIRROR_MAX_IDLE", raising=False)     # the default: 30 days
    host = urlparse(registry).netloc
    cached = build_image(image_cache / "gc-cached", layers=[100 * KiB, 50 * KiB], seed="gc-m")
    pushed = build_image(image_cache / "gc-pushed", layers=[100 * KiB], seed="gc-m")
    shared, cache_only = cached.layer_digests
    assert pushed.layer_digests == [shared]
    upstream = RefRegistry(tmp_path / "upstream").start()
    try:
        skopeo_copy(cached.oci_ref, f"docker://{upstream.netloc}/library/app:1")
        mirrors.add_rule("gccache", upstream.url, prefix="library/", public=True)
        # pulled through the mirror, and a user pushes an image sharing one of its layers
        skopeo_copy(f"docker://{host}/gccache/app:1", f"oci:{tmp_path / 'a'}:1")
        skopeo_copy(pushed.oci_ref, f"docker://{host}/gcpush/app:1", creds=":".join(ADMIN))
        assert all(s3_has(d) for d in (shared, cache_only, cached.config_digest))

        report = gc.sweep(now=time.time() + 29 * DAY, grace=0)    # not idle long enough
        assert report.mirror_repositories_evicted == 0
        assert all(s3_has(d) for d in (shared, cache_only, cached.config_digest))

        report = gc.sweep(now=time.time() + 31 * DAY, grace=0)
        # this one, and any other test's cache in this process's moto: which ones, the blobs and
        # the 503 below tell
        assert report.mirror_repositories_evicted >= 1
        assert not s3_has(cache_only) and not s3_has(cached.config_digest)
        assert s3_has(shared)                          # the pushed image still uses it
        skopeo_copy(f"docker://{host}/gcpush/app:1", f"oci:{tmp_path / 'b'}:1",
                    creds=":".join(ADMIN))
        assert layout_digests(tmp_path / "b", "1")["layer_digests"] == [shared]

        # Evicted means gone from the cache: with the upstream down there is nothing to serve.
        upstream.stop()
        token = requests.get(f"{registry}/v2/_berth/token", params={
            "service": "berth", "scope": "repository:gccache/app:pull"}).json()["token"]
        r = requests.get(f"{registry}/v2/gccache/app/manifests/1",
                         headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
        problems = gc.audit()
        for name in ("refs_mismatch", "links_to_missing_blobs", "referenced_blobs_missing"):
            assert not [p for p in problems[name] if shared in p or cache_only in p], problems
    finally:
        upstream.stop()
        mirrors.remove_rule("gccache")
