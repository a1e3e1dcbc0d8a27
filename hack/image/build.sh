#!/usr/bin/env bash
# Builds the edgewire-operator and edgewire-agent images as OCI image archives, without a container engine
# (`make image`; docs/images.md).
#
#   hack/image/build.sh [--profile dist|release|debug] [--out DIR] [--no-sbom]
#   hack/image/build.sh --print-names    the image names and tags a build would give (images.env's
#                                        EDGEWIRE_*_{IMAGE,REPOSITORY,TAG} lines), and nothing else: no build
#
# From the binaries in ${CARGO_TARGET_DIR:-target}/<profile>/ (build them first: `make image` does), each image
# is one layer holding a minimal root filesystem:
#   /usr/local/bin/<binary>           the binary without debug info (the entrypoint)
#   the shared libraries it links     exactly ldd's closure of the binary plus the ELF interpreter, at the paths
#                                     the loader resolves them to (symlinks along the way kept as on this machine)
#   /etc/ssl/certs/ca-certificates.crt  CA certificates (SSL_CERT_FILE points at it; /usr/lib/ssl/cert.pem too)
#   /etc/passwd, /etc/group           root and nonroot (65532:65532, home /home/nonroot, no login shell)
#   /etc/nsswitch.conf, /etc/os-release, /tmp (1777), /home/nonroot (65532, 0700)
#   /var/lib/dpkg/status.d/<package>  the Debian package record of every copied file (as distroless images do),
#                                     so SBOM tools and scanners see the libraries' packages and versions
# and nothing else: no shell, no package manager. Config: user 65532:65532, entrypoint the binary, workdir
# /home/nonroot, org.opencontainers.image.{source,version,revision,licenses,title,description,created} labels.
#
# Reproducible: every file is stamped with SOURCE_DATE_EPOCH (default: the last commit's time), owners are fixed,
# entries sorted; the same binaries, libraries and commit give the same digest.
#
# Writes to DIR (default ${CARGO_TARGET_DIR:-target}/images for release, .../images-debug for debug):
#   edgewire-operator.oci.tar, edgewire-agent.oci.tar   OCI archives (index.json names each image
#                                                       ghcr.io/edgewire/<name>:<version> for containerd)
#   edgewire-operator.spdx.json, edgewire-agent.spdx.json   SPDX 2.3 SBOMs (syft over the archive; not with --no-sbom)
#   images.env                                          names, tags, digests and archive paths (KEY=VALUE lines)
# and prints each image's name, digest and sizes.
#
# Environment: CARGO_TARGET_DIR, SOURCE_DATE_EPOCH, IMAGE_REPOSITORY_PREFIX (default ghcr.io/edgewire: the
# chart's default repositories), GO tools from hack/image/tools.sh.
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/hack/image"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
PREFIX="${IMAGE_REPOSITORY_PREFIX:-ghcr.io/edgewire}"
PROFILE=dist
OUT=""
SBOM=1
PRINT_NAMES=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --no-sbom) SBOM=0; shift ;;
    --print-names) PRINT_NAMES=1; shift ;;
    *) echo "usage: $0 [--profile dist|release|debug] [--out DIR] [--no-sbom] | --print-names" >&2; exit 2 ;;
  esac
done
case "$PROFILE" in
  dist|release) OUT="${OUT:-$TARGET/images}" ;;
  debug) OUT="${OUT:-$TARGET/images-debug}" ;;
  *) echo "image: --profile must be dist, release or debug" >&2; exit 2 ;;
esac
BIN_DIR="$TARGET/$PROFILE"

die() { echo "image: $*" >&2; exit 1; }

# Version, license and repository from Cargo.toml's [workspace.package] (the crates inherit them), titles and
# descriptions from the crates' own Cargo.toml.
toml() { # toml FILE KEY.PATH
  python3 -c 'import functools, sys, tomllib
print(functools.reduce(lambda d, k: d[k], sys.argv[2].split("."), tomllib.load(open(sys.argv[1], "rb"))))' "$1" "$2"
}
VERSION="$(toml "$ROOT/Cargo.toml" workspace.package.version)"

# The names and tags of the images: <prefix>/<binary>:<workspace version>, the chart's default repositories
# and its appVersion (charts/edgewire/values.yaml, Chart.yaml). The build below and --print-names both use
# these, and the end-to-end tests read them through --print-names (e2e/tests/cluster/images.rs).
image_repository() { echo "$PREFIX/$1"; }
image_tag() { echo "$VERSION"; }
names_env() { # names_env BINARY: its images.env lines for name and tag
  local upper
  upper="$(tr a-z- A-Z_ <<<"${1#edgewire-}")"
  echo "EDGEWIRE_${upper}_IMAGE=$(image_repository "$1"):$(image_tag)"
  echo "EDGEWIRE_${upper}_REPOSITORY=$(image_repository "$1")"
  echo "EDGEWIRE_${upper}_TAG=$(image_tag)"
}
if [ "$PRINT_NAMES" = 1 ]; then
  echo "EDGEWIRE_IMAGE_VERSION=$VERSION"
  for name in edgewire-operator edgewire-agent; do names_env "$name"; done
  exit 0
fi
for t in ldd readelf objcopy dpkg dpkg-query python3; do
  command -v "$t" >/dev/null || die "$t not found (a Debian/Ubuntu machine; see make deps)"
done
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA_BUNDLE" ] || die "$CA_BUNDLE missing: apt-get install ca-certificates"

TOOLS="$(bash "$HERE/tools.sh")"
IMG="$TOOLS/edgewire-image"

LICENSE="$(toml "$ROOT/Cargo.toml" workspace.package.license)"
SOURCE="$(toml "$ROOT/Cargo.toml" workspace.package.repository)"
for crate in operator agent; do
  [ "$(toml "$ROOT/$crate/Cargo.toml" package.version.workspace)" = True ] \
    || die "$crate/Cargo.toml must take the workspace version (version.workspace = true)"
done
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null)" || die "not a git checkout: set SOURCE_DATE_EPOCH"
fi
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  echo "image: warning: the worktree has uncommitted changes; revision label $REVISION does not describe them" >&2
fi
case "$(uname -m)" in
  x86_64) ARCH=amd64 ;;
  aarch64) ARCH=arm64 ;;
  *) ARCH="$(uname -m)" ;;
esac

mkdir -p "$OUT"
WORK="$(mktemp -d "$OUT/.work-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# install_path ROOTFS PATH: puts PATH into ROOTFS as this machine resolves it: every symlink on the way (a
# merged-/usr /lib64, a library's soname link) becomes the same symlink in ROOTFS, the file at the end is copied.
install_path() {
  local rootfs="$1" path="$2" cur="" comp target
  local -a comps
  IFS=/ read -r -a comps <<<"${path#/}"
  local i n=${#comps[@]}
  for ((i = 0; i < n; i++)); do
    comp="${comps[$i]}"
    cur="$cur/$comp"
    if [ -L "$cur" ]; then
      target="$(readlink "$cur")"
      [ -e "$rootfs$cur" ] || [ -L "$rootfs$cur" ] || ln -s "$target" "$rootfs$cur"
      case "$target" in /*) ;; *) target="$(dirname "$cur")/$target" ;; esac
      target="$(realpath -s -m "$target")"
      local rest=""
      ((i + 1 < n)) && rest="/$(IFS=/; echo "${comps[*]:i+1}")"
      install_path "$rootfs" "$target$rest"
      return
    elif [ -d "$cur" ]; then
      mkdir -p "$rootfs$cur"
    elif [ -f "$cur" ]; then
      [ -f "$rootfs$cur" ] || install -m "$(stat -c %a "$cur")" "$cur" "$rootfs$cur"
      COPIED+=("$cur")
    else
      die "$path: $cur is neither a file, a directory nor a symlink"
    fi
  done
}

# libraries BINARY: the ELF interpreter and every shared library ldd resolves (the transitive closure).
libraries() {
  local bin="$1" interp
  interp="$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
  if [ -z "$interp" ]; then
    return 0 # static
  fi
  echo "$interp"
  local out
  out="$(ldd "$bin")" || die "ldd $bin failed: $out"
  if grep -q "not found" <<<"$out"; then
    die "$bin: libraries not found on this machine:"$'\n'"$(grep "not found" <<<"$out")"
  fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out" | sort -u
}

# packages_of PATH...: "PATH PACKAGE" for each PATH a Debian package owns (one dpkg -S for all: it reads the
# whole database each time). dpkg records some libraries under /lib and others under /usr/lib; with a merged
# /usr both name the same file, so both spellings are asked for.
packages_of() {
  local -a asks=()
  local p
  for p in "$@"; do
    asks+=("$p")
    case "$p" in /usr/*) asks+=("${p#/usr}") ;; *) asks+=("/usr$p") ;; esac
  done
  dpkg -S "${asks[@]}" 2>/dev/null | awk -F': ' '{ sub(/,.*/, "", $1); print $2, $1 }' || true
}

assemble_rootfs() { # assemble_rootfs BINARY NAME ROOTFS
  local bin="$1" name="$2" rootfs="$3"
  mkdir -p "$rootfs"/{etc/ssl/certs,usr/local/bin,usr/lib/ssl,home/nonroot,var/lib/dpkg/status.d,tmp}
  chmod 0755 "$rootfs" "$rootfs"/{etc,etc/ssl,etc/ssl/certs,usr,usr/local,usr/local/bin,usr/lib,usr/lib/ssl,home,var,var/lib,var/lib/dpkg,var/lib/dpkg/status.d}
  chmod 0700 "$rootfs/home/nonroot"
  chmod 1777 "$rootfs/tmp"
  # Without DWARF debug info (the symbol table stays, so backtraces keep function names).
  objcopy --strip-debug "$bin" "$rootfs/usr/local/bin/$name"
  chmod 0755 "$rootfs/usr/local/bin/$name"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$rootfs/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
  chmod 0644 "$rootfs"/etc/{passwd,group,nsswitch.conf}
  install -m 0644 "$(readlink -f /etc/os-release)" "$rootfs/etc/os-release"
  install -m 0644 "$CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  # OpenSSL's (and so librdkafka's) default CA file and directory on Debian.
  ln -s ../../../etc/ssl/certs/ca-certificates.crt "$rootfs/usr/lib/ssl/cert.pem"
  ln -s ../../../etc/ssl/certs "$rootfs/usr/lib/ssl/certs"

  COPIED=()
  local lib
  while read -r lib; do
    install_path "$rootfs" "$lib"
  done < <(libraries "$bin")

  # Package records of what came from Debian packages.
  local owned f pkg
  owned="$(packages_of "${COPIED[@]}")"
  local -A pkgs=([ca-certificates]=1 [base-files]=1) # the CA bundle's and /etc/os-release's packages
  for f in "${COPIED[@]}"; do
    pkg="$(awk -v a="$f" -v b="${f#/usr}" -v c="/usr$f" '$1 == a || $1 == b || $1 == c { print $2; exit }' <<<"$owned")"
    if [ -z "$pkg" ]; then
      echo "image: warning: $f belongs to no Debian package; the SBOM will not name it" >&2
      continue
    fi
    pkgs["$pkg"]=1
  done
  for pkg in "${!pkgs[@]}"; do
    dpkg-query -s "$pkg" | grep -v -E '^(Status|Conffiles):|^ /' >"$rootfs/var/lib/dpkg/status.d/${pkg%%:*}"
    chmod 0644 "$rootfs/var/lib/dpkg/status.d/${pkg%%:*}"
  done
  # No shell, no package manager may have come along.
  local bad
  bad="$(cd "$rootfs" && find . ! -type d \( -name sh -o -name bash -o -name dash -o -name busybox -o -name 'apt*' -o -name dpkg \) -print)"
  [ -z "$bad" ] || die "$name rootfs holds $bad"
}

human() { numfmt --to=iec-i --suffix=B "$1"; }

ENV_FILE="$WORK/images.env"
{
  echo "# Written by hack/image/build.sh; KEY=VALUE lines, shell-sourceable."
  echo "EDGEWIRE_IMAGE_VERSION=$VERSION"
  echo "EDGEWIRE_IMAGE_REVISION=$REVISION"
  echo "EDGEWIRE_IMAGE_PROFILE=$PROFILE"
  echo "EDGEWIRE_IMAGE_SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
} >"$ENV_FILE"

CREATED="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
for name in edgewire-operator edgewire-agent; do
  bin="$BIN_DIR/$name"
  [ -x "$bin" ] || die "$bin missing: cargo build $([ "$PROFILE" = debug ] || echo "--profile $PROFILE") -p $name --bins"
  rootfs="$WORK/rootfs-$name"
  assemble_rootfs "$bin" "$name" "$rootfs"
  archive="$OUT/$name.oci.tar"
  rm -f "$OUT/$name.spdx.json" # never leave an SBOM of an older archive beside a new one
  ref="$(image_repository "$name")"
  upper="$(tr a-z- A-Z_ <<<"${name#edgewire-}")"
  line="$("$IMG" build --rootfs "$rootfs" --out "$archive" --name "$ref" --tag "$(image_tag)" \
    --epoch "$SOURCE_DATE_EPOCH" --arch "$ARCH" --user 65532:65532 --workdir /home/nonroot \
    --entrypoint "/usr/local/bin/$name" \
    --env PATH=/usr/local/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --chown home/nonroot=65532:65532 \
    --label "org.opencontainers.image.title=$name" \
    --label "org.opencontainers.image.description=$(toml "$ROOT/${name#edgewire-}/Cargo.toml" package.description)" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.source=$SOURCE" \
    --label "org.opencontainers.image.licenses=$LICENSE" \
    --label "org.opencontainers.image.created=$CREATED" \
    --created-by "hack/image/build.sh --profile $PROFILE")"
  digest="${line##* }"
  unpacked="$(du -sb "$rootfs" | cut -f1)"
  compressed="$(stat -c %s "$archive")"
  {
    names_env "$name"
    echo "EDGEWIRE_${upper}_DIGEST=$digest"
    echo "EDGEWIRE_${upper}_ARCHIVE=$archive"
  } >>"$ENV_FILE"
  echo "image: $ref:$VERSION $digest ($PROFILE; archive $(human "$compressed"), unpacked $(human "$unpacked")) -> $archive"
  debs=()
  for f in "$rootfs"/var/lib/dpkg/status.d/*; do debs+=("$(basename "$f")"); done
  rm -rf "$rootfs"
  if [ "$SBOM" = 1 ]; then
    SYFT="$(bash "$HERE/tools.sh" sbom)/syft"
    sbom="$OUT/$name.spdx.json"
    SYFT_CHECK_FOR_APP_UPDATE=false "$SYFT" scan -q "oci-archive:$archive" \
      --source-name "$ref" --source-version "$VERSION" -o "spdx-json=$sbom.tmp"
    # The SBOM must name every Debian package whose files went in.
    python3 - "$sbom.tmp" "${debs[@]}" <<'PY' || die "$sbom: incomplete"
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc.get("spdxVersion", "").startswith("SPDX-"), "not an SPDX document"
names = {p["name"] for p in doc["packages"]}
missing = sorted(set(sys.argv[2:]) - names)
assert not missing, f"Debian packages in the image but not in the SBOM: {missing}"
PY
    mv "$sbom.tmp" "$sbom"
    echo "image: SBOM $sbom ($(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["packages"]))' "$sbom") packages, including the Debian packages ${debs[*]})"
  fi
done
mv "$ENV_FILE" "$OUT/images.env"
echo "image: $OUT/images.env"
