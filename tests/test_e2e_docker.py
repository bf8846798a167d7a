"""The real docker engine and containerd's ctr against Berth as it is deployed.

The registry is `BERTH_GATEWAY=aws make run`: the same app behind the local gateway's aws mode,
which applies API Gateway's and Lambda's documented rules (berth_local/aws_rules.py) and the
deployed front door (chalicelib/frontdoor.py). What docker does here is what it does against the
API Gateway URL. (Pushes of big layers through `berth proxy` are in test_e2e_docker_proxy.py.)
"""
from __future__ import annotations

import hashlib
import json

import pytest
import requests

from tests.conftest import started_make_run

pytestmark = pytest.mark.e2e
MiB = 1 << 20
USER, PASSWORD = "dockeruser", "docker-user-s3cret"
SMALL_LAYERS = [200 * 1024, 1 * MiB, 3 * MiB]     # each under the direct limit (~4.4 MB)


@pytest.fixture(scope="module")
def aws_run(tmp_path_factory):
    with started_make_run(tmp_path_factory, BERTH_GATEWAY="aws") as run:
        run.berth("user", "add", USER, "--password-stdin", stdin=PASSWORD)
        run.berth("namespace", "add", USER, "--owner", USER)
        yield run


@pytest.fixture
def logged_in(aws_run, docker_engine):
    docker_engine.login(aws_run.host, USER, PASSWORD)


@pytest.fixture(scope="module")
def pushed_small(aws_run, docker_engine):
    """docker login + a 3-layer image pushed directly (no proxy): (reference, digest, image id)."""
    ref = f"{aws_run.host}/{USER}/small:v1"
    docker_engine.login(aws_run.host, USER, PASSWORD)
    docker_engine.build_image(ref, SMALL_LAYERS, seed="docker-small")
    image_id = docker_engine.image_id(ref)
    docker_engine.docker("push", ref)
    return ref, docker_engine.repo_digest(ref), image_id


def test_the_gateway_runs_as_aws(aws_run):
    r = requests.get(aws_run.url + "/v2/")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == (
        f'Bearer realm="{aws_run.url}/v2/_berth/token",service="berth"')
    assert r.headers["x-amzn-ErrorType"] == "UnauthorizedException"   # API Gateway answered
    assert "Gateway: aws" in aws_run.log.read_text()


def test_docker_push_of_small_layers_then_pull_gives_the_same_image(aws_run, docker_engine, pushed_small):
    ref, digest, image_id = pushed_small
    docker_engine.docker("rmi", ref)
    docker_engine.docker("pull", ref)
    assert docker_engine.repo_digest(ref) == digest
    assert docker_engine.image_id(ref) == image_id
    manifest = skopeo_free_manifest(aws_run, f"{USER}/small", "v1")
    assert len(manifest["layers"]) == len(SMALL_LAYERS)


def skopeo_free_manifest(run, name: str, reference: str, user: str = USER,
                         password: str = PASSWORD) -> dict:
    """The stored manifest, read over HTTP with a token from the token endpoint."""
    token = requests.get(f"{run.url}/v2/_berth/token", auth=(user, password),
                         params={"service": "berth", "scope": f"repository:{name}:pull"}).json()["token"]
    r = requests.get(f"{run.url}/v2/{name}/manifests/{reference}",
                     headers={"Authorization": f"Bearer {token}",
                              "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert r.status_code == 200, r.text
    return r.json()


def test_docker_manifest_inspect(aws_run, docker_engine, pushed_small):
    ref, digest, _ = pushed_small
    # The docker CLI reaches plain-HTTP registries only with --insecure (make run answers its
    # TLS attempt with a plain HTTP 400, on which it falls back).
    out = docker_engine.docker("manifest", "inspect", "--insecure", "--verbose", ref).stdout
    inspected = json.loads(out)
    assert inspected["Descriptor"]["digest"] == digest
    assert len(inspected["SchemaV2Manifest"]["layers"]) == len(SMALL_LAYERS)


def test_a_direct_push_of_a_60_mib_layer_is_refused_fast_with_api_gateways_413(aws_run, docker_engine,
                                                                             logged_in):
    """API Gateway answers an oversized request itself (its 413 cannot be customised). Its body
    is not a registry error, so docker gives up at once instead of retrying 5 times."""
    ref = f"{aws_run.host}/{USER}/big-direct:v1"
    docker_engine.build_image(ref, [60 * MiB], seed="docker-big-direct")
    error = docker_engine.fails("push", ref)
    output = error.stdout + error.stderr
    assert error.elapsed < 10, f"refusal took {error.elapsed:.1f}s"
    assert "413" in output and "Request Too Long" in output, output
    docker_engine.docker("rmi", ref)


def test_after_logout_an_anonymous_pull_of_a_private_image_is_refused(aws_run, docker_engine, pushed_small):
    ref, _, _ = pushed_small
    docker_engine.docker("rmi", ref)
    docker_engine.docker("logout", aws_run.host)
    try:
        error = docker_engine.fails("pull", ref)
        output = (error.stdout + error.stderr).lower()
        assert "denied" in output or "unauthorized" in output, output
    finally:
        docker_engine.login(aws_run.host, USER, PASSWORD)


def test_ctr_pulls_and_pushes(aws_run, docker_engine, pushed_small):
    ref, digest, _ = pushed_small
    creds = f"{USER}:{PASSWORD}"
    docker_engine.ctr("images", "pull", "--plain-http", "--user", creds, ref)
    listed = docker_engine.ctr("images", "ls").stdout
    assert ref in listed and digest in listed
    copy = f"{aws_run.host}/{USER}/ctr-copy:v1"
    docker_engine.ctr("images", "tag", ref, copy)
    docker_engine.ctr("images", "push", "--plain-http", "--user", creds, copy)
    assert skopeo_free_manifest(aws_run, f"{USER}/ctr-copy", "v1") == \
        skopeo_free_manifest(aws_run, f"{USER}/small", "v1")
    error = docker_engine.ctr_fails("images", "pull", "--plain-http", ref.replace("small", "nothing"))
    assert "401" in error.stderr or "unauthorized" in error.stderr.lower() or "not found" in error.stderr


# ------------------------------------------------------------------------------------------------
# Without the front door, the deployed path breaks docker: the emulation is that strict.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_gateway(admin_credentials):
    """The aws-mode gateway with the front door switched off (what `chalice deploy` alone makes)."""
    yield from _aws_gateway(front_door=False)


@pytest.fixture(scope="module")
def front_door_gateway(admin_credentials):
    yield from _aws_gateway(front_door=True)


def _aws_gateway(front_door: bool):
    from app import app
    from berth_local.gateway import make_wsgi_app
    from berth_local.serve import start_in_thread
    gateway = make_wsgi_app(app, mode="aws", front_door=front_door)
    server, port = start_in_thread(gateway)
    gateway.public_url = f"http://127.0.0.1:{port}"
    try:
        yield gateway.public_url
    finally:
        server.close()


def _push_blob_like_dockerd(base: str, name: str, data: bytes) -> requests.Response:
    """POST, one PATCH with no Content-Type (what dockerd sends), PUT ?digest=."""
    from tests.support.registry_api import ADMIN
    token = requests.get(f"{base}/v2/_berth/token", auth=ADMIN,
                         params={"service": "berth", "scope": f"repository:{name}:pull,push"}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    opened = requests.post(f"{base}/v2/{name}/blobs/uploads/", headers=auth)
    assert opened.status_code == 202, opened.text
    location = requests.compat.urljoin(base, opened.headers["Location"])
    patched = requests.patch(location, data=data, headers=auth)   # requests adds no Content-Type
    assert "Content-Type" not in patched.request.headers
    assert patched.status_code == 202, patched.text
    location = requests.compat.urljoin(base, patched.headers["Location"])
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return requests.put(location, params={"digest": digest}, headers=auth)


LAYER_BYTES = bytes(range(256)) * 64   # not valid UTF-8: API Gateway's text passing mangles it


def test_without_the_front_door_a_body_without_content_type_is_mangled(bare_gateway):
    r = _push_blob_like_dockerd(bare_gateway, "frontdoor/off", LAYER_BYTES)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_with_the_front_door_the_same_body_arrives_intact(front_door_gateway):
    r = _push_blob_like_dockerd(front_door_gateway, "frontdoor/on", LAYER_BYTES)
    assert r.status_code == 201, r.text


def test_without_the_front_door_no_client_sees_the_challenge(bare_gateway, docker_engine):
    r = requests.get(bare_gateway + "/v2/")
    assert r.status_code == 401
    assert "WWW-Authenticate" not in r.headers
    assert r.headers["X-Amzn-Remapped-WWW-Authenticate"].startswith("Bearer realm=")
    host = bare_gateway.split("//", 1)[1]
    from tests.support.registry_api import ADMIN
    error = docker_engine.fails("login", "--username", ADMIN[0], "--password-stdin", host,
                                input=ADMIN[1])
    assert "unauthorized" in (error.stdout + error.stderr).lower()


def test_with_the_front_door_docker_login_works(front_door_gateway, docker_engine):
    from tests.support.registry_api import ADMIN
    host = front_door_gateway.split("//", 1)[1]
    docker_engine.login(host, *ADMIN)
    assert docker_engine.stored_auth(host) == f"{ADMIN[0]}:{ADMIN[1]}"
    docker_engine.docker("logout", host)


# ------------------------------------------------------------------------------------------------
# skopeo and podman on the same deployed path (podman sends layer bodies chunked)
# ------------------------------------------------------------------------------------------------


def test_skopeo_and_podman_push_and_pull_small_layers_on_the_deployed_path(aws_run, image_cache,
                                                                          tmp_path):
    from tests.support.clients import Podman, layout_digests, skopeo_copy
    from tests.support.images import build_image
    img = build_image(image_cache / "aws-small", layers=[2 * MiB, 300 * 1024], seed="aws-small")
    creds = f"{USER}:{PASSWORD}"
    pushed = skopeo_copy(img.oci_ref, f"docker://{aws_run.host}/{USER}/skopeo:v1", creds=creds)
    assert pushed.digest == img.manifest_digest
    skopeo_copy(f"docker://{aws_run.host}/{USER}/skopeo:v1", f"oci:{tmp_path / 'pulled'}:v1", creds=creds)
    assert layout_digests(tmp_path / "pulled", "v1")["layer_digests"] == img.layer_digests
    pusher, puller = Podman(tmp_path / "push"), Podman(tmp_path / "pull")
    try:
        local = pusher.load_oci(img.path, img.tag, name="aws-small")
        pushed = pusher.push(local, f"{aws_run.host}/{USER}/podman:v1", creds=creds)
        puller.pull(f"{aws_run.host}/{USER}/podman:v1", creds=creds)
        assert puller.identity(f"{aws_run.host}/{USER}/podman:v1").content() == pusher.identity(local).content()
    finally:
        pusher.cleanup()
        puller.cleanup()


# ------------------------------------------------------------------------------------------------
# The README's deploy section, its docker commands run as written
# ------------------------------------------------------------------------------------------------


def readme_deploy_docker_lines() -> list[str]:
    """The README's "Deploying to AWS" block, from `docker login` to `docker pull`."""
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("## Deploying to AWS", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1).splitlines()
    start = next(i for i, line in enumerate(block) if line.startswith("docker login"))
    end = next(i for i, line in enumerate(block) if line.startswith("docker pull"))
    return block[start:end + 1]


def _interactive(command: str, env: dict, answers: dict, timeout: float = 60) -> str:
    """Run `command` on a terminal (docker login prompts for what it is not given), typing
    `answers[prompt]` when the prompt shows; return what it printed."""
    import os
    import pty
    import select
    import subprocess
    import time
    master, slave = pty.openpty()
    proc = subprocess.Popen(["bash", "-c", command], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    output, answered, deadline = b"", set(), time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                output += os.read(master, 4096)
            except OSError:
                break
        for prompt, answer in answers.items():
            if prompt not in answered and prompt.encode() in output:
                os.write(master, answer.encode() + b"\n")
                answered.add(prompt)
    proc.wait(timeout=10)
    os.close(master)
    assert proc.returncode == 0, output.decode(errors="replace")
    return output.decode(errors="replace")


def test_the_readme_deploy_sections_docker_commands_work_as_written(aws_run, docker_engine, tmp_path):
    """Against `BERTH_GATEWAY=aws make run` standing for the deployed API: REGISTRY is its address,
    and `https://$REGISTRY` becomes `http://$REGISTRY` (no TLS locally): the one rewrite."""
    import os
    import socket
    import subprocess
    import time
    from tests.conftest import ROOT
    password = "alice-deploy-pw"
    aws_run.berth("user", "add", "alice", "--password-stdin", stdin=password)
    aws_run.berth("namespace", "add", "alice", "--owner", "alice")
    docker_engine.build_image("small:v1", [1 * MiB], seed="readme-small")
    docker_engine.build_image("big:v1", [40 * MiB], seed="readme-big")
    env = docker_engine.env(REGISTRY=aws_run.host)
    proxy = None
    try:
        for line in readme_deploy_docker_lines():
            line = line.replace("https://$REGISTRY", "http://$REGISTRY")
            command = line.split("#", 1)[0].strip()
            if command.startswith("docker login"):
                _interactive(command, env, {"Username": "alice", "Password": password})
            elif command.endswith("&"):            # berth proxy, in the background
                proxy = subprocess.Popen(["bash", "-c", f"exec {command[:-1]}"], cwd=ROOT, env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
                deadline = time.monotonic() + 30
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", 5001), timeout=1).close()
                        break
                    except OSError:
                        assert proxy.poll() is None and time.monotonic() < deadline, "proxy did not start"
                        time.sleep(0.1)
            else:
                done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env,
                                      capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(timeout=10)
    assert docker_engine.repo_digest(f"{aws_run.host}/alice/small:v1")
    big = skopeo_free_manifest(aws_run, "alice/big", "v1", user="alice", password=password)
    assert big["layers"][0]["size"] > 40 * MiB
