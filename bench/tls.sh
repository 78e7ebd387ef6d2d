#!/usr/bin/env bash
# TLS side by side: HAProxy and nginx (OpenSSL) and rampart (rustls) terminating
# TLS, same threads, same run, interleaved, medians. See bench/README.md.
#
#   bench/tls.sh --out bench/RESULTS-tls.md     full run (3 rounds x 10 s)
#   bench/tls.sh --quick                        one short round
#   bench/tls.sh --ring ...                     also a rampart built with ring
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in haproxy:haproxy nginx:nginx wrk:wrk curl:curl openssl:openssl taskset:util-linux python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

alt=()
if [ "${1:-}" = "--ring" ]; then
  shift
  # a second build with ring instead of aws-lc-rs, in its own target folder
  cargo build --release --quiet --no-default-features --features ring --target-dir target/ring
  alt=(--rampart-alt target/ring/release/rampart --alt-label "rampart built with ring")
fi
cargo build --release --quiet
cargo build --release --quiet --example tlsload
exec python3 bench/tls.py --rampart target/release/rampart --tlsload target/release/examples/tlsload "${alt[@]}" "$@"
