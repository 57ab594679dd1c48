#!/usr/bin/env bash
# The libFuzzer targets of fuzz/ (over host/src/fuzz.rs), built by cargo-fuzz on stable Rust (no
# sanitizer) and each run for FUZZ_SECONDS (default 30) from its committed corpus. A crash, an
# input running over 10 s or a process over 2 GB fails the run (libFuzzer writes the input under
# fuzz/artifacts/<target>/). cargo-fuzz is pinned and installed once into .cache/cargo-fuzz;
# the instrumented build lives in fuzz/target (about 15 min the first time on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.1
ROOT=.cache/cargo-fuzz
if ! "$ROOT/bin/cargo-fuzz" --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  echo "[fuzz] installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$ROOT"
fi
export PATH="$PWD/$ROOT/bin:$PATH"
each=${FUZZ_SECONDS:-30}
cd fuzz
cargo fuzz build -s none -O
for t in $(cargo fuzz list); do
  scratch=$(mktemp -d)
  # new inputs go to a scratch corpus; the committed one is only read
  echo "[fuzz] $t for ${each}s"
  status=0
  cargo fuzz run -s none -O "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$each" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 > "$scratch.log" 2>&1 || status=$?
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+== ERROR|SUMMARY|Test unit written)" "$scratch.log" || true
  [ "$status" -eq 0 ] || tail -n 30 "$scratch.log" >&2
  rm -rf "$scratch" "$scratch.log"
  if [ "$status" -ne 0 ]; then
    echo "[fuzz] $t failed (exit $status): the input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "[fuzz] every target ran ${each}s without a failure"
