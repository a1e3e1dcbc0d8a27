#!/usr/bin/env bash
# Mutation testing with cargo-mutants (`make mutants`; slow, not part of `make test` or CI).
#
# Each part mutates one area and runs the tests that own it:
#   api       the api crate (types, validation rules, topic patterns, conditions), its own tests
#   agent     agent/src/event.rs (CloudEvents decoding), the spool's record and cursor framing
#             (segment.rs's framing and naming functions, cursor.rs; the CRC is the crc32fast crate's;
#             segment.rs's corruption recovery `SegReader::resync` and its read loops are left out) and the
#             Kafka subscription's pattern translation (kafka.rs `subscription`, `check_topic_name`; the
#             other protocols' translation is in api/src/v1alpha1/pattern.rs), the agent's unit tests
#   operator  the three controllers' `validate` modules, the operator's unit and controller tests
#
# MUTANTS_PARTS picks parts (default: all three); MUTANTS_ARGS adds cargo-mutants arguments to each part,
# e.g. `MUTANTS_ARGS="-f api/src/v1alpha1/pattern.rs"` or `-F <regex on the mutant name>` to re-run a few, or
# `--iterate` to go on from an interrupted run (skipping what it caught). A mutant's tests time out at 5x the unmutated run,
# at least MUTANTS_MIN_TIMEOUT s (60): a mutant that loops forever counts as caught, after that wait.
# Mutants are applied in place in a detached git worktree of HEAD per part (target/mutants/<part>/tree; commit first), built
# incrementally (CARGO_INCREMENTAL=1: a mutant recompiles only what changed) in their own target dir
# (MUTANTS_TARGET_DIR, default target/mutants/build): cargo names a workspace crate's artifacts by its path
# relative to the workspace, so a tree sharing a target dir with the source tree (a global CARGO_TARGET_DIR)
# overwrites the other tree's workspace artifacts. Pointing MUTANTS_TARGET_DIR at a warm target dir of the
# same toolchain skips the cold first build; delete its .fingerprint/edgewire-* afterwards.
# Reports: target/mutants/<part>/mutants.out/{caught,missed,timeout,unviable}.txt. Prints per part
# and in total: caught, missed, timeouts, unviable and the score caught+timeout / (caught+timeout+missed).
# Exits 1 when a mutant survived or a part could not run.
#
# Cost (2-core machine, issue 18): 329 api, 248 agent and 218 operator mutants. The first build of a part in
# a cold target dir takes 40+ min (the AWS and Google SDKs); then a mutant takes 15-60 s (an incremental
# rebuild of its crate, the link of its test binaries and the tests), longer for one that makes a test hang.
# Run one part at a time. Stopping cargo-mutants does not stop the cargo it started (its own process
# group): stop that too before starting another run in the same target dir, or the two runs clash.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${EDGEWIRE_TOOLS:-$HOME/.cache/edgewire/bin}"
VERSION="${MUTANTS_VERSION:-27.1.0}"
MIN_TIMEOUT="${MUTANTS_MIN_TIMEOUT:-60}"
PARTS="${MUTANTS_PARTS:-api agent operator}"
OUT="$ROOT/target/mutants"
export CARGO_TARGET_DIR="${MUTANTS_TARGET_DIR:-$OUT/build}" CARGO_INCREMENTAL=1

# Link with mold where it is installed (Debian: `mold`): every mutant relinks its test binaries (the agent's
# is ~425 MB with debug info); mold links it in about 3 s. rustc calls `cc` from PATH; a `cc` that adds
# -fuse-ld=mold changes nothing cargo fingerprints, so a warm target dir stays warm.
if command -v mold >/dev/null && [ "${MUTANTS_MOLD:-1}" = 1 ]; then
  real_cc="$(command -v cc)"
  mkdir -p "$OUT/ld"
  printf '#!/bin/sh\nexec %s -fuse-ld=mold "$@"\n' "$real_cc" > "$OUT/ld/cc"
  chmod +x "$OUT/ld/cc"
  export PATH="$OUT/ld:$PATH"
fi

if ! "$TOOLS/cargo-mutants" mutants --version 2>/dev/null | grep -qx "cargo-mutants $VERSION"; then
  cargo install --locked --root "$TOOLS/.." cargo-mutants --version "$VERSION"
fi

# What a part mutates.
part_args() {
  case "$1" in
    api) echo "-p edgewire-api -e api/src/testing.rs -e api/src/bin/crdgen.rs" ;;
    agent) echo "-p edgewire-agent -f agent/src/event.rs -f agent/src/bridge/spool/segment.rs" \
      "-f agent/src/bridge/spool/cursor.rs -f agent/src/bridge/kafka.rs" \
      "-F ^agent/src/(event|bridge/spool/cursor)\\.rs:" \
      "-F ^agent/src/bridge/spool/segment\\.rs:.*(replace|in)\\s(encode|decode|frame_len|tail_kind|u32_at|u64_at|scan|SegReader::next|parse_name|name)(\\s->|\$)" \
      "-F ^agent/src/bridge/kafka\\.rs:.*(replace|in)\\s(subscription|check_topic_name)(\\s->|\$)" ;;
    operator) echo "-p edgewire-operator -f operator/src/controller/*/validate.rs" \
      "-f operator/src/controller/*/validate/*.rs" ;;
    *) echo "mutants: unknown part $1 (api, agent, operator)" >&2; return 1 ;;
  esac
}

# The tests a part runs (they are also all that is built: --cargo-arg), in passes: a pass after the first
# runs only the mutants the passes before it missed (--iterate), with more tests. The operator's unit tests
# (the validate modules' own) build and link in a third of the time of its controller tests and `render`
# (the real binary on every sample: the path that accepts a Secret an operator has yet to generate), which a
# mutant they miss then meets.
part_passes() {
  case "$1" in
    api) echo "" ;;
    agent) echo "--cargo-arg=--lib" ;;
    operator)
      echo "--cargo-arg=--lib"
      echo "--cargo-arg=--lib --cargo-arg=--test=controller --cargo-arg=--test=mqtt_broker_controller" \
        "--cargo-arg=--test=bridge_link_controller --cargo-arg=--test=render_samples"
      ;;
  esac
}

# The tree a part mutates: HEAD, detached, reset before the run (an interrupted run can leave a mutant in
# it). One per part, so that two parts can run at once in two target dirs.
tree_of() {
  local tree="$OUT/$1/tree"
  mkdir -p "$OUT/$1"
  if [ -d "$tree" ]; then
    git -C "$tree" checkout -q --detach "$(git -C "$ROOT" rev-parse HEAD)"
    git -C "$tree" reset -q --hard
  else
    git -C "$ROOT" worktree add -q --detach "$tree" HEAD
  fi
  [ -e "$OUT/$1/shared" ] || [ ! -e "$ROOT/../shared" ] || ln -s "$ROOT/../shared" "$OUT/$1/shared"
  echo "$tree"
}

count() { if [ -s "$1" ]; then grep -c . "$1"; else echo 0; fi; }

status=0
total_caught=0 total_missed=0 total_timeout=0 total_unviable=0
for part in $PARTS; do
  tree="$(tree_of "$part")"
  dir="$OUT/$part/mutants.out"
  pass=0
  while IFS= read -r tests; do
    pass=$((pass + 1))
    iterate=""
    if [ "$pass" -gt 1 ]; then
      [ "$(count "$dir/missed.txt")" -gt 0 ] || break
      case " ${MUTANTS_ARGS:-} " in *" --iterate "*) ;; *) iterate="--iterate" ;; esac
    fi
    args="$(part_args "$part") $tests $iterate ${MUTANTS_ARGS:-}"
    echo "=== mutants: $part, pass $pass ($args)"
    set +e
    # shellcheck disable=SC2086 # the globs are cargo-mutants' own, expanded by it
    (cd "$tree" && set -f && "$TOOLS/cargo-mutants" mutants --in-place --minimum-test-timeout "$MIN_TIMEOUT" \
      --no-shuffle -o "$OUT/$part" $args)
    rc=$?
    set -e
    # 0: all caught; 2: some missed; 3: some timed out. Anything else: the part did not run properly.
    case "$rc" in
      0 | 2 | 3) ;;
      *) echo "mutants: $part: cargo-mutants exited $rc"; status=1; break ;;
    esac
  done < <(part_passes "$part")
  # With --iterate, what earlier runs caught (or found unviable) is in previously_caught.txt, one list:
  # so after an --iterate run, "caught" includes the mutants an earlier run found unviable.
  caught=$(($(count "$dir/caught.txt") + $(count "$dir/previously_caught.txt")))
  missed=$(count "$dir/missed.txt") timeout=$(count "$dir/timeout.txt") unviable=$(count "$dir/unviable.txt")
  total_caught=$((total_caught + caught)) total_missed=$((total_missed + missed))
  total_timeout=$((total_timeout + timeout)) total_unviable=$((total_unviable + unviable))
  echo "mutants: $part: caught $caught, missed $missed, timeouts $timeout, unviable $unviable"
  if [ "$missed" -gt 0 ]; then
    sed 's/^/  missed: /' "$dir/missed.txt"
    status=1
  fi
done
detected=$((total_caught + total_timeout))
viable=$((detected + total_missed))
if [ "$viable" -gt 0 ]; then
  echo "mutants: total: caught $total_caught, missed $total_missed, timeouts $total_timeout," \
    "unviable $total_unviable; score $((100 * detected / viable))% ($detected of $viable)"
fi
exit "$status"
