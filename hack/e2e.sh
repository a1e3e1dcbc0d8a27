#!/usr/bin/env bash
# End-to-end suite: the real edgewire-operator binary driven with kubectl, against the cluster in
# $KUBECONFIG when set, else against the in-memory API stand-in (e2e/standin) each test starts itself.
#
#   hack/e2e.sh                      # every e2e_* test
#   hack/e2e.sh leader --nocapture   # arguments go to the test binaries (filter, --nocapture, ...)
#
# It builds the operator on its own (`-p`) and runs a private copy of it, so a concurrent build that relinks
# target/debug/edgewire-operator cannot swap the binary under a running suite. EDGEWIRE_OPERATOR_BIN, when
# set, is used as is. EDGEWIRE_E2E_KEEP=1 keeps each test's logs (stand-in, operators) in /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo="${CARGO:-cargo}"

if [[ -z "${EDGEWIRE_OPERATOR_BIN:-}" ]]; then
  "$cargo" build -p edgewire-operator
  target="${CARGO_TARGET_DIR:-target}"
  bin_dir="$(mktemp -d)"
  trap 'rm -rf "$bin_dir"' EXIT
  cp "$target/debug/edgewire-operator" "$bin_dir/edgewire-operator"
  export EDGEWIRE_OPERATOR_BIN="$bin_dir/edgewire-operator"
fi
"$cargo" test -p edgewire-e2e --test 'e2e_*' -- "$@"
