"""A 2 GiB layer through `berth proxy` to Berth on the deployed path's rules, with three instances.

    .venv/bin/python bench/proxy_big_bench.py [--layer-mib 2048] [--out bench/out/proxy-big.json]

Berth is started as `BERTH_GATEWAY=aws BERTH_INSTANCES=3 make run` starts it
(`python -m berth_local.run`: API Gateway's limits, the 29 s integration timeout, the front
door's authorizer, three worker processes as Lambda instances, moto in its own process), with
BERTH_LOG_LEVEL=INFO so that the app logs one JSON line per request with its duration ("ms").
`berth proxy` (its own process) stands in front. skopeo pushes an image with one incompressible
layer of --layer-mib MiB through the proxy, then pulls it back from Berth itself (blobs through
the 307 to S3) into an OCI layout: the manifest digests must be equal (skopeo checks every blob's
digest as it pulls). Reported, and asserted: no request to the app took 29 s or more (none was
answered 504), and the peak RSS (VmHWM) of the gateway process, of each instance and of the
proxy stays under 200 MiB. The final PUT's duration is reported apart: on moto it includes
CompleteMultipartUpload concatenating the parts (S3 does not; bench/commit_bench.py measures
that share).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.processes import Processes, berth_peak_rss, start_berth, vm_hwm_mib  # noqa: E402
from bench.proxy_bench import ADMIN, start_proxy  # noqa: E402
from tests.support.clients import skopeo_copy  # noqa: E402
from tests.support.images import build_image  # noqa: E402

MiB = 1 << 20
TIMEOUT_MS = 29_000
RSS_TARGET_MIB = 200


def request_lines(log: Path) -> list[dict]:
    """The app's JSON line per request (chalicelib/api/dispatch.py), from the server's log."""
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"ms"' in line:
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer-mib", type=int, default=2048)
    parser.add_argument("--chunk-size", default="4MiB")
    parser.add_argument("--image-cache", type=Path,
                        default=Path(os.environ.get("BERTH_E2E_IMAGE_CACHE") or ROOT / "bench" / "out" / "images"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "proxy-big.json")
    args = parser.parse_args()
    image = build_image(args.image_cache / f"proxy-big-{args.layer_mib}", layers=[args.layer_mib * MiB],
                        seed=f"proxy-big-{args.layer_mib}")
    creds = ":".join(ADMIN)
    workdir = Path(tempfile.mkdtemp(prefix="berth-proxy-big-"))
    procs = Processes(workdir)
    try:
        berth, server = start_berth(procs, "berth-aws-3", ADMIN, extra_env={
            "BERTH_GATEWAY": "aws", "BERTH_INSTANCES": "3", "BERTH_LOG_LEVEL": "INFO"})
        log = workdir / "berth-aws-3.log"
        proxy_host, proxy = start_proxy(procs, berth, args.chunk_size)
        pushed = skopeo_copy(image.oci_ref, f"docker://{proxy_host}/bench/big:v1", creds=creds,
                             timeout=1800)
        assert pushed.digest == image.manifest_digest, pushed
        print(f"push through the proxy: {pushed.seconds:.1f} s", file=sys.stderr)
        pulled = skopeo_copy(f"docker://{berth.split('://', 1)[1]}/bench/big:v1",
                             f"oci:{workdir / 'pulled'}:v1", creds=creds, timeout=1800)
        print(f"pull from Berth: {pulled.seconds:.1f} s", file=sys.stderr)
        rss = {**berth_peak_rss(procs, "berth-aws-3", server), "proxy": vm_hwm_mib(proxy.pid)}
    finally:
        procs.stop()
    requests = request_lines(log)
    slowest = max(requests, key=lambda r: r["ms"])
    commits = [r["ms"] for r in requests if r["method"] == "PUT" and r["route"].endswith("/blobs/uploads/{uuid}")]
    gateway_504 = log.read_text(errors="replace").count("504, as API Gateway answers")
    peak = max([rss["gateway"], rss["proxy"], *rss["instances"]])
    report = {
        "layer_mib": args.layer_mib, "chunk_size": args.chunk_size,
        "upstream": {"gateway": "aws", "instances": 3},
        "push_s": round(pushed.seconds, 1), "pull_s": round(pulled.seconds, 1),
        "push_mb_per_s": round(image.total_size / pushed.seconds / 1e6, 1),
        "digest_equal": pulled.digest == image.manifest_digest,
        "requests_logged": len(requests),
        "slowest_request_ms": slowest["ms"], "slowest_request": f"{slowest['method']} {slowest['route']}",
        "blob_commit_ms": sorted(commits)[-1] if commits else None,
        "gateway_504s": gateway_504,
        "peak_rss_mib": rss,
        "none_over_29s": slowest["ms"] < TIMEOUT_MS and gateway_504 == 0,
        "rss_under_200": peak < RSS_TARGET_MIB,
    }
    shutil.rmtree(workdir / "pulled", ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    assert report["digest_equal"], "the pulled image is not the pushed one"
    assert report["none_over_29s"], f"a request took {slowest['ms']} ms (limit {TIMEOUT_MS}) or got a 504"
    assert report["rss_under_200"], f"peak RSS {peak} MiB (target < {RSS_TARGET_MIB})"
    return 0


if __name__ == "__main__":
    sys.exit(main())
