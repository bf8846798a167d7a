"""`make run`'s server (`python -m berth_local.run`) in its own process, as a user starts it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from berth_local.backend import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


@contextmanager
def make_run_server(log: Path, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start it on a free port with `env` added (it starts its own moto, so the test process's
    BERTH_AWS_ENDPOINT and BERTH_TOKEN_KEY are not passed on); yield (url, process); stop it."""
    port = free_port()
    full = dict(os.environ, PORT=str(port), BERTH_LOG_LEVEL="WARNING", **env)
    for name in ("BERTH_AWS_ENDPOINT", "BERTH_TOKEN_KEY"):
        full.pop(name, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "berth_local.run"], cwd=ROOT, env=full,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/v2/", proc, log)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


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
