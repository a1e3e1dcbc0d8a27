#!/usr/bin/env bash
# Builds nats-server from the Go module proxy (github.com/nats-io/nats-server/v2 at the version this directory's
# go.mod pins as a `tool`, its dependencies pinned by go.sum) and prints the directory holding it:
#   bin=$(hack/nats/build.sh) && "$bin/nats-server" --version
# `make bench` runs its NATS setups on this server (the version users run) instead of the distribution's
# package, which lags behind (Debian's is 2.9); the test suite keeps using the packaged one unless
# EDGEWIRE_TEST_BIN_NATS points here. It lands in ${EDGEWIRE_NATS_CACHE:-~/.cache/edgewire/nats}/<version>-<key>/,
# <key> a hash of the Go version, go.mod, go.sum and the build flags: with nothing changed a run only hashes two
# files (well under a second); a change builds beside the old one. How it is built, locked and installed:
# hack/lib/go-tool.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/go-tool.sh
. "$HERE/../lib/go-tool.sh"
CACHE="${EDGEWIRE_NATS_CACHE:-$HOME/.cache/edgewire/nats}"
PKG=github.com/nats-io/nats-server/v2
LDFLAGS="-s -w"

VERSION="$(awk -v pkg="$PKG" '$1 == pkg { print $2; exit }' "$HERE/go.mod")"
[ -n "$VERSION" ] || { echo "nats-build: $PKG is not required in $HERE/go.mod" >&2; exit 1; }
go_tool_init nats-build "$HERE"
GO_TOOL_EXTRA="$LDFLAGS"
go_tool_begin "$CACHE/$VERSION-$(go_tool_key)" nats-server
log "building nats-server $VERSION with $GO_VERSION into $GO_TOOL_DEST"
run download go mod download
run build go build -ldflags "$LDFLAGS" -o "$TMP/nats-server" "$PKG"
run version bash -c "'$TMP/nats-server' --version >'$TMP/VERSION' && grep -qF '${VERSION#v}' '$TMP/VERSION'"
log "$(cat "$TMP/VERSION")"
go_tool_finish
