#!/usr/bin/env bash
# Installs from Debian's packages the system programs the test suite drives as real
# peers, when missing. Arguments: `program=package` pairs (the Makefile's
# TEST_PROGRAMS, where each is said what for); `make test` runs this first, so there
# is nothing to do by hand.
# kubectl (kustomize v5) for tests/deploy comes from tests/install-kubectl.sh.
set -euo pipefail

[ $# -gt 0 ] || { echo "usage: $0 program=package ..." >&2; exit 2; }
declare -A PACKAGE_OF=()
for pair in "$@"; do
  PACKAGE_OF[${pair%%=*}]=${pair#*=}
done

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
