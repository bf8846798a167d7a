"""Logins and refusals as users meet them: skopeo login / podman login, then push and pull."""
from __future__ import annotations

import subprocess
import uuid
from urllib.parse import urlparse

import pytest

from chalicelib.auth import accounts
from tests.support.clients import ClientError, ContainersEnv, Podman, skopeo_copy
from tests.support.images import build_image

KiB = 1 << 10
PASSWORD = "e2e user password"
pytestmark = [pytest.mark.e2e,
              pytest.mark.needs("skopeo")]


@pytest.fixture(scope="module")
def small(image_cache):
    return build_image(image_cache / "auth-small", layers=[256 * KiB], seed="berth-auth")


@pytest.fixture(scope="module")
def users():
    """Two users, each with a namespace of their own."""
    made = {}
    for who in ("carol", "dave"):
        name = f"{who}{uuid.uuid4().hex[:6]}"
        accounts.create_user(name, PASSWORD, log2_n=10)
        accounts.create_namespace(name + "-ns", name)
        made[who] = (name, name + "-ns")
    return made


def skopeo_login(env: ContainersEnv, host: str, user: str, password: str) -> None:
    subprocess.run(["skopeo", "login", "--tls-verify=false", "-u", user, "--password-stdin", host],
                   input=password.encode(), env=env.env(), check=True, capture_output=True)


def test_skopeo_login_push_pull_and_refusals(registry, users, small, tmp_path):
    host = urlparse(registry).netloc
    user, namespace = users["carol"]
    _, others = users["dave"]
    logged_in = tmp_path / "carol-config"
    env = ContainersEnv(logged_in)
    with pytest.raises(subprocess.CalledProcessError):
        skopeo_login(env, host, user, "not the password")
    skopeo_login(env, host, user, PASSWORD)
    ref = f"docker://{host}/{namespace}/app:v1"
    assert skopeo_copy(small.oci_ref, ref, cache_dir=logged_in).digest == small.manifest_digest
    skopeo_copy(ref, f"oci:{tmp_path / 'pulled'}:v1", cache_dir=logged_in)
    # Into someone else's namespace: denied.
    with pytest.raises(ClientError) as denied:
        skopeo_copy(small.oci_ref, f"docker://{host}/{others}/app:v1", cache_dir=logged_in)
    assert "denied" in denied.value.stderr.lower()
    # Anonymous: no push, and no pull of a private repository.
    with pytest.raises(ClientError) as anonymous_push:
        skopeo_copy(small.oci_ref, f"docker://{host}/{namespace}/anon:v1")
    assert "unauthorized" in anonymous_push.value.stderr.lower() or \
        "denied" in anonymous_push.value.stderr.lower()
    with pytest.raises(ClientError):
        skopeo_copy(ref, f"oci:{tmp_path / 'anon-pull'}:v1")
    # ... until the repository is made public.
    accounts.set_repository_public(f"{namespace}/app", True)
    skopeo_copy(ref, f"oci:{tmp_path / 'anon-pull'}:v1")


def test_pull_only_access_token_cannot_push(registry, users, small, tmp_path):
    host = urlparse(registry).netloc
    user, namespace = users["dave"]
    skopeo_copy(small.oci_ref, f"docker://{host}/{namespace}/ci:v1", creds=f"{user}:{PASSWORD}")
    pull_token = accounts.create_access_token(user, "ci", "pull")
    creds = f"{user}:{pull_token}"
    skopeo_copy(f"docker://{host}/{namespace}/ci:v1", f"oci:{tmp_path / 'pulled'}:v1",
                creds=creds)
    with pytest.raises(ClientError) as refused:
        skopeo_copy(small.oci_ref, f"docker://{host}/{namespace}/ci:v2", creds=creds)
    assert "denied" in refused.value.stderr.lower()


def podman_login(podman: Podman, host: str, user: str, password: str) -> None:
    subprocess.run([*podman.base, "login", "--tls-verify=false", "-u", user, "--password-stdin",
                    host], input=password.encode(), env=podman.env, check=True,
                   capture_output=True)


@pytest.mark.needs("podman")
def test_podman_login_push_and_pull(registry, users, small, tmp_path):
    host = urlparse(registry).netloc
    user, namespace = users["carol"]
    pusher, puller = Podman(tmp_path / "push"), Podman(tmp_path / "pull")
    try:
        podman_login(pusher, host, user, PASSWORD)
        local = pusher.load_oci(small.path, small.tag, name="auth")
        pushed = pusher.push(local, f"{host}/{namespace}/podman:v1")
        with pytest.raises(ClientError):              # not logged in: no pull of a private image
            puller.pull(f"{host}/{namespace}/podman:v1")
        podman_login(puller, host, user, PASSWORD)
        puller.pull(f"{host}/{namespace}/podman:v1")
        assert puller.identity(f"{host}/{namespace}/podman:v1").manifest_digest == pushed.digest
        subprocess.run([*pusher.base, "logout", host], env=pusher.env, check=True,
                       capture_output=True)
        with pytest.raises(ClientError):              # logged out: no push
            pusher.push(local, f"{host}/{namespace}/podman:v2")
    finally:
        pusher.cleanup()
        puller.cleanup()
