#!/usr/bin/env bash
# Builds the observability checks' Go tools from the Go module proxy and prints the directory holding them:
#   promtool            github.com/prometheus/prometheus/cmd/promtool (a `tool` directive in go.mod)
#   edgewire-promcheck  main.go beside this script
# into ${EDGEWIRE_OBSERVABILITY_TOOLS:-~/.cache/edgewire/observability}/<key>/, keyed by a hash of the Go
# version and this module's go.mod, go.sum and Go sources: a second run with nothing changed only hashes a
# few files (well under a second); a changed go.sum builds a new set beside the old one. Versions are those
# the committed go.mod/go.sum pin (-mod=readonly: nothing is resolved anew), built with the local Go
# (GOTOOLCHAIN=local), without cgo. Works from an empty GOMODCACHE/GOCACHE (a new CI machine).
# Progress goes to stderr, the directory alone to stdout; a failed step is named with the tail of its log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${EDGEWIRE_OBSERVABILITY_TOOLS:-$HOME/.cache/edgewire/observability}"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -trimpath -buildvcs=false" CGO_ENABLED=0

command -v go >/dev/null || {
  echo "observability-tools: go not found (Go $(sed -n 's/^go //p' "$HERE/go.mod") or newer is needed)" >&2
  exit 1
}
GO_VERSION="$(go env GOVERSION)"
key="$( { echo "$GO_VERSION $(go env GOOS)/$(go env GOARCH)"; cat "$HERE/go.mod" "$HERE/go.sum" "$HERE"/*.go; } \
  | sha256sum | cut -c1-16)"
DEST="$CACHE/$key"
if [ -f "$DEST/.complete" ]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/.build-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
log() { echo "observability-tools: $*" >&2; }
# run <step> <command...>: runs the step in the module with its output in a log, or names it and exits.
run() {
  local name="$1" logf
  shift
  logf="$TMP/${name// /-}.log"
  local t0=$SECONDS rc=0
  (cd "$HERE" && "$@") >"$logf" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    log "FAILED: step '$name' (exit $rc) after $((SECONDS - t0)) s; last lines of its log:"
    tail -n 40 "$logf" >&2
    exit 1
  fi
  log "$name: $((SECONDS - t0)) s"
}
start=$SECONDS
log "building promtool and edgewire-promcheck with $GO_VERSION into $DEST"
run "download modules" go mod download
run "build promtool" go build -o "$TMP/bin/" tool
run "build edgewire-promcheck" go build -o "$TMP/bin/edgewire-promcheck" .
run "version check" bash -c "'$TMP/bin/promtool' --version && go version -m '$TMP/bin/promtool' | grep -E '^\\s+mod\\s' > '$TMP/VERSIONS'"
mv "$TMP/bin/promtool" "$TMP/bin/edgewire-promcheck" "$TMP/"
rm -rf "$TMP/bin" "$TMP"/*.log
chmod 0755 "$TMP"
touch "$TMP/.complete"
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
log "built in $((SECONDS - start)) s"
echo "$DEST"
