#!/usr/bin/env bash
# HTTP request-smuggling scan of rampart with smugglex (crates.io, hahwul/smugglex).
#
#   scripts/smuggle.sh           the 9 plain-HTTP checks (cl-te, te-cl, te-te, h2c, h2,
#                                cl-edge, cl-0, 0-cl, parser-discrepancy): ~400 requests, ~1 s
#   scripts/smuggle.sh --fuzz    the same plus smugglex's mutants (seed 42, ~1,300
#                                requests), ~45 s
#
# It installs smugglex (pinned, `cargo install --locked`) into $SMUGGLEX_ROOT (default
# $CARGO_HOME or ~/.cargo) unless that version is already there, starts nginx (reads
# each request's body, then 200 on every path) and rampart in front of it on free
# 127.0.0.1 ports, scans the rampart listener and exits 1 on any finding (2 on a broken
# run: smugglex failed, a check got no 200 baseline, rampart died). Nothing leaves
# 127.0.0.1.
#
# Environment: RAMPART (default target/debug/rampart, not built here), SMUGGLEX (a
# smugglex binary to use as is), SMUGGLEX_ROOT, SMUGGLE_TIMEOUT (smugglex -t, default
# 5 s), SMUGGLE_KEEP=1 (keep the work directory with the logs and the JSON report).
#
# Findings with --fuzz: a mutant that only raises Content-Length above the body it
# sends (no Transfer-Encoding) makes any proxy that waits for the declared body before
# forwarding it (rampart, nginx's proxy_pass) time out, which smugglex reports as a
# Low-confidence "connection_timeout". Such a finding is not a desync: the script
# replays it and requires that rampart answers nothing and the backend receives
# nothing while rampart waits; then it is listed as "incomplete body" and does not
# fail the run. Every other finding fails it.
set -euo pipefail
cd "$(dirname "$0")/.."

SMUGGLEX_VERSION=0.4.0
CHECKS=cl-te,te-cl,te-te,h2c,h2,cl-edge,cl-0,0-cl,parser-discrepancy # h2-downgrade is https-only
FUZZ=0
case "${1:-}" in
  "") ;;
  --fuzz) FUZZ=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--fuzz]" >&2
    exit 2
    ;;
esac
RAMPART=${RAMPART:-target/debug/rampart}
TIMEOUT=${SMUGGLE_TIMEOUT:-5}

# --- smugglex -----------------------------------------------------------------------
if [ -n "${SMUGGLEX:-}" ]; then
  SX=$SMUGGLEX
else
  ROOT=${SMUGGLEX_ROOT:-${CARGO_HOME:-$HOME/.cargo}}
  SX=$ROOT/bin/smugglex
  if [ "$("$SX" -v 2>/dev/null || true)" != "smugglex $SMUGGLEX_VERSION" ]; then
    echo "smuggle: installing smugglex $SMUGGLEX_VERSION into $ROOT (cargo install, a few minutes)"
    t0=$SECONDS
    cargo install smugglex --version "=$SMUGGLEX_VERSION" --locked --root "$ROOT" --quiet
    echo "smuggle: installed in $((SECONDS - t0)) s"
  fi
fi
"$SX" -v

# --- nginx (the backend) -------------------------------------------------------------
if ! command -v nginx >/dev/null; then
  echo "smuggle: installing nginx"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nginx
fi
NGINX=$(command -v nginx)
if [ ! -x "$RAMPART" ]; then
  echo "smuggle: no rampart binary at $RAMPART (cargo build first, or set RAMPART)" >&2
  exit 2
fi

# --- processes, cleaned up on any exit -----------------------------------------------
WORK=$(mktemp -d /tmp/rampart-smuggle.XXXXXX)
PIDS=()
status=2
# shellcheck disable=SC2317  # run by the trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${SMUGGLE_KEEP:-0}" = 1 ] || [ "$status" -ne 0 ]; then
    echo "smuggle: logs and report kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free loopback ports (backend, its inner server, rampart's listener and admin), held
# together so they are distinct
read -r BPORT IPORT LPORT APORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
')

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log info;
events { worker_connections 512; }
http {
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  # The backend reads each request's whole body before it answers (proxy_request_buffering
  # to the inner server), as an application does: a body framed shorter than the
  # backend's reading makes it wait, which is what smugglex's timing probes detect. An
  # nginx that answers at once ("return 200") would hide them.
  server {
    listen 127.0.0.1:$BPORT;
    access_log $WORK/nginx/access.log;
    location / { proxy_pass http://127.0.0.1:$IPORT; }
  }
  server {
    listen 127.0.0.1:$IPORT;
    access_log off;
    location / { default_type text/plain; return 200 "ok\n"; }
  }
}
EOF
cat >"$WORK/rampart.toml" <<EOF
[global]
threads = 1          # one worker: every request shares one pool of idle backend connections
access_log = "text"
[admin]
bind = "127.0.0.1:$APORT"

[[listener]]
name = "web"
bind = ["127.0.0.1:$LPORT"]
mode = "http"
pool = "backend"

[[pool]]
name = "backend"
  [[pool.server]]
  address = "127.0.0.1:$BPORT"
  weight = 1
EOF

"$NGINX" -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
  >"$WORK/nginx/stdout.log" 2>&1 &
PIDS+=($!)
"$RAMPART" run -c "$WORK/rampart.toml" >"$WORK/rampart.log" 2>&1 &
RPID=$!
PIDS+=("$RPID")

wait_200() { # wait_200 PORT NAME LOG
  local _
  for _ in $(seq 100); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/")" = 200 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "smuggle: $2 on 127.0.0.1:$1 does not answer 200; its log:" >&2
  tail -20 "$3" >&2
  exit 2
}
wait_200 "$BPORT" nginx "$WORK/nginx/error.log"
wait_200 "$LPORT" rampart "$WORK/rampart.log"

# --- the scan ------------------------------------------------------------------------
ARGS=("http://127.0.0.1:$LPORT/" --no-color --json -t "$TIMEOUT" -c "$CHECKS")
[ "$FUZZ" = 1 ] && ARGS+=(--fuzz --fuzz-seed 42)
echo "smuggle: $SX ${ARGS[*]}"
backend_before=$(wc -l <"$WORK/nginx/access.log")
t0=$SECONDS
# in the background, so that a signal to this script runs the cleanup at once (bash
# runs traps only between foreground commands, but interrupts `wait`)
timeout 300 "$SX" "${ARGS[@]}" >"$WORK/report.json" 2>"$WORK/smugglex.err" &
PIDS+=($!)
set +e
wait $!
sx_rc=$?
set -e
elapsed=$((SECONDS - t0))
backend_requests=$(($(wc -l <"$WORK/nginx/access.log") - backend_before))
if [ "$sx_rc" -ne 0 ] && [ "$sx_rc" -ne 1 ]; then
  echo "smuggle: smugglex exited $sx_rc:" >&2
  tail -20 "$WORK/smugglex.err" >&2
  exit 2
fi
if ! kill -0 "$RPID" 2>/dev/null; then
  echo "smuggle: rampart died during the scan:" >&2
  tail -20 "$WORK/rampart.log" >&2
  exit 2
fi
wait_200 "$LPORT" "rampart (after the scan)" "$WORK/rampart.log"

# --- the report: a summary, a replay of each finding that looks like an incomplete
# body, and the exit status (0 clean, 1 a finding, 2 a broken run) -------------------
set +e
python3 - "$WORK/report.json" "$LPORT" "$WORK/nginx/access.log" "$elapsed" "$backend_requests" "$FUZZ" <<'EOF'
import json, re, socket, sys, time

report, port, backend_log, elapsed, backend_requests, fuzz = sys.argv[1:]
port = int(port)
doc = json.load(open(report))
checks = [c for r in doc["results"] for c in r["checks"]]


REQUEST_LINE = re.compile(rb"[A-Z]+ /\S* HTTP/1\.1")
HEADER = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[ \t]*[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*[ \t]*")


def incomplete_body(payload):
    """True when the request is unambiguous and merely declares more body than it
    carries: a plain request line, header lines that are all well-formed, no header
    with "encoding" in its name, exactly one Content-Length N (digits only) and fewer
    than N bytes after the header block. Any two compliant parsers frame it the same
    way, and a proxy that waits for the rest of the body is right to."""
    raw = payload.encode("latin-1", "replace")
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    line, *headers = head.split(b"\r\n")
    if not REQUEST_LINE.fullmatch(line) or not all(HEADER.fullmatch(h) for h in headers):
        return False
    names = [h.split(b":", 1)[0].lower() for h in headers]
    if any(b"encoding" in n for n in names):
        return False
    cls = [h.split(b":", 1)[1].strip() for h in headers
           if h.split(b":", 1)[0].lower() == b"content-length"]
    return len(cls) == 1 and cls[0].isdigit() and len(body) < int(cls[0])


def timing_only(signals):
    return all(s in ("connection_timeout", "extreme_timing", "baseline_noisy")
               or s.startswith("timing_anomaly:") for s in signals)


def lines(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def held_without_forwarding(payload):
    """Replays the payload: rampart must answer nothing for 1.5 s, and the backend
    must log no request even after the client gives up (nginx logs a request cut
    off in its body as a 400 when its client closes): rampart held the incomplete
    request and forwarded no byte of it."""
    before = lines(backend_log)
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(1.5)
    s.sendall(payload.encode("latin-1", "replace"))
    try:
        answered = s.recv(1) != b""
    except socket.timeout:
        answered = False
    s.close()
    time.sleep(0.5)
    return not answered and lines(backend_log) == before


broken, findings, waived = [], [], []
for c in checks:
    if not c["normal_status"].startswith("HTTP/1.1 200"):
        broken.append(c)
    elif c["vulnerable"]:
        if (fuzz == "1" and timing_only(c.get("detection_signals", []))
                and incomplete_body(c.get("payload") or "")
                and held_without_forwarding(c["payload"])):
            waived.append(c)
        else:
            findings.append(c)

print(f"smuggle: smugglex {doc.get('smugglex_version')}, {len(checks)} checks in {elapsed} s, "
      f"{backend_requests} requests reached the backend")
for c in checks:
    state = ("FINDING" if c in findings else "incomplete body (not a desync)" if c in waived
             else "broken" if c in broken else "clean")
    diag = c.get("diagnostics", [])
    extra = " ".join(diag[:2]) + (f" (+{len(diag) - 2} more)" if len(diag) > 2 else "")
    print(f"  {c['check_type']:<20} {state} {extra}".rstrip())
for c in findings + waived:
    print(f"--- {c['check_type']} payload #{c['payload_index']}: {c['attack_status']}, "
          f"confidence {c.get('confidence')}, signals {','.join(c.get('detection_signals', []))}")
    print("    " + repr(c.get("payload") or ""))
for c in broken:
    print(f"--- {c['check_type']}: no baseline: {c['normal_status']} {c.get('diagnostics')}")
if broken:
    print("smuggle: BROKEN RUN: a check got no 200 baseline")
    sys.exit(2)
if findings:
    print(f"smuggle: FAIL: {len(findings)} finding(s)")
    sys.exit(1)
print(f"smuggle: ok: no finding ({len(waived)} incomplete-body timeouts replayed: "
      "rampart held them and the backend saw nothing)" if waived else "smuggle: ok: no finding")
EOF
status=$?
set -e
exit "$status"
