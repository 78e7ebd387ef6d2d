#!/usr/bin/env bash
# Side-by-side benchmarks: the backend served directly, HAProxy, nginx and rampart,
# each proxy with the same number of threads/workers, in the same run, interleaved,
# repeated, medians reported. See bench/README.md.
#
#   bench/run.sh                  full run (3 rounds), writes bench/RESULTS.md
#   bench/run.sh --quick          one short round (< 2 minutes), prints the table
#   bench/run.sh --threads 2 --rounds 5 --duration 15
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in haproxy:haproxy nginx:nginx wrk:wrk h2load:nghttp2-client curl:curl taskset:util-linux python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
# bench/h2_idle.py (the idle HTTP/2 row) runs under Debian's python3, with its h2
/usr/bin/python3 -c "import h2" >/dev/null 2>&1 || need+=(python3-h2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

cargo build --release --quiet
exec python3 bench/bench.py --rampart target/release/rampart "$@"
