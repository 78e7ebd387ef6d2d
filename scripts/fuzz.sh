#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/, cargo-fuzz and libFuzzer with AddressSanitizer).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   each target for SECONDS (default 30)
#   scripts/fuzz.sh 3600                     the long run, for the record
#
# Stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass -Zsanitizer to this crate's
# build. Each target starts from its committed seeds (fuzz/seeds/TARGET) and the
# corpus earlier runs grew (fuzz/corpus/TARGET, not committed). A crash leaves its
# input in fuzz/artifacts/TARGET and fails the run: make it a regression test.
# The last lines are a table: target, seconds, executions, corpus size, result.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECS=${1:-30}
shift || true
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
# the vendored h2 and hyper are path dependencies, so their own lints apply;
# under --cfg fuzzing h2 has undocumented items its deny(missing_docs) refuses
export RUSTFLAGS="${RUSTFLAGS:-} --cap-lints=warn"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo fuzz list)
fi
cargo fuzz build -O --debug-assertions 2>&1 | tail -3
rows=()
failed=0
# the inputs earlier runs crashed on (fixed since) must pass first
for t in "${TARGETS[@]}"; do
  if [ -d "regressions/$t" ] && [ -n "$(ls "regressions/$t")" ]; then
    if ! cargo fuzz run -O --debug-assertions "$t" regressions/$t/* >/dev/null 2>&1; then
      echo "fuzz: $t fails on a regression input again: fuzz/regressions/$t" >&2
      failed=1
    fi
  fi
done
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  start=$(date +%s)
  set +e
  cargo fuzz run -O --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  size=$(ls "corpus/$t" | wc -l)
  if [ $rc -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc): $(ls -t artifacts/$t | head -1)"
    failed=1
    grep -E "panicked|ERROR|SUMMARY|Assertion" "$log" | head -20 >&2 || true
  fi
  rows+=("$(printf '%-16s %6ss %12s %8s  %s' "$t" "$took" "$execs" "$size" "$result")")
  rm -f "$log"
done
printf '%-16s %7s %12s %8s  %s\n' target time executions corpus result
printf '%s\n' "${rows[@]}"
exit $failed
