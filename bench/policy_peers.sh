#!/usr/bin/env bash
# What bench/policy.sh's policy costs each proxy: the same 20 rules and 2 rate
# limits written for rampart, HAProxy and nginx, instructions per keep-alive
# request under callgrind (bench/callgrind.sh's keepalive row, run once
# without the policy and once with it, in one go). See bench/README.md.
#
#   bench/policy_peers.sh                 N1=2000, N2=12000
#   RAMPART_BIN=/tmp/r bench/policy_peers.sh 1000 5000
#
# The rules, each in its proxy's own words, one rule for one rule (an HAProxy
# user could fold the values of a kind into one ACL; nginx gets its cheaper
# idioms where it has them), 18 that this traffic does not match and 2 that
# match every request and apply the limits:
#   6 path prefixes (/v0/ .. /v5/) -> 403: rampart path_prefix, HAProxy
#     `path_beg`, nginx nested prefix locations
#   4 hosts -> 403: rampart host, HAProxy `hdr(host) -i` (which compares the
#     port too), nginx `if ($host = )`
#   a path regex, an exact path -> 403: rampart path_regex / path, HAProxy
#     `path_reg` / `path`, nginx regex and exact locations
#   DELETE or PATCH -> 405: rampart method, HAProxy `method`, nginx two `if
#     ($request_method = )`
#   a header present -> 403, a source network -> 403: rampart header / src,
#     HAProxy `req.hdr() -m found` / `src`, nginx `if ($http_x_blocked)`
#     (false for an empty value or "0") / `geo`
#   3 that pick the same pool (a header's value, /static/, a host suffix):
#     rampart `pool`, HAProxy `use_backend`, nginx `set` (nginx picks an
#     upstream by variable in proxy_pass) with a `map ... hostnames` for the
#     suffix; nginx has no /static/ rule: a nested location would skip the
#     `if` denies for that path, and the pool is the same
#   2 limits of 100,000,000 a second, burst 1000, by client and by client and
#     path for GET: rampart [[rate_limit]], HAProxy `track-sc0 src` /
#     `track-sc1 base32+src` (base32 hashes the Host with the path) into stick
#     tables storing http_req_rate(1s) and a deny when over, nginx
#     `limit_req_zone $binary_remote_addr` / a key that is
#     `$binary_remote_addr$uri` for GET, with `limit_req ... nodelay`
set -euo pipefail
cd "$(dirname "$0")/.."
export ROWS=keepalive
rules_rampart=$(python3 -c 'import sys; sys.path.insert(0, "bench"); import policy; print(policy.rules() + policy.LIMITS)')
rules_haproxy=$(cat <<'EOC'
  http-request deny deny_status 403 if { path_beg /v0/ }
  http-request deny deny_status 403 if { path_beg /v1/ }
  http-request deny deny_status 403 if { path_beg /v2/ }
  http-request deny deny_status 403 if { path_beg /v3/ }
  http-request deny deny_status 403 if { path_beg /v4/ }
  http-request deny deny_status 403 if { path_beg /v5/ }
  http-request deny deny_status 403 if { hdr(host) -i h0.example.com }
  http-request deny deny_status 403 if { hdr(host) -i h1.example.com }
  http-request deny deny_status 403 if { hdr(host) -i h2.example.com }
  http-request deny deny_status 403 if { hdr(host) -i h3.example.com }
  http-request deny deny_status 403 if { path_reg ^/users/[0-9]+$ }
  http-request deny deny_status 403 if { path /admin }
  http-request deny deny_status 405 if { method DELETE PATCH }
  http-request deny deny_status 403 if { req.hdr(x-blocked) -m found }
  http-request deny deny_status 403 if { src 10.0.0.0/8 }
  http-request track-sc0 src table st_ip if { path_beg / }
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }
  http-request track-sc1 base32+src table st_path if { method GET }
  http-request deny deny_status 429 if { sc_http_req_rate(1) gt 100000000 }
  use_backend be if { req.hdr(x-canary) 1 }
  use_backend be if { path_beg /static/ }
  use_backend be if { hdr_end(host) -i .internal.example }
EOC
)
sections_haproxy=$(cat <<'EOC'
backend st_ip
  stick-table type ip size 1m expire 10s store http_req_rate(1s)
backend st_path
  stick-table type binary len 20 size 1m expire 10s store http_req_rate(1s)
EOC
)
http_nginx=$(cat <<'EOC'
  limit_req_zone $binary_remote_addr zone=per_ip:16m rate=100000000r/s;
  map $request_method $per_path_key { GET $binary_remote_addr$uri; default ""; }
  limit_req_zone $per_path_key zone=per_path:32m rate=100000000r/s;
  geo $src_blocked { default 0; 10.0.0.0/8 1; }
  map $host $internal { hostnames; default 0; *.internal.example 1; }
EOC
)
# (one line: bench/callgrind.sh puts it inside `location / { ... }`)
rules_nginx='location /v0/ { return 403; } location /v1/ { return 403; } location /v2/ { return 403; } location /v3/ { return 403; } location /v4/ { return 403; } location /v5/ { return 403; } location ~ ^/users/[0-9]+$ { return 403; } location = /admin { return 403; } if ($host = h0.example.com) { return 403; } if ($host = h1.example.com) { return 403; } if ($host = h2.example.com) { return 403; } if ($host = h3.example.com) { return 403; } if ($request_method = DELETE) { return 405; } if ($request_method = PATCH) { return 405; } if ($http_x_blocked) { return 403; } if ($src_blocked) { return 403; } set $pool be; if ($http_x_canary = "1") { set $pool be; } if ($internal) { set $pool be; } limit_req zone=per_ip burst=1000 nodelay; limit_req zone=per_path burst=1000 nodelay;'

d=$(mktemp -d /tmp/rampart-policy-peers-XXXX)
trap 'rm -rf $d' EXIT
# every request answered with a 2xx, or callgrind.sh fails: a refused request
# is cheaper, and a proxy that did not start serves none
export REQUIRE_2XX=1
echo "== without the policy" >&2
env -u RAMPART_RULES -u HAPROXY_RULES -u HAPROXY_SECTIONS -u NGINX_HTTP -u NGINX_RULES \
  bench/callgrind.sh "$@" | tee "$d/none"
echo "== with it" >&2
RAMPART_RULES="$rules_rampart" HAPROXY_RULES="$rules_haproxy" HAPROXY_SECTIONS="$sections_haproxy" \
  NGINX_HTTP="$http_nginx" NGINX_RULES="$rules_nginx" \
  bench/callgrind.sh "$@" | tee "$d/rules"
echo
echo "| proxy | no policy | 20 rules + 2 rate limits | cost, instructions | cost |"
echo "|---|---:|---:|---:|---:|"
for p in rampart haproxy nginx; do
  a=$(awk -v p="$p-keepalive:" '$1 == p {print $2}' "$d/none")
  b=$(awk -v p="$p-keepalive:" '$1 == p {print $2}' "$d/rules")
  [ -n "$a" ] && [ -n "$b" ] || continue
  awk -v p="$p" -v a="$a" -v b="$b" 'BEGIN {printf "| %s | %d | %d | %+d | %+.1f%% |\n", p, a, b, b - a, (b - a) * 100 / a}'
done
