#!/usr/bin/env bash
# `make bench`: Berth in local mode (`make run`'s server, moto in its own process) against Debian's
# docker-registry with S3 storage on moto, on this machine, in this run, with the shared regbench
# harness. Writes bench/out/*.json and bench/RESULTS.md (ratios against docker-registry).
#   BENCH_ARGS  extra regbench.py arguments (default: --reps 3 --duration 5)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools=${BERTH_BENCH_TOOLS:-$root/../shared/tools}
out=$root/bench/out
mkdir -p "$out"
BERTH_BENCH_DEPS=1 bash scripts/install-system-deps.sh
# shellcheck disable=SC2206
args=(${BENCH_ARGS:---reps 3 --duration 5})
port=${BENCH_PORT:-5400}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
PORT=$port BERTH_LOG_LEVEL=WARNING BERTH_ADMIN_USER=bench BERTH_ADMIN_PASSWORD="$password" \
  BERTH_STATE_DIR="$out/state" \
  .venv/bin/python -m berth_local.run >"$out/berth.log" 2>&1 &
berth=$!
pids+=("$berth")
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/v2/" && break; sleep 0.2; done
.venv/bin/python bench/peakmem.py "$berth" "$out/berth-peak-rss.json" &
pids+=($!)

echo "== Berth (local mode, moto in a separate process)" >&2
python3 "$tools/regbench.py" --registry "http://127.0.0.1:$port" --namespace bench \
  --user bench --password "$password" --out "$out/berth.json" "${args[@]}"
kill -USR1 "${pids[1]}" 2>/dev/null || true
sleep 0.5

echo "== docker-registry (distribution, S3 storage on moto)" >&2
MOTO_SERVER="$root/.venv/bin/moto_server" PYTHON="$root/.venv/bin/python" BENCH="$out/distribution" \
  bash "$tools/regbench-distribution.sh" s3 --out "$out/distribution-s3.json" "${args[@]}"

echo "== token verification cost (in-process, moto)" >&2
.venv/bin/python bench/auth_bench.py --out "$out/auth.json"

echo "== cold start: import time of app.py against a bare Chalice app importing boto3" >&2
.venv/bin/python bench/coldstart.py --out "$out/coldstart.json"

echo "== garbage collection: DynamoDB cost of a sweep over 10,000 manifests" >&2
.venv/bin/python bench/gc_bench.py --out "$out/gc.json"

echo "== berth proxy: 200 MiB push through the proxy to a 6 MiB-limited Berth vs direct" >&2
.venv/bin/python bench/proxy_bench.py --out "$out/proxy-bench.json"

python3 "$tools/regbench-compare.py" Berth="$out/berth.json" \
  docker-registry-s3="$out/distribution-s3.json" | tee "$out/compare.txt"
.venv/bin/python bench/report.py "$out" > bench/RESULTS.md
cat bench/RESULTS.md
