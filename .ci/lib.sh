# shellcheck shell=bash
# Shared helpers for the end-to-end scripts (.ci/e2e-*.sh) and bench/.
# Source it from a script that runs with `set -euo pipefail`:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"     (or ../.ci/lib.sh from bench/)
#   lib_init e2e-clients          # temp dir $WORK, EXIT/INT/TERM traps
#
# Everything listens on 127.0.0.1 only. Every wait is bounded in tries and time.
# Tools come from the Go module proxy (pinned, built once into a cache dir) or
# from Debian packages (installed only when missing); nothing else is fetched.
#
# Env:
#   STOWAGE_TOOLS_DIR   tool cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/stowage-tools)
#   STOWAGE_BIN         use this stowage binary instead of building one
#   KEEP_WORK=1         keep the temp dir (logs, caches) after the run

LIB_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_DIR="${STOWAGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stowage-tools}"
TOOLS_BIN="$TOOLS_DIR/bin"

# Pinned tool versions (Go modules).
REGISTRY_VERSION=v3.1.2   # github.com/distribution/distribution/v3/cmd/registry
CRANE_VERSION=v0.22.1     # github.com/google/go-containerregistry/cmd/crane
REGCTL_VERSION=v0.11.7    # github.com/regclient/regclient/cmd/regctl
# The OCI distribution-spec conformance suite: its own module with no tags;
# this pseudo-version is main as of 2026-08-31 (commit 97274622c111).
CONFORMANCE_MODULE=github.com/opencontainers/distribution-spec/conformance
CONFORMANCE_VERSION=v0.0.0-20260831232431-97274622c111
# SeaweedFS (Apache-2.0), an S3-compatible server for the object-storage
# tests: no tags on the proxy; this pseudo-version is master as of 2026-11-09.
WEED_MODULE=github.com/seaweedfs/seaweedfs
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6

# ---------------------------------------------------------------- logging

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
step() { printf '\n== %s\n' "$*" >&2; }
die()  { printf 'FATAL: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------- results

LIB_PASSED=0
LIB_FAILED=0
LIB_SKIPPED=0
LIB_FAILURES=()

pass() { LIB_PASSED=$((LIB_PASSED + 1)); printf 'PASS %s\n' "$*"; }
fail() { LIB_FAILED=$((LIB_FAILED + 1)); LIB_FAILURES+=("$*"); printf 'FAIL %s\n' "$*"; }
skip() { LIB_SKIPPED=$((LIB_SKIPPED + 1)); printf 'SKIP %s\n' "$*"; }

# check NAME CMD...: runs CMD (output to $WORK/logs/check-N.log); PASS if it
# exits 0, else FAIL with the tail of its output.
LIB_CHECK_N=0
check() {
  local name=$1; shift
  LIB_CHECK_N=$((LIB_CHECK_N + 1))
  local out="$WORK/logs/check-$LIB_CHECK_N.log"
  if "$@" >"$out" 2>&1; then
    pass "$name"
  else
    fail "$name"
    sed 's/^/    | /' "$out" | tail -n 15
  fi
}

# check_eq NAME WANT GOT
check_eq() {
  if [[ -n "$2" && "$2" == "$3" ]]; then
    pass "$1"
  else
    fail "$1 (want '$2', got '$3')"
  fi
}

# summary: prints "N passed, N failed" and returns non-zero on any failure.
summary() {
  local f
  echo
  for f in "${LIB_FAILURES[@]+"${LIB_FAILURES[@]}"}"; do echo "  failed: $f"; done
  local extra=""
  ((LIB_SKIPPED > 0)) && extra=", $LIB_SKIPPED skipped"
  printf '%d passed, %d failed%s\n' "$LIB_PASSED" "$LIB_FAILED" "$extra"
  ((LIB_FAILED == 0))
}

# ---------------------------------------------------------------- lifecycle

LIB_PIDS=()          # background processes started by bg_start, in order
LIB_CLEANUPS=()      # extra commands run at exit (before the temp dir goes)

# lib_init NAME: creates $WORK (temp dir) with logs/, installs the traps.
lib_init() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/stowage-$1.XXXXXX")
  mkdir -p "$WORK/logs"
  trap lib_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  export OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none
  # Never let a proxy setting of the caller capture loopback test traffic.
  unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy
  export NO_PROXY=127.0.0.1,localhost,::1 no_proxy=127.0.0.1,localhost,::1
}

on_exit() { LIB_CLEANUPS+=("$*"); }

lib_cleanup() {
  local rc=$? i pid
  set +e
  for ((i = ${#LIB_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${LIB_CLEANUPS[$i]}" >/dev/null 2>&1
  done
  for ((i = ${#LIB_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${LIB_PIDS[$i]}"
  done
  if [[ -n "${WORK:-}" && -d "$WORK" ]]; then
    if [[ "${KEEP_WORK:-}" == 1 || ( $rc -ne 0 && "${KEEP_WORK_ON_FAIL:-1}" == 1 && -n "${CI:-}" ) ]]; then
      echo "kept $WORK" >&2
    else
      # containerd's native snapshots and squid may leave read-only or
      # foreign-owned files; make them removable first.
      chmod -R u+rwX "$WORK" 2>/dev/null
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}

# bg_start NAME CMD...: starts CMD in the background, output to
# $WORK/logs/NAME.log; sets BG_PID. Stopped at exit (or with stop_pid).
bg_start() {
  local name=$1; shift
  "$@" >"$WORK/logs/$name.log" 2>&1 &
  BG_PID=$!
  LIB_PIDS+=("$BG_PID")
  log "started $name (pid $BG_PID)"
}

# stop_pid PID: TERM, wait up to 10 s, then KILL. Only our own children.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- network

# free_port: prints a free TCP port on 127.0.0.1.
free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  # Fallback: a random port in the ephemeral range that ss shows unused.
  local p i
  for ((i = 0; i < 50; i++)); do
    p=$((20000 + RANDOM % 30000))
    if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return; fi
  done
  die "no free port found"
}

# wait_url URL [SECONDS] [PID]: waits until URL answers with any HTTP status
# (curl exit 0 and a status code), at most SECONDS (default 30). With PID,
# gives up early if that process died.
wait_url() {
  local url=$1 secs=${2:-30} pid=${3:-} i code
  for ((i = 0; i < secs * 10; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null || true)
    if [[ -n "$code" && "$code" != 000 ]]; then return 0; fi
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      log "process $pid exited while waiting for $url"
      return 1
    fi
    sleep 0.1
  done
  log "timed out after ${secs}s waiting for $url"
  return 1
}

# wait_file PATH [SECONDS]: waits for PATH to exist (a socket, a pid file).
wait_file() {
  local path=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    [[ -e "$path" ]] && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- tools

# apt_need CMD:PACKAGE...: installs the Debian packages whose command is
# missing (apt-get update once per run, quiet, no service start).
LIB_APT_UPDATED=
apt_need() {
  local spec missing=()
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
  done
  ((${#missing[@]} == 0)) && return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
    sudo=(sudo)
  fi
  log "installing Debian packages: ${missing[*]}"
  if [[ -z "$LIB_APT_UPDATED" ]]; then
    "${sudo[@]}" apt-get update -qq >/dev/null
    LIB_APT_UPDATED=1
  fi
  # Packages such as nginx and squid start a system service on install
  # (listening on all interfaces); forbid that while we install.
  local policy=/usr/sbin/policy-rc.d added=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    added=1
  fi
  local rc=0
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >"${WORK:-/tmp}/apt-install.log" 2>&1 || rc=$?
  [[ -n $added ]] && "${sudo[@]}" rm -f "$policy"
  if ((rc != 0)); then
    tail -n 20 "${WORK:-/tmp}/apt-install.log" >&2
    die "apt-get install ${missing[*]} failed"
  fi
}

# go_tool NAME MODULE/PATH VERSION: prints the path of a pinned Go tool,
# building it with `go install` into $TOOLS_BIN/NAME-VERSION on first use.
go_tool() {
  local name=$1 pkg=$2 version=$3
  local bin="$TOOLS_BIN/$name-$version"
  if [[ ! -x "$bin" ]]; then
    log "building $name $version (first run only)"
    mkdir -p "$TOOLS_BIN"
    local tmp
    tmp=$(mktemp -d "$TOOLS_DIR/.build-$name.XXXXXX")
    # Outside the repository, so that our go.mod takes no part.
    if ! (cd "$tmp" && GOFLAGS=-trimpath CGO_ENABLED=0 GOBIN="$tmp/bin" \
          go install "$pkg@$version") >"$tmp/build.log" 2>&1; then
      tail -n 20 "$tmp/build.log" >&2
      rm -rf "$tmp"
      die "go install $pkg@$version failed"
    fi
    mv -f "$tmp/bin/$(basename "$pkg")" "$bin"
    rm -rf "$tmp"
  fi
  echo "$bin"
}

# The tool paths are for the sourcing script.
# shellcheck disable=SC2034
need_registry() { REGISTRY=$(go_tool registry github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION"); }
# shellcheck disable=SC2034
need_crane()    { CRANE=$(go_tool crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION"); }
# need_conformance: sets CONFORMANCE to the OCI conformance suite, built once
# into $TOOLS_BIN from a temporary module that requires it (the module is a
# main package; its README builds it with `go build`).
# shellcheck disable=SC2034
need_conformance() {
  CONFORMANCE="$TOOLS_BIN/oci-conformance-$CONFORMANCE_VERSION"
  [[ -x "$CONFORMANCE" ]] && return 0
  log "building the OCI conformance suite $CONFORMANCE_VERSION (first run only)"
  mkdir -p "$TOOLS_BIN"
  local tmp
  tmp=$(mktemp -d "$TOOLS_DIR/.build-oci-conformance.XXXXXX")
  if ! (cd "$tmp" && go mod init oci-conformance-build && go get "$CONFORMANCE_MODULE@$CONFORMANCE_VERSION" &&
        GOFLAGS=-trimpath CGO_ENABLED=0 go build -o "$tmp/suite" "$CONFORMANCE_MODULE") >"$tmp/build.log" 2>&1; then
    tail -n 20 "$tmp/build.log" >&2
    rm -rf "$tmp"
    die "building $CONFORMANCE_MODULE@$CONFORMANCE_VERSION failed"
  fi
  mv -f "$tmp/suite" "$CONFORMANCE"
  rm -rf "$tmp"
}
# need_weed: sets WEED to the SeaweedFS server binary, built once into
# $TOOLS_BIN. Its go.mod has a replace directive, which `go install pkg@v`
# refuses; so it is built from a temporary module that requires it and
# repeats its replace lines (about 6 minutes on 2 cores, ~230 MB).
# shellcheck disable=SC2034
need_weed() {
  WEED="$TOOLS_BIN/weed-$WEED_VERSION"
  [[ -x "$WEED" ]] && return 0
  log "building SeaweedFS weed $WEED_VERSION (first run only, several minutes)"
  mkdir -p "$TOOLS_BIN"
  local tmp modfile
  tmp=$(mktemp -d "$TOOLS_DIR/.build-weed.XXXXXX")
  if ! (cd "$tmp" && go mod init weed-build &&
        modfile=$(go mod download -json "$WEED_MODULE@$WEED_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p') &&
        [[ -n "$modfile" ]] &&
        { grep -E '^replace ' "$modfile" >>go.mod || true; } &&
        go get "$WEED_MODULE/weed@$WEED_VERSION" &&
        GOFLAGS=-trimpath CGO_ENABLED=0 go build -o "$tmp/weed" "$WEED_MODULE/weed") >"$tmp/build.log" 2>&1; then
    tail -n 20 "$tmp/build.log" >&2
    rm -rf "$tmp"
    die "building $WEED_MODULE/weed@$WEED_VERSION failed"
  fi
  mv -f "$tmp/weed" "$WEED"
  rm -rf "$tmp"
}
# shellcheck disable=SC2034
need_regctl()   { REGCTL=$(go_tool regctl github.com/regclient/regclient/cmd/regctl "$REGCTL_VERSION"); }

# ---------------------------------------------------------------- services

# start_registry NAME ROOTDIR PORT [readonly]: a stock distribution registry
# (filesystem storage under ROOTDIR) on 127.0.0.1:PORT; sets BG_PID. With
# "readonly" it only reads ROOTDIR (no uploads, no upload purging): for
# serving a directory another process owns, e.g. Stowage's cache root.
start_registry() {
  local name=$1 dir=$2 port=$3 ro=false
  [[ "${4:-}" == readonly ]] && ro=true
  [[ -n "${REGISTRY:-}" ]] || need_registry
  mkdir -p "$dir"
  cat >"$WORK/$name.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: $ro
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
EOF
  bg_start "$name" "$REGISTRY" serve "$WORK/$name.yml"
  wait_url "http://127.0.0.1:$port/v2/" 30 "$BG_PID" || { tail -n 20 "$WORK/logs/$name.log" >&2; die "$name did not start"; }
}

# start_s3 NAME DIR BUCKET: a SeaweedFS server (need_weed) with its S3
# gateway on free 127.0.0.1 ports, data under DIR, one identity
# (S3_ACCESS_KEY/S3_SECRET_KEY) and BUCKET created; sets S3_ENDPOINT and
# BG_PID. The storage.s3 section for Stowage (or a registry) is then:
#   {bucket: BUCKET, region: us-east-1, regionendpoint: $S3_ENDPOINT,
#    forcepathstyle: true, secure: false, accesskey: ..., secretkey: ...}
S3_ACCESS_KEY=stowage
S3_SECRET_KEY=stowage-secret
start_s3() {
  local name=$1 dir=$2 bucket=$3 p i code
  [[ -n "${WEED:-}" ]] || need_weed
  mkdir -p "$dir"
  printf '{"identities":[{"name":"stowage","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
    "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$dir/s3.json"
  local ports=()
  for i in 1 2 3 4 5 6 7 8; do
    p=$(free_port)
    while [[ " ${ports[*]} " == *" $p "* ]]; do p=$(free_port); done
    ports+=("$p")
  done
  bg_start "$name" "$WEED" server -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
    -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" -volume.max=0 \
    -filer -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" -filer.localSocket="$dir/filer.sock" \
    -s3 -s3.port="${ports[6]}" -s3.port.grpc="${ports[7]}" -s3.localSocket="$dir/s3.sock" \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$dir/s3.json" \
    -master.telemetry=false -master.volumeSizeLimitMB=256
  S3_ENDPOINT="http://127.0.0.1:${ports[6]}"
  # Ready when the bucket and a first object are taken (the first write of
  # a fresh server takes seconds): at most 90 s.
  for ((i = 0; i < 900; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --aws-sigv4 "aws:amz:us-east-1:s3" \
      --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -X PUT "$S3_ENDPOINT/$bucket" 2>/dev/null || true)
    if [[ $code == 200 || $code == 409 ]]; then
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 15 --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        -X PUT --data-binary ready "$S3_ENDPOINT/$bucket/.ready" 2>/dev/null || true)
      [[ $code == 200 ]] && return 0
    fi
    kill -0 "$BG_PID" 2>/dev/null || { tail -n 20 "$WORK/logs/$name.log" >&2; die "$name exited"; }
    sleep 0.1
  done
  tail -n 20 "$WORK/logs/$name.log" >&2
  die "$name: S3 not ready after 90s"
}

# build_stowage: builds ./cmd/proxy once per run into $WORK/bin/stowage
# (or uses $STOWAGE_BIN); sets STOWAGE.
build_stowage() {
  if [[ -n "${STOWAGE_BIN:-}" ]]; then
    STOWAGE=$STOWAGE_BIN
    return
  fi
  [[ -n "${STOWAGE:-}" && -x "$STOWAGE" ]] && return
  mkdir -p "$WORK/bin"
  log "building stowage from $LIB_REPO_ROOT"
  (cd "$LIB_REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -o "$WORK/bin/stowage" ./cmd/proxy) \
    || die "go build ./cmd/proxy failed"
  STOWAGE="$WORK/bin/stowage"
}

# start_stowage NAME PORT ARGS...: `stowage serve --listen 127.0.0.1:PORT
# --log-format text ARGS...`; waits for /healthz; sets BG_PID.
start_stowage() {
  local name=$1 port=$2; shift 2
  [[ -n "${STOWAGE:-}" ]] || build_stowage
  bg_start "$name" "$STOWAGE" serve --listen "127.0.0.1:$port" --log-format text "$@"
  wait_url "http://127.0.0.1:$port/healthz" 30 "$BG_PID" || { tail -n 20 "$WORK/logs/$name.log" >&2; die "$name did not start"; }
}
