#!/usr/bin/env bash
# Builds a real Kubernetes control plane from Go modules (no release downloads):
#   kube-apiserver, kube-controller-manager, kube-scheduler  (k8s.io/kubernetes,   wrapper k8s/)
#   etcd                                                     (go.etcd.io/etcd/server/v3, wrapper etcd/)
#   kwok                                                     (sigs.k8s.io/kwok,     wrapper kwok/)
# into $EDGEWIRE_KUBE_CACHE/<key>/bin/ (default ~/.cache/edgewire/kube), and copies the kwok Stage
# files to <key>/kwok-stages/. <key> names all three versions (versions.env).
#
# Idempotent: each component has a stamp (its versions, the sha256 of its wrapper go.mod/go.sum,
# the build flags); when every stamp matches and every binary exists it does nothing.
# Prints the bin directory, alone, on stdout (progress and timings go to stderr), so:
#   bin=$(hack/kube/build.sh)          # build if needed
#   bin=$(hack/kube/build.sh --print-bin-dir)   # only print where they are (or would be)
# On a failure it names the step, prints the tail of its log and exits non-zero.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

key="${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
root="${EDGEWIRE_KUBE_CACHE:-$HOME/.cache/edgewire/kube}/$key"
bin="$root/bin"
stages="$root/kwok-stages"

if [ "${1:-}" = "--print-bin-dir" ]; then echo "$bin"; exit 0; fi
[ $# -eq 0 ] || { echo "usage: $0 [--print-bin-dir]" >&2; exit 2; }

# Version stamping: kube binaries report v1.X.Y (not v0.0.0-master+$Format:%H$).
kube_minor="${KUBE_VERSION#v1.}"; kube_minor="${kube_minor%%.*}"
kube_ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$kube_minor -X $p.gitTreeState=clean"
done
etcd_ld="-s -w"
kwok_ld="-s -w"
BUILD_FLAGS="CGO_ENABLED=0 -trimpath"

# stamp <component> <wrapper dir> <ldflags> [extra files]: what the stamp file must contain.
stamp() {
  local dir="$here/$2"
  printf 'kube=%s etcd=%s kwok=%s\nflags=%s %s\n' "$KUBE_VERSION" "$ETCD_VERSION" "$KWOK_VERSION" "$BUILD_FLAGS" "$3"
  (cd "$dir" && sha256sum go.mod go.sum)
  shift 3
  [ $# -eq 0 ] || (cd "$here" && sha256sum "$@")
}
components=(k8s etcd kwok)
declare -A wrapper=([k8s]=k8s [etcd]=etcd [kwok]=kwok)
declare -A ldflags=([k8s]="$kube_ld" [etcd]="$etcd_ld" [kwok]="$kwok_ld")
declare -A binaries=([k8s]="kube-apiserver kube-controller-manager kube-scheduler" [etcd]=etcd [kwok]=kwok)
declare -A pkgs=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [etcd]=go.etcd.io/etcd/server/v3
  [kwok]=sigs.k8s.io/kwok/cmd/kwok
)
stage_files=("$here"/kwok/stages/*.yaml); stage_files=("${stage_files[@]#"$here"/}")  # relative to $here

want() { # the stamp text a component needs
  if [ "$1" = kwok ]; then stamp kwok kwok "${ldflags[kwok]}" "${stage_files[@]}"
  else stamp "$1" "${wrapper[$1]}" "${ldflags[$1]}"; fi
}
up_to_date() { # component
  local b
  for b in ${binaries[$1]}; do [ -x "$bin/$b" ] || return 1; done
  [ "$1" != kwok ] || [ -d "$stages" ] || return 1
  [ -f "$root/stamp.$1" ] && [ "$(cat "$root/stamp.$1")" = "$(want "$1")" ]
}
all_up_to_date() { local c; for c in "${components[@]}"; do up_to_date "$c" || return 1; done; }

# Fast path: nothing to do (no go command, no lock).
if all_up_to_date; then echo "$bin"; exit 0; fi

mkdir -p "$bin" "$root/logs"
exec 9>"$root/.lock"
flock 9  # another build.sh for the same key finishes first; then we re-check
if all_up_to_date; then echo "$bin"; exit 0; fi

# GOTOOLCHAIN=local: a module wanting a newer Go fails loudly instead of fetching a toolchain.
# -buildvcs=false: the wrappers sit inside this git repo; its state is not the binaries' version.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS="${GOFLAGS:-} -buildvcs=false"
log() { echo "kube-build: $*" >&2; }
# run <step name> <log file> <command...>: runs the step, or reports it and exits.
run() {
  local name="$1" logf="$2"; shift 2
  local t0=$SECONDS rc=0
  "$@" >"$logf" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    log "FAILED: step '$name' (exit $rc) after $((SECONDS - t0))s; last lines of $logf:"
    tail -n 40 "$logf" >&2
    exit 1
  fi
  log "$name: $((SECONDS - t0))s"
}

total0=$SECONDS
log "building into $bin ($(go version | cut -d' ' -f3), GOMODCACHE=$(go env GOMODCACHE))"
for c in "${components[@]}"; do
  up_to_date "$c" && { log "$c: up to date"; continue; }
  rm -f "$root/stamp.$c"
  dir="$here/${wrapper[$c]}"
  run "$c: download modules" "$root/logs/$c-download.log" \
    bash -c "cd '$dir' && go mod download -x"
  for b in ${binaries[$c]}; do
    run "$c: build $b" "$root/logs/$b.log" \
      bash -c "cd '$dir' && go build -trimpath -ldflags '${ldflags[$c]}' -o '$bin/.$b.tmp' '${pkgs[$b]}' && mv -f '$bin/.$b.tmp' '$bin/$b'"
  done
  if [ "$c" = kwok ]; then
    rm -rf "$stages.tmp" && mkdir -p "$stages.tmp" && cp "$here"/kwok/stages/*.yaml "$stages.tmp/"
    rm -rf "$stages" && mv "$stages.tmp" "$stages"
  fi
  want "$c" >"$root/stamp.$c"
done
run "version check" "$root/logs/version.log" bash -c "
  '$bin/kube-apiserver' --version && '$bin/kube-controller-manager' --version &&
  '$bin/kube-scheduler' --version && '$bin/etcd' --version && '$bin/kwok' --version"
sed 's/^/kube-build:   /' "$root/logs/version.log" >&2
log "done in $((SECONDS - total0))s"
echo "$bin"
