"""Shared fixtures: moto as the AWS, and the registry served through the local gateway.

moto is started (and the environment pointed at it) when this file is imported, before any test
module imports chalicelib, whose settings are read once per process.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from berth_local import backend
from berth_local.backend import free_port

ROOT = Path(__file__).resolve().parent.parent

MOTO_ENDPOINT, _MOTO = backend.start_moto_thread()
backend.use_endpoint(MOTO_ENDPOINT)
os.environ["BERTH_TOKEN_KEY"] = "test-signing-key-" + "k" * 32
for _name in ("BERTH_TOKEN_KEY_FILE", "BERTH_TOKEN_KEY_PARAM", "BERTH_PUBLIC_URL"):
    os.environ.pop(_name, None)


def pytest_unconfigure(config):
    _MOTO.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*tools): commands (or absolute paths) the test runs; "
                            "a missing one fails the test")


def pytest_runtest_setup(item):
    """A test that cannot run is a failure: `make test` installs what `needs` names."""
    for mark in item.iter_markers("needs"):
        missing = [t for t in mark.args if shutil.which(t) is None]
        if missing:
            pytest.fail(f"{', '.join(missing)} not installed: run `make system-deps` "
                        f"(scripts/install-system-deps.sh)", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """No skips in this project (a skipped test is a test CI never ran): report one as failed."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, which counts as a failure here: {reason}"


@pytest.fixture(scope="session")
def admin_credentials():
    """The admin user (cheap scrypt parameters: test speed; production hashes use the default)."""
    from chalicelib.auth import accounts
    from chalicelib.storage.setup import ensure_resources
    from tests.support.registry_api import ADMIN
    ensure_resources()
    if accounts.get_user(ADMIN[0]) is None:
        accounts.create_user(*ADMIN, admin=True, log2_n=10)
    return ADMIN


def _serve(**options) -> Iterator[str]:
    from app import app
    from berth_local.gateway import make_wsgi_app
    from berth_local.root import console_at_root
    from berth_local.serve import start_in_thread
    server, port = start_in_thread(console_at_root(make_wsgi_app(app, **options)))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


@pytest.fixture(scope="session")
def in_process_registry(admin_credentials) -> Iterator[str]:
    """Base URL of Berth as `make run` serves it (any body size, bodies fed in pieces), the app
    running in this process (so `aws_calls` sees its AWS calls)."""
    yield from _serve()


@pytest.fixture(scope="session")
def registry(in_process_registry) -> str:
    """The registry most tests use: `in_process_registry` (a module may override this name,
    e.g. with `any_registry`, to run its tests on a fleet too)."""
    return in_process_registry


@pytest.fixture(scope="session")
def fleet(admin_credentials):
    """Three Lambda instances (berth_local/fleet.py): worker processes sharing nothing but moto."""
    from berth_local.fleet import Fleet
    instances = Fleet(3)
    try:
        yield instances
    finally:
        instances.close()


@pytest.fixture(scope="session")
def fleet_registry(fleet) -> Iterator[str]:
    """Berth served by three Lambda instances (BERTH_INSTANCES=3), each request on any idle one."""
    yield from _serve(fleet=fleet)


@pytest.fixture(scope="session", params=[1, 3], ids=["1-instance", "3-instances"])
def any_registry(request, admin_credentials) -> Iterator[str]:
    """The same tests against one instance and against a fleet of three (`in_process_registry`
    and `fleet_registry`); tests that count AWS calls in this process use the first only."""
    yield request.getfixturevalue("in_process_registry" if request.param == 1 else "fleet_registry")


@pytest.fixture(scope="session")
def lambda_registry(admin_credentials) -> Iterator[str]:
    """Base URL of Berth with Lambda's 6 MB request limit emulated."""
    yield from _serve(max_body_bytes=6 * 1024 * 1024)


class AwsCalls:
    """Counts AWS API calls made by this process (botocore), per service and operation."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self._lock = threading.Lock()

    def record(self, service: str, operation: str) -> None:
        with self._lock:
            self.calls[(service, operation)] += 1

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    def count(self, service: str) -> int:
        return sum(n for (s, _), n in self.calls.items() if s == service)


@pytest.fixture
def aws_calls(monkeypatch) -> AwsCalls:
    from botocore.client import BaseClient
    counter = AwsCalls()
    original = BaseClient._make_api_call

    def counting(self, operation_name, api_params):
        counter.record(self.meta.service_model.service_name, operation_name)
        return original(self, operation_name, api_params)
    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    return counter


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory) -> Path:
    """Where test images are built: once per session, or kept in $BERTH_E2E_IMAGE_CACHE."""
    env = os.environ.get("BERTH_E2E_IMAGE_CACHE")
    if env:
        Path(env).mkdir(parents=True, exist_ok=True)
        return Path(env)
    return tmp_path_factory.mktemp("e2e-images")


@dataclass
class MakeRun:
    """A `make run` process: its URL, log file and state folder."""
    url: str
    log: Path
    state_dir: Path

    @property
    def host(self) -> str:
        return self.url.split("//", 1)[1]

    def berth(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        """The `berth` CLI against this process (found through its state folder)."""
        env = dict(os.environ, BERTH_STATE_DIR=str(self.state_dir), BERTH_TARGET="local")
        for name in ("BERTH_AWS_ENDPOINT", "BERTH_TOKEN_KEY"):
            env.pop(name, None)
        proc = subprocess.run([sys.executable, "-m", "berth_local.cli", *args], input=stdin,
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert proc.returncode == 0, f"berth {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc


@contextlib.contextmanager
def started_make_run(tmp_path_factory, private_state: bool = True, **extra_env: str) -> Iterator[MakeRun]:
    """`python -m berth_local.run` (what `make run` runs) in its own process, on a free port,
    starting its own moto; with its own state folder unless `private_state` is False (then the
    project's `.berth`, where the `berth` command finds it without configuration)."""
    port = free_port()
    work = tmp_path_factory.mktemp("make-run")
    state_dir = work / "state" if private_state else ROOT / ".berth"
    env = dict(os.environ, PORT=str(port), BERTH_LOG_LEVEL="WARNING",
               BERTH_ADMIN_USER="runadmin", BERTH_ADMIN_PASSWORD="run-admin-password",
               BERTH_STATE_DIR=str(state_dir), **extra_env)
    for name in ("BERTH_AWS_ENDPOINT", "BERTH_TOKEN_KEY"):   # it must set up its own
        env.pop(name, None)
    log = work / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "berth_local.run"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/v2/", proc, log)
        yield MakeRun(url, log, state_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """`make run` in its own process; yields (url, log path)."""
    with started_make_run(tmp_path_factory, private_state=False) as run:
        yield run.url, run.log


def _wait_for(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"berth_local.run exited:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:   # 401 before login: it is up
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"no answer from {url}:\n{log.read_text()}")


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    """A private dockerd for the session (tests/support/dockerd.py). `make test` installs
    docker.io; a machine without it fails here rather than skipping."""
    from tests.support.dockerd import DockerEngine, have_dockerd
    assert have_dockerd(), "dockerd/docker missing: run `make system-deps` (installs docker.io)"
    engine = DockerEngine(tmp_path_factory.mktemp("dockerd")).start()
    try:
        yield engine
    finally:
        engine.stop()
