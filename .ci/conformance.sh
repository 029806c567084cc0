#!/usr/bin/env bash
# OCI distribution-spec conformance suite (v1.1.1: pull + content discovery)
# against Stowage, with the stock distribution registry as a reference:
#
#   suite -> Stowage (cold cache) -> stock registry (seeded with crane)
#   suite -> stock registry                            (reference run)
#
# Stowage is read-only, so the suite runs in its "pre-existing content" mode:
# OCI_TAG_NAME / OCI_MANIFEST_DIGEST / OCI_BLOB_DIGEST / OCI_TAG_LIST point it
# at an image seeded in the upstream beforehand, and its push-based setup and
# teardown steps skip themselves. Nothing is warmed: every pull the suite makes
# is Stowage's first, filled from the upstream. See docs/conformance.md.
#
# Prints PASS/FAIL (or N/A, see NA_TESTS) per suite test for Stowage, the
# reference results and a comparison, and ends with "N passed, N failed" for
# Stowage; exits non-zero if any applicable test failed against Stowage.
#
# Usage: .ci/conformance.sh
# Env:   see .ci/lib.sh, and
#   OCI_CONFORMANCE_SRC     the suite's source, used when it is not cached yet
#                           and the Go module proxy does not serve it: either a
#                           directory holding the conformance package (its
#                           go.mod), or a git clone of opencontainers/
#                           distribution-spec (tag v1.1.1 is checked out with
#                           `git archive`). Copied into the tool cache once.
#   CONFORMANCE_REFERENCE=0 skip the reference run against the stock registry
#   OCI_DEBUG=1             print the suite's HTTP log of failing runs
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The suite, pinned: tag v1.1.1 of the spec (the last one with the env-driven
# ginkgo suite). The conformance directory is its own Go module with no tags
# of its own, so its module version is the pseudo-version of the tag's commit.
CONFORMANCE_REF=v1.1.1
CONFORMANCE_COMMIT=a139cc423184af6078077b9b7ee336eddbd03f8f
CONFORMANCE_MODULE=github.com/opencontainers/distribution-spec/conformance
CONFORMANCE_MODVER=v0.0.0-20250123160558-a139cc423184

NAMESPACE=conformance/test   # two segments: Stowage maps it as-is on docker.io
TAG=tagtest0                 # the suite's own tag name
EXTRA_TAGS=(tagtest1 tagtest2 tagtest3 tagtest4 tagtest5)

# Suite tests that cannot pass against ANY registry in pre-existing-content
# mode (no push): they assert on artifacts the suite generates with a random
# field per run and pushes in its own content-discovery setup (referrers with
# a subject; their digests, annotations and count). Shown as N/A, not counted.
NA_TESTS=(
  "Content Discovery Test content discovery endpoints (listing references) GET request to existing blob should yield 200"
  "Content Discovery Test content discovery endpoints (listing references) GET request to existing blob with filter should yield 200"
  "Content Discovery Test content discovery endpoints (listing references) GET request to missing manifest should yield 200"
)

lib_init conformance
start=$SECONDS

step "tools"
apt_need curl:curl python3:python3
need_registry
need_crane
build_stowage
crane() { "$CRANE" "$@"; }

# need_conformance: sets CONFORMANCE to the suite's test binary, building it
# once into the tool cache (from the module proxy, else from the source).
need_conformance() {
  CONFORMANCE="$TOOLS_BIN/oci-conformance-$CONFORMANCE_REF.test"
  [[ -x "$CONFORMANCE" ]] && return 0
  mkdir -p "$TOOLS_BIN"
  local src_cache="$TOOLS_DIR/src/oci-conformance-$CONFORMANCE_REF" tmp
  tmp=$(mktemp -d "$TOOLS_DIR/.build-oci-conformance.XXXXXX")
  log "building the conformance suite $CONFORMANCE_REF (first run only)"
  # 1. The Go module proxy.
  if (cd "$tmp" && go mod init tmp && go get -t "$CONFORMANCE_MODULE@$CONFORMANCE_MODVER" &&
      GOFLAGS=-trimpath CGO_ENABLED=0 go test -c -o "$tmp/suite.test" "$CONFORMANCE_MODULE") \
      >"$tmp/build.log" 2>&1; then
    mv -f "$tmp/suite.test" "$CONFORMANCE"
    rm -rf "$tmp"
    return 0
  fi
  log "the module proxy does not serve $CONFORMANCE_MODULE@$CONFORMANCE_MODVER; using the source"
  # 2. The source: the cached copy, else OCI_CONFORMANCE_SRC.
  if [[ ! -f "$src_cache/go.mod" ]]; then
    local s=${OCI_CONFORMANCE_SRC:-}
    rm -rf "$src_cache.new"
    mkdir -p "$src_cache.new"
    if [[ -n "$s" && -f "$s/go.mod" ]] && grep -q "^module $CONFORMANCE_MODULE\$" "$s/go.mod"; then
      cp -a "$s/." "$src_cache.new/"
    elif [[ -n "$s" ]] && git -C "$s" rev-parse --git-dir >/dev/null 2>&1 &&
         git -C "$s" archive "$CONFORMANCE_COMMIT" conformance | tar -x -C "$src_cache.new" --strip-components=1; then
      :
    else
      rm -rf "$src_cache.new" "$tmp"
      die "no source for the conformance suite: set OCI_CONFORMANCE_SRC to a clone of
       opencontainers/distribution-spec (tag $CONFORMANCE_REF) or to its conformance/ directory"
    fi
    rm -rf "$src_cache"
    mv "$src_cache.new" "$src_cache"
  fi
  if ! (cd "$src_cache" && GOFLAGS=-trimpath CGO_ENABLED=0 go test -c -o "$tmp/suite.test" .) >>"$tmp/build.log" 2>&1; then
    tail -n 20 "$tmp/build.log" >&2
    rm -rf "$tmp"
    die "building the conformance suite failed"
  fi
  mv -f "$tmp/suite.test" "$CONFORMANCE"
  rm -rf "$tmp"
}
need_conformance

UP=$(free_port)
SP=$(free_port)

step "upstream registry on 127.0.0.1:$UP"
start_registry upstream "$WORK/upstream" "$UP"

step "seeding $NAMESPACE:$TAG (OCI image) and ${#EXTRA_TAGS[@]} more tags"
mkdir -p "$WORK/layer"
echo "stowage conformance layer $RANDOM" >"$WORK/layer/hello.txt"
tar -C "$WORK/layer" --owner=0 --group=0 --numeric-owner -czf "$WORK/layer.tgz" hello.txt
ref="127.0.0.1:$UP/$NAMESPACE"
{
  crane append --insecure --oci-empty-base -f "$WORK/layer.tgz" -t "$ref:$TAG"
  for t in "${EXTRA_TAGS[@]}"; do crane tag --insecure "$ref:$TAG" "$t"; done
} >"$WORK/logs/seed.log" 2>&1 || { cat "$WORK/logs/seed.log" >&2; die "seeding failed"; }
crane manifest --insecure "$ref:$TAG" >"$WORK/manifest.json"
MANIFEST_DIGEST=$(crane digest --insecure "$ref:$TAG")
read -r MEDIA_TYPE CONFIG_DIGEST < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m.get("mediaType",""), m["config"]["digest"])' "$WORK/manifest.json")
[[ "$MEDIA_TYPE" == application/vnd.oci.image.manifest.v1+json ]] || die "seeded manifest is $MEDIA_TYPE, want an OCI image manifest"
TAG_LIST=$(IFS=,; echo "$TAG,${EXTRA_TAGS[*]}")
log "manifest $MANIFEST_DIGEST, config blob $CONFIG_DIGEST, tags $TAG_LIST"

step "stowage on 127.0.0.1:$SP (empty cache)"
start_stowage stowage "$SP" --root "$WORK/cache" \
  --upstream "docker.io=http://127.0.0.1:$UP" --default-upstream docker.io

# run_suite LABEL URL: runs the suite against URL in $WORK/LABEL (junit.xml,
# report.html, suite.log) and writes $WORK/LABEL/results.tsv (STATUS\tNAME\tMESSAGE).
run_suite() {
  local label=$1 url=$2 dir="$WORK/$1" rc=0
  mkdir -p "$dir"
  (cd "$dir" && env OCI_ROOT_URL="$url" OCI_NAMESPACE="$NAMESPACE" \
      OCI_TEST_PULL=1 OCI_TEST_CONTENT_DISCOVERY=1 OCI_TEST_PUSH=0 OCI_TEST_CONTENT_MANAGEMENT=0 \
      OCI_HIDE_SKIPPED_WORKFLOWS=1 OCI_DEBUG=1 OCI_REPORT_DIR="$dir" \
      OCI_TAG_NAME="$TAG" OCI_MANIFEST_DIGEST="$MANIFEST_DIGEST" OCI_BLOB_DIGEST="$CONFIG_DIGEST" \
      OCI_TAG_LIST="$TAG_LIST" \
      timeout -k 5 90 "$CONFORMANCE" -test.timeout 80s -ginkgo.no-color) >"$dir/suite.log" 2>&1 || rc=$?
  [[ -f "$dir/junit.xml" ]] || { tail -n 30 "$dir/suite.log" >&2; die "$label: the suite wrote no junit.xml (exit $rc)"; }
  python3 - "$dir/junit.xml" "$dir/results.tsv" <<'PY'
import sys, xml.etree.ElementTree as ET
prefix = "OCI Distribution Conformance Tests "
out = open(sys.argv[2], "w")
for tc in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    name = tc.get("name", "")
    for p in ("[It] ", prefix):
        if name.startswith(p):
            name = name[len(p):]
    if not name.startswith(("Pull ", "Content Discovery ")):
        continue  # ginkgo's suite-level report nodes
    f = tc.find("failure")
    if f is None:
        f = tc.find("error")
    if f is not None:
        status, msg = "FAIL", (f.get("message") or f.text or "")
    elif tc.find("skipped") is not None:
        status, msg = "SKIP", ""
    else:
        status, msg = "PASS", ""
    msg = " ".join(msg.split())[:400]
    out.write("%s\t%s\t%s\n" % (status, name.replace("\t", " "), msg))
PY
}

step "suite -> stowage"
run_suite stowage "http://127.0.0.1:$SP"
if [[ "${CONFORMANCE_REFERENCE:-1}" != 0 ]]; then
  step "suite -> stock registry (reference)"
  run_suite registry "http://127.0.0.1:$UP"
fi

step "results"
is_na() { local n; for n in "${NA_TESTS[@]}"; do [[ "$1" == "$n" ]] && return 0; done; return 1; }
declare -A REF=()
if [[ -f "$WORK/registry/results.tsv" ]]; then
  while IFS=$'\t' read -r st name _; do REF[$name]=$st; done <"$WORK/registry/results.tsv"
fi
na=0 skipped=0 diffs=()
while IFS=$'\t' read -r st name msg; do
  ref_st=${REF[$name]:-}
  [[ -n "$ref_st" && "$ref_st" != "$st" ]] && diffs+=("$name: stowage $st, stock registry $ref_st")
  if [[ "$st" == SKIP ]]; then
    skipped=$((skipped + 1))   # push-based setup/teardown steps
    continue
  fi
  if is_na "$name"; then
    na=$((na + 1))
    printf 'N/A  %s (stowage %s, stock registry %s)\n' "$name" "$st" "${ref_st:-not run}"
    continue
  fi
  if [[ "$st" == PASS ]]; then
    pass "$name"
  else
    fail "$name"
    echo "    | $msg"
  fi
done <"$WORK/stowage/results.tsv"
echo "($skipped push-only setup/teardown steps skipped, $na not applicable without push)"

if ((${#REF[@]} > 0)); then
  echo
  echo "stock registry (reference):"
  while IFS=$'\t' read -r st name msg; do
    [[ "$st" == SKIP ]] && continue
    if is_na "$name"; then
      printf '  N/A  %s (%s)\n' "$name" "$st"
      continue
    fi
    printf '  %-4s %s\n' "$st" "$name"
    if [[ "$st" == FAIL ]]; then echo "       | $msg"; fi
  done <"$WORK/registry/results.tsv"
  echo
  if ((${#diffs[@]} == 0)); then
    echo "stowage and the stock registry agree on every test"
  else
    echo "stowage differs from the stock registry on:"
    printf '  %s\n' "${diffs[@]}"
  fi
fi

if ((LIB_FAILED > 0)) || [[ "${OCI_DEBUG:-0}" == 1 ]]; then
  echo
  echo "suite HTTP log (stowage run): $WORK/stowage/suite.log (KEEP_WORK=1 keeps it)"
  [[ "${OCI_DEBUG:-0}" == 1 ]] && cat "$WORK/stowage/suite.log"
  grep -E 'level=(WARN|ERROR)' "$WORK/logs/stowage.log" | tail -n 20 | sed 's/^/    stowage log | /' || true
fi
log "done in $((SECONDS - start)) s"
summary
