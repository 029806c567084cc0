#!/usr/bin/env bash
# load-bench.sh: the long run of the loopback load test (TestLoadLoopback in
# proxy/load_test.go): 200 concurrent clients pulling through the proxy
# (behind the client-facing wrapper, as served): cached blobs and
# manifests, blobs not yet cached, unknown blobs (404) and clients hanging
# up halfway. Prints the request mix and rate, the errors (must be 0), and
# goroutines, open files and heap before and after (must return to the
# baseline).
#
# Usage: bench/load-bench.sh            (LOAD_DURATION=2m by default)
# Env:   LOAD_DURATION (a Go duration, e.g. 30s, 10m), RACE=1 to run under
#        the race detector (slower, fewer requests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DUR=${LOAD_DURATION:-2m}
flags=()
[[ ${RACE:-0} == 1 ]] && flags+=(-race)
STOWAGE_LOAD_DURATION=$DUR go test "${flags[@]}" -count=1 -timeout 0 -run '^TestLoadLoopback$' -v ./proxy/ 2>&1 |
	grep -E '^(---|PASS|FAIL|ok)|load_test.go' | sed 's/^ *//'
