#!/usr/bin/env bash
# OCI distribution-spec conformance suite (pull + content discovery) against
# Stowage, with the stock distribution registry as a reference:
#
#   suite -> Stowage (cold cache) -> stock registry (seeded with crane)
#   suite -> stock registry                            (reference run)
#
# The suite is built from the Go module proxy (see need_conformance in
# lib.sh), so it runs on every machine. Stowage is read-only, so the suite
# runs in its read-only mode: push and delete are off, and OCI_RO_DATA_*
# point it at an image seeded in the upstream beforehand. Nothing is warmed:
# every pull the suite makes is Stowage's first, filled from the upstream.
# See docs/conformance.md.
#
# Prints PASS/FAIL per suite test for Stowage (tests the configuration turns
# off or the suite skips are counted, not listed), the reference results and
# a comparison, and ends with "N passed, N failed" for Stowage; exits
# non-zero if any test failed against Stowage.
#
# Usage: .ci/conformance.sh
# Env:   see .ci/lib.sh, and
#   CONFORMANCE_REFERENCE=0 skip the reference run against the stock registry
#   OCI_DEBUG=1             print the suite's output of the Stowage run
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAMESPACE=conformance/test   # two segments: Stowage maps it as-is on docker.io
TAG=tagtest0
EXTRA_TAGS=(tagtest1 tagtest2 tagtest3 tagtest4 tagtest5)

lib_init conformance
start=$SECONDS

step "tools"
apt_need curl:curl python3:python3
need_registry
need_crane
build_stowage
crane() { "$CRANE" "$@"; }

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
read -r MEDIA_TYPE CONFIG_DIGEST LAYER_DIGEST < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m.get("mediaType",""), m["config"]["digest"], m["layers"][0]["digest"])' "$WORK/manifest.json")
[[ "$MEDIA_TYPE" == application/vnd.oci.image.manifest.v1+json ]] || die "seeded manifest is $MEDIA_TYPE, want an OCI image manifest"
log "manifest $MANIFEST_DIGEST, config blob $CONFIG_DIGEST, layer $LAYER_DIGEST, tags $TAG ${EXTRA_TAGS[*]}"

step "stowage on 127.0.0.1:$SP (empty cache)"
start_stowage stowage "$SP" --root "$WORK/cache" \
  --upstream "docker.io=http://127.0.0.1:$UP" --default-upstream docker.io

# run_suite LABEL HOST:PORT: runs the suite against the registry at
# HOST:PORT in $WORK/LABEL (suite.out: its report, suite.log: its log, and
# the report files it manages to write) and writes $WORK/LABEL/results.tsv
# (STATUS\tNAME\tMESSAGE), one line per leaf test.
#
# The results come from the test tree the suite prints, not from its
# junit.xml: with push turned off, this version dereferences a nil test-data
# entry ("sha256 blobs", skipped) in ReportResultsYAML and panics after
# printing the tree but before writing results.yaml and junit.xml.
run_suite() {
  local label=$1 reg=$2 dir="$WORK/$1" rc=0
  mkdir -p "$dir"
  # Only the read API: pull, tags/list, referrers. Push, delete and the
  # generated data sets need writes; the seeded image is the read-only data.
  (cd "$dir" && env OCI_RESULTS_DIR="$dir" OCI_LOG=info \
      OCI_REGISTRY="$reg" OCI_TLS=disabled OCI_REPO1="$NAMESPACE" OCI_REPO2="$NAMESPACE" \
      OCI_API_PULL=true OCI_API_PUSH=false OCI_API_TAGS_LIST=true OCI_API_REFERRER=true \
      OCI_API_BLOBS_DELETE=false OCI_API_MANIFESTS_DELETE=false OCI_API_TAGS_DELETE=false \
      OCI_DATA_SHA512=false \
      OCI_RO_DATA_TAGS="$TAG ${EXTRA_TAGS[*]}" OCI_RO_DATA_MANIFESTS="$MANIFEST_DIGEST" \
      OCI_RO_DATA_BLOBS="$CONFIG_DIGEST $LAYER_DIGEST" OCI_RO_DATA_REFERRERS="$MANIFEST_DIGEST" \
      timeout -k 5 90 "$CONFORMANCE") >"$dir/suite.out" 2>"$dir/suite.log" || rc=$?
  if ! python3 - "$dir/suite.out" "$dir/results.tsv" <<'PY'
import re, sys
entry = re.compile(r"^( *)(\S.*): (Pass|FAIL|Skip|Disabled|Error|Unknown)$")
errline = re.compile(r"^ * - (.*)$")
status = {"Pass": "PASS", "Skip": "SKIP", "Disabled": "SKIP"}
tests, started = [], False
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line == "Test results":
        started = True
        continue
    if not started:
        continue
    if not line.strip():
        break
    m = entry.match(line)
    if m:
        tests.append([len(m.group(1)), m.group(2), status.get(m.group(3), "FAIL"), []])
    elif tests and errline.match(line):
        tests[-1][3].append(errline.match(line).group(1))
if not tests:
    sys.exit("no test tree in the suite's output")
seen = {}
with open(sys.argv[2], "w") as out:
    for i, (indent, name, st, errs) in enumerate(tests):
        if i + 1 < len(tests) and tests[i + 1][0] > indent:
            continue  # a group: its leaves carry the results
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else "%s #%d" % (name, seen[name])
        out.write("%s\t%s\t%s\n" % (st, label, " ".join(" ".join(errs).split())[:400]))
PY
  then
    tail -n 30 "$dir/suite.out" "$dir/suite.log" >&2
    die "$label: no results from the suite (exit $rc)"
  fi
}

step "suite -> stowage"
run_suite stowage "127.0.0.1:$SP"
if [[ "${CONFORMANCE_REFERENCE:-1}" != 0 ]]; then
  step "suite -> stock registry (reference)"
  run_suite registry "127.0.0.1:$UP"
fi

step "results"
declare -A REF=()
if [[ -f "$WORK/registry/results.tsv" ]]; then
  while IFS=$'\t' read -r st name _; do REF[$name]=$st; done <"$WORK/registry/results.tsv"
fi
skipped=0 diffs=()
while IFS=$'\t' read -r st name msg; do
  ref_st=${REF[$name]:-}
  [[ -n "$ref_st" && "$ref_st" != "$st" ]] && diffs+=("$name: stowage $st, stock registry $ref_st")
  if [[ "$st" == SKIP ]]; then
    skipped=$((skipped + 1))   # turned off (push, delete) or skipped by the suite
    continue
  fi
  if [[ "$st" == PASS ]]; then
    pass "$name"
  else
    fail "$name"
    echo "    | $msg"
  fi
done <"$WORK/stowage/results.tsv"
echo "($skipped tests turned off or skipped: they need push or delete)"

if ((${#REF[@]} > 0)); then
  echo
  echo "stock registry (reference):"
  while IFS=$'\t' read -r st name msg; do
    [[ "$st" == SKIP ]] && continue
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
  echo "suite output (stowage run): $WORK/stowage/suite.out and suite.log (KEEP_WORK=1 keeps them)"
  [[ "${OCI_DEBUG:-0}" == 1 ]] && cat "$WORK/stowage/suite.out" "$WORK/stowage/suite.log"
  grep -E 'level=(WARN|ERROR)' "$WORK/logs/stowage.log" | tail -n 20 | sed 's/^/    stowage log | /' || true
fi
log "done in $((SECONDS - start)) s"
summary
