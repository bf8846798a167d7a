"""What the final PUT of a chunked upload costs, against the blob's size, on three instances.

Berth is served as `BERTH_INSTANCES=3 make run` serves it: the local gateway in front of a fleet
of three worker processes (berth_local/fleet.py), with moto in a process of its own. Each blob is
uploaded in 4 MiB PATCHes (as `berth proxy` cuts layers), which land on any of the instances;
then the final `PUT ?digest=` is timed. The commit verifies the digest from the hash state saved
with the session and completes the multipart upload where it stands (no read-back, no copy), so
its time should not grow with the blob: the target is a 2 GiB commit <= 2x a 4 MiB one.
It also records each worker's peak RSS (target < 200 MiB) and the slowest request (< 29 s).
usage: commit_bench.py [--sizes-mib 4,256,2048] [--reps 3] [--out results.json]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MIB = 1 << 20
CHUNK = 4 * MIB


def _chunks(size: int, seed: int):
    """Incompressible bytes, generated chunk by chunk (a 2 GiB blob never sits in memory)."""
    counter = 0
    remaining = size
    while remaining > 0:
        n = min(CHUNK, remaining)
        yield hashlib.shake_256(f"{seed}:{counter}".encode()).digest(n)
        remaining -= n
        counter += 1


def upload_and_commit(base: str, http, fleet, repo: str, size: int, seed: int) -> dict:
    from tests.support.registry_api import absolute
    hasher = hashlib.sha256()
    r = http.post(f"{base}/v2/{repo}/blobs/uploads/")
    url = absolute(base, r.headers["Location"])
    slowest = 0.0
    offset = 0
    for chunk in _chunks(size, seed):
        hasher.update(chunk)
        started = time.monotonic()
        r = http.patch(url, data=chunk, headers={
            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            "Content-Type": "application/octet-stream"})
        slowest = max(slowest, time.monotonic() - started)
        assert r.status_code == 202, r.text
        url = absolute(base, r.headers["Location"])
        offset += len(chunk)
    fleet.aws_calls()                       # start the counters again: the commit alone
    started = time.monotonic()
    r = http.put(url, params={"digest": "sha256:" + hasher.hexdigest()})
    commit = time.monotonic() - started
    assert r.status_code == 201, r.text
    seconds = fleet.aws_calls(seconds=True)
    complete = sum(v for k, v in seconds.items() if k[1] == "CompleteMultipartUpload")
    read_or_copied = sorted({k[1] for k in seconds if k[1] in ("GetObject", "CopyObject", "UploadPartCopy")
                             and k[2] != "uploads/"})
    return {"commit_s": commit, "complete_multipart_s": complete, "slowest_request_s": max(slowest, commit),
            "blob_read_or_copied": read_or_copied}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="4,256,2048")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    from bench.processes import in_process_berth, print_and_write, vm_hwm_mib
    app, moto = in_process_berth("commit-bench")
    from berth_local.fleet import Fleet
    from berth_local.gateway import make_wsgi_app
    from berth_local.serve import start_in_thread
    from tests.support.registry_api import http
    fleet = Fleet(3)
    server, port = start_in_thread(make_wsgi_app(app, fleet=fleet))
    base = f"http://127.0.0.1:{port}"
    results = {"sizes": {}, "instances": 3, "chunk_mib": CHUNK // MIB}
    try:
        for size_mib in (int(s) for s in args.sizes_mib.split(",")):
            runs = [upload_and_commit(base, http, fleet, "bench/commit", size_mib * MIB,
                                      seed=size_mib * 100 + rep) for rep in range(args.reps)]
            results["sizes"][str(size_mib)] = {
                "commit_s_median": round(statistics.median(r["commit_s"] for r in runs), 3),
                "commit_s": [round(r["commit_s"], 3) for r in runs],
                # moto's CompleteMultipartUpload concatenates the parts (S3 does not copy bytes):
                # Berth's own share of the commit is the rest
                "berth_share_s_median": round(statistics.median(
                    r["commit_s"] - r["complete_multipart_s"] for r in runs), 3),
                "complete_multipart_s": [round(r["complete_multipart_s"], 3) for r in runs],
                "blob_read_or_copied": sorted({op for r in runs for op in r["blob_read_or_copied"]}),
                "slowest_request_s": round(max(r["slowest_request_s"] for r in runs), 2)}
            print(f"{size_mib} MiB: commit {results['sizes'][str(size_mib)]}", file=sys.stderr)
        sizes = sorted(results["sizes"], key=int)
        results["ratio_largest_to_smallest"] = round(
            results["sizes"][sizes[-1]]["commit_s_median"] / results["sizes"][sizes[0]]["commit_s_median"], 2)
        results["berth_share_ratio_largest_to_smallest"] = round(
            results["sizes"][sizes[-1]]["berth_share_s_median"]
            / max(results["sizes"][sizes[0]]["berth_share_s_median"], 0.001), 2)
        results["worker_peak_rss_mib"] = [vm_hwm_mib(pid) for pid in fleet.pids()]
        results["invocations_per_instance"] = list(fleet.invocations)
    finally:
        server.close()
        fleet.close()
        moto.terminate()
    print_and_write(results, args.out)


if __name__ == "__main__":
    main()
