"""Berth against Debian's docker-registry, on this machine, in one run, through real clients.

    .venv/bin/python bench/compare.py [--reps 3] [--duration 5] [--connections 4,16]
                                      [--images small,large,many] [--large-mib 200]

Both registries run here, each with its S3 on a moto server of its own process:
- Berth as `make run` runs it (`python -m berth_local.run`: token auth on, moto in a child
  process), pushed to and pulled from as its admin;
- docker-registry (CNCF distribution) with the s3 storage driver on `berth_local.moto_server`
  (the moto `make run` uses), redirects on (its default: blob GETs go to S3, as Berth's do), no auth.

What it measures, the same way on both:
- transfer, for each image (small = 3 layers of 1 MiB, large = --large-mib MiB + 5 MiB,
  many = 50 layers of 64 KiB; each layer a gzip tar of one incompressible file): `skopeo copy`
  of variant k into a fresh repository (k = 0..reps-1, so no push finds its blobs anywhere),
  a re-push of variant 0 (every blob already there: HEADs only), a pull into a fresh OCI
  layout. Each skopeo run has a fresh blob-info cache. Seconds: min / median / max.
- request load on GET and HEAD of a manifest by tag and GET tags/list, for --duration seconds
  at each --connections level, with wrk (GET only: wrk waits for a HEAD's body) and hey:
  requests/s and p50/p99 latency. Any answer but 200 fails the run.
- the Berth server's peak resident memory over its whole run (bench/peakmem.py, moto excluded).

Writes OUT/berth.json, OUT/distribution-s3.json, OUT/berth-peak-rss.json (read by
bench/report.py) and prints the ratios Berth / docker-registry.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402

from bench.processes import Processes, start_berth  # noqa: E402
from berth_local.backend import start_moto_process  # noqa: E402
from tests.support.clients import skopeo_copy, skopeo_version  # noqa: E402
from tests.support.images import ImageInfo, build_image  # noqa: E402
from tests.support.refregistry import RefRegistry  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
ADMIN = ("bench", "bench-admin-password")
NAMESPACE = "bench"
TAG = "latest"
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])


def image_layers(large_mib: int) -> dict[str, list[int]]:
    return {"small": [1 * MiB] * 3, "large": [large_mib * MiB, 5 * MiB], "many": [64 * KiB] * 50}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the registries under test

@dataclass
class Target:
    """One registry: where it is, how to log in (skopeo creds, a pull token for load runs)."""
    label: str
    url: str
    creds: Optional[str]                      # "user:password" for skopeo, None: no auth
    pull_headers: Callable[[str], dict]       # repository -> Authorization headers for a GET

    @property
    def netloc(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc


def bearer_for(url: str, user: str, password: str) -> Callable[[str], dict]:
    """Fetch a pull token for a repository from Berth's token endpoint, as a client does."""
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def headers(repository: str) -> dict:
        query = urllib.parse.urlencode({"service": "berth", "scope": f"repository:{repository}:pull"})
        request = urllib.request.Request(f"{url}/v2/_berth/token?{query}",
                                         headers={"Authorization": basic})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return {"Authorization": "Bearer " + json.load(answer)["token"]}
    return headers


def start_distribution_on_s3(procs: Processes, workdir: Path) -> RefRegistry:
    """docker-registry with its s3 driver on a moto server of its own, bucket created here."""
    endpoint, moto = start_moto_process()
    procs.procs.append(moto)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket="registry")
    storage = {"s3": {"accesskey": "testing", "secretkey": "testing", "region": "us-east-1",
                      "regionendpoint": endpoint, "bucket": "registry", "secure": False,
                      "v4auth": True, "rootdirectory": "/registry"},
               "cache": {"blobdescriptor": "inmemory"},   # as Debian's packaged config has it
               "delete": {"enabled": True}, "redirect": {"disable": False},
               "maintenance": {"uploadpurging": {"enabled": False}}}
    return RefRegistry(workdir, extra_config={"storage": storage,
                                              "log": {"level": "warn"}}).start()


# ---------------------------------------------------------------- transfer: skopeo

def summarize(seconds: list[float], nbytes: Optional[int] = None) -> dict:
    out = {"min": round(min(seconds), 4), "median": round(statistics.median(seconds), 4),
           "max": round(max(seconds), 4), "runs": [round(s, 4) for s in seconds]}
    if nbytes:
        out["MBps_median"] = round(nbytes / 1e6 / out["median"], 1)
    return out


def bench_transfer(target: Target, images: dict[str, list[ImageInfo]], run_id: str,
                   scratch: Path) -> dict:
    results = {}
    for name, variants in images.items():
        repos = [f"{NAMESPACE}/{name}-{run_id}-{k}" for k in range(len(variants))]
        push = [skopeo_copy(img.oci_ref, f"docker://{target.netloc}/{repo}:{TAG}",
                            creds=target.creds).seconds for img, repo in zip(variants, repos)]
        ref = f"docker://{target.netloc}/{repos[0]}:{TAG}"
        repush = [skopeo_copy(variants[0].oci_ref, ref, creds=target.creds).seconds
                  for _ in variants]
        pull = []
        for _ in variants:
            dest = scratch / f"pull-{target.label}-{name}"
            shutil.rmtree(dest, ignore_errors=True)
            pull.append(skopeo_copy(ref, f"oci:{dest}:{TAG}", creds=target.creds).seconds)
            shutil.rmtree(dest, ignore_errors=True)
        size = variants[0].total_size
        results[name] = {"bytes": size, "blobs": len(variants[0].blob_digests), "repo": repos[0],
                         "push": summarize(push, size), "repush": summarize(repush),
                         "pull": summarize(pull, size)}
        log(f"  {target.label} {name}: push {results[name]['push']['median']:.2f} s, re-push "
            f"{results[name]['repush']['median']:.2f} s, pull {results[name]['pull']['median']:.2f} s")
    return results


# ---------------------------------------------------------------- request load: wrk and hey

def run_tool(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])}... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def to_ms(value: str, unit: str) -> float:
    return round(float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit], 3)


def wrk(url: str, method: str, headers: dict, conns: int, duration: int) -> dict:
    cmd = ["wrk", "--latency", "-t", "1", "-c", str(conns), "-d", f"{duration}s", "--timeout", "5s"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    out = run_tool(cmd + [url])
    latency = {int(p): to_ms(v, u) for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$",
                                                                out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": latency.get(50), "p99_ms": latency.get(99),
            "not_200": int(bad.group(1)) if bad else 0,
            "errors": sum(map(int, re.findall(r"\d+", errors.group(0)))) if errors else 0}


def hey(url: str, method: str, headers: dict, conns: int, duration: int) -> dict:
    cmd = ["hey", "-z", f"{duration}s", "-c", str(conns), "-m", method, "-t", "5",
           "-disable-compression", "-disable-redirects"]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    out = run_tool(cmd + [url])
    latency = {int(p): round(float(v) * 1e3, 3) for p, v in re.findall(r"(\d+)% in ([\d.]+) secs", out)}
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": sum(statuses.values()), "p50_ms": latency.get(50),
            "p99_ms": latency.get(99),
            "not_200": sum(n for code, n in statuses.items() if code != 200),
            "errors": sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", errors, re.M))}


LOADERS = {"wrk": (wrk, {"GET"}), "hey": (hey, {"GET", "HEAD"})}


def bench_load(target: Target, repository: str, connections: list[int], duration: int) -> list:
    endpoints = [("GET manifest", "GET", f"/v2/{repository}/manifests/{TAG}"),
                 ("HEAD manifest", "HEAD", f"/v2/{repository}/manifests/{TAG}"),
                 ("GET tags/list", "GET", f"/v2/{repository}/tags/list")]
    rows = []
    for label, method, path in endpoints:
        for tool, (load, methods) in LOADERS.items():
            if method not in methods:
                continue
            for conns in connections:
                headers = {"Accept": MANIFEST_ACCEPT} if "/manifests/" in path else {}
                headers.update(target.pull_headers(repository))   # a fresh token per row
                row = {"endpoint": label, "path": path, "tool": tool, "connections": conns}
                row.update(load(target.url + path, method, headers, conns, duration))
                if row["not_200"] or row["errors"] or not row["requests"]:
                    raise SystemExit(f"{target.label}: {label} with {tool} got {row['not_200']} "
                                     f"answers other than 200 and {row['errors']} errors: "
                                     "a load of error pages measures nothing")
                rows.append(row)
                log(f"  {target.label} {label} {tool} c={conns}: {row['rps']:.0f} req/s, "
                    f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms")
    return rows


# ---------------------------------------------------------------- one registry, then both

def bench_target(target: Target, images: dict, args, scratch: Path) -> dict:
    run_id = time.strftime("%H%M%S")
    result = {"meta": {"registry": target.label, "url": target.url, "reps": args.reps,
                       "duration": args.duration, "connections": args.connections,
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    if images:
        result["transfer"] = bench_transfer(target, images, run_id, scratch)
        repository = next(iter(result["transfer"].values()))["repo"]
    else:      # load only: push one small image to have a manifest and a tag list to load
        repository = f"{NAMESPACE}/load-{run_id}"
        img = build_image(args.image_cache / "small-v0", layers=[1 * MiB], seed="bench/load")
        skopeo_copy(img.oci_ref, f"docker://{target.netloc}/{repository}:{TAG}", creds=target.creds)
    if args.duration > 0:
        result["metadata"] = bench_load(target, repository, args.connections, args.duration)
    result["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return result


def build_images(args) -> dict[str, list[ImageInfo]]:
    layers = image_layers(args.large_mib)
    images = {}
    for name in args.images:
        images[name] = [build_image(args.image_cache / f"{name}-v{k}", layers=layers[name],
                                    seed=f"berth-bench/{name}/{k}") for k in range(args.reps)]
    return images


def print_ratios(berth: dict, reference: dict) -> None:
    print("\ntransfer (median seconds; ratio = Berth / docker-registry, lower is better)")
    for name, result in berth.get("transfer", {}).items():
        for phase in ("push", "repush", "pull"):
            b, d = result[phase]["median"], reference["transfer"][name][phase]["median"]
            print(f"  {name:6} {phase:7} Berth {b:8.2f}  docker-registry {d:8.2f}  ratio {b / d:5.2f}")
    print("\nrequest load (req/s; ratio = Berth / docker-registry, higher is better)")
    ref_rows = {(r["endpoint"], r["tool"], r["connections"]): r for r in reference.get("metadata", [])}
    for row in berth.get("metadata", []):
        other = ref_rows[(row["endpoint"], row["tool"], row["connections"])]
        print(f"  {row['endpoint']:14} {row['tool']:4} c={row['connections']:<3} Berth "
              f"{row['rps']:8.0f}  docker-registry {other['rps']:8.0f}  ratio "
              f"{row['rps'] / other['rps']:5.2f}")


def check_tools(args) -> None:
    missing = [t for t in ["skopeo", "docker-registry"] + (list(LOADERS) if args.duration else [])
               if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `BERTH_BENCH_DEPS=1 make system-deps`")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="pushes and pulls of each image")
    parser.add_argument("--duration", type=int, default=5,
                        help="seconds of each load row (0: no load rows)")
    parser.add_argument("--connections", default="4,16", help="concurrent connections per row")
    parser.add_argument("--images", default="small,large,many")
    parser.add_argument("--large-mib", type=int, default=200, help="the large image's big layer")
    parser.add_argument("--berth-port", type=int, default=int(os.environ.get("BENCH_PORT") or 0),
                        help="Berth's port (default: $BENCH_PORT, else a free port)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--image-cache", type=Path,
                        default=Path(os.environ.get("BERTH_E2E_IMAGE_CACHE")
                                     or ROOT / "bench" / "out" / "images"))
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    args.images = [name for name in args.images.split(",") if name]
    check_tools(args)
    args.out.mkdir(parents=True, exist_ok=True)
    log("building the test images (cached across runs) ...")
    images = build_images(args)
    workdir = Path(tempfile.mkdtemp(prefix="berth-compare-"))
    procs = Processes(workdir)
    try:
        url, berth_proc = start_berth(procs, "berth", ADMIN, port=args.berth_port or None)
        berth = Target("Berth", url, ":".join(ADMIN), bearer_for(url, *ADMIN))
        peak = subprocess.Popen([sys.executable, str(ROOT / "bench" / "peakmem.py"),
                                 str(berth_proc.pid), str(args.out / "berth-peak-rss.json")])
        log(f"== Berth ({url}, make run's server, moto in its own process, token auth on)")
        berth_result = bench_target(berth, images, args, workdir)
        peak.send_signal(signal.SIGUSR1)
        peak.wait(timeout=30)
        procs.stop()

        reference = start_distribution_on_s3(procs, workdir / "distribution")
        log(f"== docker-registry ({reference.url}, S3 on moto, no auth)")
        target = Target("docker-registry", reference.url, None, lambda repository: {})
        try:
            reference_result = bench_target(target, images, args, workdir)
        finally:
            reference.stop()
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    tools = {"skopeo": ".".join(map(str, skopeo_version() or ())),
             "python": sys.version.split()[0], "cpus": os.cpu_count()}
    for result in (berth_result, reference_result):
        result["meta"]["tools"] = tools
    (args.out / "berth.json").write_text(json.dumps(berth_result, indent=1))
    (args.out / "distribution-s3.json").write_text(json.dumps(reference_result, indent=1))
    print_ratios(berth_result, reference_result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
