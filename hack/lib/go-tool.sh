# Sourced by the scripts that build Go tools from the module proxy into ~/.cache/edgewire (hack/nats/build.sh,
# hack/kstatus/build.sh, hack/observability/tools.sh, hack/image/tools.sh): one way to key, lock, build and
# install them.
#
#   go_tool_init <tag> <module dir>   the Go environment (below); fails naming <tag> without a go command
#   go_tool_key [files...]            a hash of the Go version and platform, GOFLAGS, $GO_TOOL_EXTRA (say, the
#                                     link flags), the module's go.mod and go.sum and the given files
#   go_tool_begin <dest> [file]       prints <dest> and exits 0 when it is complete (with <file> in it, if
#                                     named); else takes the cache's lock (a concurrent build of the same key
#                                     finishes first, then it is found complete) and makes $TMP (removed on
#                                     failure)
#   run <step> <command...>           runs a step in the module with its output in a log; on a failure names
#                                     the step, prints the tail of its log and exits non-zero
#   go_tool_finish                    installs $TMP as <dest> (complete) and prints <dest>
#
# The environment: -mod=readonly (nothing is resolved anew: the committed go.mod/go.sum pin every version),
# GOTOOLCHAIN=local (a module wanting a newer Go fails instead of fetching a toolchain), no cgo, no VCS stamps
# (the modules sit in this repository; its state is not the tools' version). Works from an empty
# GOMODCACHE/GOCACHE (a new CI machine). Progress goes to stderr; stdout carries only <dest>.

go_tool_init() {
  GO_TOOL_TAG="$1" GO_TOOL_MOD="$2"
  export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -trimpath -buildvcs=false" CGO_ENABLED=0
  command -v go >/dev/null || {
    echo "$GO_TOOL_TAG: go not found (Go $(sed -n 's/^go //p' "$GO_TOOL_MOD/go.mod") or newer is needed)" >&2
    exit 1
  }
  GO_VERSION="$(go env GOVERSION)"
}

go_tool_key() {
  {
    echo "$GO_VERSION $(go env GOOS)/$(go env GOARCH) $GOFLAGS ${GO_TOOL_EXTRA:-}"
    cat "$GO_TOOL_MOD/go.mod" "$GO_TOOL_MOD/go.sum" "$@"
  } | sha256sum | cut -c1-16
}

log() { echo "$GO_TOOL_TAG: $*" >&2; }

go_tool_begin() {
  GO_TOOL_DEST="$1"
  local file="${2:-.complete}"
  if [ -e "$GO_TOOL_DEST/$file" ] && [ -f "$GO_TOOL_DEST/.complete" ]; then
    echo "$GO_TOOL_DEST"
    exit 0
  fi
  local cache
  cache="$(dirname "$GO_TOOL_DEST")"
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [ -f "$GO_TOOL_DEST/.complete" ]; then echo "$GO_TOOL_DEST"; exit 0; fi
  TMP="$(mktemp -d "$cache/.build-XXXXXX")"
  # shellcheck disable=SC2064 # $TMP is fixed now
  trap "rm -rf '$TMP'" EXIT
  GO_TOOL_START=$SECONDS
}

run() {
  local name="$1" logf t0=$SECONDS rc=0
  shift
  logf="$TMP/${name// /-}.log"
  (cd "$GO_TOOL_MOD" && "$@") >"$logf" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    log "FAILED: step '$name' (exit $rc) after $((SECONDS - t0)) s; last lines of its log:"
    tail -n 40 "$logf" >&2
    exit 1
  fi
  log "$name: $((SECONDS - t0)) s"
}

go_tool_finish() {
  rm -f "$TMP"/*.log
  chmod 0755 "$TMP"
  touch "$TMP/.complete"
  rm -rf "$GO_TOOL_DEST"
  mv "$TMP" "$GO_TOOL_DEST"
  trap - EXIT
  log "built in $((SECONDS - GO_TOOL_START)) s"
  echo "$GO_TOOL_DEST"
}
