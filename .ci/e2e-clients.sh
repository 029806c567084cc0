#!/usr/bin/env bash
# End-to-end pulls through Stowage with real clients: containerd (ctr),
# skopeo, crane, podman and regctl, against a real distribution registry upstream on
# loopback. Then: a stock registry over Stowage's cache root serves the cached
# image, and with the upstream stopped the cache still serves pulls.
#
# Usage: .ci/e2e-clients.sh     (root or sudo for missing Debian packages)
# Env:   see .ci/lib.sh (STOWAGE_TOOLS_DIR, STOWAGE_BIN, KEEP_WORK=1)
# Prints one PASS/FAIL/SKIP line per check and "N passed, N failed".
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lib_init e2e-clients
start=$SECONDS

step "tools"
apt_need curl:curl jq:jq skopeo:skopeo containerd:containerd ctr:containerd htpasswd:apache2-utils
need_registry
need_crane
need_regctl
build_stowage
crane() { "$CRANE" "$@"; }

UP=$(free_port)
SP=$(free_port)
upstream="127.0.0.1:$UP"
stowage="127.0.0.1:$SP"

step "upstream registry on $upstream"
start_registry upstream "$WORK/upstream" "$UP"
UPSTREAM_PID=$BG_PID

# ------------------------------------------------------------------ seed
step "seeding images"
# make_layer OUT NAME KB: a gzipped tar holding one file of random bytes.
make_layer() {
  local d="$WORK/layers/$2"
  mkdir -p "$d/files"
  head -c "$(($3 * 1024))" /dev/urandom >"$d/files/$2.bin"
  tar -C "$d/files" --owner=0 --group=0 --numeric-owner -czf "$1" "$2.bin"
}
mkdir -p "$WORK/layers"
for l in a:700 b:300 c:150 d:64 e:96 f:80 g:40; do
  make_layer "$WORK/layers/${l%%:*}.tgz" "${l%%:*}" "${l#*:}"
done
L="$WORK/layers"
{
  # Docker schema 2 image, three layers (crane's empty base is Docker-typed).
  crane append --insecure -f "$L/a.tgz" -f "$L/b.tgz" -f "$L/c.tgz" -t "$upstream/library/app:v1-unplatformed"
  crane mutate --insecure --set-platform linux/amd64 -t "$upstream/library/app:v1" "$upstream/library/app:v1-unplatformed"
  # OCI image, two layers.
  crane append --insecure --oci-empty-base -f "$L/d.tgz" -f "$L/e.tgz" -t "$upstream/org/oci:v1-unplatformed"
  crane mutate --insecure --set-platform linux/amd64 -t "$upstream/org/oci:v1" "$upstream/org/oci:v1-unplatformed"
  # Multi-arch OCI index: linux/amd64 + linux/arm64.
  crane append --insecure --oci-empty-base -f "$L/f.tgz" -t "$upstream/org/multi-parts:amd64-unplatformed"
  crane mutate --insecure --set-platform linux/amd64 -t "$upstream/org/multi-parts:amd64" "$upstream/org/multi-parts:amd64-unplatformed"
  crane append --insecure --oci-empty-base -f "$L/g.tgz" -t "$upstream/org/multi-parts:arm64-unplatformed"
  crane mutate --insecure --set-platform linux/arm64 -t "$upstream/org/multi-parts:arm64" "$upstream/org/multi-parts:arm64-unplatformed"
  crane index append --insecure -t "$upstream/org/multi:v1" \
    -m "$upstream/org/multi-parts:amd64" -m "$upstream/org/multi-parts:arm64"
} >"$WORK/logs/seed.log" 2>&1 || { cat "$WORK/logs/seed.log" >&2; die "seeding failed"; }

declare -A UPD   # upstream digests
for ref in library/app:v1 org/oci:v1 org/multi:v1; do
  UPD[$ref]=$(crane digest --insecure "$upstream/$ref")
  log "upstream $ref = ${UPD[$ref]} ($(crane manifest --insecure "$upstream/$ref" | jq -r .mediaType))"
done

step "stowage on $stowage"
STOWAGE_ROOT="$WORK/cache"
start_stowage stowage "$SP" --root "$STOWAGE_ROOT" \
  --upstream "docker.io=http://$upstream" --upstream "ghcr.io=http://$upstream" \
  --default-upstream docker.io
STOWAGE_PID=$BG_PID

# ------------------------------------------------------------------ containerd
step "containerd"
run_containerd() {
  local d="$WORK/containerd" sock snap
  mkdir -p "$d/root" "$d/state" "$d/opt" "$d/hosts/docker.io" "$d/hosts/ghcr.io"
  sock="$d/containerd.sock"
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
EOF
  for h in docker.io ghcr.io; do
    # server = the mirror too, so that nothing ever leaves loopback.
    cat >"$d/hosts/$h/hosts.toml" <<EOF
server = "http://$stowage"

[host."http://$stowage"]
  capabilities = ["pull", "resolve"]
EOF
  done
  bg_start containerd containerd --config "$d/config.toml"
  local cpid=$BG_PID
  if ! wait_file "$sock" 20 || ! timeout 10 ctr --address "$sock" version >/dev/null 2>&1; then
    skip "containerd: daemon did not start in this environment: $(tail -n 3 "$WORK/logs/containerd.log" | tr '\n' ' ')"
    stop_pid "$cpid"
    return 0
  fi
  # overlayfs when the kernel lets us (root, not nested in overlay), else native.
  snap=native
  if ctr --address "$sock" plugins ls 2>/dev/null | grep -Eq 'snapshotter\.v1[[:space:]]+overlayfs[[:space:]].*[[:space:]]ok'; then
    snap=overlayfs
  fi
  log "containerd snapshotter: $snap"
  c() { timeout 120 ctr --address "$sock" --namespace stowage-e2e "$@"; }
  local ref name got
  for ref in docker.io/library/app:v1 ghcr.io/org/oci:v1 docker.io/org/multi:v1; do
    name=${ref#*/}          # upstream repository:tag
    if c images pull --hosts-dir "$d/hosts" --snapshotter "$snap" "$ref" >"$WORK/logs/ctr-pull-${name//[\/:]/_}.log" 2>&1 ||
       { [[ $snap == overlayfs ]] && snap=native && log "overlayfs unpack failed; retrying with native" &&
         c images pull --hosts-dir "$d/hosts" --snapshotter native "$ref" >"$WORK/logs/ctr-pull-${name//[\/:]/_}.log" 2>&1; }; then
      pass "containerd: ctr images pull $ref (snapshotter $snap)"
    else
      fail "containerd: ctr images pull $ref"
      tail -n 8 "$WORK/logs/ctr-pull-${name//[\/:]/_}.log" | sed 's/^/    | /'
      continue
    fi
    got=$(c images ls "name==$ref" | awk 'NR==2 {print $3}')
    check_eq "containerd: digest of $ref equals upstream" "${UPD[$name]}" "$got"
  done
  c images rm docker.io/library/app:v1 ghcr.io/org/oci:v1 docker.io/org/multi:v1 >/dev/null 2>&1 || true
  stop_pid "$cpid"
}
if command -v containerd >/dev/null && command -v ctr >/dev/null; then
  run_containerd
else
  skip "containerd: not installed"
fi

# ------------------------------------------------------------------ skopeo
step "skopeo"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$WORK/policy.json"
mkdir -p "$WORK/tmp"
sk() { TMPDIR="$WORK/tmp" timeout 120 skopeo --policy "$WORK/policy.json" "$@"; }
skopeo_checks() {
  local label=$1
  check "skopeo$label: copy docker://$stowage/library/app:v1 -> oci:" \
    sk copy --src-tls-verify=false "docker://$stowage/library/app:v1" "oci:$WORK/skopeo-app$label:v1"
  check "skopeo$label: copy docker://$stowage/ghcr.io/org/oci:v1 -> oci: (path-prefix upstream)" \
    sk copy --src-tls-verify=false "docker://$stowage/ghcr.io/org/oci:v1" "oci:$WORK/skopeo-oci$label:v1"
  # An OCI image is copied unchanged: the layout's manifest is the upstream's.
  check_eq "skopeo$label: OCI layout manifest digest equals upstream (ghcr.io/org/oci:v1)" "${UPD[org/oci:v1]}" \
    "$(jq -r '.manifests[0].digest' "$WORK/skopeo-oci$label/index.json" 2>/dev/null || true)"
  local ref
  for ref in library/app:v1 ghcr.io/org/oci:v1 org/multi:v1; do
    check_eq "skopeo$label: inspect --raw digest of $ref equals upstream" "${UPD[${ref#ghcr.io/}]}" \
      "sha256:$(sk inspect --tls-verify=false --raw "docker://$stowage/$ref" 2>"$WORK/logs/skopeo-inspect.log" | sha256sum | cut -d' ' -f1)"
  done
}
skopeo_checks ""
check "skopeo: copy --all of the multi-arch index" \
  sk copy --all --src-tls-verify=false "docker://$stowage/org/multi:v1" "oci:$WORK/skopeo-multi:v1"

# ------------------------------------------------------------------ crane
step "crane"
crane_checks() {
  local label=$1 ref
  check "crane$label: pull library/app:v1" crane pull --insecure "$stowage/library/app:v1" "$WORK/crane-app$label.tar"
  check "crane$label: validate --remote library/app:v1 (every blob re-hashed)" \
    crane validate --insecure --remote "$stowage/library/app:v1"
  for ref in library/app:v1 ghcr.io/org/oci:v1 org/multi:v1; do
    check_eq "crane$label: digest of $ref equals upstream" "${UPD[${ref#ghcr.io/}]}" \
      "$(crane digest --insecure "$stowage/$ref" 2>"$WORK/logs/crane-digest.log" || true)"
    check "crane$label: manifest of $ref byte-equal to upstream" \
      cmp <(crane manifest --insecure "$stowage/$ref") "$WORK/upstream-manifest-${ref//[\/:]/_}"
  done
}
for ref in library/app:v1 ghcr.io/org/oci:v1 org/multi:v1; do
  crane manifest --insecure "$upstream/${ref#ghcr.io/}" >"$WORK/upstream-manifest-${ref//[\/:]/_}"
done
crane_checks ""
check "crane: pull --platform linux/arm64 org/multi:v1" \
  crane pull --insecure --platform linux/arm64 "$stowage/org/multi:v1" "$WORK/crane-multi-arm64.tar"
check "crane: ls library/app lists v1" bash -c "'$CRANE' ls --insecure '$stowage/library/app' | grep -qx v1"
check "crane: ls ghcr.io/org/oci lists v1" bash -c "'$CRANE' ls --insecure '$stowage/ghcr.io/org/oci' | grep -qx v1"
catalog=$(crane catalog --insecure "$stowage" 2>"$WORK/logs/crane-catalog.log" || true)
for repo in docker.io/library/app ghcr.io/org/oci docker.io/org/multi; do
  check_eq "crane: catalog lists $repo" "$repo" "$(grep -x "$repo" <<<"$catalog" || true)"
done

# ------------------------------------------------------------------ podman
step "podman"
if command -v podman >/dev/null 2>&1 || apt_need podman:podman; then
  P="$WORK/podman"
  mkdir -p "$P/root" "$P/run"
  # The mirror form users write: the upstream host as a path prefix. With no
  # network beyond loopback, a pull can only succeed through the mirror.
  cat >"$P/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "$stowage/docker.io"
insecure = true
[[registry]]
prefix = "ghcr.io"
location = "ghcr.io"
[[registry.mirror]]
location = "$stowage/ghcr.io"
insecure = true
EOF
  pm() {
    CONTAINERS_REGISTRIES_CONF="$P/registries.conf" timeout 180 podman --root "$P/root" --runroot "$P/run" \
      --storage-driver vfs --cgroup-manager cgroupfs --events-backend file "$@"
  }
  for ref in docker.io/library/app:v1 ghcr.io/org/oci:v1; do
    check "podman: pull $ref through the registries.conf mirror" pm pull -q "$ref"
    short=${ref#docker.io/}; short=${short#ghcr.io/}
    check_eq "podman: digest of $ref equals upstream" "${UPD[$short]}" \
      "$(pm image inspect --format '{{.Digest}}' "$ref" 2>/dev/null || true)"
  done
else
  skip "podman: not installable here"
fi

# ------------------------------------------------------------------ regctl
step "regctl"
mkdir -p "$WORK/regctl-home"
rc() { HOME="$WORK/regctl-home" timeout 120 "$REGCTL" "$@"; }
check "regctl: registry set --tls disabled $stowage" rc registry set --tls disabled "$stowage"
for ref in library/app:v1 ghcr.io/org/oci:v1 org/multi:v1; do
  check_eq "regctl: image digest of $ref equals upstream" "${UPD[${ref#ghcr.io/}]}" \
    "$(rc image digest "$stowage/$ref" 2>"$WORK/logs/regctl-digest.log" || true)"
done
check "regctl: image copy org/multi:v1 -> ocidir:// (all platforms)" \
  rc image copy "$stowage/org/multi:v1" "ocidir://$WORK/regctl-multi:v1"
check_eq "regctl: ocidir copy digest equals upstream" "${UPD[org/multi:v1]}" \
  "$(rc image digest "ocidir://$WORK/regctl-multi:v1" 2>/dev/null || true)"
check "regctl: image export library/app:v1" rc image export "$stowage/library/app:v1" "$WORK/regctl-app.tar"

# ------------------------------------------------------------------ client authentication
step "client authentication (auth.htpasswd)"
AP=$(free_port)
authed="127.0.0.1:$AP"
htpasswd -nbB e2e-user 'e2e-pass' >"$WORK/htpasswd"
printf 'auth:\n  htpasswd: %s\n' "$WORK/htpasswd" >"$WORK/auth.yaml"
start_stowage stowage-auth "$AP" --config "$WORK/auth.yaml" --root "$WORK/cache-auth" \
  --upstream "docker.io=http://$upstream" --default-upstream docker.io
AUTH_PID=$BG_PID
hdrs=$(curl -sS -i --max-time 10 "http://$authed/v2/" | tr -d '\r' || true)
check_eq "auth: /v2/ without credentials -> 401" 401 "$(awk 'NR==1 {print $2}' <<<"$hdrs")"
check_eq "auth: WWW-Authenticate is Basic" 'Basic realm="stowage"' \
  "$(awk -F': ' 'tolower($1)=="www-authenticate" {print $2}' <<<"$hdrs")"
check_eq "auth: wrong password -> 401" 401 \
  "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -u e2e-user:wrong "http://$authed/v2/library/app/manifests/v1")"
check_eq "auth: /healthz stays open" 200 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$authed/healthz")"
check_eq "auth: /metrics stays open" 200 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$authed/metrics")"
check "crane (auth): pull without credentials is refused" \
  bash -c "! DOCKER_CONFIG='$WORK/docker-none' '$CRANE' pull --insecure '$authed/library/app:v1' '$WORK/crane-noauth.tar'"
check "crane (auth): auth login" \
  env DOCKER_CONFIG="$WORK/docker-auth" "$CRANE" auth login "$authed" -u e2e-user -p e2e-pass
check "crane (auth): pull library/app:v1 with the stored login" \
  env DOCKER_CONFIG="$WORK/docker-auth" "$CRANE" pull --insecure "$authed/library/app:v1" "$WORK/crane-auth.tar"
check "crane (auth): validate --remote (every blob re-hashed)" \
  env DOCKER_CONFIG="$WORK/docker-auth" "$CRANE" validate --insecure --remote "$authed/library/app:v1"
check "skopeo (auth): copy with --src-creds" \
  sk copy --src-tls-verify=false --src-creds e2e-user:e2e-pass "docker://$authed/library/app:v1" "oci:$WORK/skopeo-auth:v1"
check "skopeo (auth): inspect with a wrong password is refused" \
  bash -c "! TMPDIR='$WORK/tmp' timeout 60 skopeo --policy '$WORK/policy.json' inspect --tls-verify=false --creds e2e-user:wrong 'docker://$authed/library/app:v1'"
check_eq "skopeo (auth): inspect --raw --username/--password digest equals upstream" "${UPD[library/app:v1]}" \
  "sha256:$(sk inspect --tls-verify=false --username e2e-user --password e2e-pass --raw "docker://$authed/library/app:v1" 2>"$WORK/logs/skopeo-auth.log" | sha256sum | cut -d' ' -f1)"
stop_pid "$AUTH_PID"

# ------------------------------------------------------------------ registry over the cache root
step "stock registry over Stowage's cache root"
P2=$(free_port)
start_registry cache-reader "$STOWAGE_ROOT" "$P2" readonly
check_eq "registry over cache root: digest of docker.io/library/app:v1 equals upstream" "${UPD[library/app:v1]}" \
  "$(crane digest --insecure "127.0.0.1:$P2/docker.io/library/app:v1" 2>"$WORK/logs/reader-digest.log" || true)"
check_eq "registry over cache root: digest of ghcr.io/org/oci:v1 equals upstream" "${UPD[org/oci:v1]}" \
  "$(crane digest --insecure "127.0.0.1:$P2/ghcr.io/org/oci:v1" 2>/dev/null || true)"
check "registry over cache root: validate --remote docker.io/library/app:v1 (blobs served)" \
  crane validate --insecure --remote "127.0.0.1:$P2/docker.io/library/app:v1"
stop_pid "$BG_PID"

# ------------------------------------------------------------------ upstream down
step "upstream stopped: served from cache"
stop_pid "$UPSTREAM_PID"
if curl -s -o /dev/null --max-time 2 "http://$upstream/v2/"; then die "upstream still answers"; fi
crane_checks " (upstream down)"
check "crane (upstream down): ls library/app lists v1 (local tags)" \
  bash -c "'$CRANE' ls --insecure '$stowage/library/app' | grep -qx v1"
check "skopeo (upstream down): copy docker://$stowage/library/app:v1 -> oci:" \
  sk copy --src-tls-verify=false "docker://$stowage/library/app:v1" "oci:$WORK/skopeo-app-down:v1"
check "skopeo (upstream down): copy docker://$stowage/ghcr.io/org/oci:v1 -> oci:" \
  sk copy --src-tls-verify=false "docker://$stowage/ghcr.io/org/oci:v1" "oci:$WORK/skopeo-oci-down:v1"
# containerd's first request: HEAD by tag with ?ns=; it needs these headers.
hdrs=$(curl -sS -I --max-time 10 \
  -H 'Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*' \
  "http://$stowage/v2/org/oci/manifests/v1?ns=ghcr.io" | tr -d '\r' || true)
check_eq "HEAD ?ns=ghcr.io (upstream down): status" "200" "$(awk 'NR==1 {print $2}' <<<"$hdrs")"
check_eq "HEAD ?ns=ghcr.io (upstream down): Docker-Content-Digest" "${UPD[org/oci:v1]}" \
  "$(awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}' <<<"$hdrs")"
check_eq "HEAD ?ns=ghcr.io (upstream down): Content-Type" "application/vnd.oci.image.manifest.v1+json" \
  "$(awk -F': ' 'tolower($1)=="content-type" {print $2}' <<<"$hdrs")"
check_eq "HEAD ?ns=ghcr.io (upstream down): Content-Length" "$(wc -c <"$WORK/upstream-manifest-ghcr.io_org_oci_v1" | tr -d ' ')" \
  "$(awk -F': ' 'tolower($1)=="content-length" {print $2}' <<<"$hdrs")"

# Only configured or preset upstreams are ever contacted: an unknown ns is an
# error, never an open proxy.
check_eq "unknown ?ns=registry.invalid is refused (4xx)" 4 \
  "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$stowage/v2/org/oci/manifests/v1?ns=registry.invalid" | cut -c1)"
check_eq "write verbs are refused: PUT manifest -> 405" 405 \
  "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
     --data-binary @"$WORK/upstream-manifest-ghcr.io_org_oci_v1" "http://$stowage/v2/library/app/manifests/v2")"
check "stowage still running" kill -0 "$STOWAGE_PID"
errs=$(grep -c 'level=ERROR' "$WORK/logs/stowage.log" || true)
log "stowage log: $errs ERROR lines (see KEEP_WORK=1 $WORK/logs/stowage.log)"

printf '\ne2e-clients: %ss\n' "$((SECONDS - start))"
summary
