"""Blob uploads through the gateway: every way the spec allows, and every way to get it wrong."""
from __future__ import annotations

import hashlib
import os

import pytest


from tests.support.registry_api import absolute, error_code, http, push_blob, sha256
from tests.support.registry_api import pull_blob as pull
from tests.support.registry_api import start_upload as start

MiB = 1024 * 1024


@pytest.fixture
def registry(any_registry):
    """Every upload test runs on one Lambda instance and on a fleet of three (BERTH_INSTANCES=3)."""
    return any_registry


def test_base_endpoint_announces_the_api_version(registry):
    r = http.get(f"{registry}/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_streamed_patch_then_put_stores_verified_blob(registry):
    data = os.urandom(3 * MiB + 17)
    url = start(registry, "up/streamed")
    r = http.patch(url, data=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = http.get(url)
    assert r.status_code == 204 and r.headers["Range"] == f"0-{len(data) - 1}"
    r = http.put(url, params={"digest": sha256(data)})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/up/streamed/blobs/{sha256(data)}"
    assert pull(registry, "up/streamed", sha256(data)) == data


def test_chunked_transfer_encoding_body(registry):
    data = os.urandom(2 * MiB)
    url = start(registry, "up/te-chunked")
    r = http.patch(url, data=(data[i:i + 65536] for i in range(0, len(data), 65536)))
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
    assert http.put(url, params={"digest": sha256(data)}).status_code == 201
    assert pull(registry, "up/te-chunked", sha256(data)) == data


@pytest.mark.parametrize("sizes", [[1, 1000, 5 * MiB], [2 * MiB, 2 * MiB, 2 * MiB, 100],
                                   [6 * MiB, 3 * MiB], [5 * MiB - 1, 1, 1]])
def test_content_range_chunks_of_any_size(registry, sizes):
    data = os.urandom(sum(sizes))
    url, offset = start(registry, "up/chunks"), 0
    for size in sizes:
        r = http.patch(url, data=data[offset:offset + size],
                           headers={"Content-Range": f"{offset}-{offset + size - 1}",
                                    "Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        offset += size
        assert r.headers["Range"] == f"0-{offset - 1}"
        url = absolute(registry, r.headers["Location"])
    assert http.put(url, params={"digest": sha256(data)}).status_code == 201
    assert pull(registry, "up/chunks", sha256(data)) == data


def test_out_of_order_and_overlapping_chunks_get_416_with_current_range(registry):
    url = start(registry, "up/order")
    assert http.patch(url, data=b"a" * 10, headers={"Content-Range": "0-9"}).status_code == 202
    for bad in ["20-29", "5-14", "0-9"]:
        r = http.patch(url, data=b"b" * 10, headers={"Content-Range": bad})
        assert r.status_code == 416
        assert r.headers["Range"] == "0-9"
    r = http.patch(url, data=b"b" * 3, headers={"Content-Range": "10-19"})  # length lies
    assert r.status_code == 416


def test_chunks_sent_ahead_are_joined_in_order_and_verified(registry):
    """`berth proxy`'s two-at-a-time upload: a chunk stored ahead changes nothing until the
    in-order chunk ending where it starts joins it; the digest still covers every byte."""
    a, b, c = os.urandom(4 * MiB), os.urandom(4 * MiB), os.urandom(3 * MiB)
    url = start(registry, "up/ahead")
    r = http.patch(url, data=b, headers={"Content-Range": f"{len(a)}-{len(a) + len(b) - 1}",
                                         "Berth-Upload-Chunk": "ahead"})
    assert r.status_code == 202 and r.headers["Range"] == "0-0"
    assert r.headers["Berth-Upload-Chunk"] == "ahead"
    r = http.patch(url, data=a, headers={"Content-Range": f"0-{len(a) - 1}", "Berth-Upload-Chunk": "join"})
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(a) + len(b) - 1}"
    # a join with nothing stored ahead is an ordinary chunk
    r = http.patch(url, data=c, headers={"Content-Range": f"{len(a) + len(b)}-{len(a) + len(b) + len(c) - 1}",
                                         "Berth-Upload-Chunk": "join"})
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(a) + len(b) + len(c) - 1}"
    assert http.put(url, params={"digest": sha256(a + c)}).status_code == 400   # not what was sent
    url = start(registry, "up/ahead")
    http.patch(url, data=b, headers={"Content-Range": f"{len(a)}-{len(a) + len(b) - 1}", "Berth-Upload-Chunk": "ahead"})
    http.patch(url, data=a, headers={"Content-Range": f"0-{len(a) - 1}", "Berth-Upload-Chunk": "join"})
    assert http.put(url, params={"digest": sha256(a + b)}).status_code == 201
    assert pull(registry, "up/ahead", sha256(a + b)) == a + b


def test_chunks_ahead_only_when_asked_and_within_bounds(registry):
    url = start(registry, "up/ahead-bounds")
    # without the header an out-of-order chunk is a 416, as distribution-spec requires
    r = http.patch(url, data=b"x" * 10, headers={"Content-Range": "10-19"})
    assert r.status_code == 416 and r.headers["Range"] == "0-0"
    far = 16 * MiB + 1
    r = http.patch(url, data=b"x" * 10, headers={"Content-Range": f"{far}-{far + 9}", "Berth-Upload-Chunk": "ahead"})
    assert r.status_code == 416 and error_code(r) == "RANGE_INVALID"
    r = http.patch(url, data=b"x" * 10, headers={"Content-Range": "0-9", "Berth-Upload-Chunk": "sideways"})
    assert r.status_code == 400 and error_code(r) == "BLOB_UPLOAD_INVALID"
    # a chunk marked ahead that starts at the end is written at once
    r = http.patch(url, data=b"x" * 10, headers={"Content-Range": "0-9", "Berth-Upload-Chunk": "ahead"})
    assert r.status_code == 202 and r.headers["Range"] == "0-9"
    assert http.put(url, params={"digest": sha256(b"x" * 10)}).status_code == 201


def test_final_put_may_carry_the_last_chunk(registry):
    data = os.urandom(MiB)
    url = start(registry, "up/final-body")
    r = http.patch(url, data=data[:1000])
    url = absolute(registry, r.headers["Location"])
    r = http.put(url, params={"digest": sha256(data)}, data=data[1000:])
    assert r.status_code == 201
    assert pull(registry, "up/final-body", sha256(data)) == data


def test_monolithic_post_with_digest(registry):
    data = b"monolithic blob"
    r = http.post(f"{registry}/v2/up/mono/blobs/uploads/", params={"digest": sha256(data)},
                      data=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    assert pull(registry, "up/mono", sha256(data)) == data


def test_sha512_digests_are_supported(registry):
    data = b"sha512 content"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    url = start(registry, "up/sha512")
    http.patch(url, data=data)
    assert http.put(url, params={"digest": digest}).status_code == 201
    assert pull(registry, "up/sha512", digest) == data


def test_an_upload_announced_as_sha512_is_committed_without_reading_back(fleet_registry, fleet):
    """distribution-spec's `?digest-algorithm=sha512` on the POST: the session keeps a SHA-512
    state from the first chunk (on any instance), so its commit is as cheap as a SHA-256 one."""
    data = os.urandom(13 * MiB + 5)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    r = http.post(f"{fleet_registry}/v2/up/sha512-announced/blobs/uploads/",
                  params={"digest-algorithm": "sha512"})
    assert r.status_code == 202, r.text
    url = absolute(fleet_registry, r.headers["Location"])
    for i in range(0, len(data), 4 * MiB):
        r = http.patch(url, data=data[i:i + 4 * MiB], headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
    fleet.aws_calls()
    assert http.put(url, params={"digest": "sha512:" + "0" * 128}).status_code == 400
    s3 = {k: n for k, n in fleet.aws_calls().items() if k[0] == "s3"}
    assert not [k for k in s3 if k[1] in ("GetObject", "CopyObject")], s3   # refused from the state
    # the same bytes again, committed: nothing read back either
    url = absolute(fleet_registry, http.post(f"{fleet_registry}/v2/up/sha512-announced/blobs/uploads/",
                                             params={"digest-algorithm": "sha512"}).headers["Location"])
    for i in range(0, len(data), 4 * MiB):
        http.patch(url, data=data[i:i + 4 * MiB], headers={"Content-Type": "application/octet-stream"})
    fleet.aws_calls()
    assert http.put(url, params={"digest": digest}).status_code == 201
    s3 = {k: n for k, n in fleet.aws_calls().items() if k[0] == "s3"}
    assert not [k for k in s3 if k[1] in ("GetObject", "CopyObject")], s3
    assert pull(fleet_registry, "up/sha512-announced", digest) == data
    # an algorithm Berth does not know is refused at the POST
    r = http.post(f"{fleet_registry}/v2/up/sha512-announced/blobs/uploads/", params={"digest-algorithm": "md5"})
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_a_commit_with_another_algorithm_than_announced_is_verified_by_reading_back(registry):
    data = os.urandom(6 * MiB)
    r = http.post(f"{registry}/v2/up/sha512-other/blobs/uploads/", params={"digest-algorithm": "sha512"})
    url = absolute(registry, r.headers["Location"])
    r = http.patch(url, data=data, headers={"Content-Type": "application/octet-stream"})
    assert http.put(absolute(registry, r.headers["Location"]), params={"digest": sha256(data)}).status_code == 201
    assert pull(registry, "up/sha512-other", sha256(data)) == data


@pytest.mark.parametrize("forget_hash", [False, True])
def test_digest_mismatch_leaves_nothing_visible(registry, forget_hash):
    from tests.support.registry_api import forget_hash_state
    data = os.urandom(6 * MiB)
    wrong = sha256(b"something else")
    url = start(registry, "up/mismatch")
    http.patch(url, data=data[:3 * MiB])
    if forget_hash:  # a session without a saved hash state: verified by reading back
        forget_hash_state(url)
    http.patch(url, data=data[3 * MiB:])
    r = http.put(url, params={"digest": wrong})
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert http.head(f"{registry}/v2/up/mismatch/blobs/{wrong}").status_code == 404
    assert http.head(f"{registry}/v2/up/mismatch/blobs/{sha256(data)}").status_code == 404
    assert error_code(http.get(url)) == "BLOB_UPLOAD_UNKNOWN"


def test_upload_verified_by_reading_back_when_the_hash_state_is_missing(registry):
    from tests.support.registry_api import forget_hash_state
    data = os.urandom(7 * MiB)
    url = start(registry, "up/readback")
    for i in range(0, len(data), 2 * MiB):
        r = http.patch(url, data=data[i:i + 2 * MiB])
        url = absolute(registry, r.headers["Location"])
    forget_hash_state(url)
    assert http.put(url, params={"digest": sha256(data)}).status_code == 201
    assert pull(registry, "up/readback", sha256(data)) == data


def test_cancel_upload_and_unknown_sessions(registry):
    url = start(registry, "up/cancel")
    http.patch(url, data=b"partial")
    assert http.delete(url).status_code == 204
    assert error_code(http.get(url)) == "BLOB_UPLOAD_UNKNOWN"
    assert http.delete(url).status_code == 404
    r = http.patch(f"{registry}/v2/up/cancel/blobs/uploads/0123456789abcdef", data=b"x")
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"


def test_session_belongs_to_its_repository(registry):
    url = start(registry, "up/owner")
    other = url.replace("/up/owner/", "/up/intruder/")
    assert http.patch(other, data=b"x").status_code == 404


def test_put_without_digest_is_refused(registry):
    url = start(registry, "up/nodigest")
    r = http.put(url)
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    r = http.put(url, params={"digest": "md5:abc"})
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


def test_cross_repository_mount(registry):
    digest = push_blob(registry, "mount/source", b"shared layer")
    r = http.post(f"{registry}/v2/mount/target/blobs/uploads/",
                      params={"mount": digest, "from": "mount/source"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/mount/target/blobs/{digest}"
    assert pull(registry, "mount/target", digest) == b"shared layer"
    # Not mountable (unknown blob or repository): an ordinary upload session instead.
    for source in ["mount/nowhere", "Not/Valid"]:
        r = http.post(f"{registry}/v2/mount/target2/blobs/uploads/",
                          params={"mount": digest, "from": source})
        assert r.status_code == 202 and "Docker-Upload-UUID" in r.headers


def test_blob_head_get_and_delete(registry):
    data = b"blob for head"
    digest = push_blob(registry, "blobs/one", data)
    r = http.head(f"{registry}/v2/blobs/one/blobs/{digest}")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest
    # Stored in the registry but not linked to this repository: unknown here.
    r = http.get(f"{registry}/v2/blobs/other/blobs/{digest}", allow_redirects=False)
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    assert http.delete(f"{registry}/v2/blobs/one/blobs/{digest}").status_code == 202
    assert http.head(f"{registry}/v2/blobs/one/blobs/{digest}").status_code == 404
    r = http.delete(f"{registry}/v2/blobs/one/blobs/{digest}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"


def test_blob_get_redirects_to_presigned_s3_url_with_short_expiry(registry):
    digest = push_blob(registry, "blobs/presign", b"presigned")
    r = http.get(f"{registry}/v2/blobs/presign/blobs/{digest}", allow_redirects=False)
    assert r.status_code == 307
    location = r.headers["Location"]
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=300" in location
    assert http.get(f"{registry}/v2/blobs/presign/blobs/{digest}").content == b"presigned"


def test_blob_requests_cost_at_most_two_dynamodb_reads_and_no_s3_call(in_process_registry, aws_calls):
    registry = in_process_registry
    digest = push_blob(registry, "cost/blob", b"cost")
    for method in ("GET", "HEAD"):
        aws_calls.reset()
        r = http.request(method, f"{registry}/v2/cost/blob/blobs/{digest}",
                             allow_redirects=False)
        assert r.status_code in (200, 307)
        assert aws_calls.count("dynamodb") <= 2, aws_calls.calls
        assert aws_calls.count("s3") == 0, aws_calls.calls


def test_an_upload_whose_staged_data_expired_is_unknown_not_a_server_error(registry):
    """Staged data can vanish under a session (the bucket's lifecycle rule aborts multipart
    uploads after a day; garbage collection cleans abandoned sessions): a client coming back to
    it gets BLOB_UPLOAD_UNKNOWN and can start again. (moto answers an UploadPart to an aborted
    multipart upload with a 500 instead of S3's NoSuchUpload, so the vanished tail stands in.)"""
    from chalicelib import uploads
    from chalicelib.storage import blobstore
    url = start(registry, "up/expired")
    http.patch(url, data=os.urandom(MiB))
    session = uploads.load("up/expired", url.rsplit("/", 1)[1])
    blobstore.delete_object(session.tail_key)
    r = http.patch(url, data=os.urandom(MiB))
    assert r.status_code == 404 and error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    assert "expired" in r.json()["errors"][0]["message"]
    assert error_code(http.get(url)) == "BLOB_UPLOAD_UNKNOWN"   # the session is gone too


# ------------------------------------------------------------------------------------------------
# Concurrency and commit cost (chalicelib/uploads.py: the writer lease, the saved hash state, no
# copy at commit)
# ------------------------------------------------------------------------------------------------


def test_concurrent_patches_at_the_same_offset_never_break_the_session(registry):
    """Two requests racing with a 6 MiB chunk at one offset: one wins, the other gets 416 with the
    real Range; the session goes on and the blob is right. 20 trials."""
    import concurrent.futures
    data = os.urandom(12 * MiB)
    first, second = data[:6 * MiB], data[6 * MiB:]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for trial in range(20):
            url = start(registry, "up/race")
            headers = {"Content-Range": f"0-{len(first) - 1}",
                       "Content-Type": "application/octet-stream"}
            answers = list(pool.map(lambda _: http.patch(url, data=first, headers=headers), range(2)))
            statuses = sorted(r.status_code for r in answers)
            assert statuses in ([202, 202], [202, 416]) and 500 not in statuses, \
                [(r.status_code, r.text) for r in answers]
            if statuses == [202, 202]:   # the second ran after the first: it must have been refused
                raise AssertionError("both requests wrote offset 0")
            loser = next(r for r in answers if r.status_code == 416)
            assert loser.headers["Range"] in ("0-0", f"0-{len(first) - 1}")
            assert error_code(loser) == "RANGE_INVALID"
            status = http.get(url)
            assert status.status_code == 204 and status.headers["Range"] == f"0-{len(first) - 1}"
            r = http.patch(url, data=second, headers={
                "Content-Range": f"{len(first)}-{len(data) - 1}",
                "Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            r = http.put(absolute(registry, r.headers["Location"]), params={"digest": sha256(data)})
            assert r.status_code == 201, r.text
    assert pull(registry, "up/race", sha256(data)) == data


def test_an_out_of_order_chunk_in_the_final_put_is_a_416(registry):
    data = os.urandom(100)
    url = start(registry, "up/put-order")
    assert http.patch(url, data=data[:50], headers={"Content-Range": "0-49"}).status_code == 202
    r = http.put(url, params={"digest": sha256(data)}, data=data[60:],
                 headers={"Content-Range": "60-99", "Content-Type": "application/octet-stream"})
    assert r.status_code == 416 and r.headers["Range"] == "0-49"
    r = http.put(url, params={"digest": sha256(data)}, data=data[50:],
                 headers={"Content-Range": "50-99", "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text


def test_a_commit_reads_nothing_back_and_copies_nothing(in_process_registry, aws_calls):
    registry = in_process_registry
    """The hash state came with the session and the multipart upload is the blob: the final PUT
    costs the same whatever the blob's size."""
    data = os.urandom(11 * MiB + 5)
    url = start(registry, "up/no-copy")
    for i in range(0, len(data), 4 * MiB):
        r = http.patch(url, data=data[i:i + 4 * MiB], headers={"Content-Type": "application/octet-stream"})
        url = absolute(registry, r.headers["Location"])
    aws_calls.reset()
    assert http.put(url, params={"digest": sha256(data)}).status_code == 201
    s3_calls = {op: n for (service, op), n in aws_calls.calls.items() if service == "s3"}
    assert "GetObject" not in s3_calls and "CopyObject" not in s3_calls, s3_calls
    assert s3_calls.get("CompleteMultipartUpload") == 1
    assert s3_calls.get("UploadPartCopy", 0) <= 1           # the tail under 5 MiB, at most
    assert pull(registry, "up/no-copy", sha256(data)) == data


def test_a_second_upload_of_the_same_bytes_stores_nothing_new(in_process_registry, aws_calls):
    registry = in_process_registry
    from chalicelib.storage import blobstore
    data = os.urandom(6 * MiB)
    stored = []
    for repo in ("up/dedup-a", "up/dedup-b"):
        url = start(registry, repo)
        r = http.patch(url, data=data, headers={"Content-Type": "application/octet-stream"})
        aws_calls.reset()
        assert http.put(absolute(registry, r.headers["Location"]),
                        params={"digest": sha256(data)}).status_code == 201
        stored.append(set(blobstore.list_keys("blobs/")))
    # the second commit found the blob stored: its multipart upload was aborted, not completed
    assert aws_calls.calls.get(("s3", "CompleteMultipartUpload"), 0) == 0
    assert aws_calls.calls.get(("s3", "AbortMultipartUpload"), 0) == 1
    assert stored[1] == stored[0]
    assert pull(registry, "up/dedup-b", sha256(data)) == pull(registry, "up/dedup-a", sha256(data)) == data


def test_an_upload_spread_over_three_instances_is_committed_without_reading_back(fleet_registry, fleet):
    """Chunks land on any of three instances (each its own process and memory); the saved hash
    state goes with the session, so the commit reads nothing of the upload back from S3."""
    data = os.urandom(22 * MiB + 3)
    url = start(fleet_registry, "up/fleet")
    fleet.aws_calls()
    before = list(fleet.invocations)
    for i in range(0, len(data), 4 * MiB):
        r = http.patch(url, data=data[i:i + 4 * MiB], headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        url = absolute(fleet_registry, r.headers["Location"])
    fleet.aws_calls()                                      # count the commit alone
    r = http.put(url, params={"digest": sha256(data)})
    assert r.status_code == 201, r.text
    served = [after - b for after, b in zip(fleet.invocations, before)]
    assert sum(1 for n in served if n) >= 2, served          # more than one instance took part
    s3 = {k: n for k, n in fleet.aws_calls().items() if k[0] == "s3"}
    assert not [k for k in s3 if k[1] in ("GetObject", "CopyObject")], s3
    assert s3[("s3", "CompleteMultipartUpload", "blobs/u/")] == 1
    assert pull(fleet_registry, "up/fleet", sha256(data)) == data


def test_the_race_at_one_offset_across_instances(fleet_registry):
    import concurrent.futures
    data = os.urandom(6 * MiB)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for _ in range(5):
            url = start(fleet_registry, "up/fleet-race")
            headers = {"Content-Range": f"0-{len(data) - 1}", "Content-Type": "application/octet-stream"}
            statuses = sorted(r.status_code for r in pool.map(
                lambda _: http.patch(url, data=data, headers=headers), range(2)))
            assert statuses == [202, 416], statuses
            assert http.put(url, params={"digest": sha256(data)}).status_code == 201
