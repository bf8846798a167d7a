"""Mirror rules: Berth as a pull-through cache of another registry (Docker Hub's official images).

No internet here: every upstream runs locally. Debian's docker-registry holds the upstream images
(pushed with skopeo); tests/support/upstream_gate.py puts a switch in front of it to make it
answer 429 or redirect to the metadata address. Berth is `make run` in its own process, with
BERTH_MIRROR_ALLOW_LOOPBACK=1 (the upstreams are on 127.0.0.1 over plain http).
"""
from __future__ import annotations

import contextlib
import time

import pytest
import requests

from chalicelib.storage.mirrors import RULES_CACHE_SECONDS
from tests.conftest import started_make_run
from tests.support.clients import ClientError, Podman, layout_digests, skopeo_copy
from tests.support.images import build_image, build_index
from tests.support.refregistry import RefRegistry
from tests.support.upstream_gate import METADATA_REDIRECT, RATE_LIMITED, UpstreamGate

pytestmark = pytest.mark.e2e
MiB, KiB = 1 << 20, 1 << 10
ACCEPT = ", ".join(["application/vnd.oci.image.index.v1+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])


@pytest.fixture(scope="module")
def berth(tmp_path_factory):
    with started_make_run(tmp_path_factory, BERTH_MIRROR_ALLOW_LOOPBACK="1") as run:
        yield run


@pytest.fixture
def upstream(tmp_path):
    registry = RefRegistry(tmp_path / "upstream").start()
    try:
        yield registry
    finally:
        registry.stop()


def add_rule(run, namespace: str, upstream_url: str, *options: str, stdin: str = "") -> str:
    """`berth mirror add`, then wait until the server's rule cache has seen it."""
    out = run.berth("mirror", "add", namespace, "--upstream", upstream_url, *options,
                    stdin=stdin).stdout
    time.sleep(RULES_CACHE_SECONDS + 0.5)
    return out


def anonymous(run, method: str, path: str, **kwargs) -> requests.Response:
    """An anonymous client: a pull token from the token endpoint, then the request."""
    repository = path.split("/manifests/")[0].split("/blobs/")[0]
    token = requests.get(f"{run.url}/v2/_berth/token", params={
        "service": "berth", "scope": f"repository:{repository}:pull"}).json()["token"]
    return requests.request(method, f"{run.url}/v2/{path}", allow_redirects=False,
                            headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT},
                            **kwargs)


def served_digest(run, repository: str, tag: str) -> str:
    r = anonymous(run, "GET", f"{repository}/manifests/{tag}")
    assert r.status_code == 200, r.text
    return r.headers["Docker-Content-Digest"]


def test_the_default_rule_mirrors_docker_hub_and_the_cli_manages_rules(berth):
    listed = berth.berth("mirror", "list").stdout
    assert "library\thttps://registry-1.docker.io\tlibrary/\tpublic" in listed
    berth.berth("mirror", "add", "quay", "--upstream", "https://quay.io", "--private",
                "--tag-ttl", "1h")
    assert "quay\thttps://quay.io\t-\tprivate\tttl=3600s\tanonymous" in \
        berth.berth("mirror", "list").stdout
    berth.berth("mirror", "remove", "quay")
    assert "quay" not in berth.berth("mirror", "list").stdout


def test_first_pull_through_berth_then_the_upstream_stops_and_berth_still_serves(
        berth, upstream, image_cache, tmp_path):
    idx = build_index(image_cache / "mirror-multi", platforms=[("linux", "amd64"),
                                                               ("linux", "arm64")],
                      layers=[1 * MiB, 10 * KiB], seed="mirror-multi")
    skopeo_copy(idx.oci_ref, f"docker://{upstream.netloc}/library/demo:1", all_images=True)
    add_rule(berth, "library", upstream.url, "--upstream-prefix", "library/", "--public",
             "--tag-ttl", "2s")
    ref = f"{berth.host}/library/demo:1"

    first = skopeo_copy(f"docker://{ref}", f"oci:{tmp_path / 'first'}:1", all_images=True)
    assert first.digest == idx.index_digest
    amd64 = idx.image("linux", "amd64")
    podman = Podman(tmp_path / "podman")
    try:
        assert podman.pull(ref, extra=["--arch", "amd64"]) == amd64.config_digest.split(":")[1]
        upstream.stop()
        time.sleep(2.5)     # the tag's TTL is over: Berth asks the upstream, which is down
        again = skopeo_copy(f"docker://{ref}", f"oci:{tmp_path / 'again'}:1", all_images=True)
        assert again.digest == idx.index_digest
        pulled = layout_digests(tmp_path / "again", "1")     # re-hashes every blob
        assert pulled["manifest_digest"] == idx.index_digest
        podman.rmi(ref)
        assert podman.pull(ref, extra=["--arch", "amd64"]) == amd64.config_digest.split(":")[1]
    finally:
        podman.cleanup()

    # Nothing cached and the upstream down: a clear error naming it, not a 500.
    r = anonymous(berth, "GET", "library/never-pulled/manifests/1")
    assert r.status_code == 503
    error = r.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE" and upstream.url in error["message"]
    # A mirror is read-only, even for the admin.
    token = requests.get(f"{berth.url}/v2/_berth/token", auth=("runadmin", "run-admin-password"),
                         params={"service": "berth",
                                 "scope": "repository:library/demo:pull,push"}).json()["token"]
    r = requests.post(f"{berth.url}/v2/library/demo/blobs/uploads/",
                      headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and "mirror" in r.json()["errors"][0]["message"]
    with pytest.raises(ClientError) as refused:       # what a pushing user sees
        skopeo_copy(idx.oci_ref,
                    f"docker://{ref}-mine", creds="runadmin:run-admin-password")
    assert "mirror of" in refused.value.stderr


def test_a_moved_tag_is_served_after_the_ttl_and_the_cached_one_before(berth, upstream,
                                                                       image_cache):
    a = build_image(image_cache / "move-a", layers=[10 * KiB], seed="move-a")
    b = build_image(image_cache / "move-b", layers=[10 * KiB], seed="move-b")
    skopeo_copy(a.oci_ref, f"docker://{upstream.netloc}/library/moving:v")
    add_rule(berth, "moving", upstream.url, "--upstream-prefix", "library/", "--public",
             "--tag-ttl", "4s")
    assert served_digest(berth, "moving/moving", "v") == a.manifest_digest
    skopeo_copy(b.oci_ref, f"docker://{upstream.netloc}/library/moving:v")
    assert served_digest(berth, "moving/moving", "v") == a.manifest_digest   # within the TTL
    time.sleep(4.5)
    assert served_digest(berth, "moving/moving", "v") == b.manifest_digest   # after it


def test_upstream_rate_limit_serves_the_stale_copy_or_says_toomanyrequests(
        berth, upstream, image_cache, tmp_path):
    img = build_image(image_cache / "limited", layers=[200 * KiB], seed="limited")
    skopeo_copy(img.oci_ref, f"docker://{upstream.netloc}/library/app:1")
    with UpstreamGate(upstream.url) as gate:
        add_rule(berth, "limited", gate.url, "--upstream-prefix", "library/", "--public",
                 "--tag-ttl", "1s")
        ref = f"docker://{berth.host}/limited/app:1"
        assert skopeo_copy(ref, f"oci:{tmp_path / 'a'}:1").digest == img.manifest_digest
        gate.mode = RATE_LIMITED
        time.sleep(1.5)
        seen = len(gate.requests)
        assert skopeo_copy(ref, f"oci:{tmp_path / 'b'}:1").digest == img.manifest_digest
        assert len(gate.requests) > seen        # it did ask, got 429, and served its copy
        r = anonymous(berth, "GET", "limited/app/manifests/2")
        assert r.status_code == 429 and r.headers["Retry-After"] == "30"
        error = r.json()["errors"][0]
        assert error["code"] == "TOOMANYREQUESTS" and gate.url in error["message"]


def test_an_upstream_redirecting_to_the_metadata_address_is_refused(berth, upstream,
                                                                    image_cache):
    img = build_image(image_cache / "sneaky", layers=[20 * KiB], seed="sneaky")
    skopeo_copy(img.oci_ref, f"docker://{upstream.netloc}/library/app:1")
    with UpstreamGate(upstream.url) as gate:
        gate.mode = METADATA_REDIRECT
        add_rule(berth, "sneaky", gate.url, "--upstream-prefix", "library/", "--public")
        assert served_digest(berth, "sneaky/app", "1") == img.manifest_digest
        r = anonymous(berth, "GET", f"sneaky/app/blobs/{img.layer_digests[0]}")
        assert r.status_code == 403, r.text
        error = r.json()["errors"][0]
        assert error["code"] == "DENIED" and "169.254.169.254" in error["message"]
    # An upstream that is the metadata address itself is refused before any connection.
    add_rule(berth, "metadata", "http://169.254.169.254", "--public")
    r = anonymous(berth, "GET", "metadata/x/manifests/latest")
    assert r.status_code == 403 and "169.254.169.254" in r.json()["errors"][0]["message"]


UP_USER, UP_PASSWORD = "upuser", "upstream-user-s3cret"


@contextlib.contextmanager
def private_upstream(tmp_path_factory, img, repository: str):
    """A second Berth (`make run`) holding `img` in a private repository of UP_USER."""
    with started_make_run(tmp_path_factory) as other:
        other.berth("user", "add", UP_USER, "--password-stdin", stdin=UP_PASSWORD)
        other.berth("namespace", "add", repository.split("/")[0], "--owner", UP_USER)
        skopeo_copy(img.oci_ref, f"docker://{other.host}/{repository}",
                    creds=f"{UP_USER}:{UP_PASSWORD}")
        yield other


def test_a_private_repository_of_another_berth_through_a_rule_with_credentials(
        berth, tmp_path_factory, image_cache, tmp_path):
    """The upstream is a second Berth: token auth like Docker Hub's, and its blob GET answers 307
    to its own S3 (moto), which Berth follows without sending any credential."""
    img = build_image(image_cache / "private-up", layers=[300 * KiB, 10 * KiB], seed="private-up")
    with private_upstream(tmp_path_factory, img, "private/app:1") as other:
        r = anonymous(other, "GET", "private/app/manifests/1")
        assert r.status_code == 401                  # private upstream: anonymous refused

        add_rule(berth, "corp", other.url, "--upstream-prefix", "private/", "--private",
                 "--credentials-stdin", stdin=f"{UP_USER}:{UP_PASSWORD}")
        ref = f"docker://{berth.host}/corp/app:1"
        pulled = skopeo_copy(ref, f"oci:{tmp_path / 'pulled'}:1", creds="runadmin:run-admin-password")
        assert pulled.digest == img.manifest_digest
        assert layout_digests(tmp_path / "pulled", "1")["layer_digests"] == img.layer_digests
        # A private rule: anonymous clients get nothing.
        assert anonymous(berth, "GET", "corp/app/manifests/1").status_code == 401

    # The upstream credentials are in the state folder (owner-only file), never in the table,
    # the rule listing or the log.
    stored = berth.state_dir / "mirror-credentials" / "corp.json"
    assert stored.stat().st_mode & 0o077 == 0 and UP_PASSWORD in stored.read_text()
    assert UP_PASSWORD not in berth.berth("mirror", "list").stdout
    assert UP_PASSWORD not in berth.log.read_text()
    import boto3
    import json as _json
    endpoint = _json.loads((berth.state_dir / "local.json").read_text())["aws_endpoint"]
    table = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    items = table.scan(TableName="berth")["Items"]
    assert items and UP_PASSWORD not in _json.dumps(items, default=repr)
    assert any(i["pk"]["S"] == "_mirrors" and i["sk"]["S"] == "corp" for i in items)


# ---------------------------------------------------------------- the deployed path (aws mode)

DIRECT_LIMIT = 6 * MiB


@pytest.fixture(scope="module")
def aws_berth(tmp_path_factory):
    """`BERTH_GATEWAY=aws make run`: blobs over BERTH_MIRROR_SYNC_COPY_MAX (here Lambda's 6 MB)
    are copied in the background while clients are sent to the upstream."""
    with started_make_run(tmp_path_factory, BERTH_GATEWAY="aws", BERTH_MIRROR_ALLOW_LOOPBACK="1",
                          BERTH_MIRROR_SYNC_COPY_MAX=str(DIRECT_LIMIT)) as run:
        yield run


def _moto_endpoint(run) -> str:
    import json as _json
    return _json.loads((run.state_dir / "local.json").read_text())["aws_endpoint"]


def test_a_blob_over_the_direct_limit_pulls_under_aws_mode_and_lands_in_s3(
        aws_berth, upstream, image_cache, tmp_path):
    img = build_image(image_cache / "mirror-big", layers=[12 * MiB, 10 * KiB], seed="mirror-big")
    skopeo_copy(img.oci_ref, f"docker://{upstream.netloc}/library/big:1")
    add_rule(aws_berth, "library", upstream.url, "--upstream-prefix", "library/", "--public")
    ref = f"docker://{aws_berth.host}/library/big:1"
    big = img.layer_digests[0]

    first = skopeo_copy(ref, f"oci:{tmp_path / 'first'}:1")
    assert first.digest == img.manifest_digest
    assert layout_digests(tmp_path / "first", "1")["layer_digests"] == img.layer_digests

    deadline = time.monotonic() + 60     # the background copy: then the 307 goes to S3
    while True:
        r = anonymous(aws_berth, "GET", f"library/big/blobs/{big}")
        assert r.status_code == 307, r.text
        if r.headers["Location"].startswith(_moto_endpoint(aws_berth)):
            break
        assert r.headers["Location"].startswith(upstream.url)    # meanwhile: the upstream
        assert time.monotonic() < deadline, "the copy into S3 never finished"
        time.sleep(0.5)
    upstream.stop()
    second = skopeo_copy(ref, f"oci:{tmp_path / 'second'}:1")
    assert second.digest == img.manifest_digest
    assert layout_digests(tmp_path / "second", "1")["layer_digests"] == img.layer_digests


def test_docker_with_registry_mirrors_pulls_short_names_through_the_library_rule(
        aws_berth, upstream, image_cache, tmp_path_factory):
    from tests.support.dockerd import DockerEngine
    img = build_image(image_cache / "alpine-like", layers=[1 * MiB, 10 * KiB], seed="alpine-3")
    skopeo_copy(img.oci_ref, f"docker://{upstream.netloc}/library/alpine:3")
    add_rule(aws_berth, "library", upstream.url, "--upstream-prefix", "library/", "--public")
    engine = DockerEngine(tmp_path_factory.mktemp("dockerd-mirror"),
                          registry_mirrors=[aws_berth.url]).start()
    try:
        engine.docker("pull", "alpine:3")
        assert engine.repo_digest("alpine:3").endswith(img.manifest_digest)
        assert engine.image_id("alpine:3") == img.config_digest
    finally:
        engine.stop()
    # It came through Berth (there is no Docker Hub here): Berth has it cached, upstream or not.
    upstream.stop()
    assert served_digest(aws_berth, "library/alpine", "3") == img.manifest_digest
    layer = anonymous(aws_berth, "GET", f"library/alpine/blobs/{img.layer_digests[0]}")
    assert layer.status_code == 307 and layer.headers["Location"].startswith(
        _moto_endpoint(aws_berth))


def test_concurrent_misses_on_one_blob_copy_it_once(berth, upstream, image_cache):
    img = build_image(image_cache / "herd", layers=[3 * MiB], seed="herd")
    skopeo_copy(img.oci_ref, f"docker://{upstream.netloc}/library/herd:1")
    layer = img.layer_digests[0]
    with UpstreamGate(upstream.url) as gate:
        add_rule(berth, "herd", gate.url, "--upstream-prefix", "library/", "--public")
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: anonymous(berth, "GET", f"herd/herd/blobs/{layer}"),
                                    range(8)))
        assert [a.status_code for a in answers] == [307] * 8, [a.text for a in answers]
        s3 = _moto_endpoint(berth)
        assert all(a.headers["Location"].startswith(s3) for a in answers)
        assert requests.get(answers[0].headers["Location"]).content == \
            img.blob_path(layer).read_bytes()
        gets = [p for m, p in gate.requests if m == "GET" and p.endswith(f"/blobs/{layer}")]
        assert len(gets) == 1, gate.requests


def test_a_big_blob_of_a_credentialed_upstream_is_copied_never_handed_out(
        aws_berth, tmp_path_factory, image_cache, tmp_path):
    """Over the direct limit and behind credentials: nothing derived from Berth's credentials
    (the upstream's presigned URL, a token) reaches the client; the request waits for the
    background copy and answers with Berth's own S3."""
    img = build_image(image_cache / "private-big", layers=[12 * MiB], seed="private-big")
    with private_upstream(tmp_path_factory, img, "private/big:1") as other:
        add_rule(aws_berth, "corpbig", other.url, "--upstream-prefix", "private/", "--private",
                 "--credentials-stdin", stdin=f"{UP_USER}:{UP_PASSWORD}")
        token = requests.get(f"{aws_berth.url}/v2/_berth/token",
                             auth=("runadmin", "run-admin-password"),
                             params={"service": "berth",
                                     "scope": "repository:corpbig/big:pull"}).json()["token"]
        r = requests.get(f"{aws_berth.url}/v2/corpbig/big/blobs/{img.layer_digests[0]}",
                         headers={"Authorization": f"Bearer {token}"}, allow_redirects=False)
        assert r.status_code == 307, r.text
        assert r.headers["Location"].startswith(_moto_endpoint(aws_berth))   # Berth's S3 only
        assert requests.get(r.headers["Location"]).content == \
            img.blob_path(img.layer_digests[0]).read_bytes()
        pulled = skopeo_copy(f"docker://{aws_berth.host}/corpbig/big:1",
                             f"oci:{tmp_path / 'pulled'}:1", creds="runadmin:run-admin-password")
        assert pulled.digest == img.manifest_digest
