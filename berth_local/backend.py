"""The local AWS: moto serving S3 and DynamoDB, as a child process (`make run`) or a thread (tests)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Tuple


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_until_up(endpoint: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).read()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto did not answer at {endpoint}")
            time.sleep(0.05)


def _die_with_parent(parent: int):
    """For Popen's preexec_fn: the child gets SIGKILL when this process dies, however it dies
    (`kill -9` included), so no moto is left serving every table and object unauthenticated.
    Linux's PR_SET_PDEATHSIG; it survives the exec of the child's interpreter."""
    def arrange() -> None:
        import ctypes
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(70)
        if os.getppid() != parent:     # the parent died before prctl: die now
            os._exit(70)
    return arrange


def start_moto_process(port: int = 0, host: str = "127.0.0.1") -> Tuple[str, subprocess.Popen]:
    """Start moto's server as a child process, so its memory is not counted as the registry's.

    It runs with DynamoDB requests serialized (berth_local/moto_dynamodb.py): moto alone lets a
    failed transaction undo other clients' concurrent writes, which parallel pushes would hit.
    """
    port = port or free_port(host)
    proc = subprocess.Popen([sys.executable, "-m", "berth_local.moto_server", "-H", host,
                             "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent(os.getpid()))
    endpoint = f"http://{host}:{port}"
    try:
        _wait_until_up(endpoint)
    except RuntimeError:
        proc.kill()
        raise
    return endpoint, proc


_SERIALIZED = None     # the serialized() context start_moto_thread entered for this process


def start_moto_thread(host: str = "127.0.0.1"):
    """Start moto in this process (fast; for tests), with DynamoDB requests serialized and S3's
    checksum and copy-source ETag checks (berth_local/moto_server.py) for the rest of the
    process (see start_moto_process). Returns (endpoint, server)."""
    from moto.server import ThreadedMotoServer

    from berth_local.moto_dynamodb import serialized
    from berth_local.moto_server import s3_checks
    # Keep the context manager: dropped, it is garbage-collected at once, its generator is
    # closed, and the `finally` in serialized() takes the patches out again.
    global _SERIALIZED
    if _SERIALIZED is None:
        _SERIALIZED = serialized()
        _SERIALIZED.__enter__()
        s3_checks()     # S3's checksum and copy-source ETag checks, which moto lacks
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    bound_host, port = server.get_host_and_port()
    return f"http://{bound_host}:{port}", server


def use_endpoint(endpoint: str) -> None:
    """Point Berth at `endpoint` with throwaway credentials (moto accepts any)."""
    os.environ["BERTH_AWS_ENDPOINT"] = endpoint
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "berth-local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "berth-local")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # This machine's AWS_CA_BUNDLE is for real AWS; moto is plain HTTP on loopback.
    os.environ.pop("AWS_CA_BUNDLE", None)
