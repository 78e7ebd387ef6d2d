#!/usr/bin/env bash
# How costs grow with the config and the load (bench/scale.py): picks in pools of
# 10..10,000 servers, 1..10,000 routes, DNS refreshes, memory per server, 1,000
# pools, 100,000 idle connections; rampart beside HAProxy (and nginx) where the
# figure is end to end. See bench/README.md.
#
#   bench/scale.sh --out bench/RESULTS-scale.md   full run (~30 minutes)
#   bench/scale.sh --quick                       smaller, no callgrind (~3 minutes)
#   bench/scale.sh --only pick,routes
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in haproxy:haproxy nginx:nginx wrk:wrk taskset:util-linux python3:python3 valgrind:valgrind; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo build --release --quiet --bin rampart --example scalebench
exec python3 bench/scale.py --rampart target/release/rampart --scalebench target/release/examples/scalebench "$@"
