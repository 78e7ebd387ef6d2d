#!/usr/bin/env bash
# The Kubernetes failover demo of the design, on one machine, from Debian packages:
#
#   dnsmasq        a "headless Service" name, api.demo.svc, with one A record per pod
#   nginx "pods"   on 127.0.0.11, .12 (and .13 for phase C), each answering its name
#   PostgreSQL     a primary and two streaming replicas
#   rampart        an http listener to the pods (by the Service name, re-resolved at the
#                  TTL), a tcp listener to the replicas (role = replica) and one to the
#                  primary (role = primary), all with active health checks
#
# It walks the phases, printing which pod and which replica answered each request:
#   0  baseline
#   A  one replica down, then restored
#   B  one pod down, then restored
#   C  the only pod replaced by a pod at a new IP (the DNS record changes, the old pod
#      drains for 2 s and goes away), as a Kubernetes rollout does
# then runs the same phases through nginx with the classic config (the Service name
# resolved once, at start, as nginx does for upstream servers) and ends with a table of
# errors per phase and the time until traffic reached the restored or new target.
#
#   scripts/demo-failover.sh            the full demo (about 2 minutes of phases)
#   scripts/demo-failover.sh --quick    shorter phases (CI runs this: tests/demo.rs)
#   RAMPART=path/to/rampart             the binary (default: target/release, else debug)
#
# Exit status: 0 when every rampart phase is clean (no failed request), 1 otherwise,
# 2 when the world could not be built. A read session that was already open on the
# replica phase A kills (pg_ctl -m immediate) dies with it, through any proxy: it is
# reported and not counted; every session that starts after the kill must succeed. Run as root (PostgreSQL runs as its user).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
NGINX=1
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    --no-nginx) NGINX=0 ;;
    -h|--help) sed -n 2,28p "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  BASE=2; DOWN=4; UP=4; DRAIN=2; AFTER=5; PACE=0.15
else
  BASE=5; DOWN=10; UP=10; DRAIN=2; AFTER=12; PACE=0.1
fi

die() { echo "demo: $*" >&2; exit 2; }
for t in dnsmasq nginx curl psql python3; do
  command -v "$t" >/dev/null || die "$t is missing (apt-get install dnsmasq nginx curl postgresql python3)"
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || die "PostgreSQL is missing (apt-get install postgresql)"
RAMPART=${RAMPART:-}
if [ -z "$RAMPART" ]; then
  for c in target/release/rampart target/debug/rampart; do
    [ -x "$c" ] && RAMPART=$c && break
  done
fi
[ -n "$RAMPART" ] || die "no rampart binary: cargo build, or set RAMPART"

D=$(mktemp -d /tmp/rampart-demo.XXXXXX)
chmod 755 "$D"
PIDS=()
PGDIRS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "${PGDIRS[@]}"; do as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; done
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
  python3 -c 'import socket
while True:
    u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(("127.0.0.1",0)); p=u.getsockname()[1]
    t=socket.socket()
    try:
        t.bind(("127.0.0.1",p)); print(p); break
    except OSError: pass'
}
now() { date +%s.%N; }
# poll until a command succeeds, or fail after N seconds
wait_for() { # wait_for SECONDS DESCRIPTION CMD...
  local until=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$until" ] || die "$what did not come up"
    sleep 0.1 # polling pace
  done
}

# ---- the world -------------------------------------------------------------------
POD_PORT=$(free_port)
DNS_PORT=$(free_port)
declare -A POD_PID
start_pod() { # start_pod N (pod-N on 127.0.0.(10+N))
  local n=$1 ip="127.0.0.$((10 + $1))" dir="$D/pod$1"
  mkdir -p "$dir/logs"
  cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  server { listen $ip:$POD_PORT; location / { return 200 "pod-$n\n"; } }
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" & POD_PID[$n]=$!
  PIDS+=("${POD_PID[$n]}")
  wait_for 5 "pod-$n" curl -sf "http://$ip:$POD_PORT/"
}
stop_pod() { kill "${POD_PID[$1]}" 2>/dev/null || true; wait "${POD_PID[$1]}" 2>/dev/null || true; }

set_dns() { # set_dns N... : api.demo.svc → those pods
  : > "$D/hosts.new"
  for n in "$@"; do echo "127.0.0.$((10 + n)) api.demo.svc" >> "$D/hosts.new"; done
  mv "$D/hosts.new" "$D/hosts"
  [ -n "${DNS_PID:-}" ] && kill -HUP "$DNS_PID"
  return 0
}
resolve() { python3 - "$DNS_PORT" <<'EOF'
import socket, struct, sys
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(bytes([len(p)]) + p.encode() for p in "api.demo.svc".split(".")) + b"\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
s.sendto(q, ("127.0.0.1", int(sys.argv[1]))); r = s.recv(512)
an = struct.unpack(">H", r[6:8])[0]; i = len(q); out = []
for _ in range(an):
    i += 2; t, c, ttl, l = struct.unpack(">HHIH", r[i:i+10]); i += 10
    if t == 1: out.append(socket.inet_ntoa(r[i:i+4]))
    i += l
print(" ".join(out)); sys.exit(0 if out else 1)
EOF
}

echo "== building the world in $D"
set_dns 1 2
dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces --listen-address=127.0.0.1 \
  --local-ttl=1 --user=root --conf-file=/dev/null --log-facility="$D/dnsmasq.log" \
  --port="$DNS_PORT" --addn-hosts="$D/hosts" --pid-file="$D/dnsmasq.pid" &
DNS_PID=$!
PIDS+=("$DNS_PID")
wait_for 5 "dnsmasq" resolve
start_pod 1
start_pod 2

# PostgreSQL: a primary and two streaming replicas
chown postgres:postgres "$D" 2>/dev/null || true
PG_P=$(free_port); PG_R1=$(free_port); PG_R2=$(free_port)
as_pg "$PGBIN/initdb" -D "$D/primary" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
cat >> "$D/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_P
unix_socket_directories = '$D'
wal_level = replica
max_wal_senders = 6
hot_standby = on
fsync = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$D/primary" -l "$D/primary.log" -w start >/dev/null
PGDIRS+=("$D/primary")
for r in 1 2; do
  port_var="PG_R$r"
  as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PG_P" -U postgres -D "$D/replica$r" -R -X stream
  echo "port = ${!port_var}" >> "$D/replica$r/postgresql.conf"
  as_pg "$PGBIN/pg_ctl" -D "$D/replica$r" -l "$D/replica$r.log" -w start >/dev/null
  PGDIRS+=("$D/replica$r")
done
pg_name() { case "$1" in "$PG_P") echo primary ;; "$PG_R1") echo replica-1 ;; "$PG_R2") echo replica-2 ;; *) echo "?$1" ;; esac; }

# ---- the proxies -------------------------------------------------------------------
WEB=$(free_port); RO=$(free_port); RW=$(free_port); ADMIN=$(free_port)
cat > "$D/rampart.toml" <<EOF
[global]
threads = 1
access_log = "off"
[admin]
bind = "127.0.0.1:$ADMIN"
[resolver]
nameservers = ["127.0.0.1:$DNS_PORT"]
[[listener]]
name = "web"
bind = ["127.0.0.1:$WEB"]
mode = "http"
pool = "pods"
[[listener]]
name = "pg-ro"
bind = ["127.0.0.1:$RO"]
mode = "tcp"
pool = "replicas"
[[listener]]
name = "pg-rw"
bind = ["127.0.0.1:$RW"]
mode = "tcp"
pool = "primary"
[[pool]]
name = "pods"
connect_timeout = "1s"
retries = 2
  [pool.health]
  kind = "http"
  path = "/"
  interval = "500ms"
  fall = 2
  rise = 1
  [[pool.server]]
  address = "api.demo.svc:$POD_PORT"
[[pool]]
name = "replicas"
connect_timeout = "1s"
  [pool.health]
  kind = "postgres"
  user = "postgres"
  role = "replica"
  interval = "500ms"
  timeout = "400ms"
  fall = 2
  rise = 1
  [[pool.server]]
  address = "127.0.0.1:$PG_R1"
  [[pool.server]]
  address = "127.0.0.1:$PG_R2"
[[pool]]
name = "primary"
connect_timeout = "1s"
  [pool.health]
  kind = "postgres"
  user = "postgres"
  role = "primary"
  interval = "500ms"
  timeout = "400ms"
  fall = 2
  rise = 1
  [[pool.server]]
  address = "127.0.0.1:$PG_P"
  [[pool.server]]
  address = "127.0.0.1:$PG_R1"
  [[pool.server]]
  address = "127.0.0.1:$PG_R2"
EOF
"$RAMPART" check -c "$D/rampart.toml" >/dev/null 2>"$D/check.log" || { cat "$D/check.log" >&2; die "rampart check refused the demo config"; }

# nginx, the classic config: upstream server names are resolved once, at start (here:
# the addresses dnsmasq gives at that moment); passive checks and next-upstream retries
# are nginx's defaults
nginx_conf() {
  local pods="" p
  for p in $(resolve); do pods+="    server $p:$POD_PORT;"$'\n'; done
  local module=""
  [ -f /usr/lib/nginx/modules/ngx_stream_module.so ] && module="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
  mkdir -p "$D/nginx"
  cat > "$D/nginx/nginx.conf" <<EOF
$module
worker_processes 1;
daemon off;
master_process off;
pid $D/nginx/nginx.pid;
error_log $D/nginx/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $D/nginx/body; proxy_temp_path $D/nginx/proxy;
  fastcgi_temp_path $D/nginx/fcgi; uwsgi_temp_path $D/nginx/uwsgi; scgi_temp_path $D/nginx/scgi;
  upstream pods {
$pods  }
  server { listen 127.0.0.1:$WEB; location / { proxy_pass http://pods; proxy_connect_timeout 1s; } }
}
stream {
  upstream replicas { server 127.0.0.1:$PG_R1; server 127.0.0.1:$PG_R2; }
  upstream primary { server 127.0.0.1:$PG_P; }
  server { listen 127.0.0.1:$RO; proxy_pass replicas; proxy_connect_timeout 1s; }
  server { listen 127.0.0.1:$RW; proxy_pass primary; proxy_connect_timeout 1s; }
}
EOF
}

start_proxy() { # start_proxy rampart|nginx
  if [ "$1" = rampart ]; then
    "$RAMPART" run -c "$D/rampart.toml" 2> "$D/rampart.log" & PROXY_PID=$!
    if [ -n "${TMUX:-}" ] && command -v tmux >/dev/null && [ -z "${WATCH_PANE:-}" ]; then
      WATCH_PANE=$(tmux split-window -d -P -F '#{pane_id}' "$RAMPART watch --admin http://127.0.0.1:$ADMIN") || true
    fi
    # ready: every pool has a server UP
    wait_for 15 "rampart" bash -c "curl -sf http://127.0.0.1:$ADMIN/ready && curl -sf http://127.0.0.1:$WEB/ && PGCONNECT_TIMEOUT=2 psql -h 127.0.0.1 -p $RO -U postgres -tAc 'select 1' postgres"
  else
    nginx_conf
    nginx -p "$D/nginx" -c "$D/nginx/nginx.conf" & PROXY_PID=$!
    wait_for 10 "nginx" curl -sf "http://127.0.0.1:$WEB/"
  fi
  PIDS+=("$PROXY_PID")
}
stop_proxy() {
  kill "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  if [ -n "${WATCH_PANE:-}" ]; then tmux kill-pane -t "$WATCH_PANE" 2>/dev/null || true; WATCH_PANE=""; fi
}

# ---- the phases ----------------------------------------------------------------------
# A client sends one HTTP request and one read query at a time through the proxy,
# every PACE seconds, and logs: time, phase, web answer, pg-ro answer, and when the
# read query's session started and ended.
client() { # client LOGFILE PROXY (runs until killed)
  while :; do
    local t w r tp te
    t=$(now)
    w=$(curl -s -m 2 "http://127.0.0.1:$WEB/" -o - -w ' %{http_code}' 2>/dev/null | tr -d '\n') || true
    case "$w" in *" 200") w=${w% 200} ;; "") w="ERR(no answer)" ;; *) w="ERR(${w##* })" ;; esac
    tp=$(now)
    r=$(PGCONNECT_TIMEOUT=2 psql -h 127.0.0.1 -p "$RO" -U postgres -tAc "show port" postgres 2>/dev/null) && r=$(pg_name "$r") || r="ERR"
    te=$(now)
    local ph; ph=$(cat "$D/phase")
    echo "$t $ph $w $r $tp $te" >> "$1"
    printf '[%-7s %s] web: %-16s pg-ro: %s\n' "$2" "$ph" "$w" "$r"
    sleep "$PACE" # the client's pace, not synchronisation
  done
}
mark() { echo "$1" > "$D/phase"; echo "$(now) MARK $1" >> "$D/marks"; }

run_phases() { # run_phases PROXY
  local p=$1 log="$D/$1.log.requests"
  : > "$log"; : > "$D/marks"
  set_dns 1 2
  start_proxy "$p"
  mark 0; client "$log" "$p" & local cp=$!
  sleep "$BASE" # phase length
  # A: one replica down, then restored
  mark A; echo "$(now) KILL A replica-2" >> "$D/marks"
  as_pg "$PGBIN/pg_ctl" -D "$D/replica2" -m immediate stop >/dev/null
  echo "$(now) CHANGE A replica-2" >> "$D/marks"
  sleep "$DOWN" # phase length
  as_pg "$PGBIN/pg_ctl" -D "$D/replica2" -l "$D/replica2.log" -w start >/dev/null
  echo "$(now) RESTORE A replica-2" >> "$D/marks"
  sleep "$UP" # phase length
  # B: one pod down, then restored
  mark B; stop_pod 2
  echo "$(now) CHANGE B pod-2" >> "$D/marks"
  sleep "$DOWN" # phase length
  start_pod 2
  echo "$(now) RESTORE B pod-2" >> "$D/marks"
  sleep "$UP" # phase length
  # the Deployment scales to one pod (not counted), then
  # C: the only pod replaced by one at a new IP
  mark -; set_dns 1; stop_pod 2
  sleep "$BASE" # phase length
  mark C; start_pod 3; set_dns 3
  echo "$(now) CHANGE C pod-3" >> "$D/marks"
  echo "$(now) RESTORE C pod-3" >> "$D/marks"
  sleep "$DRAIN" # the old pod's termination grace
  stop_pod 1
  sleep "$AFTER" # phase length
  kill "$cp" 2>/dev/null; wait "$cp" 2>/dev/null || true
  stop_proxy
  # the world as it was, for the next proxy
  stop_pod 3; start_pod 1; start_pod 2
}

# errors per phase, and the time from each restore (or the DNS change) until the
# restored or new target answered
summarize() { # summarize PROXY
  python3 - "$D/$1.log.requests" "$D/marks" "$1" <<'EOF'
import sys
reqs = [l.split() for l in open(sys.argv[1]) if l.strip()]
marks = [l.split() for l in open(sys.argv[2]) if l.strip()]
proxy = sys.argv[3]
restores = {m[2]: (float(m[0]), m[3]) for m in marks if m[1] == "RESTORE"}
kills = {m[2]: float(m[0]) for m in marks if m[1] == "KILL"}
# A read session already open through the proxy when its replica is killed
# (pg_ctl -m immediate) dies with it: no proxy can finish it, and it is counted
# apart. A session that started after the kill began must succeed.
def cut(r, ph):
    return ph in kills and float(r[4]) < kills[ph] < float(r[5])
rows = []
for ph in ["0", "A", "B", "C"]:
    rs = [r for r in reqs if r[1] == ph]
    cuts = [r for r in rs if r[3].startswith("ERR") and not r[2].startswith("ERR") and cut(r, ph)]
    for r in cuts:
        print(f"{proxy} phase {ph}: a read session open when the replica was killed failed (counted apart)", file=sys.stderr)
    errs = sum(1 for r in rs if r[2].startswith("ERR") or r[3].startswith("ERR")) - len(cuts)
    back = "-"
    if ph in restores:
        t0, target = restores[ph]
        hit = [float(r[0]) for r in rs if float(r[0]) >= t0 and target in (r[2], r[3])]
        back = f"{hit[0] - t0:.1f} s" if hit else "never"
    rows.append((ph, len(rs), errs, back))
for ph, n, e, b in rows:
    print(f"{proxy}\t{ph}\t{n}\t{e}\t{b}")
EOF
}

echo "== rampart $("$RAMPART" --version 2>/dev/null | head -1)"
run_phases rampart
summarize rampart > "$D/table"
if [ "$NGINX" = 1 ]; then
  echo "== nginx $(nginx -v 2>&1 | sed 's/.*\///'), the classic config"
  run_phases nginx
  summarize nginx >> "$D/table"
fi

echo
echo "phases: 0 baseline; A one replica down, then restored; B one pod down, then restored;"
echo "        C the only pod replaced by one at a new IP"
printf '%-8s %-6s %9s %7s  %s\n' proxy phase requests errors "time until the restored/new target answered"
while IFS=$'\t' read -r proxy ph n e b; do
  printf '%-8s %-6s %9s %7s  %s\n' "$proxy" "$ph" "$n" "$e" "$b"
done < "$D/table"
bad=$(awk -F'\t' '$1 == "rampart" && ($4 != 0 || $5 == "never") {print $2}' "$D/table" | tr '\n' ' ')
if [ -n "$bad" ]; then
  echo "demo: rampart phases with failed requests (or a target never reached): $bad" >&2
  tail -20 "$D/rampart.log" >&2
  exit 1
fi
echo "demo: every rampart phase was clean"
