#!/usr/bin/env bash
# Large memory copies per request: rampart under gdb, a breakpoint on glibc's
# memcpy for copies of more than MIN bytes (default 256), the copies counted
# per request by size and by the two frames that made them. Moving a large
# future (`Box::pin(f())` makes it on the stack and copies all of it into the
# box) shows here as a copy of the future's whole size, which callgrind
# counts as a vector loop's instructions (or, from 4 KiB, a few `rep movsb`)
# with nothing to say what was moved.
#
# The breakpoint is on `__memcpy_avx_unaligned_erms`, the variant glibc picks
# on this machine (memmove's too: the same code); on a CPU where glibc picks
# another (AVX-512, no AVX) the script stops rather than report no copies.
#
#   bench/copies.sh                       (target/release/rampart)
#   RAMPART_BIN=/tmp/old MIN=128 bench/copies.sh
#
# Rows: keepalive (wrk, one HTTP/1.1 connection, 2 s), close (a new
# connection per request), sni (TLS passed through by its server name, a new
# connection per request), h2c (h2load, 200 requests, 10 streams). Under gdb
# each copy stops the process, so the rates are low; the counts per request
# are what this says. Needs gdb, nginx, wrk, h2load, openssl; traffic stays on
# 127.0.0.1 (ports 19670 to 19674).
set -euo pipefail
cd "$(dirname "$0")/.."
min=${MIN:-256}
if [ -n "${RAMPART_BIN:-}" ]; then
  bin=$RAMPART_BIN
  [ -x "$bin" ] || { echo "copies.sh: $bin is not an executable" >&2; exit 1; }
else
  # (built if the sources changed: a stale binary is not measured)
  cargo build --release --quiet
  bin=target/release/rampart
fi
for t in gdb nginx wrk h2load openssl; do
  command -v "$t" > /dev/null || { echo "copies.sh: $t is needed" >&2; exit 1; }
done
# ports another process holds would be measured instead of ours
for p in 19670 19671 19672 19673 19674; do
  if ss -Hltn "sport = :$p" | grep -q .; then
    echo "copies.sh: port $p is in use (a stray proxy or backend?)" >&2
    exit 1
  fi
done
d=$(mktemp -d /tmp/copies.XXXXXX)
cleanup() {
  [ -f "$d/gdb.pid" ] && kill "$(cat "$d/gdb.pid")" 2> /dev/null || true
  [ -f "$d/nginx.pid" ] && kill "$(cat "$d/nginx.pid")" 2> /dev/null || true
  pkill -f -- "-c $d/r.toml" 2> /dev/null || true
  rm -rf "$d"
}
trap cleanup EXIT
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/key.pem" -out "$d/cert.pem" \
  -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2> /dev/null
cat > "$d/backend.conf" <<EOC
daemon off; master_process off; worker_processes 1;
pid $d/b.pid; error_log $d/b.err;
events { worker_connections 1000; }
http {
  access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:19670; location = / { return 200 "hello\n"; } }
  server {
    listen 127.0.0.1:19672 ssl;
    ssl_certificate $d/cert.pem; ssl_certificate_key $d/key.pem;
    location = / { return 200 "hello\n"; }
  }
}
EOC
cat > "$d/r.toml" <<EOC
[global]
threads = 1
access_log = "off"
[admin]
bind = "127.0.0.1:19674"
[[listener]]
name = "plain"
bind = ["127.0.0.1:19671"]
mode = "http"
pool = "be"
[[listener]]
name = "sni"
bind = ["127.0.0.1:19673"]
mode = "tcp"
  [[listener.route]]
  sni = "localhost"
  pool = "tlsbe"
[[pool]]
name = "tlsbe"
  [[pool.server]]
  address = "127.0.0.1:19672"
[[pool]]
name = "be"
  [[pool.server]]
  address = "127.0.0.1:19670"
EOC
cat > "$d/gdb.cmds" <<EOC
set pagination off
set breakpoint pending on
break __memcpy_avx_unaligned_erms if \$rdx > $min
commands
silent
printf "SIZE %d\n", \$rdx
bt 3
cont
end
run
EOC
nginx -c "$d/backend.conf" &
echo $! > "$d/nginx.pid"
for _ in $(seq 1 100); do
  curl -sf -o /dev/null http://127.0.0.1:19670/ && break
  sleep 0.1
done
curl -sf -o /dev/null http://127.0.0.1:19670/ || { echo "copies.sh: the backend did not start" >&2; exit 1; }
gdb -q -batch -x "$d/gdb.cmds" --args "$bin" run -c "$d/r.toml" > "$d/gdb.out" 2>&1 &
echo $! > "$d/gdb.pid"
for _ in $(seq 1 240); do
  ss -ltn | grep -q ':19673 ' && break
  sleep 0.5
done
ss -ltn | grep -q ':19673 ' || { echo "copies.sh: rampart did not start" >&2; tail "$d/gdb.out" >&2; exit 1; }
curl -sf -o /dev/null http://127.0.0.1:19671/ || { echo "copies.sh: rampart does not answer" >&2; exit 1; }
copies() { grep -c '^SIZE' "$d/gdb.out" || true; }
# wait for the copies a row made to be printed: the count stops growing (for
# 30 s at most)
settle() {
  local n=-1 i=0
  while [ "$n" != "$(copies)" ] && [ $i -lt 30 ]; do
    n=$(copies)
    sleep 1
    i=$((i + 1))
  done
}
# wrk's count of requests, once it said every answer was a 2xx
wrk_n() {
  local out
  out=$(cat)
  if grep -qE 'Non-2xx|Socket errors' <<< "$out"; then
    echo "copies.sh: wrk saw errors:" >&2
    echo "$out" >&2
    exit 1
  fi
  sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<< "$out"
}
settle
marks=("$(copies)")
rows=()
reqs=()
n=$(wrk -t1 -c1 -d2s http://127.0.0.1:19671/ | wrk_n)
settle; rows+=(keepalive); reqs+=("$n"); marks+=("$(copies)")
n=$(wrk -t1 -c1 -d2s -H 'Connection: close' http://127.0.0.1:19671/ | wrk_n)
settle; rows+=(close); reqs+=("$n"); marks+=("$(copies)")
n=$(wrk -t1 -c1 -d2s -H 'Connection: close' https://localhost:19673/ | wrk_n)
settle; rows+=(sni); reqs+=("$n"); marks+=("$(copies)")
h2load -n 200 -c 1 -m 10 http://127.0.0.1:19671/ > "$d/h2load.out"
grep -q '200 succeeded' "$d/h2load.out" || { echo "copies.sh: h2load failed" >&2; cat "$d/h2load.out" >&2; exit 1; }
settle; rows+=(h2c); reqs+=(200); marks+=("$(copies)")
# (an HTTP/2 request always makes a few: none at all is a breakpoint that
# never fired)
if [ "${marks[4]}" -le "${marks[3]}" ]; then
  echo "copies.sh: no copy seen: is __memcpy_avx_unaligned_erms glibc's choice here? (see the header)" >&2
  exit 1
fi
echo "rampart: $("$bin" --version 2>/dev/null | head -1); copies over $min bytes per request"
python3 - "$d/gdb.out" "${rows[*]}" "${reqs[*]}" "${marks[*]}" <<'EOF'
import collections, re, sys
blocks = open(sys.argv[1], errors="replace").read().split("SIZE ")[1:]
rows, reqs, marks = (a.split() for a in sys.argv[2:5])
for i, row in enumerate(rows):
    a, b, n = int(marks[i]), int(marks[i + 1]), int(reqs[i])
    seen = collections.Counter()
    for blk in blocks[a:b]:
        size = int(blk.split("\n")[0])
        frames = re.findall(r"#[12]\s+(?:0x[0-9a-f]+ in )?(\S+)", blk)
        seen[(size, " <- ".join(f[:90] for f in frames))] += 1
    total = sum(s * c for (s, _), c in seen.items())
    print(f"\n{row}: {n} requests, {(b - a) / max(n, 1):.2f} copies and "
          f"{total / max(n, 1):,.0f} bytes a request")
    for (size, where), c in sorted(seen.items(), key=lambda x: -x[0][0] * x[1])[:8]:
        print(f"  {c / max(n, 1):6.2f} x {size:6d} B  {where}")
EOF
