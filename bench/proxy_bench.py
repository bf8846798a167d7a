"""Push throughput through `berth proxy` against a direct push, with the real skopeo.

    .venv/bin/python bench/proxy_bench.py [--reps 3] [--layer-mib 1024] [--chunk-size 4MiB]
                                          [--instances 3] [--gateway local|aws]

Two registries, each `python -m berth_local.run` (the `make run` server, moto in its own
process), both started here on free ports:
- "direct": no body limit, so skopeo pushes the whole layer in one PATCH (the local gateway cuts
  it into 8 MiB pieces itself);
- "lambda": BERTH_INSTANCES=--instances (3: requests spread over three worker processes, as
  over Lambda instances) and BERTH_MAX_BODY_BYTES=6291456, as API Gateway/Lambda would refuse
  bigger bodies (or, with --gateway aws, BERTH_GATEWAY=aws: every rule of the deployed path),
  with `berth proxy` (its own process, --quiet) in front, which cuts the layer into
  --chunk-size pieces and sends two of them at a time (one stored ahead, chalicelib/uploads.py).
An image with one incompressible layer of --layer-mib MiB (plus a 1 MiB one) is pushed with
`skopeo copy oci:… docker://…` to a new repository each time (a fresh blob-info cache, so every
byte is uploaded again), alternating direct and proxied pushes; the median of --reps of each is
compared. Prints one JSON document (also written to bench/out/proxy-bench.json) and one line:
ratio = direct seconds / proxy seconds (1.0: the proxy costs nothing; target >= 1.0).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.processes import Processes, berth_peak_rss, free_port, start_berth, vm_hwm_mib, wait_http  # noqa: E402
from tests.support.clients import skopeo_copy, skopeo_version  # noqa: E402
from tests.support.images import build_image  # noqa: E402

MiB = 1 << 20
ADMIN = ("admin", "bench-admin-password")
LIMIT = 6291456
TARGET = 1.0


def start_proxy(procs: Processes, upstream: str, chunk_size: str) -> tuple[str, subprocess.Popen]:
    port = free_port()
    # `python -m berth_local.cli` runs cli.py as __main__, which subcommands do not register into.
    proc, log = procs.start("proxy", [sys.executable, "-c",
                                      "import sys; from berth_local.cli import main; sys.exit(main())",
                                      "proxy", "--upstream", upstream, "--listen", f"127.0.0.1:{port}",
                                      "--chunk-size", chunk_size, "--quiet"])
    wait_http(f"http://127.0.0.1:{port}/v2/", proc, log)
    return f"127.0.0.1:{port}", proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--layer-mib", type=int, default=1024)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--gateway", choices=("local", "aws"), default="local")
    parser.add_argument("--chunk-size", default="4MiB")
    parser.add_argument("--image-cache", type=Path,
                        default=Path(os.environ.get("BERTH_E2E_IMAGE_CACHE") or ROOT / "bench" / "out" / "images"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "proxy-bench.json")
    args = parser.parse_args()

    image = build_image(args.image_cache / f"proxy-bench-{args.layer_mib}",
                        layers=[args.layer_mib * MiB, 1 * MiB], seed=f"proxy-bench-{args.layer_mib}")
    creds = ":".join(ADMIN)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    procs = Processes(Path(tempfile.mkdtemp(prefix="berth-proxy-bench-")))
    try:
        direct, direct_proc = start_berth(procs, "berth-direct", ADMIN)
        aws = args.gateway == "aws"
        limited, limited_proc = start_berth(procs, "berth-lambda", ADMIN, max_body=None if aws else LIMIT,
                                            extra_env={"BERTH_INSTANCES": str(args.instances),
                                                       "BERTH_GATEWAY": args.gateway})
        proxy_host, proxy_proc = start_proxy(procs, limited, args.chunk_size)
        direct_host = direct.split("://", 1)[1]
        # one warm-up push each (imports, connections, S3 bucket), not counted
        skopeo_copy(image.oci_ref, f"docker://{direct_host}/bench/warmup:v1", creds=creds)
        skopeo_copy(image.oci_ref, f"docker://{proxy_host}/bench/warmup:v1", creds=creds)
        times: dict[str, list[float]] = {"direct": [], "proxy": []}
        for rep in range(args.reps):
            for kind, host in (("direct", direct_host), ("proxy", proxy_host)):
                result = skopeo_copy(image.oci_ref, f"docker://{host}/bench/rep-{rep}:v1", creds=creds)
                assert result.digest == image.manifest_digest, result
                times[kind].append(round(result.seconds, 3))
                print(f"rep {rep + 1}/{args.reps} {kind:6} {result.seconds:6.2f} s", file=sys.stderr)
        peak = vm_hwm_mib(proxy_proc.pid)
        registry_rss = {"direct": berth_peak_rss(procs, "berth-direct", direct_proc),
                        "lambda": berth_peak_rss(procs, "berth-lambda", limited_proc)}
    finally:
        procs.stop()

    size = image.total_size
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    ratio = medians["direct"] / medians["proxy"]
    report = {
        "image": {"layers_mib": [args.layer_mib, 1], "bytes": size},
        "chunk_size": args.chunk_size,
        "body_limit": LIMIT,
        "upstream": {"instances": args.instances, "gateway": args.gateway},
        "reps": args.reps,
        "skopeo": ".".join(map(str, skopeo_version() or ())),
        "cores": os.cpu_count(),
        "seconds": times,
        "median_seconds": medians,
        "mb_per_s": {kind: round(size / s / 1e6, 1) for kind, s in medians.items()},
        "proxy_peak_rss_mib": peak,
        "registry_peak_rss_mib": registry_rss,
        "ratio_direct_over_proxy": round(ratio, 3),
        "target": TARGET,
        "met": ratio >= TARGET,
    }
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"proxy push {medians['proxy']:.2f} s vs direct {medians['direct']:.2f} s: "
          f"{ratio:.2f}x the direct throughput (target >= {TARGET}x: {'met' if ratio >= TARGET else 'MISSED'}); "
          f"proxy peak RSS {peak} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
