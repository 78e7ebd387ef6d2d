#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust installed.
# It installs with apt-get whatever the tests need and is missing, so no test ever
# skips for want of a tool; then it checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package, for every external program the tests use. Later
# issues add dnsmasq, postgresql, prometheus (promtool), chromium, iproute2 here.
declare -A NEED=()

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
