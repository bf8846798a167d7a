"""The real docker engine pushing a big layer through `berth proxy` to Berth as deployed.

Berth is served through the local gateway in aws mode (API Gateway's and Lambda's rules and the
front door: a request body over Lambda's limit gets API Gateway's own 413), so a 60 MiB layer
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

from chalicelib.auth import accounts
from tests.support.berth_proxy import berth_proxy
from tests.support.credhelper import pass_credential_store

MiB, KiB = 1 << 20, 1 << 10
PASSWORD = "docker proxy e2e password"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def aws_registry(admin_credentials) -> Iterator[str]:
    """host:port of Berth behind the emulated API Gateway + Lambda (BERTH_GATEWAY=aws)."""
    from app import app
    from berth_local.gateway import make_wsgi_app
    from berth_local.serve import start_in_thread
    gateway = make_wsgi_app(app, mode="aws")
    server, port = start_in_thread(gateway)
    gateway.public_url = f"http://127.0.0.1:{port}"     # the realm of the 401 challenge
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()


@pytest.fixture(scope="module")
def user() -> str:
    """A user with a namespace of the same name."""
    name = f"alice{uuid.uuid4().hex[:6]}"
    accounts.create_user(name, PASSWORD, log2_n=10)
    accounts.create_namespace(name, name)
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
    # the 60 MiB layer (gzipped by docker: a little more) went in pieces of at most 4 MiB
    big = re.search(rf"pushed {user}/big@sha256:[0-9a-f]+: 60\.\d MiB in .*, (\d+) pieces\)", log)
    assert big and int(big.group(1)) >= 15, log
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
