"""The real docker engine pushing a big layer through `berth proxy` to Berth as deployed.

Berth is `BERTH_GATEWAY=aws make run`: the local gateway in aws mode (API Gateway's and Lambda's
rules and the front door: a request body over Lambda's limit gets API Gateway's own 413), on a
fleet of three Lambda instances (BERTH_INSTANCES=3), so a 60 MiB layer
only gets in cut into pieces by `berth proxy`. The user logs in ONCE, to the registry; the
proxy uses that login (docker's config.json, or the credential helper it names), and the pull
goes to the registry directly.
"""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import started_make_run
from tests.support.berth_proxy import berth_proxy
from tests.support.credhelper import pass_credential_store

MiB, KiB = 1 << 20, 1 << 10
PASSWORD = "docker proxy e2e password"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def aws_run(tmp_path_factory):
    with started_make_run(tmp_path_factory, BERTH_GATEWAY="aws", BERTH_INSTANCES="3") as run:
        yield run


@pytest.fixture(scope="module")
def aws_registry(aws_run) -> str:
    """host:port of `BERTH_GATEWAY=aws BERTH_INSTANCES=3 make run`."""
    return aws_run.host


@pytest.fixture(scope="module")
def user(aws_run) -> str:
    """A user with a namespace of the same name."""
    name = f"alice{uuid.uuid4().hex[:6]}"
    aws_run.berth("user", "add", name, "--password-stdin", stdin=PASSWORD)
    aws_run.berth("namespace", "add", name, "--owner", name)
    return name


def push_through_proxy(docker, registry: str, local: str, repository: str, log_path: Path) -> tuple[str, str]:
    """`berth proxy --upstream http://REGISTRY`, then `docker tag` and `docker push` of `local`
    through it, then `docker rmi` of both names: (the pushed manifest digest, the proxy's log)."""
    with berth_proxy(f"http://{registry}", log_path, docker_config=docker.config_dir,
                     env=docker.env()) as (_, proxy):
        through_proxy = f"{proxy}/{repository}:v1"
        docker.docker("tag", local, through_proxy)
        docker.docker("push", through_proxy)
        pushed = docker.repo_digest(through_proxy)
        assert docker.stored_auth(proxy) is None         # no second login for the proxy's address
        docker.docker("rmi", through_proxy, local)
    log = log_path.read_text()
    assert "Traceback" not in log
    return pushed, log


def pull_directly(docker, registry: str, repository: str) -> tuple[str, str]:
    """`docker pull REGISTRY/REPOSITORY:v1` (pulls need no proxy): (repo digest, image id)."""
    direct = f"{registry}/{repository}:v1"
    docker.docker("pull", direct)
    found = docker.repo_digest(direct), docker.image_id(direct)
    docker.docker("rmi", direct)
    return found


def test_docker_pushes_a_60_mib_layer_through_the_proxy_after_one_login(docker_engine, aws_registry,
                                                                       user, tmp_path):
    docker = docker_engine
    local = f"berth-e2e-proxy/big-{user}:v1"
    docker.build_image(local, [60 * MiB, 256 * KiB], seed=f"proxy-{user}")
    image_id = docker.image_id(local)
    docker.login(aws_registry, user, PASSWORD)          # the only login
    pushed, log = push_through_proxy(docker, aws_registry, local, f"{user}/big", tmp_path / "proxy.log")
    assert f"use the login docker stores for {aws_registry} (user '{user}'" in log, log
    # the 60 MiB layer (gzipped by docker: a little more) went straight to S3 in four pieces of
    # at most 16 MiB (berth_local/s3_pieces.py), not in 4 MiB chunks through API Gateway
    big = re.search(rf"pushed {user}/big@sha256:[0-9a-f]+: 60\.\d MiB in .*, (\d+) pieces\)", log)
    assert big and int(big.group(1)) == 4, log
    assert "through the registry in chunks" not in log, log
    assert docker.fails("image", "inspect", image_id).returncode != 0     # really gone
    assert pull_directly(docker, aws_registry, f"{user}/big") == (pushed, image_id)


def test_a_login_kept_by_a_credential_helper_is_used_too(docker_engine, aws_registry, user, tmp_path,
                                                        monkeypatch):
    """docker with `credsStore: pass` keeps the password in the helper, not in config.json."""
    docker = docker_engine
    config = docker.config_dir / "config.json"
    saved = config.read_text() if config.exists() else None
    with pass_credential_store(tmp_path / "pass", monkeypatch):
        try:
            config.write_text(json.dumps({"credsStore": "pass"}))
            docker.login(aws_registry, user, PASSWORD)
            assert PASSWORD not in config.read_text()
            local = f"berth-e2e-proxy/helper-{user}:v1"
            docker.build_image(local, [300 * KiB], seed=f"proxy-helper-{user}")
            image_id = docker.image_id(local)
            pushed, log = push_through_proxy(docker, aws_registry, local, f"{user}/helper",
                                             tmp_path / "proxy.log")
            assert f"use the login docker stores for {aws_registry} (user '{user}'" in log, log
            assert pull_directly(docker, aws_registry, f"{user}/helper") == (pushed, image_id)
        finally:
            if saved is None:
                config.unlink(missing_ok=True)
            else:
                config.write_text(saved)
