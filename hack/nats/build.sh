#!/usr/bin/env bash
# Builds nats-server from the Go module proxy (github.com/nats-io/nats-server/v2 at the version this directory's
# go.mod pins as a `tool`, its dependencies pinned by go.sum) and prints the directory holding it:
#   bin=$(hack/nats/build.sh) && "$bin/nats-server" --version
# `make bench` runs its NATS setups on this server (the version users run) instead of the distribution's
# package, which lags behind (Debian's is 2.9); the test suite keeps using the packaged one unless
# EDGEWIRE_TEST_BIN_NATS points here. It lands in ${EDGEWIRE_NATS_CACHE:-~/.cache/edgewire/nats}/<key>/, <key> =
# the nats-server version and a hash of the Go version, go.mod, go.sum and the build flags: with nothing changed a
# run only hashes two files (well under a second); a change builds beside the old one. -mod=readonly (nothing
# is resolved anew), GOTOOLCHAIN=local (a module wanting a newer Go fails instead of fetching a toolchain), no
# cgo. Works from an empty GOMODCACHE/GOCACHE. On a failure it names the step, prints the tail of its log and
# exits non-zero.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${EDGEWIRE_NATS_CACHE:-$HOME/.cache/edgewire/nats}"
PKG=github.com/nats-io/nats-server/v2
LDFLAGS="-s -w"
export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -trimpath -buildvcs=false" CGO_ENABLED=0

VERSION="$(awk -v pkg="$PKG" '$1 == pkg { print $2; exit }' "$HERE/go.mod")"
[ -n "$VERSION" ] || { echo "nats-build: $PKG is not required in $HERE/go.mod" >&2; exit 1; }
command -v go >/dev/null || { echo "nats-build: go not found (Go $(sed -n 's/^go //p' "$HERE/go.mod") or newer is needed)" >&2; exit 1; }
GO_VERSION="$(go env GOVERSION)"
hash="$( { echo "$GO_VERSION $(go env GOOS)/$(go env GOARCH) $GOFLAGS $LDFLAGS"; cat "$HERE/go.mod" "$HERE/go.sum"; } \
  | sha256sum | cut -c1-12)"
DEST="$CACHE/$VERSION-$hash"
if [ -x "$DEST/nats-server" ] && [ -f "$DEST/.complete" ]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # a concurrent build of the same key finishes first; then it is found complete
if [ -f "$DEST/.complete" ]; then echo "$DEST"; exit 0; fi

TMP="$(mktemp -d "$CACHE/.build-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
log() { echo "nats-build: $*" >&2; }
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
log "building nats-server $VERSION with $GO_VERSION into $DEST"
run download go mod download
run build go build -ldflags "$LDFLAGS" -o "$TMP/nats-server" "$PKG"
run version bash -c "'$TMP/nats-server' --version >'$TMP/VERSION' && grep -qF '${VERSION#v}' '$TMP/VERSION'"
rm -f "$TMP"/*.log
chmod 0755 "$TMP"
touch "$TMP/.complete"
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
log "built $(cat "$DEST/VERSION") in $((SECONDS - start)) s"
echo "$DEST"
