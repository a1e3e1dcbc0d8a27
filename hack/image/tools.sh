#!/usr/bin/env bash
# Builds the Go tools of the image build from the Go module proxy and prints the directory holding them:
#   hack/image/tools.sh        edgewire-image (hack/image/main.go), crane, umoci  (module hack/image)
#   hack/image/tools.sh sbom   syft                                               (module hack/image/sbom)
# Each set lands in ${EDGEWIRE_IMAGE_TOOLS:-~/.cache/edgewire/image-tools}/<key>/, keyed by a hash of the Go
# version and the module's go.mod, go.sum and Go sources: a second run with nothing changed only hashes a few
# files (well under a second); a changed go.sum builds a new set beside the old one. Versions are those the
# committed go.mod/go.sum pin (-mod=readonly: nothing is resolved anew), built with the local Go
# (GOTOOLCHAIN=local), without cgo. Works from an empty GOMODCACHE/GOCACHE (a new CI machine). How it is built,
# locked and installed: hack/lib/go-tool.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/go-tool.sh
. "$HERE/../lib/go-tool.sh"
CACHE="${EDGEWIRE_IMAGE_TOOLS:-$HOME/.cache/edgewire/image-tools}"

set_="${1:-base}"
case "$set_" in
  base) MOD="$HERE" ;;
  sbom) MOD="$HERE/sbom" ;;
  *) echo "usage: $0 [base|sbom]" >&2; exit 2 ;;
esac

go_tool_init image-tools "$MOD"
shopt -s nullglob
go_tool_begin "$CACHE/$set_-$(go_tool_key "$MOD"/*.go)"
log "building the $set_ tools with $GO_VERSION into $GO_TOOL_DEST"
run "download modules" go mod download
if [ "$set_" = base ]; then
  run "build edgewire-image" go build -o "$TMP/edgewire-image" .
fi
# `tool` directives in go.mod: crane and umoci (base), syft (sbom), at the versions go.sum pins.
run "build tools" go build -o "$TMP/" tool
run versions bash -c "cd '$TMP' && go version -m \$(find . -maxdepth 1 -type f -perm -u+x) | grep -E '^\\S|^\\s+mod\\s' >VERSIONS"
go_tool_finish
