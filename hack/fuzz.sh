#!/usr/bin/env bash
# `make fuzz`: each cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) under libFuzzer, starting from
# its seed corpus in fuzz/corpus/<target>/ (new inputs go to a scratch copy; crashes to fuzz/artifacts/).
# Needs a nightly toolchain and cargo-fuzz; without them it runs the same target bodies on stable through
# agent/tests/fuzz_targets.rs (seeds, random bytes, mutated seeds) with FUZZ_CASES cases per property,
# and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=(cloudevent pattern env yaml)

if rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo +nightly fuzz --version >/dev/null 2>&1; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  for t in "${TARGETS[@]}"; do
    mkdir -p "$scratch/$t"
    cp fuzz/corpus/"$t"/* "$scratch/$t/"
    echo "fuzz: $t for ${SECONDS_EACH}s"
    (cd fuzz && cargo +nightly fuzz run "$t" "$scratch/$t" -- \
      -max_total_time="$SECONDS_EACH" -max_len=65536 -print_final_stats=1)
  done
else
  echo "fuzz: no nightly toolchain with cargo-fuzz (rustup toolchain install nightly; cargo install cargo-fuzz);"
  echo "fuzz: running the same targets on stable: seeds, random bytes and mutated seeds (agent/tests/fuzz_targets.rs)"
  PROPTEST_CASES=${FUZZ_CASES:-20000} cargo test --workspace --test fuzz_targets
fi
