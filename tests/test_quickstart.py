"""The README's quick start, run verbatim: every command between `<!-- quickstart:begin -->` and
`<!-- quickstart:end -->`, one by one through bash, must succeed against a real `make run`.

How it differs from a newcomer's terminal, and why:
- The README says 127.0.0.1:5000; the registry here runs on a free port (others may hold 5000),
  so `127.0.0.1:5000` is rewritten to the test's address in each command, and nothing else.
- The line that is `make run` is run by a fixture, as typed, in the background (a newcomer's
  first terminal), with PORT set to a free port and its own BERTH_STATE_DIR, which the `berth`
  commands then read to find it, as they read .berth/local.json after a plain `make run`.
- docker talks to a private dockerd (tests/support/dockerd.py: DOCKER_HOST) with a client
  configuration of this test's own (tests/support/dockerconfig.py), and
  podman and skopeo use a private storage, configuration and auth file (tests/support/clients.py
  Podman's environment), so the test touches no system image store and no user login.
- The commands run in a scratch folder standing for the clone: it links the project's files
  (Makefile, scripts/, .venv/, the code), so `make ...` and `.venv/bin/berth` work, while the
  files the quick start makes (hello/, hello-oci/) stay out of the project.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from berth_local.backend import free_port
from tests.support.clients import Podman
from tests.support.dockerconfig import file_store_config

ROOT = Path(__file__).resolve().parent.parent

README = ROOT / "README.md"
README_ADDRESS = "127.0.0.1:5000"
PODMAN_VARIABLES = ("CONTAINERS_", "REGISTRY_AUTH_FILE", "XDG_DATA_HOME", "_CONTAINERS_", "TMPDIR")
pytestmark = [pytest.mark.e2e, pytest.mark.needs("docker", "dockerd", "podman", "skopeo", "make")]


def quickstart_commands() -> list[str]:
    """The shell commands of the README's marked block, comments and blank lines left out."""
    text = README.read_text()
    match = re.search(r"<!-- quickstart:begin -->\s*```sh\n(.*?)```\s*<!-- quickstart:end -->",
                      text, re.S)
    assert match, "README.md has no ```sh block between the quickstart markers"
    lines = [line.strip() for line in match.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_block_is_what_the_issue_asks_for():
    commands = quickstart_commands()
    assert commands.count("make run") == 1
    first = {tool: next(i for i, c in enumerate(commands) if re.search(rf"(^|\| ){tool} ", c))
             for tool in ("docker", "podman", "skopeo")}
    assert first["docker"] < first["podman"] < first["skopeo"]     # docker's commands come first
    assert any(c.startswith("make system-deps") for c in commands[:commands.index("make run")])


@contextmanager
def make_run(command: str, clone: Path, env: dict) -> Iterator[str]:
    """Run the README's `make run` line in `clone` on a free port; yield the registry's address
    once it answers; stop that process group (make and the server it started) at the end."""
    port = free_port()
    log = clone.parent / "make-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", command], cwd=clone, env=dict(env, PORT=str(port)),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"make run exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"make run never answered:\n{log.read_text()}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            except urllib.error.HTTPError:       # 401: it is up
                break
            except OSError:
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def stand_in_clone(folder: Path) -> Path:
    """A folder that looks like the clone to `make` and `.venv/bin/...`: links to every file of
    the project's top level (but the state folder of a `make run` the developer may have)."""
    folder.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".berth"):
            (folder / entry.name).symlink_to(entry)
    return folder


def test_the_quick_start_runs_verbatim(tmp_path, docker_engine):
    clone = stand_in_clone(tmp_path / "clone")
    podman = Podman(tmp_path / "podman")
    env = docker_engine.env(DOCKER_CONFIG=str(file_store_config(tmp_path / "docker-config")))
    env.update({k: v for k, v in podman.env.items() if k.startswith(PODMAN_VARIABLES)})
    env = {k: v for k, v in env.items() if not k.startswith(("BERTH_", "AWS_"))}  # the test's moto
    env.update(BERTH_STATE_DIR=str(tmp_path / "berth-state"), BERTH_LOG_LEVEL="WARNING")
    commands = quickstart_commands()
    server = commands.index("make run")
    address = None
    try:
        with make_run(commands[server], clone, env) as address:
            ran = []
            for command in commands[:server] + commands[server + 1:]:
                command = command.replace(README_ADDRESS, address)
                done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=clone,
                                      env=env, capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, (f"quick-start command failed ({done.returncode}): "
                                              f"{command}\n{done.stdout}\n{done.stderr}")
                ran.append(command)
            assert any(c.startswith("docker pull") for c in ran)
            assert (clone / "hello-oci" / "index.json").exists()   # skopeo's pull landed
    finally:
        podman.cleanup()
        if address:   # the session's dockerd is shared: remove only what the quick start made
            subprocess.run(["docker", "rmi", "--force", "hello:v1", f"{address}/alice/hello:v1"],
                           env=env, capture_output=True)
