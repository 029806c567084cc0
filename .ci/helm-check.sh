#!/usr/bin/env bash
# Checks the Helm chart in deploy/helm/stowage:
#   1. builds helm from source with the Go toolchain (once; cached),
#   2. helm lint + helm template with the default values and each value set of
#      deploy/helm/ci/ (all-features, multi-replica, s3, tls),
#   3. go test in deploy/helm (a separate Go module): renders the chart with the
#      Helm SDK, decodes every object strictly into its Kubernetes API type and
#      loads the rendered Stowage config with the real config package.
#
# Usage: .ci/helm-check.sh            (from anywhere in the repository)
# Env:   HELM=/path/to/helm           use this helm instead of building one
#        STOWAGE_TOOLS_DIR=...        cache dir (default ${XDG_CACHE_HOME:-$HOME/.cache}/stowage-tools)
set -euo pipefail

HELM_VERSION=v3.21.4
# Kubernetes version helm assumes without a cluster (as its release builds do:
# client-go v0.36 -> 1.36). Lint and template also run against this.
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=36
KUBE_VERSION="${HELM_K8S_MAJOR}.${HELM_K8S_MINOR}.0"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart="$root/deploy/helm/stowage"
value_sets=("$root"/deploy/helm/ci/*-values.yaml)
tools="${STOWAGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stowage-tools}"

step() { printf '\n== %s\n' "$*"; }
start=$SECONDS

# 1. helm, built from its Go module (no prebuilt binaries are downloaded).
if [[ -z "${HELM:-}" ]]; then
  bin="$tools/helm-$HELM_VERSION-k8s$HELM_K8S_MAJOR.$HELM_K8S_MINOR"
  HELM="$bin/helm"
  if [[ ! -x "$HELM" ]]; then
    step "building helm $HELM_VERSION into $bin (first run only: a few minutes)"
    mkdir -p "$bin"
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ldflags+=" -X $pkg.k8sVersionMajor=$HELM_K8S_MAJOR -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
    done
    # Build outside the repository so that no go.mod around us takes part.
    (cd "$tools" && GOFLAGS=-trimpath CGO_ENABLED=0 GOBIN="$bin.tmp" \
      go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
    mv -f "$bin.tmp/helm" "$HELM"
    rmdir "$bin.tmp"
  fi
fi
"$HELM" version --short

# 2. lint and template, default values and everything switched on.
step "helm lint"
"$HELM" lint --strict --kube-version "$KUBE_VERSION" "$chart"
for f in "${value_sets[@]}"; do
  "$HELM" lint --strict --kube-version "$KUBE_VERSION" -f "$f" "$chart"
done

step "helm template"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$HELM" template stowage "$chart" --namespace stowage --kube-version "$KUBE_VERSION" \
  > "$out/default.yaml"
for f in "${value_sets[@]}"; do
  "$HELM" template stowage "$chart" --namespace stowage --kube-version "$KUBE_VERSION" \
    --api-versions monitoring.coreos.com/v1 -f "$f" > "$out/$(basename "$f" -values.yaml).yaml"
done
for f in "$out"/*.yaml; do
  printf '%s: %s objects\n' "$(basename "$f")" "$(grep -c '^kind:' "$f")"
done

# A typo in a top-level key must fail (values.schema.json).
if "$HELM" template stowage "$chart" --set persistance.enabled=false >/dev/null 2>&1; then
  echo "values.schema.json accepted an unknown top-level key" >&2
  exit 1
fi
# So must an unsafe combination: replicas sharing a volume without Redis.
if msg=$("$HELM" template stowage "$chart" --set replicaCount=2 \
  --set 'persistence.accessModes={ReadWriteMany}' 2>&1 >/dev/null); then
  echo "the chart rendered replicas on shared storage without Redis" >&2
  exit 1
fi
grep -q "needs Redis" <<<"$msg" || { echo "unclear refusal: $msg" >&2; exit 1; }

# 3. strict decoding and assertions in Go (separate module: the Kubernetes
# and Helm libraries stay out of the main module).
step "go test (deploy/helm)"
(cd "$root/deploy/helm" && go test -count=1 ./...)

# 4. the prefetch image-list parser reads the images of the live helm
# template output (and its rendered copies in testdata are current).
step "go test (config/imagelist, helm template)"
(cd "$root" && HELM="$HELM" go test -count=1 -run TestParseHelmTemplateLive ./config/imagelist/)

printf '\nhelm-check: ok in %ss\n' "$((SECONDS - start))"
