#!/usr/bin/env bash
# How a request's cost grows with the number of host rules, rampart beside
# HAProxy: N rules that each send one host to the pool, none of which the
# request's host matches (each is tested), as an HAProxy config with one
# `use_backend` line per host is written, and as rampart's importer reads it
# (one [[listener.rule]] with `host` and `pool` per line). Instructions per
# keep-alive request under callgrind (bench/callgrind.sh's keepalive row),
# for each N. See bench/README.md.
#
#   bench/rules_scale.sh                   N = 0 10 100 1000, N1=1000, N2=5000
#   COUNTS="0 16 17 1000" RAMPART_BIN=/tmp/r bench/rules_scale.sh 1000 5000
#   WHAT=listeners bench/rules_scale.sh    N listeners, each on a port of its
#                                          own, defined ahead of the one the
#                                          requests reach (HAProxy: N frontends,
#                                          after it: callgrind.sh adds sections
#                                          at the end); rampart then holds N + 4
#                                          sockets under valgrind, so the open
#                                          files limit is raised to 4096
#   WHAT=nginx bench/rules_scale.sh        N locations `/lI/` that proxy, in
#                                          nginx's plain server beside its
#                                          `location /`, which the requests
#                                          reach; rampart runs the rules
#                                          `rampart import nginx` makes of that
#                                          server (per location: a prefix rule
#                                          that sets the Host nginx sends, and
#                                          the exact-path redirect of /lI);
#                                          the table is rampart beside nginx
#
# With WHAT=rules or listeners nginx is left out: its idiom for many hosts
# is server_name, which it looks up in a hash (rampart's is a
# [[listener.route]] per host, looked up too: bench/RESULTS-scale.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export ROWS=keepalive PROXIES="${PROXIES:-rampart haproxy}"
n1=${1:-1000}
n2=${2:-5000}
if [ -z "${RAMPART_BIN:-}" ]; then
  cargo build --release --quiet
  export RAMPART_BIN=target/release/rampart
fi
d=$(mktemp -d /tmp/rampart-rules-scale-XXXX)
trap 'rm -rf $d' EXIT
what=${WHAT:-rules}
case "$what" in
  rules|listeners) ;;
  nginx) export PROXIES="${PROXIES_NGINX:-rampart nginx}" ;;
  *) echo "WHAT is rules, listeners or nginx, not $what" >&2; exit 2 ;;
esac
peer=haproxy
peer_name="HAProxy 2.6"
if [ "$what" = nginx ]; then
  peer=nginx
  peer_name="nginx 1.22"
fi
[ "$(ulimit -n)" -ge 4096 ] || ulimit -n 4096
for n in ${COUNTS:-0 10 100 1000}; do
  rr=""
  hr=""
  rl=""
  hs=""
  nl=""
  for i in $(seq 1 "$n"); do
    if [ "$what" = nginx ]; then
      nl+="location /l$i/ { proxy_pass http://be; }"$'\n'
    elif [ "$what" = listeners ]; then
      rl+=$'[[listener]]\n'"name = \"l$i\""$'\n'"bind = [\"127.0.0.1:$((20000 + i))\"]"$'\nmode = "http"\npool = "be"\n'
      hs+="frontend fe_l$i"$'\n'"  bind 127.0.0.1:$((22000 + i))"$'\n  default_backend be\n'
    else
      rr+=$'  [[listener.rule]]\n'"  host = \"h$i.example.com\""$'\n  pool = "be"\n'
      hr+="  use_backend be if { hdr(host) -i h$i.example.com }"$'\n'
    fi
  done
  if [ "$what" = nginx ]; then
    # what the importer makes of such a server: its listener's rules (the
    # lines from its first rule to the next top-level table)
    printf 'upstream be { server 127.0.0.1:19600; }\nserver {\n listen 127.0.0.1:19610;\n%s location / { proxy_pass http://be; }\n}\n' \
      "$nl" > "$d/import.conf"
    "$RAMPART_BIN" import nginx "$d/import.conf" -o "$d/import.toml" 2> "$d/import.report"
    # (in a file: a variable holds at most 128 KiB)
    awk '/^  \[\[listener.rule\]\]/ {on = 1} /^\[/ {on = 0} on' "$d/import.toml" > "$d/rules.toml"
    [ "$(grep -c '^  \[\[listener.rule\]\]' "$d/rules.toml")" -ge $((2 * n + 1)) ] ||
      { echo "the import made fewer rules than 2N + 1:" >&2; cat "$d/import.toml" >&2; exit 1; }
    export RAMPART_RULES_FILE="$d/rules.toml"
  fi
  echo "== $n $what" >&2
  # (every request answered with a 2xx, or callgrind.sh fails)
  REQUIRE_2XX=1 RAMPART_RULES="$rr" HAPROXY_RULES="$hr" RAMPART_LISTENERS="$rl" HAPROXY_SECTIONS="$hs" \
    NGINX_LOCATIONS="$nl" bench/callgrind.sh "$n1" "$n2" | tee "$d/out.$n"
done
echo
echo "| $what | rampart | $peer_name | rampart/$peer_name |"
echo "|---:|---:|---:|---:|"
for n in ${COUNTS:-0 10 100 1000}; do
  a=$(awk '$1 == "rampart-keepalive:" {print $2}' "$d/out.$n")
  b=$(awk -v p="$peer-keepalive:" '$1 == p {print $2}' "$d/out.$n")
  awk -v n="$n" -v a="${a:-0}" -v b="${b:-0}" 'BEGIN {printf "| %d | %d | %d | %s |\n", n, a, b, b ? sprintf("%.2f", a / b) : "-"}'
done
