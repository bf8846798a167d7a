"""Self-check of the end-to-end helpers (tests/support) against the reference registry
(Debian's docker-registry, CNCF distribution): if these pass, a failure of the same steps
against Berth is Berth's.

Images are built once per session under a session temp dir, or under $BERTH_E2E_IMAGE_CACHE
when set (kept across sessions; layouts are rebuilt only when their parameters change).
"""
from __future__ import annotations

import hashlib
import time

import pytest

from tests.support.clients import (ClientError, Podman, image_identity, layout_digests,
                                   skopeo_copy, skopeo_delete, skopeo_inspect,
                                   skopeo_inspect_raw, skopeo_list_tags)
from tests.support.images import OCI_INDEX, build_image, build_index
from tests.support.refregistry import RecordingProxy, RefRegistry

MiB, KiB = 1 << 20, 1 << 10
needs_podman = pytest.mark.needs("podman")

pytestmark = [pytest.mark.e2e, pytest.mark.needs("skopeo", "docker-registry")]


@pytest.fixture(scope="session")
def ref_registry(tmp_path_factory):
    with RefRegistry(tmp_path_factory.mktemp("docker-registry")) as reg:
        yield reg


@pytest.fixture
def timings(record_property):
    """timings["step"] = seconds; reported as test properties (junit xml) and printed (-s)."""
    out: dict[str, float] = {}
    yield out
    for k, v in out.items():
        record_property(k, round(v, 3))
    print(" ".join(f"{k}={v:.2f}s" for k, v in out.items()))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_skopeo_single_arch_roundtrip(ref_registry, image_cache, tmp_path, timings):
    t0 = time.perf_counter()
    img = build_image(image_cache / "single", layers=[50 * MiB, 1 * MiB, 10 * KiB],
                      seed="selfcheck-single")
    timings["build"] = time.perf_counter() - t0
    ref = f"docker://{ref_registry.netloc}/selfcheck/single:v1"

    pushed = skopeo_copy(img.oci_ref, ref)
    timings["push"] = pushed.seconds
    assert pushed.digest == img.manifest_digest  # skopeo keeps manifest and blobs byte for byte

    raw = skopeo_inspect_raw(ref)
    assert _sha256(raw) == img.manifest_digest
    summary = skopeo_inspect(ref)
    assert summary["Digest"] == img.manifest_digest
    assert summary["Layers"] == img.layer_digests
    assert skopeo_list_tags(f"docker://{ref_registry.netloc}/selfcheck/single") == ["v1"]

    dest = tmp_path / "pulled"
    pulled = skopeo_copy(ref, f"oci:{dest}:v1")
    timings["pull"] = pulled.seconds
    got = layout_digests(dest, "v1")  # re-hashes every pulled blob
    assert got["manifest_digest"] == img.manifest_digest
    assert got["config_digest"] == img.config_digest
    assert got["layer_digests"] == img.layer_digests
    assert got["blobs"] == sorted(img.blob_digests)
    for digest, size in zip(img.layer_digests, img.layer_sizes):
        assert (dest / "blobs" / "sha256" / digest[7:]).stat().st_size == size
    assert image_identity(ref).content() == image_identity(img.oci_ref).content()


def test_skopeo_delete(ref_registry, image_cache):
    img = build_image(image_cache / "tiny", layers=[4 * KiB], seed="selfcheck-tiny")
    ref = f"docker://{ref_registry.netloc}/selfcheck/tiny"
    skopeo_copy(img.oci_ref, f"{ref}:gone")
    skopeo_delete(f"{ref}@{img.manifest_digest}")
    with pytest.raises(ClientError) as e:
        skopeo_inspect_raw(f"{ref}:gone")
    assert "manifest unknown" in e.value.stderr.lower() or "not found" in e.value.stderr.lower()


def test_skopeo_copy_all_index(ref_registry, image_cache, tmp_path, timings):
    t0 = time.perf_counter()
    idx = build_index(image_cache / "multi", platforms=[("linux", "amd64"), ("linux", "arm64")],
                      layers=[1 * MiB, 10 * KiB], seed="selfcheck-multi")
    timings["build"] = time.perf_counter() - t0
    ref = f"docker://{ref_registry.netloc}/selfcheck/multi:v1"

    pushed = skopeo_copy(idx.oci_ref, ref, all_images=True)
    timings["push"] = pushed.seconds
    assert pushed.digest == idx.index_digest

    raw = skopeo_inspect_raw(ref)
    assert _sha256(raw) == idx.index_digest
    index = skopeo_inspect(ref, raw=True)
    assert index["mediaType"] == OCI_INDEX
    assert [(m["digest"], m["platform"]["os"], m["platform"]["architecture"])
            for m in index["manifests"]] == [(i.manifest_digest, i.os, i.arch) for i in idx.images]
    for child in idx.images:  # every child manifest is there by digest, unchanged
        child_ref = f"docker://{ref_registry.netloc}/selfcheck/multi@{child.manifest_digest}"
        assert _sha256(skopeo_inspect_raw(child_ref)) == child.manifest_digest
        assert image_identity(child_ref).content() == (child.config_digest,
                                                       tuple(child.diff_ids), child.os, child.arch)

    dest = tmp_path / "pulled"
    pulled = skopeo_copy(ref, f"oci:{dest}:v1", all_images=True)
    timings["pull"] = pulled.seconds
    got = layout_digests(dest, "v1")
    assert got["manifest_digest"] == idx.index_digest
    assert set(got["children"]) == {i.manifest_digest for i in idx.images}
    for child in idx.images:
        sub = got["children"][child.manifest_digest]
        assert (sub["config_digest"], sub["layer_digests"]) == (child.config_digest,
                                                                child.layer_digests)
    assert got["blobs"] == sorted(set(idx.all_digests) - {idx.index_digest})


@needs_podman
def test_podman_load_push_pull(ref_registry, image_cache, tmp_path, timings):
    img = build_image(image_cache / "podman-small", layers=[1 * MiB, 10 * KiB],
                      seed="selfcheck-podman")
    pusher, puller = Podman(tmp_path / "podman-push"), Podman(tmp_path / "podman-pull")
    try:
        t0 = time.perf_counter()
        local = pusher.load_oci(img.path, img.tag, name="selfcheck")
        timings["load"] = time.perf_counter() - t0
        loaded = pusher.identity(local)
        assert loaded.manifest_digest == img.manifest_digest  # as loaded, not as pushed later
        assert loaded.content() == (img.config_digest, tuple(img.diff_ids), img.os, img.arch)

        # through a recording proxy: proves the upload is plain HTTP and shows its framing
        with RecordingProxy(ref_registry.url) as proxy:
            target = f"{proxy.netloc}/selfcheck/podman:v1"
            pushed = pusher.push(local, target)
            timings["push"] = pushed.seconds
            patches = [r for r in proxy.requests if r.method == "PATCH"]
            layer_patches = [r for r in patches if r.chunked]
            assert not proxy.errors
            # layers are recompressed on the fly: size unknown, Transfer-Encoding: chunked
            assert len(layer_patches) == len(img.layer_digests), \
                [(r.method, r.chunked, r.body_bytes) for r in patches]
            assert all(r.status == 202 for r in patches)

        ident = image_identity(f"docker://{ref_registry.netloc}/selfcheck/podman:v1")
        assert ident.manifest_digest == pushed.digest
        assert pushed.digest != img.manifest_digest  # recompressed layers: a new manifest
        assert ident.content() == loaded.content()   # config and diff_ids survive
        manifest = skopeo_inspect(f"docker://{ref_registry.netloc}/selfcheck/podman:v1",
                                  raw=True)
        assert set(d["digest"] for d in manifest["layers"]).isdisjoint(img.layer_digests)

        # recompression is deterministic: the same local image pushes to the same digest
        again = pusher.push(local, f"{ref_registry.netloc}/selfcheck/podman:v2")
        assert again.digest == pushed.digest

        t0 = time.perf_counter()
        image_id = puller.pull(f"{ref_registry.netloc}/selfcheck/podman:v1")
        timings["pull"] = time.perf_counter() - t0
        assert "sha256:" + image_id == img.config_digest
        got = puller.identity(f"{ref_registry.netloc}/selfcheck/podman:v1")
        assert got.manifest_digest == pushed.digest
        assert got.content() == loaded.content()
    finally:
        pusher.cleanup()
        puller.cleanup()
