"""Where the time of a blob upload goes: direct to Berth, in 4 MiB PATCHes, and through `berth proxy`.

    .venv/bin/python bench/upload_profile.py [--mib 256] [--out bench/out/upload-profile.json]

Berth runs in this process as `make run` runs it (the local gateway, moto in its own process);
the proxy too (in a thread), so one set of timers sees every step. Three pushes of the same
incompressible blob, each POST, PATCH(es), PUT:
- direct: one PATCH of the whole blob to the gateway without a body limit (it feeds the app in
  8 MiB pieces itself);
- pieces: the client sends 4 MiB PATCHes itself to the gateway with BERTH_MAX_BODY_BYTES'
  6291456 (what the proxy sends, without the proxy);
- proxy: one PATCH of the whole blob to `berth proxy` in front of the limited gateway.
Timers (seconds summed over the push): the gateway's base64 of the event body, the app's
base64 decode, token verification, SHA-256 updates, and every AWS call by operation (the call's
round trip to moto, i.e. moto's own work included). "other" is the rest of the wall time
(HTTP, Chalice, the proxy's socket copies, waits). Prints one JSON document.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
LIMIT = 6291456
CHUNK = 4 * MIB

SPENT: Counter = Counter()
CALLS: Counter = Counter()


def timed(name: str, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - started
            CALLS[name] += 1
    return wrapper


def instrument() -> None:
    """Wrap the steps of one chunk's path with timers (this process only)."""
    from botocore.client import BaseClient
    from berth_local import gateway
    from chalicelib import resumable_hash
    from chalicelib.auth import tokens
    original_call = BaseClient._make_api_call

    def aws_call(self, operation, params):
        name = f"{self.meta.service_model.service_name}:{operation}"
        return timed(name, original_call)(self, operation, params)
    BaseClient._make_api_call = aws_call
    gateway.encode_event_body = timed("gateway base64 encode", gateway.encode_event_body)
    base64.b64decode = timed("app base64 decode", base64.b64decode)
    tokens.verify = timed("token verify", tokens.verify)
    resumable_hash.ResumableHash.update = timed("sha256 update", resumable_hash.ResumableHash.update)


def blob_pieces(size: int):
    for i in range(0, size, CHUNK):
        yield hashlib.shake_256(f"profile:{i}".encode()).digest(min(CHUNK, size - i))


def push(http, base: str, repo: str, data_pieces: list, whole: bool) -> float:
    from tests.support.registry_api import absolute
    digest = "sha256:" + hashlib.sha256(b"".join(data_pieces)).hexdigest()
    started = time.perf_counter()
    r = http.post(f"{base}/v2/{repo}/blobs/uploads/")
    url = absolute(base, r.headers["Location"])
    if whole:
        r = http.patch(url, data=b"".join(data_pieces), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        url = absolute(base, r.headers["Location"])
    else:
        offset = 0
        for piece in data_pieces:
            r = http.patch(url, data=piece, headers={"Content-Type": "application/octet-stream",
                                                     "Content-Range": f"{offset}-{offset + len(piece) - 1}"})
            assert r.status_code == 202, r.text
            url = absolute(base, r.headers["Location"])
            offset += len(piece)
    r = http.put(url, params={"digest": digest})
    assert r.status_code == 201, r.text
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from bench.processes import in_process_berth, print_and_write
    app, moto = in_process_berth("upload-profile")
    from berth_local.gateway import make_wsgi_app
    from berth_local.proxy import start_proxy
    from berth_local.serve import start_in_thread
    from tests.support.registry_api import http
    instrument()
    direct, direct_port = start_in_thread(make_wsgi_app(app))
    limited, limited_port = start_in_thread(make_wsgi_app(app, max_body_bytes=LIMIT))
    proxy, proxy_port = start_proxy(f"http://127.0.0.1:{limited_port}")
    data = list(blob_pieces(args.mib * MIB))
    report: dict = {"blob_mib": args.mib, "chunk_mib": CHUNK // MIB, "cores": os.cpu_count()}
    try:
        push(http, f"http://127.0.0.1:{direct_port}", "profile/warmup", data[:3], whole=True)
        for kind, port, whole in (("direct", direct_port, True), ("pieces", limited_port, False),
                                  ("proxy", proxy_port, True)):
            data[0] = hashlib.shake_256(f"{kind}:first".encode()).digest(CHUNK)   # a new blob each time
            SPENT.clear()
            CALLS.clear()
            wall = push(http, f"http://127.0.0.1:{port}", f"profile/{kind}", data, whole)
            steps = {name: {"s": round(s, 3), "calls": CALLS[name]} for name, s in SPENT.most_common()}
            report[kind] = {"wall_s": round(wall, 3), "mb_per_s": round(args.mib * MIB / wall / 1e6, 1),
                            "steps": steps}
            print(f"{kind}: {wall:.2f} s; " + ", ".join(f"{n} {v['s']}s/{v['calls']}"
                                                        for n, v in steps.items()), file=sys.stderr)
    finally:
        proxy.stop()
        direct.close()
        limited.close()
        moto.terminate()
    print_and_write(report, args.out)


if __name__ == "__main__":
    main()
