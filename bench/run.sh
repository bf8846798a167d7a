#!/usr/bin/env bash
# `make bench`: Berth in local mode (`make run`'s server, moto in its own process, token auth on)
# against Debian's docker-registry with S3 storage on moto, on this machine, in this run
# (bench/compare.py), then the token, cold-start, garbage-collection and `berth proxy` benchmarks.
# Writes bench/out/*.json and bench/RESULTS.md (ratios against docker-registry).
#   BENCH_ARGS  extra bench/compare.py arguments (default: --reps 3 --duration 5)
#   BENCH_PORT  Berth's port (default: a free port)
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out
mkdir -p "$out"
BERTH_BENCH_DEPS=1 bash scripts/install-system-deps.sh
# shellcheck disable=SC2206
args=(${BENCH_ARGS:---reps 3 --duration 5})

echo "== Berth and docker-registry: skopeo pushes and pulls, wrk/hey request load" >&2
.venv/bin/python bench/compare.py --out "$out" "${args[@]}" | tee "$out/compare.txt"

echo "== token verification cost (in-process, moto)" >&2
.venv/bin/python bench/auth_bench.py --out "$out/auth.json"

echo "== cold start: import time of app.py against a bare Chalice app importing boto3" >&2
.venv/bin/python bench/coldstart.py --out "$out/coldstart.json"

echo "== garbage collection: DynamoDB cost of a sweep over 10,000 manifests" >&2
.venv/bin/python bench/gc_bench.py --out "$out/gc.json"

echo "== upload commit latency across three Lambda instances: 4 MiB, 256 MiB, 2 GiB" >&2
.venv/bin/python bench/commit_bench.py --reps "${COMMIT_BENCH_REPS:-1}" --out "$out/commit.json"

echo "== berth proxy: where an upload's time goes (direct, 4 MiB pieces, through the proxy)" >&2
.venv/bin/python bench/upload_profile.py --out "$out/upload-profile.json"

echo "== berth proxy: 1 GiB push through the proxy to a 6 MiB-limited 3-instance Berth vs direct" >&2
.venv/bin/python bench/proxy_bench.py --out "$out/proxy-bench.json"

echo "== berth proxy: a 2 GiB layer to BERTH_GATEWAY=aws BERTH_INSTANCES=3, no request over 29 s" >&2
.venv/bin/python bench/proxy_big_bench.py --out "$out/proxy-big.json"

.venv/bin/python bench/report.py "$out" > bench/RESULTS.md
cat bench/RESULTS.md
