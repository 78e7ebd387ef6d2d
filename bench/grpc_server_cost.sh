#!/usr/bin/env bash
# What a gRPC server spends on each call behind each proxy: instructions per
# call of examples/grpcecho.rs (hyper and the h2 crate) under callgrind,
# (Ir(N2 calls) - Ir(N1 calls)) / (N2 - N1), a fresh server for each count,
# the calls sent by h2load (10 connections x 10 streams) through rampart
# (`protocol = "h2"`), HAProxy (`proto h2`, and with `option forwardfor` and
# X-Forwarded-Proto/-Host set as rampart sends them) and nginx (`grpc_pass`).
# The proxies run outside valgrind. What each proxy's way of sending the calls
# (the fields' encoding, frames, connections) costs the server it talks to
# (bench/RESULTS-h2.md).
#
#   bench/grpc_server_cost.sh                 N1=1000, N2=6000
#   RAMPART_BIN=/tmp/r bench/grpc_server_cost.sh 2000 12000
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-1000}
n2=${2:-6000}
if [ -z "${RAMPART_BIN:-}" ]; then
  cargo build --release --quiet
  RAMPART_BIN=target/release/rampart
fi
cargo build --release --quiet --example grpcecho
d=$(mktemp -d /tmp/rampart-grpc-cost-XXXX)
pids=()
# (the server under valgrind of the count in progress, if any)
server_pid=""
cleanup() {
  # (cost runs in a subshell: its server's pid is in a file)
  [ -f "$d/server.pid" ] && server_pid=$(cat "$d/server.pid")
  for p in "${pids[@]}" $server_pid; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$d"
}
trap cleanup EXIT
printf '\x00\x00\x00\x00\x10\x0a\x0erampart-bench!' > "$d/body"
S=19760
cat > "$d/h.cfg" <<EOC
global
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:19761 proto h2
  default_backend be
frontend fe_fwd
  bind 127.0.0.1:19762 proto h2
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:$S proto h2
EOC
cat > "$d/n.conf" <<EOC
daemon off;
master_process off;
worker_processes 1;
pid $d/n.pid;
error_log $d/n.err;
events { worker_connections 1000; }
http {
  access_log off;
  upstream g { server 127.0.0.1:$S; keepalive 128; }
  server { listen 127.0.0.1:19763 http2; location / { grpc_pass grpc://g; } }
}
EOC
cat > "$d/r.toml" <<EOC
[global]
threads = 1
access_log = "off"
[admin]
bind = "127.0.0.1:19765"
[[listener]]
name = "grpc"
bind = ["127.0.0.1:19764"]
mode = "http"
pool = "g"
[[pool]]
name = "g"
protocol = "h2"
  [[pool.server]]
  address = "127.0.0.1:$S"
EOC
haproxy -db -f "$d/h.cfg" > "$d/h.log" 2>&1 & pids+=($!)
nginx -c "$d/n.conf" > "$d/n.log" 2>&1 & pids+=($!)
"$RAMPART_BIN" run -c "$d/r.toml" > "$d/r.log" 2>&1 & pids+=($!)
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }
for p in 19761 19762 19763 19764; do wait_port $p; done
# (a port that answers is this run's process's: one left running on it would
# otherwise be measured in its place)
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a proxy exited (a port of its taken?): logs in $d" >&2; exit 1; }
done
# cost PORT N: the server's instructions for N calls through PORT, counted
# from a zero once it listens to a dump after the last answer (the proxy's
# connection to it, opened for the first call, is in both counts and cancels)
cost() {
  rm -f "$d"/cg.out*
  valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" target/release/examples/grpcecho "127.0.0.1:$S" 1 > "$d/ge.log" 2>&1 &
  local v=$!
  echo "$v" > "$d/server.pid"
  # (the connect that finds it listening is one of its connections: counted
  # before the zero)
  local up=""
  for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$S") 2>/dev/null && { up=1; break; }; sleep 0.05; done
  if [ -z "$up" ] || ! kill -0 "$v" 2>/dev/null; then
    echo "the gRPC server did not listen on $S (or another did): $(cat "$d/ge.log")" >&2
    kill -9 "$v" 2>/dev/null; exit 1
  fi
  callgrind_control -z "$v" > /dev/null
  local out
  out=$(h2load -t 1 -c 10 -m 10 -n "$2" -d "$d/body" -H 'content-type: application/grpc' \
    -H 'te: trailers' "http://127.0.0.1:$1/bench.Echo/Call")
  callgrind_control -d "$v" > /dev/null
  kill -9 "$v"; wait "$v" 2>/dev/null || true
  rm -f "$d/server.pid"
  grep -q "status codes: $2 2xx" <<< "$out" || { echo "port $1: not every call answered: $out" >&2; exit 1; }
  awk '/^totals:/ {print $2; exit}' "$d/cg.out.1"
}
echo "| behind | the server's instructions per call |"
echo "|---|---:|"
for row in "rampart:19764" "HAProxy 2.6:19761" "HAProxy 2.6, forwardfor and X-Forwarded-Proto/-Host:19762" "nginx 1.22:19763"; do
  port=${row##*:}
  a=$(cost "$port" "$n1")
  b=$(cost "$port" "$n2")
  awk -v r="${row%:*}" -v a="$a" -v b="$b" -v n1="$n1" -v n2="$n2" 'BEGIN {printf "| %s | %d |\n", r, (b - a) / (n2 - n1)}'
done
