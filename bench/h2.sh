#!/usr/bin/env bash
# HTTP/2 over TLS and gRPC side by side: HAProxy, nginx and rampart, same
# threads, same run, interleaved, medians. See bench/README.md.
#
#   bench/h2.sh --out bench/RESULTS-h2.md     full run (3 rounds x 10 s)
#   bench/h2.sh --quick                       one short round
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in haproxy:haproxy nginx:nginx h2load:nghttp2-client curl:curl openssl:openssl taskset:util-linux python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
/usr/bin/python3 -c "import grpc" 2>/dev/null || need+=(python3-grpcio)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release --quiet
cargo build --release --quiet --example grpcecho
exec python3 bench/h2.py --rampart target/release/rampart --grpcecho target/release/examples/grpcecho "$@"
