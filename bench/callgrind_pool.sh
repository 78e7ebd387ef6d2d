#!/usr/bin/env bash
# Instructions per proxied HTTP/1.1 keep-alive request through one pool of N
# servers, rampart alone, under callgrind: how a balancer's pick grows with the
# pool, end to end (bench/RESULTS-scale.md, the least_conn section). The servers
# are one nginx listening on 127.1.x.y:19000; h2load --h1, 50 connections, after
# a warm-up that connects every server (counted from its end); (Ir(N2) -
# Ir(N1)) / (N2 - N1).
#
#   bench/callgrind_pool.sh 64 least_conn
#   bench/callgrind_pool.sh 1000 round_robin 2000 12000
#   RAMPART_BIN=/tmp/rampart-before bench/callgrind_pool.sh 100 least_conn
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}; BAL=${2:-round_robin}; n1=${3:-2000}; n2=${4:-12000}; C=50
bin=$(realpath "${RAMPART_BIN:-target/release/rampart}")
[ -x "$bin" ] || cargo build --release --quiet
d=$(mktemp -d /tmp/rampart-cgpool-XXXX)
trap 'nginx -c $d/backend.conf -s stop 2>/dev/null || true; rm -rf $d' EXIT
addr() { echo "127.1.$(( ($1 >> 8) & 255 )).$(( $1 & 255 ))"; }
{
  echo "worker_processes 1; pid $d/backend.pid; error_log $d/backend.err;"
  echo "events { worker_connections 4000; }"
  echo "http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s; server {"
  for ((i = 0; i < N; i++)); do echo "  listen $(addr $i):19000;"; done
  echo '  location / { return 200 "hello\n"; } } }'
} > "$d/backend.conf"
taskset -c 0 nginx -c "$d/backend.conf"
{
  printf '[global]\nthreads = 1\naccess_log = "off"\n[admin]\nbind = "127.0.0.1:19704"\n'
  printf '[[listener]]\nname = "http"\nbind = ["127.0.0.1:19703"]\nmode = "http"\npool = "p"\n'
  printf '[[pool]]\nname = "p"\nbalance = "%s"\n' "$BAL"
  for ((i = 0; i < N; i++)); do printf '  [[pool.server]]\n  address = "%s:19000"\n' "$(addr $i)"; done
} > "$d/r.toml"
one() {
  local n=$1
  taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$d/cg.$n" "$bin" run -c "$d/r.toml" >/dev/null 2>"$d/err.$n" &
  local pid=$!
  for _ in $(seq 1 300); do curl -s -m 1 http://127.0.0.1:19703/ >/dev/null && break; sleep 0.2; done
  taskset -c 0 h2load --h1 -n $((N * 4 > 500 ? N * 4 : 500)) -c $C http://127.0.0.1:19703/ >/dev/null
  # count from here: start-up and the warm-up left out
  callgrind_control -z $pid >/dev/null
  taskset -c 0 h2load --h1 -n "$n" -c $C http://127.0.0.1:19703/ | grep -E "^requests:" >&2
  kill -TERM $pid
  wait $pid || true
  grep -E '^(summary|totals):' "$d/cg.$n" | head -1 | awk '{print $2}'
}
a=$(one "$n1")
b=$(one "$n2")
echo "$N servers, $BAL: $(( (b - a) / (n2 - n1) )) instructions per request"
