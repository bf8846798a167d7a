"""The README's quick start, run verbatim: every command between `<!-- quickstart:begin -->` and
`<!-- quickstart:end -->`, one by one through bash, must succeed against a real `make run`.

How it differs from a newcomer's terminal, and why:
- The README says 127.0.0.1:5000; the registry here runs on a free port (others may hold 5000),
  so `127.0.0.1:5000` is rewritten to the test's address in each command, and nothing else.
- The line that starts `make run` is run by the fixture (`python -m berth_local.run`, which is
  what `make run` runs once .venv exists), with its own BERTH_STATE_DIR, which the `berth`
  commands then read to find it, as they read .berth/local.json after a plain `make run`.
- docker talks to a private dockerd (tests/support/dockerd.py: DOCKER_HOST) with a client
  configuration of this test's own (tests/support/dockerconfig.py), and
  podman and skopeo use a private storage, configuration and auth file (tests/support/clients.py
  Podman's environment), so the test touches no system image store and no user login.
- The commands run in a scratch folder standing for the clone: it links the project's Makefile,
  scripts/ and .venv/, so `make system-deps` and `.venv/bin/berth` work, while the files the
  quick start makes (hello/, hello-oci/) stay out of the project.
"""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.clients import Podman
from tests.support.dockerconfig import file_store_config
from tests.support.makerun import ROOT, make_run_server

README = ROOT / "README.md"
README_ADDRESS = "127.0.0.1:5000"
PROJECT_LINKS = ("Makefile", "scripts", ".venv")
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


def is_make_run(command: str) -> bool:
    return command.split("#", 1)[0].split() == ["make", "run"]


def test_the_readme_block_is_what_the_issue_asks_for():
    commands = quickstart_commands()
    assert sum(map(is_make_run, commands)) == 1
    first = {tool: next(i for i, c in enumerate(commands) if re.search(rf"(^|\| ){tool} ", c))
             for tool in ("docker", "podman", "skopeo")}
    assert first["docker"] < first["podman"] < first["skopeo"]     # docker's commands come first
    assert any(c.startswith("make system-deps") for c in commands[:commands.index("make run")])


def test_the_quick_start_runs_verbatim(tmp_path, docker_engine):
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in PROJECT_LINKS:
        (clone / name).symlink_to(ROOT / name)
    state = tmp_path / "berth-state"
    podman = Podman(tmp_path / "podman")
    env = docker_engine.env(DOCKER_CONFIG=str(file_store_config(tmp_path / "docker-config")))
    env.update({k: v for k, v in podman.env.items() if k.startswith(PODMAN_VARIABLES)})
    env = {k: v for k, v in env.items() if not k.startswith(("BERTH_", "AWS_"))}  # the test's moto
    env["BERTH_STATE_DIR"] = str(state)
    address = None
    try:
        with make_run_server(tmp_path / "make-run.log", BERTH_STATE_DIR=str(state),
                             BERTH_ADMIN_PASSWORD="quickstart-admin-pw") as (url, _):
            address = url.split("//", 1)[1]
            ran = []
            for command in quickstart_commands():
                if is_make_run(command):
                    continue              # the fixture's server is that terminal
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
