"""`make run`'s server as a user starts it: its own process, moto as a child, real clients."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.clients import ClientError, Podman, layout_digests, skopeo_copy
from tests.support.images import build_image
from tests.support.registry_api import RegistryClient, push_image, sha256

MiB = 1 << 20
pytestmark = [pytest.mark.e2e,
              pytest.mark.needs("skopeo", "podman")]


def test_it_prints_the_registry_and_moto_urls(make_run):
    url, log = make_run
    text = log.read_text()
    assert f"Berth registry: {url}" in text and "moto S3+DynamoDB: http://127.0.0.1:" in text
    assert "Admin user: runadmin" in text and "run-admin-password" not in text


def test_skopeo_and_podman_round_trips_of_a_50_mib_image(make_run, tmp_path_factory):
    url, _ = make_run
    host = url.split("//")[1]
    cache = Path(os.environ.get("BERTH_E2E_IMAGE_CACHE") or tmp_path_factory.mktemp("images"))
    img = build_image(cache / "make-run", layers=[52 * MiB, 512 * 1024], seed="berth-make-run")
    work = tmp_path_factory.mktemp("make-run-clients")
    creds = "runadmin:run-admin-password"
    pushed = skopeo_copy(img.oci_ref, f"docker://{host}/run/skopeo:v1", creds=creds)
    assert pushed.digest == img.manifest_digest
    skopeo_copy(f"docker://{host}/run/skopeo:v1", f"oci:{work / 'pulled'}:v1", creds=creds)
    got = layout_digests(work / "pulled", "v1")
    assert (got["manifest_digest"], got["config_digest"], got["layer_digests"]) == (
        img.manifest_digest, img.config_digest, img.layer_digests)
    pusher, puller = Podman(work / "push"), Podman(work / "pull")
    try:
        local = pusher.load_oci(img.path, img.tag, name="make-run")
        pushed = pusher.push(local, f"{host}/run/podman:v1", creds=creds)
        puller.pull(f"{host}/run/podman:v1", creds=creds)
        got = puller.identity(f"{host}/run/podman:v1")
        assert got.manifest_digest == pushed.digest
        assert got.content() == pusher.identity(local).content()
    finally:
        pusher.cleanup()
        puller.cleanup()


def berth(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The `berth` command as installed by make, with no configuration pointing anywhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BERTH_") and not k.startswith("AWS_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return subprocess.run(["berth", *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd="/", timeout=60)


def test_berth_cli_manages_users_namespaces_and_tokens(make_run, tmp_path, image_cache):
    url, _ = make_run
    host = url.split("//")[1]
    added = berth("user", "add", "bob", "--password-stdin", stdin="bob's password\n")
    assert added.returncode == 0, added.stderr
    assert berth("user", "add", "bob", "--password-stdin", stdin="x" * 10).returncode == 1
    refused = berth("namespace", "add", "bobs", "--owner", "nobody")
    assert refused.returncode == 1 and refused.stderr.strip() == "berth: no user 'nobody'"
    assert berth("namespace", "add", "bobs", "--owner", "bob").returncode == 0
    assert "already taken" in berth("namespace", "add", "bobs", "--owner", "bob").stderr
    created = berth("token", "create", "bob", "ci", "--scope", "pull")
    assert created.returncode == 0, created.stderr
    pull_token = created.stdout.strip()
    assert pull_token.startswith("berth_") and "not shown again" in created.stderr
    img = build_image(image_cache / "cli", layers=[64 * 1024], seed="berth-cli")
    skopeo_copy(img.oci_ref, f"docker://{host}/bobs/app:v1", creds="bob:bob's password")
    skopeo_copy(f"docker://{host}/bobs/app:v1", f"oci:{tmp_path / 'pulled'}:v1",
                creds=f"bob:{pull_token}")
    with pytest.raises(ClientError):
        skopeo_copy(img.oci_ref, f"docker://{host}/bobs/app:v2", creds=f"bob:{pull_token}")
    listed = berth("token", "list", "bob").stdout
    assert "ci\tpull\tactive" in listed and "last used never" not in listed
    assert berth("token", "revoke", "bob", "ci").returncode == 0
    with pytest.raises(ClientError):
        skopeo_copy(f"docker://{host}/bobs/app:v1", f"oci:{tmp_path / 'again'}:v1",
                    creds=f"bob:{pull_token}")


def test_berth_gc_and_stats_against_make_run(make_run):
    url, _ = make_run
    client = RegistryClient(("runadmin", "run-admin-password"))
    before = json.loads(berth("stats", "--json").stdout)
    config, layer = os.urandom(32), os.urandom(5000)
    image = {"digest": push_image(url, "gc/cli", "v1", [layer], config=config, client=client),
             "blobs": [sha256(config), sha256(layer)]}
    grown = json.loads(berth("stats", "--json").stdout)
    assert grown["blobs"] == before["blobs"] + 2
    assert grown["bytes"] >= before["bytes"] + 5000 and grown["target"].startswith("local")
    assert client.delete(f"{url}/v2/gc/cli/manifests/{image['digest']}").status_code == 202
    dry = berth("gc", "--dry-run", "--grace", "0", "--json")
    assert dry.returncode == 0, dry.stderr
    assert set(image["blobs"]) <= set(json.loads(dry.stdout)["deleted_blobs"])
    done = berth("gc", "--json", "--grace", "0")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(image["blobs"]) <= set(report["deleted_blobs"])
    assert report["blobs_deleted"] >= 2 and report["bytes_deleted"] >= 5000
    assert report["dynamodb_requests"] > 0 and report["s3_requests"] >= 2
    after = json.loads(berth("stats", "--json").stdout)
    assert after["blobs"] == grown["blobs"] - report["blobs_deleted"]
    text = berth("gc")
    assert text.returncode == 0 and "deleted 0 blobs" in text.stdout, text.stdout
    check = berth("gc", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    bad = berth("gc", "--grace", "soon")
    assert bad.returncode == 1 and "not a duration: 'soon'" in bad.stderr
