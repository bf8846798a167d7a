"""End to end with the real clients: skopeo and podman push to and pull from Berth.

Berth is served as `make run` serves it (the local gateway over moto). Every pulled blob is
re-hashed and compared with what was pushed.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.support.clients import (ClientError, Podman, image_identity, layout_digests,
                                   skopeo_copy, skopeo_delete, skopeo_inspect, skopeo_inspect_raw)
from tests.support.images import OCI_INDEX, build_image, build_index
from tests.support.refregistry import RecordingProxy
from tests.support.registry_api import ADMIN

MiB, KiB = 1 << 20, 1 << 10
CREDS = ":".join(ADMIN)
pytestmark = [pytest.mark.e2e,
              pytest.mark.needs("skopeo")]


@pytest.fixture(scope="session")
def big_image(image_cache):
    """An image with an incompressible layer of 60 MiB and two small ones."""
    return build_image(image_cache / "big", layers=[60 * MiB, 1 * MiB, 10 * KiB], seed="berth-big")


@pytest.fixture
def host(registry) -> str:
    return urlparse(registry).netloc


def assert_same_image(pulled: Path, tag: str, img) -> None:
    got = layout_digests(pulled, tag)   # re-hashes every pulled blob
    assert got["manifest_digest"] == img.manifest_digest
    assert got["config_digest"] == img.config_digest
    assert got["layer_digests"] == img.layer_digests


def test_skopeo_round_trip_of_a_big_image_and_repush(host, big_image, tmp_path, registry):
    ref = f"docker://{host}/e2e/big:v1"
    pushed = skopeo_copy(big_image.oci_ref, ref, creds=CREDS)
    assert pushed.digest == big_image.manifest_digest
    assert skopeo_inspect(ref, creds=CREDS)["Layers"] == big_image.layer_digests
    skopeo_copy(ref, f"oci:{tmp_path / 'pulled'}:v1", creds=CREDS)
    assert_same_image(tmp_path / "pulled", "v1", big_image)
    # Re-push: every blob is already there, so no byte is uploaded again.
    with RecordingProxy(registry) as proxy:
        again = skopeo_copy(big_image.oci_ref, f"docker://{proxy.netloc}/e2e/big:v2", creds=CREDS)
        assert not proxy.errors
        assert [r for r in proxy.requests if r.method in ("PATCH", "POST")] == []
    assert again.digest == big_image.manifest_digest


def test_cross_repository_mount(host, image_cache, tmp_path, registry):
    img = build_image(image_cache / "mount", layers=[2 * MiB, 10 * KiB], seed="berth-mount")
    cache = tmp_path / "blob-info-cache"   # skopeo remembers where it saw each blob, per host
    with RecordingProxy(registry) as proxy:
        skopeo_copy(img.oci_ref, f"docker://{proxy.netloc}/e2e/mount-a:v1", cache_dir=cache, creds=CREDS)
        first = len(proxy.requests)
        skopeo_copy(img.oci_ref, f"docker://{proxy.netloc}/e2e/mount-b:v1", cache_dir=cache, creds=CREDS)
        second = proxy.requests[first:]
        mounts = [r for r in second if r.method == "POST" and "mount=" in r.target]
        assert mounts and all(r.status == 201 for r in mounts)
        assert not [r for r in second if r.method == "PATCH" and r.body_bytes > 1 * MiB]
    skopeo_copy(f"docker://{host}/e2e/mount-b:v1", f"oci:{tmp_path / 'pulled'}:v1", creds=CREDS)
    assert_same_image(tmp_path / "pulled", "v1", img)


def test_multi_architecture_index_with_copy_all(host, image_cache, tmp_path):
    idx = build_index(image_cache / "multi", platforms=[("linux", "amd64"), ("linux", "arm64")],
                      layers=[1 * MiB, 10 * KiB], seed="berth-multi")
    ref = f"docker://{host}/e2e/multi:v1"
    assert skopeo_copy(idx.oci_ref, ref, all_images=True, creds=CREDS).digest == idx.index_digest
    index = skopeo_inspect(ref, raw=True, creds=CREDS)
    assert index["mediaType"] == OCI_INDEX
    assert [m["digest"] for m in index["manifests"]] == [i.manifest_digest for i in idx.images]
    skopeo_copy(ref, f"oci:{tmp_path / 'pulled'}:v1", all_images=True, creds=CREDS)
    got = layout_digests(tmp_path / "pulled", "v1")
    assert got["manifest_digest"] == idx.index_digest
    for child in idx.images:
        sub = got["children"][child.manifest_digest]
        assert (sub["config_digest"], sub["layer_digests"]) == (child.config_digest,
                                                                child.layer_digests)


def test_delete_by_digest_then_pull_says_manifest_unknown(host, image_cache):
    img = build_image(image_cache / "doomed", layers=[64 * KiB], seed="berth-doomed")
    ref = f"docker://{host}/e2e/doomed"
    skopeo_copy(img.oci_ref, f"{ref}:v1", creds=CREDS)
    skopeo_copy(img.oci_ref, f"{ref}:v2", creds=CREDS)
    skopeo_delete(f"{ref}@{img.manifest_digest}", creds=CREDS)
    for tag in ("v1", "v2"):
        with pytest.raises(ClientError) as failure:
            skopeo_inspect_raw(f"{ref}:{tag}", creds=CREDS)
        assert "manifest unknown" in failure.value.stderr.lower()


@pytest.mark.needs("podman")
def test_podman_push_and_pull_of_a_big_image(host, big_image, tmp_path):
    pusher, puller = Podman(tmp_path / "push"), Podman(tmp_path / "pull")
    try:
        local = pusher.load_oci(big_image.path, big_image.tag, name="big")
        loaded = pusher.identity(local)
        # podman recompresses layers from its local storage and streams them chunked.
        pushed = pusher.push(local, f"{host}/e2e/podman-big:v1", creds=CREDS)
        stored = image_identity(f"docker://{host}/e2e/podman-big:v1", creds=CREDS)
        assert stored.manifest_digest == pushed.digest
        assert stored.content() == loaded.content()
        assert _sha(skopeo_inspect_raw(f"docker://{host}/e2e/podman-big:v1", creds=CREDS)) == pushed.digest
        image_id = puller.pull(f"{host}/e2e/podman-big:v1", creds=CREDS)
        assert "sha256:" + image_id == big_image.config_digest
        got = puller.identity(f"{host}/e2e/podman-big:v1")
        assert got.manifest_digest == pushed.digest and got.content() == loaded.content()
    finally:
        pusher.cleanup()
        puller.cleanup()


def _sha(data: bytes) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(data).hexdigest()
