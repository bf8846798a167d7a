"""The servers a benchmark starts, and stops again: Berth as `make run` runs it, moto, and
anything else in its own session with its output in a log file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from berth_local.backend import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until `url` answers at all (a 401 counts: the server is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"no answer from {url}:\n{log.read_text()[-3000:]}")


def vm_hwm_mib(pid: int) -> float:
    """Peak resident memory of a process so far (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Processes:
    """Processes started for one benchmark; `stop()` ends exactly those (SIGTERM, then kill)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> tuple[subprocess.Popen, Path]:
        log = self.logdir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc, log

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def berth_peak_rss(procs: Processes, name: str, proc: subprocess.Popen) -> dict:
    """Peak RSS (VmHWM, MiB) of a Berth started by start_berth(name): its server process and,
    with BERTH_INSTANCES, each instance (their pids are in the line `make run` prints)."""
    import re
    found = re.search(r"worker processes \(pids ([\d ]+)\)", (procs.logdir / f"{name}.log").read_text())
    return {"gateway": vm_hwm_mib(proc.pid),
            "instances": [vm_hwm_mib(int(pid)) for pid in found.group(1).split()] if found else []}


def start_berth(procs: Processes, name: str, admin: tuple[str, str], *,
                max_body: int | None = None, port: int | None = None,
                extra_env: dict | None = None) -> tuple[str, subprocess.Popen]:
    """`python -m berth_local.run` (what `make run` runs: moto in its own process, token auth
    on) with its own state folder, and `extra_env` (BERTH_INSTANCES, BERTH_GATEWAY ...);
    returns (url, process)."""
    port = port or free_port()
    env = dict(os.environ, PORT=str(port), BERTH_LOG_LEVEL="WARNING",
               BERTH_ADMIN_USER=admin[0], BERTH_ADMIN_PASSWORD=admin[1],
               BERTH_STATE_DIR=tempfile.mkdtemp(prefix="berth-bench-state-"))
    for var in ("BERTH_AWS_ENDPOINT", "BERTH_MAX_BODY_BYTES", "BERTH_MOTO_PORT", "BERTH_TOKEN_KEY",
                "BERTH_INSTANCES", "BERTH_GATEWAY"):
        env.pop(var, None)
    if max_body:
        env["BERTH_MAX_BODY_BYTES"] = str(max_body)
    env.update(extra_env or {})
    proc, log = procs.start(name, [sys.executable, "-m", "berth_local.run"], env)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v2/", proc, log)
    return url, proc


def in_process_berth(name: str) -> tuple:
    """Berth's app in this process against moto in its own (a benchmark that times or counts
    what the app does inside): returns (the Chalice app, moto's process). User admin /
    admin-test-password."""
    from berth_local import backend
    endpoint, moto = backend.start_moto_process(0)
    backend.use_endpoint(endpoint)
    os.environ["BERTH_TOKEN_KEY"] = f"{name}-" + "k" * 32
    os.environ["BERTH_LOG_LEVEL"] = "WARNING"
    from chalicelib.auth import accounts
    from chalicelib.storage.setup import ensure_resources
    ensure_resources()
    accounts.ensure_user("admin", "admin-test-password", admin=True)
    from app import app
    return app, moto


def print_and_write(report: dict, out: "str | Path | None") -> None:
    """A benchmark's JSON document: on stdout, and in `out` when given."""
    import json
    text = json.dumps(report, indent=1)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
