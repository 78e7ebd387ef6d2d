#!/usr/bin/env bash
# Reload benchmarks: time to a new generation (10 and 1,000 pools), and keep-alive
# latency while reloading every second, rampart against HAProxy (-x -sf) in the same
# run. See bench/README.md.
#
#   bench/reload.sh                      3 rounds of 10 s, prints the tables
#   bench/reload.sh --out bench/RELOAD.md
#   bench/reload.sh --quick              1 round of 3 s (under a minute)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in haproxy:haproxy nginx:nginx wrk:wrk taskset:util-linux python3:python3; do
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
exec python3 bench/reload.py --rampart target/release/rampart "$@"
