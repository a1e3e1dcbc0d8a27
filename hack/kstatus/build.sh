#!/usr/bin/env bash
# Builds edgewire-kstatus (this directory's Go module: kstatus from sigs.k8s.io/cli-utils and Argo CD's Lua
# interpreter github.com/yuin/gopher-lua, at the versions go.mod/go.sum pin) and prints the directory holding it:
#   bin=$(hack/kstatus/build.sh) && "$bin/edgewire-kstatus" status < objects.json
# It lands in ${EDGEWIRE_KSTATUS_CACHE:-~/.cache/edgewire/kstatus}/<key>/, keyed by a hash of the Go version and
# the module's go.mod, go.sum and Go sources: with nothing changed a run only hashes a few files (well under a
# second); a change builds beside the old one. How it is built, locked and installed: hack/lib/go-tool.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/go-tool.sh
. "$HERE/../lib/go-tool.sh"
CACHE="${EDGEWIRE_KSTATUS_CACHE:-$HOME/.cache/edgewire/kstatus}"

go_tool_init kstatus-build "$HERE"
go_tool_begin "$CACHE/$(go_tool_key "$HERE"/*.go)" edgewire-kstatus
log "building edgewire-kstatus with $GO_VERSION into $GO_TOOL_DEST"
run download go mod download
run build go build -o "$TMP/edgewire-kstatus" .
run versions bash -c "cd '$TMP' && go version -m ./edgewire-kstatus | grep -E '^\S|^\s+(mod|dep)\s' >VERSIONS"
go_tool_finish
