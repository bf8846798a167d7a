#!/usr/bin/env bash
# Debian packages the tests and benchmarks drive: the real registry clients, and the reference
# registry to compare with. Installs only what is missing; needs root (or sudo) to install.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
command -v skopeo >/dev/null || need+=(skopeo)
command -v podman >/dev/null || need+=(podman)
command -v chromium >/dev/null || need+=(chromium)   # the console browser test (Playwright)
command -v dockerd >/dev/null || need+=(docker.io)    # the real docker engine (tests start their own dockerd)
command -v ctr >/dev/null || need+=(containerd)       # containerd's ctr client
command -v pass >/dev/null || need+=(pass)             # the password store of docker-credential-pass (below)
command -v docker-registry >/dev/null || need+=(docker-registry)   # reference registry (self-checks, bench)
command -v openssl >/dev/null || need+=(openssl)     # the proxy test's HTTPS upstream
if [ "${BERTH_BENCH_DEPS:-}" = 1 ]; then
  command -v wrk >/dev/null || need+=(wrk)
  command -v hey >/dev/null || need+=(hey)
fi
# A real docker credential helper for tests/test_dockercreds.py, unpacked into .cache/ and NOT
# installed: on PATH next to `pass`, docker-credential-pass becomes the docker CLI's default
# credential store, and every `docker login` on the machine would then try to use it.
helpers="$(cd "$(dirname "$0")/.." && pwd)/.cache/docker-credential-helpers"
if [ ! -x "$helpers/usr/bin/docker-credential-pass" ]; then
  debs="$(mktemp -d)"
  chmod 755 "$debs"
  (cd "$debs" && apt-get download -qq golang-docker-credential-helpers 2>/dev/null \
     || { $sudo apt-get update -qq && apt-get download -qq golang-docker-credential-helpers; })
  mkdir -p "$helpers"
  dpkg -x "$debs"/golang-docker-credential-helpers_*.deb "$helpers"
  rm -rf "$debs"
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
