#!/usr/bin/env bash
# Builds edgewire-kstatus (this directory's Go module: kstatus from sigs.k8s.io/cli-utils and Argo CD's Lua
# interpreter github.com/yuin/gopher-lua, at the versions go.mod/go.sum pin) and prints the directory holding it:
#   bin=$(hack/kstatus/build.sh) && "$bin/edgewire-kstatus" status < objects.json
# It lands in ${EDGEWIRE_KSTATUS_CACHE:-~/.cache/edgewire/kstatus}/<key>/, keyed by a hash of the Go version and
# the module's go.mod, go.sum and Go sources: with nothing changed a run only hashes a few files (well under a
# second); a change builds beside the old one. -mod=readonly (nothing is resolved anew), GOTOOLCHAIN=local (a
# module wanting a newer Go fails instead of fetching a toolchain), no cgo. Works from an empty
# GOMODCACHE/GOCACHE. On a failure it names the step, prints the tail of its log and exits non-zero.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${EDGEWIRE_KSTATUS_CACHE:-$HOME/.cache/edgewire/kstatus}"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -trimpath -buildvcs=false" CGO_ENABLED=0

command -v go >/dev/null || { echo "kstatus-build: go not found (Go $(sed -n 's/^go //p' "$HERE/go.mod") or newer is needed)" >&2; exit 1; }
GO_VERSION="$(go env GOVERSION)"
key="$( { echo "$GO_VERSION $(go env GOOS)/$(go env GOARCH)"; cat "$HERE/go.mod" "$HERE/go.sum" "$HERE"/*.go; } \
  | sha256sum | cut -c1-16)"
DEST="$CACHE/$key"
if [ -x "$DEST/edgewire-kstatus" ] && [ -f "$DEST/.complete" ]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # a concurrent build of the same key finishes first; then it is found complete
if [ -f "$DEST/.complete" ]; then echo "$DEST"; exit 0; fi

TMP="$(mktemp -d "$CACHE/.build-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
log() { echo "kstatus-build: $*" >&2; }
# run <step> <command...>: runs the step with its output in a log, or reports it with the log's tail and exits.
run() {
  local name="$1" logf="$TMP/$1.log" t0=$SECONDS rc=0
  shift
  (cd "$HERE" && "$@") >"$logf" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    log "FAILED: step '$name' (exit $rc) after $((SECONDS - t0)) s; last lines of its log:"
    tail -n 40 "$logf" >&2
    exit 1
  fi
  log "$name: $((SECONDS - t0)) s"
}
start=$SECONDS
log "building edgewire-kstatus with $GO_VERSION into $DEST"
run download go mod download
run build go build -o "$TMP/edgewire-kstatus" .
run versions bash -c "cd '$TMP' && go version -m ./edgewire-kstatus | grep -E '^\S|^\s+(mod|dep)\s' >VERSIONS"
rm -f "$TMP"/*.log
chmod 0755 "$TMP"
touch "$TMP/.complete"
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
log "built in $((SECONDS - start)) s"
echo "$DEST"
