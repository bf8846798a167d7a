"""`berth proxy` as a user runs it: the real command in its own process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from berth_local.backend import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
BERTH = Path(sys.executable).with_name("berth")     # installed by `pip install -e .` (make)


@contextmanager
def berth_proxy(upstream: str, log_path: Path, *options: str, docker_config: Path,
                env: Optional[dict] = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run `berth proxy --upstream UPSTREAM --listen 127.0.0.1:<free port> OPTIONS...` with
    DOCKER_CONFIG=`docker_config` (never the user's own ~/.docker) in `env` (default: this
    process's; a docker CLI's environment gives it the same credential helpers on PATH); yields
    (process, host:port) once it accepts connections; its output goes to `log_path`."""
    assert BERTH.exists(), f"{BERTH} missing: run the tests with the virtualenv of `make test`"
    port = free_port()
    env = dict(env if env is not None else os.environ, DOCKER_CONFIG=str(docker_config))
    with open(log_path, "wb") as log:
        # the virtualenv's `berth` command, as the README runs it (.venv/bin/berth)
        proc = subprocess.Popen(
            [str(BERTH), "proxy", "--upstream", upstream, "--listen", f"127.0.0.1:{port}", *options],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_until_listening(proc, port, log_path)
        yield proc, f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_until_listening(proc: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"berth proxy did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
