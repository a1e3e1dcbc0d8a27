#!/usr/bin/env bash
# `make image-test`: builds both images from a clean clone of this tree with hack/image/build.sh (no SBOM) and
# proves them without a container engine:
#   - the build is reproducible: a second build from the worktree gives byte-identical archives;
#   - the OCI archives validate: go-containerregistry's validate (edgewire-image inspect) and umoci, an
#     independent reader, which also unpacks the root filesystem used below;
#   - each layout pushes with `crane push` to crane's registry on loopback and `crane validate --remote` reads it;
#   - the image config: user 65532:65532 (also in umoci's runtime config), entrypoint, workdir, the seven
#     org.opencontainers.image.* labels, the names and tags in index.json and images.env;
#   - the root filesystem: no shell, no busybox, no package manager, no executable but the binary and its
#     libraries; passwd/group hold 65532;
#   - the image runs by itself, in `chroot --userspec=65532:65532` with an empty environment but the image's:
#     `edgewire-operator --help`, `edgewire-operator render -f <sample>`, and `edgewire-agent publisher`
#     reaching /healthz and /readyz and publishing an event that a NATS subscriber (outside the chroot) receives
#     from a nats-server on loopback;
#   - the run check can fail: a copy of the agent's rootfs without one library is refused, by the loader's own
#     listing and by running the binary;
# and prints each image's compressed and unpacked size.
#
#   hack/image/test.sh [--profile dist|release|debug]    (binaries from ${CARGO_TARGET_DIR:-target}/<profile>/)
#
# Needs root (chroot), nats-server, python3, curl, and the Go tools of hack/image/tools.sh. Ends with
# `image-test: N passed, M failed`; on a failure prints the step and the tail of its log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
export CARGO_TARGET_DIR="$TARGET"
PROFILE=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    *) echo "usage: $0 [--profile dist|release|debug]" >&2; exit 2 ;;
  esac
done
export PATH="/usr/sbin:/sbin:$PATH"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
LOG="$WORK/step.log"
report_failure() { # report_failure NAME
  echo "FAIL $1"
  echo "     | last lines of its log:"
  tail -n 40 "$LOG" | sed 's/^/     | /'
}
# check NAME CMD...: runs CMD (errexit on) with its output in a log shown only on failure.
check() {
  local name="$1"
  shift
  set +e
  (set -euo pipefail; "$@") >"$LOG" 2>&1
  local rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    report_failure "$name"
  fi
}
# must NAME CMD...: a check the later ones depend on; stops the run when it fails.
must() {
  check "$@"
  if [ "$failed" -gt 0 ]; then
    echo "image-test: $passed passed, $failed failed"
    exit 1
  fi
}

if [ "$(id -u)" != 0 ]; then
  echo "image-test: needs root for chroot (run as root, e.g. sudo -E make image-test)" >&2
  exit 1
fi
for t in nats-server python3 curl chroot git; do
  command -v "$t" >/dev/null || { echo "image-test: $t not found: make deps" >&2; exit 1; }
done
for b in edgewire-operator edgewire-agent; do
  [ -x "$TARGET/$PROFILE/$b" ] || { echo "image-test: $TARGET/$PROFILE/$b missing: make image-test builds it" >&2; exit 1; }
done

VERSION="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["workspace"]["package"]["version"])' "$ROOT/Cargo.toml")"
REVISION="$(git -C "$ROOT" rev-parse HEAD)"
TOOLS="$(bash "$ROOT/hack/image/tools.sh")"
IMG="$TOOLS/edgewire-image"
UMOCI="$TOOLS/umoci"
CRANE="$TOOLS/crane"
CHROOT="$(command -v chroot)" # env -i below leaves only the image's PATH
SAMPLE=eventbroker-nats-deployed.yaml
echo "image-test: profile $PROFILE, version $VERSION, binaries in $TARGET/$PROFILE, tools in $TOOLS"

# --- build ----------------------------------------------------------------------------------------
clean_clone() {
  git clone -q --shared "$ROOT" "$WORK/clone"
  # Uncommitted changes to tracked files come along; untracked and ignored files do not.
  git -C "$ROOT" diff HEAD --binary >"$WORK/wip.patch"
  if [ -s "$WORK/wip.patch" ]; then git -C "$WORK/clone" apply "$WORK/wip.patch"; fi
  [ ! -e "$WORK/clone/target" ]
}
must "clean clone of the tree (tracked files only)" clean_clone
must "both archives build from the clean clone (hack/image/build.sh --profile $PROFILE --no-sbom)" \
  bash "$WORK/clone/hack/image/build.sh" --profile "$PROFILE" --out "$WORK/a" --no-sbom
cat "$LOG"
rebuild_identical() {
  bash "$ROOT/hack/image/build.sh" --profile "$PROFILE" --out "$WORK/b" --no-sbom
  local n
  for n in edgewire-operator edgewire-agent; do cmp "$WORK/a/$n.oci.tar" "$WORK/b/$n.oci.tar"; done
  diff <(grep -v _ARCHIVE= "$WORK/a/images.env") <(grep -v _ARCHIVE= "$WORK/b/images.env")
}
check "a second build from the worktree gives byte-identical archives (reproducible)" rebuild_identical

# --- read and validate ----------------------------------------------------------------------------
# env_of NAME KEY: a value of images.env.
env_of() { sed -n "s/^EDGEWIRE_$(tr a-z- A-Z_ <<<"${1#edgewire-}")_$2=//p" "$WORK/a/images.env"; }

unpack() { # unpack NAME: OCI layout, umoci's checks and unpacked bundle under $WORK/NAME
  local n="$1" d="$WORK/$1"
  mkdir -p "$d/layout"
  tar -xf "$WORK/a/$n.oci.tar" -C "$d/layout"
  "$UMOCI" ls --layout "$d/layout" | tee "$d/tags"
  [ "$(cat "$d/tags")" = "$VERSION" ]
  "$UMOCI" stat --image "$d/layout:$VERSION" --json >"$d/stat.json"
  "$UMOCI" unpack --image "$d/layout:$VERSION" "$d/bundle"
  [ -x "$d/bundle/rootfs/usr/local/bin/$n" ]
}

config_ok() { # config_ok NAME: the image config as go-containerregistry and umoci read it
  local n="$1" d="$WORK/$1"
  "$IMG" inspect "$WORK/a/$n.oci.tar" >"$d/inspect.json"
  cat "$d/inspect.json"
  python3 - "$d/inspect.json" "$d/bundle/config.json" "$n" "$VERSION" "$REVISION" "$(env_of "$n" DIGEST)" "$(env_of "$n" IMAGE)" <<'PY'
import json, sys
inspect, runtime, name, version, revision, digest, image = sys.argv[1:]
s = json.load(open(inspect))
r = json.load(open(runtime))
def want(what, got, exp):
    assert got == exp, f"{what}: got {got!r}, want {exp!r}"
want("user", s["user"], "65532:65532")
want("entrypoint", s["entrypoint"], [f"/usr/local/bin/{name}"])
want("cmd", s["cmd"], None)
want("workingDir", s["workingDir"], "/home/nonroot")
want("platform", s["platform"], "linux/amd64")
labels = s["labels"]
for k, v in {"title": name, "version": version, "revision": revision, "licenses": "Apache-2.0",
             "source": "https://github.com/edgewire/edgewire"}.items():
    want(f"label {k}", labels.get(f"org.opencontainers.image.{k}"), v)
for k in ("description", "created"):
    assert labels.get(f"org.opencontainers.image.{k}"), f"label {k} missing or empty"
want("index ref.name", s["annotations"].get("org.opencontainers.image.ref.name"), version)
want("index io.containerd.image.name", s["annotations"].get("io.containerd.image.name"), image)
want("images.env image", image, f"ghcr.io/edgewire/{name}:{version}")
want("images.env digest", digest, s["digest"])
# umoci's runtime config, derived independently from the image config.
want("umoci process.user", (r["process"]["user"]["uid"], r["process"]["user"]["gid"]), (65532, 65532))
want("umoci process.args", r["process"]["args"], [f"/usr/local/bin/{name}"])
want("umoci process.cwd", r["process"]["cwd"], "/home/nonroot")
print(f"{name}: config ok, digest {s['digest']}")
PY
}

rootfs_minimal() { # rootfs_minimal NAME: no shell, no package manager, no program but the binary
  local n="$1" rootfs="$WORK/$1/bundle/rootfs"
  local f
  for f in bin/sh usr/bin/sh bin/bash bin/busybox usr/bin/busybox usr/bin/apt usr/bin/apt-get usr/bin/dpkg; do
    if [ -e "$rootfs/$f" ] || [ -L "$rootfs/$f" ]; then echo "$f is in the image"; return 1; fi
  done
  local shells
  shells="$(cd "$rootfs" && find . ! -type d \( -name sh -o -name '*sh' -o -name busybox -o -name 'apt*' -o -name dpkg -o -name 'python*' -o -name perl \) -print)"
  [ -z "$shells" ] || { echo "shell-like files: $shells"; return 1; }
  # Every executable file is the binary, a shared library or the loader.
  local others
  others="$(cd "$rootfs" && find . -type f -perm /111 ! -path "./usr/local/bin/$n" ! -name '*.so' ! -name '*.so.*' -print)"
  [ -z "$others" ] || { echo "executables besides $n and its libraries: $others"; return 1; }
  grep -qx 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' "$rootfs/etc/passwd"
  grep -qx 'nonroot:x:65532:' "$rootfs/etc/group"
  [ "$(stat -c %u:%g:%a "$rootfs/home/nonroot")" = 65532:65532:700 ]
  [ "$(stat -c %u:%g "$rootfs/usr/local/bin/$n")" = 0:0 ]
  [ -s "$rootfs/etc/ssl/certs/ca-certificates.crt" ]
  echo "files:"
  (cd "$rootfs" && find . ! -type d | sort)
}

for n in edgewire-operator edgewire-agent; do
  must "$n: umoci reads the OCI layout, lists tag $VERSION and unpacks the rootfs" unpack "$n"
  check "$n: config (user 65532:65532, entrypoint, workdir, labels, index names, images.env) via go-containerregistry validate and umoci" config_ok "$n"
  check "$n: rootfs has no shell, busybox or package manager; only the binary and its libraries are executable" rootfs_minimal "$n"
done

# push as docs/images.md says (crane push of the unpacked layout) into crane's own registry on loopback;
# crane validate then pulls every blob back and checks it, and the registry serves the digest we built.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
push_and_pull() {
  local port n ref
  port="$(free_port)"
  "$CRANE" registry serve --address "127.0.0.1:$port" >"$WORK/registry.log" 2>&1 &
  PIDS+=($!)
  curl -fsS --retry 100 --retry-delay 0 --retry-max-time 60 --retry-all-errors "http://127.0.0.1:$port/v2/"
  for n in edgewire-operator edgewire-agent; do
    ref="127.0.0.1:$port/edgewire/$n:$VERSION"
    "$CRANE" push --insecure "$WORK/$n/layout" "$ref"
    "$CRANE" validate --insecure --remote "$ref"
    [ "$("$CRANE" digest --insecure "$ref")" = "$(env_of "$n" DIGEST)" ]
    "$CRANE" config --insecure "$ref" | python3 -c 'import json, sys; c = json.load(sys.stdin)["config"]; assert c["User"] == "65532:65532", c'
    echo "$ref: pushed, validated, digest $(env_of "$n" DIGEST)"
  done
}
check "crane push of each layout to a registry on loopback; crane validate --remote; the registry serves our digest" push_and_pull

# --- the image runs by itself ---------------------------------------------------------------------
# in_image ROOTFS CMD...: CMD in a chroot as the image's user, with only the image's environment.
in_image() {
  local rootfs="$1"
  shift
  env -i PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt HOME=/home/nonroot \
    "$CHROOT" --userspec=65532:65532 "$rootfs" "$@"
}

# loads ROOTFS BINARY: the rootfs's own loader resolves every library of BINARY inside the rootfs, and the
# binary starts (--version). The check run on the good rootfs and on the broken one below.
loads() {
  local rootfs="$1" bin="$2" interp
  interp="$(readelf -l "$rootfs$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
  local rc=0
  in_image "$rootfs" "$interp" --list "$bin" >"$WORK/list.txt" 2>&1 || rc=$?
  cat "$WORK/list.txt"
  if [ "$rc" -ne 0 ] || grep -q "not found" "$WORK/list.txt"; then return 1; fi
  in_image "$rootfs" "$bin" --version
}

OP_ROOTFS="$WORK/edgewire-operator/bundle/rootfs"
AG_ROOTFS="$WORK/edgewire-agent/bundle/rootfs"
check "edgewire-operator: every library resolves inside its rootfs; --version runs as 65532" \
  loads "$OP_ROOTFS" /usr/local/bin/edgewire-operator
check "edgewire-agent: every library resolves inside its rootfs; --version runs as 65532" \
  loads "$AG_ROOTFS" /usr/local/bin/edgewire-agent
operator_help() {
  in_image "$OP_ROOTFS" /usr/local/bin/edgewire-operator --help >"$WORK/help.txt"
  cat "$WORK/help.txt"
  grep -q "render" "$WORK/help.txt"
}
check "edgewire-operator --help in the image" operator_help

render_sample() {
  install -m 0644 "$ROOT/config/samples/$SAMPLE" "$OP_ROOTFS/tmp/$SAMPLE"
  in_image "$OP_ROOTFS" /usr/local/bin/edgewire-operator render -f "/tmp/$SAMPLE" >"$WORK/render.yaml"
  rm -f "$OP_ROOTFS/tmp/$SAMPLE"
  head -n 40 "$WORK/render.yaml"
  python3 - "$WORK/render.yaml" "ghcr.io/edgewire/edgewire-agent:$VERSION" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = sorted({d["kind"] for d in docs})
assert "Deployment" in kinds and "StatefulSet" in kinds, kinds
images = [c["image"] for d in docs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]]
assert sys.argv[2] in images, f"publisher image {sys.argv[2]} not in {images}"
print(f"rendered {len(docs)} objects: {kinds}")
PY
}
check "edgewire-operator render -f $SAMPLE in the image (publisher on the agent image $VERSION)" render_sample

publisher_delivers() {
  local nats_port http_port event_id
  nats_port="$(free_port)"
  http_port="$(free_port)"
  nats-server -a 127.0.0.1 -p "$nats_port" >"$WORK/nats.log" 2>&1 &
  PIDS+=($!)
  echo "nats-server pid $! on 127.0.0.1:$nats_port"
  # The subscriber (a few lines of NATS protocol) subscribes, waits for the server's PONG so the
  # subscription is in place, says READY, then waits up to 60 s for one message.
  python3 - "$nats_port" >"$WORK/sub.log" 2>&1 <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
f = s.makefile("rb")
assert f.readline().startswith(b"INFO "), "no INFO from nats-server"
s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":false}\r\nSUB edge.> 1\r\nPING\r\n')
while True:
    line = f.readline()
    if line.startswith(b"PONG"):
        break
    assert not line.startswith(b"-ERR"), line
print("READY", flush=True)
while True:
    line = f.readline()
    assert line, "connection closed before a message arrived"
    if line.startswith(b"PING"):
        s.sendall(b"PONG\r\n")
        continue
    if line.startswith(b"HMSG ") or line.startswith(b"MSG "):
        parts = line.split()
        total = int(parts[-1])
        payload = f.read(total + 2)[:total]
        print("SUBJECT", parts[1].decode(), flush=True)
        print("PAYLOAD", payload.decode(errors="replace"), flush=True)
        sys.exit(0)
PY
  local sub=$!
  PIDS+=("$sub")
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q READY "$WORK/sub.log" && break
    kill -0 "$sub" 2>/dev/null || { cat "$WORK/sub.log"; return 1; }
    sleep 0.1
  done
  grep -q READY "$WORK/sub.log"
  env -i PATH=/usr/local/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt HOME=/home/nonroot \
    EVENT_BROKER_ENABLED=true EVENT_BROKER_ADAPTER=nats EVENT_BROKER_NATS_URLS="nats://127.0.0.1:$nats_port" \
    CORE_NAME=image-test EDGEWIRE_LISTEN="127.0.0.1:$http_port" EDGEWIRE_LOG_FORMAT=text \
    "$CHROOT" --userspec=65532:65532 "$AG_ROOTFS" /usr/local/bin/edgewire-agent publisher >"$WORK/publisher.log" 2>&1 &
  local pub=$!
  PIDS+=("$pub")
  echo "publisher pid $pub on 127.0.0.1:$http_port"
  # /healthz: the process serves; /readyz: connected to nats-server. Bounded retries, each answered or refused.
  curl -fsS --retry 100 --retry-delay 0 --retry-max-time 60 --retry-all-errors "http://127.0.0.1:$http_port/healthz" || { cat "$WORK/publisher.log"; return 1; }
  echo
  curl -fsS --retry 100 --retry-delay 0 --retry-max-time 60 --retry-all-errors "http://127.0.0.1:$http_port/readyz" || { cat "$WORK/publisher.log"; return 1; }
  echo
  event_id="image-test-$RANDOM$RANDOM"
  curl -fsS -i "http://127.0.0.1:$http_port/" -H 'ce-specversion: 1.0' -H "ce-id: $event_id" -H 'ce-source: /image-test' \
    -H 'ce-type: edge.image.tested' -H 'content-type: application/json' -d "{\"id\":\"$event_id\"}"
  wait "$sub"
  cat "$WORK/sub.log"
  grep -qx "SUBJECT edge.image.tested" "$WORK/sub.log"
  grep -q "ce-id: $event_id" "$WORK/sub.log"
  grep -q "{\"id\":\"$event_id\"}" "$WORK/sub.log"
  kill "$pub"
  wait "$pub" || true
  echo "publisher log:"
  cat "$WORK/publisher.log"
}
check "edgewire-agent publisher in the image: /healthz, /readyz, an event reaches a NATS subscriber on loopback" publisher_delivers

# --- the check can fail ---------------------------------------------------------------------------
missing_library_refused() {
  local broken="$WORK/broken-rootfs" lib
  cp -a "$AG_ROOTFS" "$broken"
  # The first library the agent needs by name (readelf -d) other than libc: libssl, libz, libgcc_s...
  lib="$(readelf -d "$broken/usr/local/bin/edgewire-agent" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -v -E '^(libc|ld-linux)' | head -1)"
  [ -n "$lib" ] || { echo "the agent needs no library but libc: nothing to remove"; return 1; }
  local path
  path="$(find "$broken" -name "$lib" \( -type f -o -type l \) | head -1)"
  [ -n "$path" ] || { echo "$lib not found in the rootfs"; return 1; }
  rm -f "$(readlink -f "$path")" "$path"
  echo "removed $lib (${path#"$broken"}) from a copy of the agent's rootfs"
  if loads "$broken" /usr/local/bin/edgewire-agent >"$WORK/broken.log" 2>&1; then
    cat "$WORK/broken.log"
    echo "the check passed on a rootfs without $lib"
    return 1
  fi
  cat "$WORK/broken.log"
  # ld.so --list says "LIB => not found" for a library needed indirectly, and stops at a direct one.
  grep -q -E "$lib( => not found|: cannot open shared object file)" "$WORK/broken.log"
  # And the binary itself does not start there.
  if in_image "$broken" /usr/local/bin/edgewire-agent --version >"$WORK/run.log" 2>&1; then
    echo "edgewire-agent started without $lib"
    return 1
  fi
  cat "$WORK/run.log"
  grep -q "error while loading shared libraries: $lib" "$WORK/run.log"
  echo "refused as expected"
}
check "a rootfs missing one library is refused (the loader cannot resolve it; the binary does not start)" missing_library_refused

# --- sizes ----------------------------------------------------------------------------------------
for n in edgewire-operator edgewire-agent; do
  compressed="$(stat -c %s "$WORK/a/$n.oci.tar")"
  unpacked="$(du -sb "$WORK/$n/bundle/rootfs" | cut -f1)"
  echo "size $n ($PROFILE): archive $(numfmt --to=iec-i --suffix=B "$compressed") ($compressed B), unpacked $(numfmt --to=iec-i --suffix=B "$unpacked") ($unpacked B), digest $(env_of "$n" DIGEST)"
done

echo "image-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
