#!/usr/bin/env bash
# The whole test suite: vet, unit and integration tests with the race
# detector (real registry in-process, real Redis), short fuzz runs, the Helm
# chart checks and the end-to-end runs with real clients.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
passed=0 failed=0 skipped=0
failures=()
stage_ok()   { passed=$((passed + ${2:-1})); echo "== stage ok: $1"; }
stage_fail() { failed=$((failed + ${2:-1})); failures+=("$1"); echo "== stage FAILED: $1"; }

echo "== go vet"
if go vet ./...; then stage_ok vet; else stage_fail vet; fi

echo "== go mod tidy -diff (root module and deploy/helm)"
# go.mod and go.sum must be what `go mod tidy` makes of them: direct
# requirements unmarked, nothing missing or unused.
for mod in . deploy/helm; do
  if (cd "$mod" && go mod tidy -diff); then stage_ok "tidy $mod"; else stage_fail "tidy $mod: run go mod tidy"; fi
done

echo "== golangci-lint (.golangci.yaml)"
lint_tools="${STOWAGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stowage-tools}/bin"
lint="$lint_tools/golangci-lint-v2.6.2"
if [[ ! -x $lint ]]; then
  mkdir -p "$lint_tools"
  GOBIN=$(mktemp -d) && GOBIN=$GOBIN go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.6.2 &&
    mv "$GOBIN/golangci-lint" "$lint"
fi
if "$lint" run --allow-parallel-runners --max-same-issues 0 --max-issues-per-linter 0 ./...; then stage_ok lint; else stage_fail lint; fi

echo "== SeaweedFS weed (the S3-compatible server of the object-storage tests)"
# Built once from the Go module proxy into the tool cache (.ci/lib.sh
# need_weed); the storage, proxy and cmd tests find it through STOWAGE_WEED
# and, with CI set, fail rather than skip without it.
if weed=$(bash -c '. .ci/lib.sh && need_weed && echo "$WEED"'); then
  export STOWAGE_WEED=$weed
  stage_ok weed
else
  stage_fail "weed build"
fi

echo "== go test -race ./..."
json=$(mktemp)
# The dashboard's browser tests write their screenshots here.
export STOWAGE_UI_SCREENSHOTS="${STOWAGE_UI_SCREENSHOTS:-${TMPDIR:-/tmp}/stowage-ui-screenshots}"
echo "dashboard screenshots: $STOWAGE_UI_SCREENSHOTS"
go test -race -count=1 -timeout 15m -json ./... >"$json"
rc=$?
# Human-readable output, then the per-test counts.
python3 - "$json" <<'PY'
import json, sys
tests, outputs = {}, {}
for line in open(sys.argv[1]):
    try:
        ev = json.loads(line)
    except ValueError:
        sys.stdout.write(line)  # build errors are not JSON
        continue
    act, pkg, test = ev.get("Action"), ev.get("Package"), ev.get("Test")
    if act == "output":
        out = ev.get("Output", "")
        outputs.setdefault((pkg, test), []).append(out)
        if test is None and out.startswith(("ok ", "FAIL", "panic:", "---")):
            sys.stdout.write(out)
    if test and act in ("pass", "fail", "skip"):
        tests[(pkg, test)] = act
        if act == "fail":
            sys.stdout.write("".join(outputs.get((pkg, test), [])))
counts = {a: sum(1 for v in tests.values() if v == a) for a in ("pass", "fail", "skip")}
open(sys.argv[1] + ".counts", "w").write("%d %d %d" % (counts["pass"], counts["fail"], counts["skip"]))
PY
read -r p f s <"$json.counts"
passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
if [[ $rc -ne 0 && $f -eq 0 ]]; then stage_fail "go test (build or package failure)"; fi
[[ $f -gt 0 ]] && failures+=("go test: $f tests")
rm -f "$json" "$json.counts"

echo "== fuzz (short runs)"
# Bounded by execution count, not by time: a duration -fuzztime races Go's
# fuzz coordinator and can report "context deadline exceeded" with no
# crasher on a loaded machine (go.dev/issue/75804, fixed in Go 1.27). The
# go test -timeout still bounds the wall time of each run.
fuzz() { # pkg target execs
  if go test -run XXX -fuzz "^$2\$" -fuzztime "$3x" -timeout 5m "$1" >/tmp/fuzz-$2.log 2>&1; then
    stage_ok "fuzz $2"
  else
    tail -20 /tmp/fuzz-$2.log; stage_fail "fuzz $2"
  fi
}
fuzz ./proxy/ FuzzRequestPath 40000
fuzz ./config/ FuzzLoad 100000
fuzz ./config/imagelist/ FuzzParseText 25000
fuzz ./config/imagelist/ FuzzParseSkopeoSync 100000
fuzz ./config/imagelist/ FuzzParseKubernetes 50000
for target in $(grep -ho '^func Fuzz[A-Za-z]*' upstream/*_test.go 2>/dev/null | sed 's/func //'); do
  fuzz ./upstream/ "$target" 30000
done

# The OCI conformance suite comes from the Go module proxy (.ci/lib.sh
# need_conformance), so it runs on every machine.
scripts=(.ci/helm-check.sh .ci/e2e-clients.sh .ci/e2e-proxy.sh .ci/conformance.sh)
for script in "${scripts[@]}"; do
  [[ -f $script ]] || continue
  echo "== $script"
  log=$(mktemp)
  bash "$script" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # Count the script's own checks when it prints "N passed, N failed".
  read -r sp sf < <(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1 | sed -E 's/^([0-9]+) passed, ([0-9]+) failed.*/\1 \2/')
  rm -f "$log"
  if [[ $rc -eq 0 ]]; then stage_ok "$script" "${sp:-1}"; else stage_fail "$script" "$(( ${sf:-0} > 0 ? sf : 1 ))"; fi
  passed=$((passed + (rc != 0 ? ${sp:-0} : 0)))
  sp= sf=
done

echo
if ((${#failures[@]})); then printf 'failed: %s\n' "${failures[@]}"; fi
echo "suite: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
