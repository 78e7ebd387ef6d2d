#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust installed.
# It installs with apt-get whatever the tests need and is missing, so no test ever
# skips for want of a tool; then it checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need from Debian: a test that proves the thing is there -> the
# package that provides it.
need() { # need "<shell test>" <package>
  eval "$1" >/dev/null 2>&1 || missing+=("$2")
}
missing=()
need 'ls /usr/lib/postgresql/*/bin/initdb' postgresql   # tests/postgres.rs
need 'command -v runuser' util-linux                     # runs postgres as its user
need 'command -v dnsmasq' dnsmasq                        # tests/dnsmasq.rs
need 'command -v promtool' prometheus                    # tests/admin.rs: promtool check metrics
need 'command -v chromium' chromium                      # tests/stats_page.rs
need 'command -v ip' iproute2                            # network namespaces (admin_remote, HA)
need 'command -v bridge' iproute2                        # tests/ha.rs: bridge port isolation
need 'command -v python3' python3                        # tests/ha.rs: the backend inside a namespace
need 'command -v systemd-analyze' systemd                 # tests/systemd.rs: systemd-analyze verify
need 'command -v redis-server' redis-server             # tests/shared_limits.rs: [rate_limit_store]
need 'command -v haproxy' haproxy                        # tests/proxy_protocol.rs: send-proxy in front; tests/import.rs: --verify
need 'command -v nginx' nginx                            # tests/import.rs: import nginx --verify
need 'test -f /usr/lib/nginx/modules/ngx_stream_module.so' libnginx-mod-stream  # ... of stream blocks
need 'command -v openssl' openssl                        # tests/tls.rs: certificates, s_client
need 'command -v curl' curl                              # tests/tls.rs: a TLS client
need 'test -d /etc/ssl/certs' ca-certificates            # pool.tls ca = "system"
need '/usr/bin/python3 -c "import h2"' python3-h2         # tests/http2.rs: frame-level HTTP/2 probes
need '/usr/bin/python3 -c "import grpc"' python3-grpcio   # tests/http2.rs: a real gRPC client
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# A one-shot build gains nothing from incremental state, which would take gigabytes
# of disk beside the build itself.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# each phase's start time, so a run's log says where its time went
phase() { echo "=== $(date -u +%H:%M:%S) $*"; }

phase fmt
cargo fmt --all -- --check
phase clippy
cargo clippy --all-targets --quiet -- -D warnings
phase tests
cargo test --all-targets
phase smuggling scan
# a request-smuggling scan of the HTTP/1 listener (smugglex; installs it the first time)
./scripts/smuggle.sh
phase soak
# the chaos soak, short (bench/SOAK.md; SOAK_SECONDS=600 for the full run)
/usr/bin/python3 bench/soak.py --duration "${SOAK_SECONDS:-120}" --seed 1 --report target/soak-report.md
phase fuzz
# every fuzz target for a short bounded time (scripts/fuzz.sh SECONDS for longer)
./scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
echo "target directory: $(du -sh target | cut -f1); disk free: $(df -h --output=avail . | tail -1)"
phase done
