#!/usr/bin/env bash
# Compression side by side: HAProxy, nginx and rampart gzipping the same
# answer at level 1, same threads, same run, interleaved, medians.
#
#   bench/gzip.sh --out bench/RESULTS-gzip.md   full run (3 rounds x 10 s)
#   bench/gzip.sh --quick                       one short round
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in haproxy:haproxy nginx:nginx wrk:wrk curl:curl taskset:util-linux python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release --quiet
exec python3 bench/gzip.py --rampart target/release/rampart "$@"
