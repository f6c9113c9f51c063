#!/usr/bin/env bash
# The system programs the test suite drives as real peers, installed from Debian's
# packages when missing (`make test` runs this first; nothing to do by hand).
#   prometheus  tests/observability scrapes a live fleet and evaluates every panel
#   chromium    tests/browser drives the playground page through Playwright (headless)
#   redis-server, redis-cli, ip
#               tests/deploy/test_k8s_redis.py runs the Redis StatefulSet's scripts in
#               network namespaces; tests/multihost puts Redis, the API and the workers
#               on hosts of their own (namespaces); tests/faults/test_sentinel.py runs
#               a Sentinel set (`redis-server --sentinel`)
# kubectl (kustomize v5) for tests/deploy comes from tests/install-kubectl.sh.
set -euo pipefail

declare -A PACKAGE_OF=(
  [prometheus]=prometheus
  [chromium]=chromium
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [ip]=iproute2
)

missing=()
for binary in "${!PACKAGE_OF[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$binary]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "tests need Debian packages not installed yet: ${missing[*]}; installing them" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install ${missing[*]} with this system's package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "run as root, or install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}" >&2
