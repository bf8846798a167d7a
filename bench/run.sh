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

echo "== berth proxy: 200 MiB push through the proxy to a 6 MiB-limited Berth vs direct" >&2
.venv/bin/python bench/proxy_bench.py --out "$out/proxy-bench.json"

.venv/bin/python bench/report.py "$out" > bench/RESULTS.md
cat bench/RESULTS.md
