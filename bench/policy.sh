#!/usr/bin/env bash
# The cost of traffic policy: 20 rules + 2 rate limits against none, same
# rampart, same run (wrk req/s and callgrind instructions per request), and the
# limiter check at 1 and 1,000,000 keys. See bench/README.md.
#
#   bench/policy.sh --out bench/RESULTS-policy.md     full run (5 rounds x 10 s)
#   bench/policy.sh --quick                           one short round
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pair in redis-server:redis-server nginx:nginx wrk:wrk h2load:nghttp2-client valgrind:valgrind curl:curl taskset:util-linux python3:python3; do
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
cargo build --release --quiet --example limiterbench --example rulesbench
exec python3 bench/policy.py --rampart target/release/rampart --limiterbench target/release/examples/limiterbench --rulesbench target/release/examples/rulesbench "$@"
