#!/usr/bin/env bash
# Builds the observability checks' Go tools from the Go module proxy and prints the directory holding them:
#   promtool            github.com/prometheus/prometheus/cmd/promtool (a `tool` directive in go.mod)
#   edgewire-promcheck  main.go beside this script
# into ${EDGEWIRE_OBSERVABILITY_TOOLS:-~/.cache/edgewire/observability}/<key>/, keyed by a hash of the Go
# version and this module's go.mod, go.sum and Go sources: a second run with nothing changed only hashes a
# few files (well under a second); a changed go.sum builds a new set beside the old one. Versions are those
# the committed go.mod/go.sum pin (-mod=readonly: nothing is resolved anew), built with the local Go
# (GOTOOLCHAIN=local), without cgo. Works from an empty GOMODCACHE/GOCACHE (a new CI machine). How it is built,
# locked and installed: hack/lib/go-tool.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/go-tool.sh
. "$HERE/../lib/go-tool.sh"
CACHE="${EDGEWIRE_OBSERVABILITY_TOOLS:-$HOME/.cache/edgewire/observability}"
# Prometheus's own build tag for a binary without its service-discovery plugins (prometheus/plugins/*.go):
# `check rules` and `test rules` use none of them, and they were most of the build (the AWS EC2, ECS and RDS
# SDKs, Azure, GCE, OpenStack and a dozen more; 1,364 packages, 1,117 without). From an empty GOCACHE on an
# idle 2-core machine: 415 s without the tag, 187 s with it.
PROMTOOL_TAGS=remove_all_sd
GO_TOOL_EXTRA="tags=$PROMTOOL_TAGS"

go_tool_init observability-tools "$HERE"
go_tool_begin "$CACHE/$(go_tool_key "$HERE"/*.go)" promtool
log "building promtool and edgewire-promcheck with $GO_VERSION into $GO_TOOL_DEST"
run "download modules" go mod download
run "build promtool" go build -tags "$PROMTOOL_TAGS" -o "$TMP/" tool
run "build edgewire-promcheck" go build -o "$TMP/edgewire-promcheck" .
run "version check" bash -c "'$TMP/promtool' --version && go version -m '$TMP/promtool' | grep -E '^\\s+mod\\s' > '$TMP/VERSIONS'"
go_tool_finish
