"""Manifests, tags, catalog and referrers through the gateway."""
from __future__ import annotations

import json
import threading

import pytest


from tests.support.registry_api import (error_code, http, image_manifest, push_blob, push_image, sha256)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def put_manifest(base, repo, reference, body: bytes, media_type=OCI_MANIFEST):
    return http.put(f"{base}/v2/{repo}/manifests/{reference}", data=body,
                        headers={"Content-Type": media_type})


def small_image(base, repo, seed=b"x", media_type=OCI_MANIFEST, **extra) -> bytes:
    config = b'{"os":"linux","seed":"' + seed + b'"}'
    layer = b"layer " + seed
    body = image_manifest(push_blob(base, repo, config), len(config),
                          [(push_blob(base, repo, layer), len(layer))], **extra)
    doc = json.loads(body)
    doc["mediaType"] = media_type
    return json.dumps(doc).encode()


def test_manifest_round_trip_by_tag_and_digest_returns_exact_bytes(registry):
    body = small_image(registry, "m/exact")
    r = put_manifest(registry, "m/exact", "v1", body)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == sha256(body)
    assert r.headers["Location"] == f"/v2/m/exact/manifests/{sha256(body)}"
    for reference in ("v1", sha256(body)):
        r = http.get(f"{registry}/v2/m/exact/manifests/{reference}")
        assert r.status_code == 200
        assert r.content == body
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == sha256(body)
        h = http.head(f"{registry}/v2/m/exact/manifests/{reference}")
        assert h.status_code == 200 and h.content == b""
        assert h.headers["Content-Length"] == str(len(body))
        assert h.headers["Docker-Content-Digest"] == sha256(body)


def test_put_by_digest_verifies_the_digest(registry):
    body = small_image(registry, "m/bydigest")
    assert put_manifest(registry, "m/bydigest", sha256(body), body).status_code == 201
    r = put_manifest(registry, "m/bydigest", sha256(b"other"), body)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_manifest_get_by_tag_costs_two_dynamodb_reads_and_no_s3(registry, aws_calls):
    body = small_image(registry, "cost/manifest")
    put_manifest(registry, "cost/manifest", "latest", body)
    aws_calls.reset()
    assert http.get(f"{registry}/v2/cost/manifest/manifests/latest").content == body
    assert aws_calls.count("dynamodb") <= 2, aws_calls.calls
    assert aws_calls.count("s3") == 0, aws_calls.calls


@pytest.mark.parametrize("body,code", [
    (b"not json", "MANIFEST_INVALID"),
    (b"[1,2]", "MANIFEST_INVALID"),
    (b'{"schemaVersion":1}', "MANIFEST_INVALID"),
    (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}',
     "MANIFEST_INVALID"),
    (b'{"schemaVersion":2,"mediaType":"text/plain","config":{}}', "MANIFEST_INVALID"),
    (b"\xff\xfe{}", "MANIFEST_INVALID"),
])
def test_invalid_manifests_are_refused(registry, body, code):
    r = put_manifest(registry, "m/invalid", "bad", body)
    assert r.status_code == 400 and error_code(r) == code
    assert http.get(f"{registry}/v2/m/invalid/manifests/bad").status_code == 404


def test_media_type_must_match_content_type(registry):
    body = small_image(registry, "m/ctype")
    r = put_manifest(registry, "m/ctype", "t", body, media_type=DOCKER_MANIFEST)
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID"


def test_manifest_referencing_unknown_blob_is_refused(registry):
    config = b"{}"
    body = image_manifest(push_blob(registry, "m/blobunknown", config), 2,
                          [(sha256(b"never pushed"), 12)])
    r = put_manifest(registry, "m/blobunknown", "t", body)
    assert r.status_code == 400 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    # A blob in another repository does not count.
    layer = push_blob(registry, "m/elsewhere", b"elsewhere")
    body = image_manifest(push_blob(registry, "m/blobunknown", config), 2, [(layer, 9)])
    assert error_code(put_manifest(registry, "m/blobunknown", "t", body)) == "MANIFEST_BLOB_UNKNOWN"
    assert http.get(f"{registry}/v2/m/blobunknown/manifests/t").status_code == 404


def test_manifest_size_limit(registry):
    body = b'{"schemaVersion":2,"pad":"' + b"x" * (4 * 1024 * 1024) + b'"}'
    r = put_manifest(registry, "m/huge", "t", body)
    assert r.status_code == 413 and error_code(r) == "SIZE_INVALID"


def test_large_manifest_is_kept_in_s3_and_served_exactly(registry):
    pad = "y" * (600 * 1024)   # over DynamoDB's 400 KB item limit
    body = small_image(registry, "m/large", annotations={"pad": pad})
    assert put_manifest(registry, "m/large", "t", body).status_code == 201
    assert http.get(f"{registry}/v2/m/large/manifests/t").content == body


def test_docker_schema2_manifest_and_manifest_list(registry):
    amd = small_image(registry, "m/docker", b"amd", media_type=DOCKER_MANIFEST)
    arm = small_image(registry, "m/docker", b"arm", media_type=DOCKER_MANIFEST)
    for body in (amd, arm):
        assert put_manifest(registry, "m/docker", sha256(body), body, DOCKER_MANIFEST).status_code == 201
    listing = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": sha256(b), "size": len(b),
         "platform": {"os": "linux", "architecture": a}} for b, a in ((amd, "amd64"), (arm, "arm64"))
    ]}).encode()
    assert put_manifest(registry, "m/docker", "multi", listing, DOCKER_LIST).status_code == 201
    r = http.get(f"{registry}/v2/m/docker/manifests/multi")
    assert r.content == listing and r.headers["Content-Type"] == DOCKER_LIST


def test_index_children_must_exist(registry):
    child = small_image(registry, "m/index")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256(child), "size": len(child)}]}).encode()
    r = put_manifest(registry, "m/index", "idx", index, OCI_INDEX)
    assert r.status_code == 400 and error_code(r) == "MANIFEST_UNKNOWN"
    assert put_manifest(registry, "m/index", sha256(child), child).status_code == 201
    assert put_manifest(registry, "m/index", "idx", index, OCI_INDEX).status_code == 201


def test_artifact_with_subject_and_referrers_api(registry):
    subject_body = small_image(registry, "m/refs", b"subject")
    subject = {"mediaType": OCI_MANIFEST, "digest": sha256(subject_body), "size": len(subject_body)}
    empty = push_blob(registry, "m/refs", b"{}")
    artifacts = []
    for kind in ("application/vnd.example.sbom", "application/vnd.example.signature"):
        blob = push_blob(registry, "m/refs", kind.encode())
        body = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": blob,
                        "size": len(kind)}],
            "subject": subject, "annotations": {"kind": kind}}).encode()
        # The subject does not exist yet: accepted anyway, as the spec requires.
        r = put_manifest(registry, "m/refs", sha256(body), body)
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == subject["digest"]
        artifacts.append((kind, body))
    assert put_manifest(registry, "m/refs", "subject", subject_body).status_code == 201
    r = http.get(f"{registry}/v2/m/refs/referrers/{subject['digest']}")
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    index = r.json()
    assert index["mediaType"] == OCI_INDEX and index["schemaVersion"] == 2
    assert sorted(d["digest"] for d in index["manifests"]) == sorted(sha256(b) for _, b in artifacts)
    for d in index["manifests"]:
        assert d["artifactType"] in dict(artifacts) and d["annotations"]["kind"] == d["artifactType"]
    r = http.get(f"{registry}/v2/m/refs/referrers/{subject['digest']}",
                     params={"artifactType": "application/vnd.example.sbom"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(artifacts[0][1])]
    # Deleting a referrer removes it from the list.
    http.delete(f"{registry}/v2/m/refs/manifests/{sha256(artifacts[0][1])}")
    r = http.get(f"{registry}/v2/m/refs/referrers/{subject['digest']}")
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(artifacts[1][1])]


def test_referrers_of_unknown_subject_is_an_empty_index(registry):
    r = http.get(f"{registry}/v2/m/norefs/referrers/{sha256(b'nothing')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    r = http.get(f"{registry}/v2/m/norefs/referrers/sha256:zzz")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_delete_by_digest_removes_every_tag_delete_by_tag_only_the_tag(registry):
    digest = push_image(registry, "m/delete", "a")
    body = http.get(f"{registry}/v2/m/delete/manifests/a").content
    put_manifest(registry, "m/delete", "b", body)
    put_manifest(registry, "m/delete", "c", body)
    assert http.delete(f"{registry}/v2/m/delete/manifests/c").status_code == 202
    assert http.get(f"{registry}/v2/m/delete/manifests/c").status_code == 404
    assert http.get(f"{registry}/v2/m/delete/manifests/{digest}").status_code == 200
    assert http.delete(f"{registry}/v2/m/delete/manifests/{digest}").status_code == 202
    for ref in ("a", "b", digest):
        r = http.get(f"{registry}/v2/m/delete/manifests/{ref}")
        assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    assert http.get(f"{registry}/v2/m/delete/tags/list").json()["tags"] == []
    r = http.delete(f"{registry}/v2/m/delete/manifests/{digest}")
    assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    assert http.delete(f"{registry}/v2/m/delete/manifests/nosuchtag").status_code == 404


def test_tags_list_sorted_and_paginated(registry):
    body = small_image(registry, "m/tags")
    names = ["v10", "v2", "A", "latest", "v1", "_x", "v1.0"]
    for name in names:
        assert put_manifest(registry, "m/tags", name, body).status_code == 201
    r = http.get(f"{registry}/v2/m/tags/tags/list")
    assert r.json() == {"name": "m/tags", "tags": sorted(names)}
    assert "Link" not in r.headers
    collected, url = [], f"{registry}/v2/m/tags/tags/list?n=3"
    while url:
        r = http.get(url)
        page = r.json()["tags"]
        assert len(page) <= 3
        collected += page
        link = r.headers.get("Link")
        url = registry + link[1:link.index(">")] if link else None
        if link:
            assert link.endswith('rel="next"')
    assert collected == sorted(names)
    r = http.get(f"{registry}/v2/m/tags/tags/list", params={"n": 2, "last": "latest"})
    assert r.json()["tags"] == sorted(names)[sorted(names).index("latest") + 1:][:2]
    assert http.get(f"{registry}/v2/m/tags/tags/list?n=0").json()["tags"] == []
    r = http.get(f"{registry}/v2/m/tags/tags/list?n=-1")
    assert r.status_code == 400


def test_tags_of_unknown_repository(registry):
    r = http.get(f"{registry}/v2/m/never/pushed/tags/list")
    assert r.status_code == 404 and error_code(r) == "NAME_UNKNOWN"


def test_catalog_lists_repositories_in_pages(registry):
    for i in range(3):
        push_image(registry, f"cat/repo{i}", "t")
    everything = http.get(f"{registry}/v2/_catalog").json()["repositories"]
    assert everything == sorted(everything)
    assert {"cat/repo0", "cat/repo1", "cat/repo2"} <= set(everything)
    collected, url = [], f"{registry}/v2/_catalog?n=2"
    while url:
        r = http.get(url)
        collected += r.json()["repositories"]
        link = r.headers.get("Link")
        url = registry + link[1:link.index(">")] if link else None
    assert collected == everything


@pytest.mark.parametrize("path,code", [
    ("UPPER/manifests/latest", "NAME_INVALID"),
    ("a//b/manifests/latest", "NAME_INVALID"),
    ("a-/manifests/latest", "NAME_INVALID"),
    ("ok/manifests/bad:tag:x", "DIGEST_INVALID"),
    ("ok/manifests/.dot", "MANIFEST_UNKNOWN"),   # can never be a tag: names no manifest
    ("ok/blobs/sha256:short", "DIGEST_INVALID"),
    ("ok/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", "DIGEST_INVALID"),
    ("ok/blobs/notadigest", "DIGEST_INVALID"),
])
def test_bad_names_tags_and_digests(registry, path, code):
    r = http.get(f"{registry}/v2/{path}")
    assert 400 <= r.status_code < 500 and error_code(r) == code


@pytest.mark.parametrize("tag", [".dot", "t" * 129, "-dash", "a+b"])
def test_pushing_an_invalid_tag_is_tag_invalid(registry, tag):
    body = small_image(registry, "m/badtag")
    r = put_manifest(registry, "m/badtag", tag, body)
    assert r.status_code == 400 and error_code(r) == "TAG_INVALID"
    assert http.get(f"{registry}/v2/m/badtag/tags/list").status_code == 404


def test_deep_repository_names(registry):
    name = "org/team/project/sub/image"
    digest = push_image(registry, name, "deep")
    assert http.get(f"{registry}/v2/{name}/manifests/deep").headers["Docker-Content-Digest"] == digest
    assert http.get(f"{registry}/v2/{name}/tags/list").json()["tags"] == ["deep"]


def test_garbage_requests_never_cause_a_server_error(registry):
    probes = [("GET", "/v2/x/unknown/endpoint"), ("POST", "/v2/x/manifests/latest"),
              ("PATCH", "/v2/x/blobs/uploads/"), ("PUT", "/v2/x/blobs/uploads/../../etc"),
              ("GET", "/v2/x/blobs/uploads/%00"), ("DELETE", "/v2/_catalog"),
              ("PUT", "/v2/x/manifests/latest"), ("GET", "/v2/x/tags/list?n=abc"),
              ("GET", "/v2/x/tags/list?n=99999999999999999999"),
              ("POST", "/v2/x/blobs/uploads/?mount=sha256:zz&from=y"),
              ("POST", "/v2/x/blobs/uploads/?digest=sha256:00"),
              ("GET", "/v2/" + "a/" * 200 + "tags/list")]
    for method, path in probes:
        r = http.request(method, registry + path, data=b"\x00\x01garbage")
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
        if r.headers.get("Content-Type") == "application/json" and r.content:
            assert "errors" in r.json() or "message" in r.json()


def test_concurrent_pushes_of_one_tag_leave_it_on_a_stored_manifest(registry):
    bodies = [small_image(registry, "m/race", str(i).encode()) for i in range(4)]
    errors = []

    def push(body):
        for _ in range(5):
            r = put_manifest(registry, "m/race", "contested", body)
            if r.status_code != 201:
                errors.append(r.text)
    threads = [threading.Thread(target=push, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    r = http.get(f"{registry}/v2/m/race/manifests/contested")
    assert r.status_code == 200 and r.content in bodies
    assert r.headers["Docker-Content-Digest"] == sha256(r.content)


def test_a_referrer_with_huge_annotations_is_listed_with_them(registry):
    """DynamoDB items stop at 400 KB: annotations that big are served from the manifest itself."""
    subject = sha256(b"some subject")
    empty = push_blob(registry, "m/bigrefs", b"{}")
    annotations = {"org.example.note": "n" * (500 * 1024)}
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
        "annotations": annotations}).encode()
    assert put_manifest(registry, "m/bigrefs", sha256(body), body).status_code == 201
    listed = http.get(f"{registry}/v2/m/bigrefs/referrers/{subject}").json()["manifests"]
    assert [(d["digest"], d["annotations"]) for d in listed] == [(sha256(body), annotations)]
