#!/usr/bin/env bash
# Builds the Go tools of the image build from the Go module proxy and prints the directory holding them:
#   hack/image/tools.sh        edgewire-image (hack/image/main.go), crane, umoci  (module hack/image)
#   hack/image/tools.sh sbom   syft                                               (module hack/image/sbom)
# Each set lands in ${EDGEWIRE_IMAGE_TOOLS:-~/.cache/edgewire/image-tools}/<key>/, keyed by a hash of the Go
# version and the module's go.mod, go.sum and Go sources: a second run with nothing changed only hashes a few
# files (well under a second); a changed go.sum builds a new set beside the old one. Versions are those the
# committed go.mod/go.sum pin (-mod=readonly: nothing is resolved anew), built with the local Go
# (GOTOOLCHAIN=local), without cgo. Works from an empty GOMODCACHE/GOCACHE (a new CI machine).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${EDGEWIRE_IMAGE_TOOLS:-$HOME/.cache/edgewire/image-tools}"
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -trimpath -buildvcs=false" CGO_ENABLED=0

set_="${1:-base}"
case "$set_" in
  base) MOD="$HERE" ;;
  sbom) MOD="$HERE/sbom" ;;
  *) echo "usage: $0 [base|sbom]" >&2; exit 2 ;;
esac

command -v go >/dev/null || { echo "image-tools: go not found (Go $(sed -n 's/^go //p' "$MOD/go.mod") or newer is needed)" >&2; exit 1; }
GO_VERSION="$(go env GOVERSION)"
key="$( { echo "$GO_VERSION $(go env GOOS)/$(go env GOARCH)"; cat "$MOD/go.mod" "$MOD/go.sum"; cat "$MOD"/*.go 2>/dev/null || true; } \
  | sha256sum | cut -c1-16)"
DEST="$CACHE/$set_-$key"
if [ -f "$DEST/.complete" ]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/.build-$set_-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
start=$SECONDS
echo "image-tools: building the $set_ tools with $GO_VERSION into $DEST" >&2
(
  cd "$MOD"
  if [ "$set_" = base ]; then
    go build -o "$TMP/edgewire-image" .
  fi
  # `tool` directives in go.mod: crane and umoci (base), syft (sbom), at the versions go.sum pins.
  go build -o "$TMP/" tool
) >&2
(cd "$TMP" && go version -m ./* | grep -E '^\S|^\s+mod\s' >VERSIONS)
chmod 0755 "$TMP"
touch "$TMP/.complete"
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
echo "image-tools: $set_ tools built in $((SECONDS - start)) s" >&2
echo "$DEST"
