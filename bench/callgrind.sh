#!/usr/bin/env bash
# Instructions per request under callgrind, the figure noise does not move (it
# repeats within 1%; wall-clock ratios move +-20% on these machines).
#
# Each proxy runs under valgrind twice, serving N1 and then N2 requests
# (h2load, 10 connections); the difference of the two totals over N2 - N1 is
# the cost of one request, start-up, handshakes and shutdown cancelling out.
# Rows, for rampart, HAProxy and nginx (one process: master_process off):
#   keepalive  HTTP/1.1 keep-alive, plain
#   close      HTTP/1.1, a new connection per request (wrk -H "Connection:
#              close" for D1 and then D2 seconds; the requests wrk counts
#              replace N1 and N2)
#   h2c        HTTP/2 with prior knowledge, 10 streams per connection
#   tls        HTTP/1.1 keep-alive over TLS (rampart and HAProxy)
#   h2-tls     HTTP/2 over TLS, ALPN h2, 10 streams per connection (rampart and HAProxy)
#   h2c-post   (asked for by name) h2c with a 1 KiB request body each
#   post       (asked for by name) HTTP/1.1 keep-alive, a POST of 1 KiB each
#   post64k    (asked for by name) HTTP/1.1 keep-alive, a POST of 64 KiB each
#              (nginx with its defaults: such a body goes to a temporary file)
#   get16k     (asked for by name) HTTP/1.1 keep-alive, a 16 KiB response each
#   get64k     (asked for by name) HTTP/1.1 keep-alive, a 64 KiB response each
#   upload64k  (asked for by name) HTTP/1.1 keep-alive, a POST of 20 KiB
#              answered with 64 KiB (rampart: hyper's path, past the fast
#              path's 16 KiB)
#   post1m     (asked for by name) HTTP/1.1 keep-alive, a POST of 1 MiB each
#   sni        (asked for by name) TLS passed through by the ClientHello's
#              server name, a new connection per request (wrk https with
#              "Connection: close", SNI "localhost", counted as `close` is)
#              to nginx terminating TLS: rampart a tcp listener with a
#              route `sni = "localhost"` and no listener pool, HAProxy `use_backend
#              if { req_ssl_sni -i localhost }` after `inspect-delay` and
#              `accept if { req_ssl_hello_type 1 }`, nginx `ssl_preread` and
#              a map (each as its importer reads the other two)
#   grpc       (asked for by name) gRPC unary, h2c on both sides, 10 streams
#              per connection, to examples/grpcecho.rs (bench/h2.py's row):
#              rampart `protocol = "h2"`, HAProxy `proto h2`, nginx `grpc_pass`
#
#   bench/callgrind.sh            N1=2000, N2=12000
#   bench/callgrind.sh 1000 5000
#   ROWS="keepalive h2c" bench/callgrind.sh
#   RAMPART_BIN=/tmp/rampart-before bench/callgrind.sh   (no build)
#   KEEP=/tmp/cg bench/callgrind.sh                      (keep the profiles)
#   PROXIES=rampart bench/callgrind.sh                    (only these proxies)
#   RAMPART_RULES="$(cat rules.toml)" HAPROXY_RULES="..." NGINX_RULES="..." \
#     bench/callgrind.sh
#                 what rules cost: `[[listener.rule]]` tables on rampart's plain
#                 listener, lines in HAProxy's plain frontend, directives in
#                 nginx's plain location; HAPROXY_SECTIONS (sections after
#                 HAProxy's, e.g. the backends that hold stick tables) and
#                 NGINX_HTTP (directives of nginx's http block: limit_req_zone,
#                 geo) go with them (bench/policy_peers.sh)
#   RAMPART_RULES_FILE=rules.toml bench/callgrind.sh
#                 the same rules from a file, after RAMPART_RULES (one
#                 variable holds at most 128 KiB: bench/rules_scale.sh)
#   RAMPART_LISTENERS="..." bench/callgrind.sh
#                 listeners of rampart's ahead of the plain one (bench/rules_scale.sh)
#   NGINX_LOCATIONS="..." bench/callgrind.sh
#                 locations of nginx's plain server beside its `location /`
#                 (WHAT=nginx bench/rules_scale.sh)
#   REQUIRE_2XX=1 bench/callgrind.sh
#                 fail unless h2load saw every request answered with a 2xx
#                 (the rows h2load loads; not with SYSCALLS=1, nor the close
#                 and sni rows, which wrk loads)
#   WALL=1 ROWS="close sni" bench/callgrind.sh
#                 the wall clock instead, for the rows of a new connection per
#                 request: no valgrind, the proxy pinned to CPU 1 (wrk and the
#                 backend on CPU 0), 10 s of wrk each: connections a second and
#                 the proxy's CPU (from /proc, and split into user and
#                 kernel time) per connection
#                 (in the sni row the TLS backend shares CPU 0 with wrk and
#                 bounds the rate: the CPU per connection is the figure)
#   SYSCALLS=1 ROWS="keepalive h2c post64k" bench/callgrind.sh
#                 system calls per 100 requests (strace -c, not valgrind); in
#                 the rows of a new connection per request (`close`, `sni`),
#                 per 100 connections over 5 s of wrk, with each call's
#                 count a connection
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-2000}
n2=${2:-12000}
rows=${ROWS:-keepalive close h2c tls h2-tls}
need=()
for pair in valgrind:valgrind strace:strace haproxy:haproxy nginx:nginx h2load:nghttp2-client wrk:wrk openssl:openssl curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# the sni row's nginx reads the ClientHello with its stream module
[[ " ${ROWS:-} " == *" sni "* ]] && [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ] && need+=(libnginx-mod-stream)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# RAMPART_BIN: an already built binary (a baseline kept from an earlier commit)
if [ -n "${RAMPART_BIN:-}" ]; then
  bin=$(realpath "$RAMPART_BIN")
else
  cargo build --release --quiet
  bin=$PWD/target/release/rampart
fi
want() { [[ " $rows " == *" $1 "* ]]; }
if want grpc; then
  cargo build --release --quiet --example grpcecho
  grpcecho=$PWD/target/release/examples/grpcecho
fi
d=$(mktemp -d /tmp/rampart-callgrind-XXXX)
# KEEP=dir: keep the callgrind output files there (for callgrind_annotate; with
# SYSCALLS=1, strace's tables)
trap '[ -n "${echo_pid:-}" ] && kill $echo_pid 2>/dev/null; nginx -c $d/backend.conf -s stop 2>/dev/null || true; if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cp $d/cg.*[0-9] "$KEEP"/ 2>/dev/null || true; fi; rm -rf $d' EXIT
cd "$d"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem 2>/dev/null
openssl req -x509 -new -key key.pem -subj /CN=bench.example.com -addext subjectAltName=DNS:bench.example.com -days 30 -out cert.pem 2>/dev/null
cat cert.pem key.pem > site.pem
cat > backend.conf <<EOC
worker_processes 1;
pid $d/backend.pid;
error_log $d/backend.err;
events { worker_connections 1000; }
http {
  access_log off;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:19600;
    location = / { return 200 "hello\n"; }
    # (a POST gets the file too: upload64k)
    location /f/ { root $d/www; error_page 405 =200 \$uri; }
  }
  # (the sni row's server: TLS ends here)
  server {
    listen 127.0.0.1:19612 ssl;
    ssl_certificate $d/cert.pem;
    ssl_certificate_key $d/key.pem;
    location = / { return 200 "hello\n"; }
  }
}
EOC
mkdir -p www/f
head -c 16384 /dev/urandom > www/f/16k
head -c 65536 /dev/urandom > www/f/64k
chmod -R a+rX "$d"
taskset -c 0 nginx -c "$d/backend.conf"
if want grpc; then
  taskset -c 0 "$grpcecho" 127.0.0.1:19620 1 &
  echo_pid=$!
  # one gRPC message: uncompressed, 16 bytes of protobuf (bench/h2.py's)
  printf '\x00\x00\x00\x00\x10\x0a\x0erampart-bench!' > grpc.body
fi
# the sni row's listener and frontend (only then: the other rows' configs
# stay as they were)
sni_rampart=""
sni_haproxy=""
if want sni; then
  sni_rampart=$(cat <<EOC
[[listener]]
name = "sni"
bind = ["127.0.0.1:19613"]
mode = "tcp"
  [[listener.route]]
  sni = "localhost"
  pool = "tlsbe"
[[pool]]
name = "tlsbe"
  [[pool.server]]
  address = "127.0.0.1:19612"
EOC
)
  sni_haproxy=$(cat <<EOC
frontend fe_sni
  mode tcp
  bind 127.0.0.1:19614
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend be_tls if { req_ssl_sni -i localhost }
backend be_tls
  mode tcp
  server s1 127.0.0.1:19612
EOC
)
  cat > n-sni.conf <<EOC
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process off;
worker_processes 1;
pid $d/n-sni.pid;
error_log $d/n-sni.err;
events { worker_connections 1000; }
stream {
  map \$ssl_preread_server_name \$tls { localhost 127.0.0.1:19612; }
  server { listen 127.0.0.1:19615; ssl_preread on; proxy_pass \$tls; }
}
EOC
fi
cat > r.toml <<EOC
[global]
threads = 1
access_log = "off"
[admin]
bind = "127.0.0.1:19604"
${RAMPART_LISTENERS:-}
[[listener]]
name = "plain"
bind = ["127.0.0.1:19601"]
mode = "http"
pool = "be"
${RAMPART_RULES:-}
$(if [ -n "${RAMPART_RULES_FILE:-}" ]; then cat "$RAMPART_RULES_FILE"; fi)
[[listener]]
name = "tls"
bind = ["127.0.0.1:19602"]
mode = "http"
pool = "be"
  [listener.tls]
  cert = ["$d/site.pem"]
  alpn = ["http/1.1"]
[[listener]]
name = "h2tls"
bind = ["127.0.0.1:19606"]
mode = "http"
pool = "be"
  [listener.tls]
  cert = ["$d/site.pem"]
  alpn = ["h2"]
[[listener]]
name = "grpc"
bind = ["127.0.0.1:19621"]
mode = "http"
pool = "grpc"
[[pool]]
name = "grpc"
protocol = "h2"
  [[pool.server]]
  address = "127.0.0.1:19620"
[[pool]]
name = "be"
# max_idle_per_server: the default (sized by demand; this config capped it
# at 128 until 2026-12-02, which at its concurrency changed nothing)
  [[pool.server]]
  address = "127.0.0.1:19600"
$sni_rampart
EOC
cat > h.cfg <<EOC
global
  nbthread 1
  maxconn 1000
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:19605 ssl crt $d/site.pem alpn http/1.1
  default_backend be
frontend fe_h2
  bind 127.0.0.1:19607 ssl crt $d/site.pem alpn h2
  default_backend be
frontend fe_plain
  option http-keep-alive
  bind 127.0.0.1:19608
  bind 127.0.0.1:19609 proto h2
${HAPROXY_RULES:-}
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:19600
frontend fe_grpc
  bind 127.0.0.1:19622 proto h2
  default_backend be_grpc
backend be_grpc
  http-reuse always
  server s1 127.0.0.1:19620 proto h2
$sni_haproxy
${HAPROXY_SECTIONS:-}
EOC
cat > n.conf <<EOC
daemon off;
master_process off;
worker_processes 1;
pid $d/n.pid;
error_log $d/n.err;
events { worker_connections 1000; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream be { server 127.0.0.1:19600; keepalive 128; }
  ${NGINX_HTTP:-}
  server {
    listen 127.0.0.1:19610;
    listen 127.0.0.1:19611 http2;
    ${NGINX_LOCATIONS:-}
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; ${NGINX_RULES:-} }
  }
  upstream grpcbe { server 127.0.0.1:19620; keepalive 128; }
  server {
    listen 127.0.0.1:19623 http2;
    location / { grpc_pass grpc://grpcbe; }
  }
}
EOC

# The counts start once the proxy answers: what start-up costs is left out
# rather than cancelled out, because part of it is not the same from run to
# run (aws-lc's jitter entropy, seeding the RNG for the TLS listeners, loops on
# timing: 200 to 350 million instructions under valgrind, which moved a row by
# up to ~1% between runs of one binary). The one request that found the proxy
# ready is in both runs, and shutdown still cancels out.
started() { # started PID
  callgrind_control -z "$1" >/dev/null
}

# total instructions of one run of `cmd` serving n requests at url
run() { # run NAME N URL CMD...
  local name=$1 n=$2 url=$3; shift 3
  if [ -n "${SYSCALLS:-}" ]; then
    # SYSCALLS=1: system calls instead of instructions (the kernel's share of a
    # request, which callgrind does not see): strace -c on every thread, from
    # the proxy's first answer to the end of the load
    "$@" >/dev/null 2>"$d/cg.$name.$n.err" &
    local pid=$!
    for _ in $(seq 300); do curl -sk -o /dev/null "$url" && break; sleep 0.1; done
    # shellcheck disable=SC2046
    strace -f -c -o "$d/st.$name.$n" $(ls /proc/$pid/task | sed 's/^/-p /') 2>/dev/null &
    local sp=$!
    # strace attaches before the load starts: poll its TracerPid
    for _ in $(seq 100); do grep -q '^TracerPid:[[:space:]]*[1-9]' /proc/$pid/status && break; sleep 0.05; done
    # shellcheck disable=SC2086
    taskset -c 0 h2load $H2LOAD_MODE -n "$n" -c 10 "$url" | grep -E "^requests:" >&2
    kill -INT $sp; wait $sp || true
    kill -TERM $pid; wait $pid || true
    [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$d/st.$name.$n" "$KEEP"/
    awk '$NF == "total" {print $4}' "$d/st.$name.$n"
    return
  fi
  valgrind --tool=callgrind --callgrind-out-file="$d/cg.$name.$n" "$@" >/dev/null 2>"$d/cg.$name.$n.err" &
  local pid=$!
  for _ in $(seq 300); do curl -sk -o /dev/null "$url" && break; sleep 0.1; done
  started "$pid"
  # (the answers' statuses too: a rule that refused the requests would count
  # a cheaper request, and a proxy that did not start none)
  local seen
  # shellcheck disable=SC2086
  seen=$(taskset -c 0 h2load $H2LOAD_MODE -n "$n" -c 10 "$url" | grep -E "^(requests|status codes):" || true)
  echo "$seen" >&2
  # REQUIRE_2XX=1: every request answered, each with a 2xx, or this fails
  if [ -n "${REQUIRE_2XX:-}" ] && ! awk -v n="$n" '$1 == "requests:" {ok = ($8 == n)} $1 == "status" {two = ($3 == n)} END {exit !(ok && two)}' <<< "$seen"; then
    echo "$name: not all of $n requests were answered with a 2xx (above)" >&2
    kill -TERM $pid 2>/dev/null; wait $pid || true
    return 1
  fi
  kill -TERM $pid; wait $pid || true
  # valgrind writes "summary:" (or "totals:") with the instruction count
  grep -E '^(summary|totals):' "$d/cg.$name.$n" | head -1 | awk '{print $2}'
}

# is this row's proxy (the name's first word) one of $PROXIES?
asked() { [[ " ${PROXIES:-rampart haproxy nginx} " == *" ${1%%-*} "* ]]; }

per_request() { # NAME URL CMD...
  local name=$1 url=$2; shift 2
  asked "$name" || return 0
  local a b
  a=$(run "$name" "$n1" "$url" "$@")
  b=$(run "$name" "$n2" "$url" "$@")
  if [ -n "${SYSCALLS:-}" ]; then
    echo "$name: $(( (b - a) * 100 / (n2 - n1) )) system calls per 100 requests ($a at $n1, $b at $n2)"
  else
    echo "$name: $(( (b - a) / (n2 - n1) )) instructions per request ($a at $n1, $b at $n2)"
  fi
}

# the same with a new connection per request, for `secs` seconds of wrk:
# prints "INSTRUCTIONS REQUESTS"
run_close() { # run_close NAME SECS URL CMD...
  local name=$1 secs=$2 url=$3; shift 3
  valgrind --tool=callgrind --callgrind-out-file="$d/cg.$name.$secs" "$@" >/dev/null 2>"$d/cg.$name.$secs.err" &
  local pid=$!
  for _ in $(seq 300); do curl -sk -o /dev/null "$url" && break; sleep 0.1; done
  started "$pid"
  local reqs
  reqs=$(taskset -c 0 wrk -t1 -c10 -d"${secs}s" -H "Connection: close" "$url" | awk '/requests in/ {print $1}') || true
  kill -TERM $pid; wait $pid || true
  echo "$(grep -E '^(summary|totals):' "$d/cg.$name.$secs" | head -1 | awk '{print $2}') $reqs"
}

# WALL=1: NAME URL CMD... run for 10 s of wrk, not under valgrind
wall_close() {
  local name=$1 url=$2; shift 2
  taskset -c 1 "$@" >/dev/null 2>"$d/wall.$name.err" &
  local pid=$!
  for _ in $(seq 300); do curl -sk -o /dev/null "$url" && break; sleep 0.1; done
  local hz u0 s0 u1 s1 reqs
  hz=$(getconf CLK_TCK)
  kill -0 $pid 2>/dev/null || { echo "$name: did not start: $(cat "$d/wall.$name.err")"; return 0; }
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
  reqs=$(taskset -c 0 wrk -t1 -c10 -d10s -H "Connection: close" "$url" | awk '/requests in/ {print $1}') || true
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
  kill -TERM $pid; wait $pid || true
  [ "${reqs:-0}" -gt 0 ] || { echo "$name: wrk counted no request"; return 0; }
  # tenths of a microsecond a connection, printed as X.Y
  local us=$(( (u1 - u0) * 10000000 / hz / reqs )) sys=$(( (s1 - s0) * 10000000 / hz / reqs ))
  echo "$name: $(( reqs / 10 )) connections a second, the proxy's CPU $(( (us + sys) / 10 )).$(( (us + sys) % 10 )) us a connection" \
    "($(( us / 10 )).$(( us % 10 )) in user space, $(( sys / 10 )).$(( sys % 10 )) in the kernel; $reqs in 10 s)"
}

# SYSCALLS=1: NAME URL CMD... system calls a connection, strace -c on every
# thread of the proxy during 5 s of wrk (strace slows the proxy down; the
# count a connection is the figure), the calls that make them up listed
syscalls_close() {
  local name=$1 url=$2; shift 2
  "$@" >/dev/null 2>"$d/st.$name.err" &
  local pid=$!
  for _ in $(seq 300); do curl -sk -o /dev/null "$url" && break; sleep 0.1; done
  kill -0 $pid 2>/dev/null || { echo "$name: did not start: $(cat "$d/st.$name.err")"; return 0; }
  # shellcheck disable=SC2046
  strace -f -c -o "$d/st.$name" $(ls /proc/$pid/task | sed 's/^/-p /') 2>/dev/null &
  local sp=$!
  for _ in $(seq 100); do grep -q '^TracerPid:[[:space:]]*[1-9]' /proc/$pid/status && break; sleep 0.05; done
  local reqs
  reqs=$(taskset -c 0 wrk -t1 -c10 -d5s -H "Connection: close" "$url" | awk '/requests in/ {print $1}') || true
  kill -INT $sp; wait $sp || true
  kill -TERM $pid; wait $pid || true
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$d/st.$name" "$KEEP"/
  [ "${reqs:-0}" -gt 0 ] || { echo "$name: wrk counted no request"; return 0; }
  local total
  total=$(awk '$NF == "total" {print $4}' "$d/st.$name")
  [ -n "$total" ] || { echo "$name: strace counted nothing (could it attach?)"; return 0; }
  echo "$name: $(( total * 100 / reqs )) system calls per 100 connections ($total for $reqs):" \
    "$(awk -v r="$reqs" '$1 ~ /^[0-9.]+$/ && $NF != "total" {printf "%s %.2f, ", $NF, $4 / r}' "$d/st.$name")"
}

per_close() { # NAME URL CMD...
  local name=$1 url=$2; shift 2
  asked "$name" || return 0
  if [ -n "${WALL:-}" ]; then wall_close "$name" "$url" "$@"; return 0; fi
  if [ -n "${SYSCALLS:-}" ]; then syscalls_close "$name" "$url" "$@"; return 0; fi
  local a b
  read -r ia ra < <(run_close "$name" 3 "$url" "$@")
  read -r ib rb < <(run_close "$name" 9 "$url" "$@")
  echo "$name: $(( (ib - ia) / (rb - ra) )) instructions per request, a new connection each ($ia for $ra, $ib for $rb)"
}

if want keepalive; then
  H2LOAD_MODE=--h1
  per_request rampart-keepalive http://127.0.0.1:19601/ "$bin" run -c r.toml
  per_request haproxy-keepalive http://127.0.0.1:19608/ haproxy -db -f h.cfg
  per_request nginx-keepalive http://127.0.0.1:19610/ nginx -c "$d/n.conf"
fi
if want close; then
  per_close rampart-close http://127.0.0.1:19601/ "$bin" run -c r.toml
  per_close haproxy-close http://127.0.0.1:19608/ haproxy -db -f h.cfg
  per_close nginx-close http://127.0.0.1:19610/ nginx -c "$d/n.conf"
fi
if want h2c; then
  H2LOAD_MODE="-m 10"
  per_request rampart-h2c http://127.0.0.1:19601/ "$bin" run -c r.toml
  per_request haproxy-h2c http://127.0.0.1:19609/ haproxy -db -f h.cfg
  per_request nginx-h2c http://127.0.0.1:19611/ nginx -c "$d/n.conf"
fi
if want h2c-post; then
  # (not in the default rows) each request a POST of 1 KiB: the request body's
  # path through the HTTP/2 server
  head -c 1024 /dev/zero > post.bin
  H2LOAD_MODE="-m 10 -d $d/post.bin"
  per_request rampart-h2c-post http://127.0.0.1:19601/ "$bin" run -c r.toml
  per_request haproxy-h2c-post http://127.0.0.1:19609/ haproxy -db -f h.cfg
  per_request nginx-h2c-post http://127.0.0.1:19611/ nginx -c "$d/n.conf"
fi
for row in post:1024 post64k:65536 post1m:1048576; do
  if want "${row%%:*}"; then
    head -c "${row#*:}" /dev/zero > post.bin
    H2LOAD_MODE="--h1 -d $d/post.bin"
    per_request "rampart-${row%%:*}" http://127.0.0.1:19601/ "$bin" run -c r.toml
    per_request "haproxy-${row%%:*}" http://127.0.0.1:19608/ haproxy -db -f h.cfg
    per_request "nginx-${row%%:*}" http://127.0.0.1:19610/ nginx -c "$d/n.conf"
  fi
done
for size in 16k 64k; do
  if want get$size; then
    H2LOAD_MODE=--h1
    per_request rampart-get$size http://127.0.0.1:19601/f/$size "$bin" run -c r.toml
    per_request haproxy-get$size http://127.0.0.1:19608/f/$size haproxy -db -f h.cfg
    per_request nginx-get$size http://127.0.0.1:19610/f/$size nginx -c "$d/n.conf"
  fi
done
if want upload64k; then
  # a body past the 16 KiB that rampart's fast path reads with the head, so
  # the request and its answer take hyper's path
  head -c 20480 /dev/zero > post.bin
  H2LOAD_MODE="--h1 -d $d/post.bin"
  per_request rampart-upload64k http://127.0.0.1:19601/f/64k "$bin" run -c r.toml
  per_request haproxy-upload64k http://127.0.0.1:19608/f/64k haproxy -db -f h.cfg
  per_request nginx-upload64k http://127.0.0.1:19610/f/64k nginx -c "$d/n.conf"
fi
if want grpc; then
  H2LOAD_MODE="-m 10 -d $d/grpc.body -H content-type:application/grpc -H te:trailers"
  per_request rampart-grpc http://127.0.0.1:19621/bench.Echo/Call "$bin" run -c r.toml
  per_request haproxy-grpc http://127.0.0.1:19622/bench.Echo/Call haproxy -db -f h.cfg
  per_request nginx-grpc http://127.0.0.1:19623/bench.Echo/Call nginx -c "$d/n.conf"
fi
if want sni; then
  per_close rampart-sni https://localhost:19613/ "$bin" run -c r.toml
  per_close haproxy-sni https://localhost:19614/ haproxy -db -f h.cfg
  per_close nginx-sni https://localhost:19615/ nginx -c "$d/n-sni.conf"
fi
if want tls; then
  H2LOAD_MODE=--h1
  per_request rampart-tls https://127.0.0.1:19602/ "$bin" run -c r.toml
  per_request haproxy-tls https://127.0.0.1:19605/ haproxy -db -f h.cfg
fi
if want h2-tls; then
  H2LOAD_MODE="-m 10"
  per_request rampart-h2-tls https://127.0.0.1:19606/ "$bin" run -c r.toml
  per_request haproxy-h2-tls https://127.0.0.1:19607/ haproxy -db -f h.cfg
fi
