#!/usr/bin/env bash
# startup-bench.sh: start-to-ready and usage-index build time of "proxy serve"
# on a cache of BLOBS (default 100000) small blobs, over loopback.
set -euo pipefail
BLOBS=${BLOBS:-100000}
ROUNDS=${ROUNDS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$(dirname "$0")/.."
bin=${STOWAGE_BIN:-$work/proxy}
[ -n "${STOWAGE_BIN:-}" ] || go build -o "$bin" ./cmd/proxy
echo "writing $BLOBS blobs..."
python3 - "$work/root" "$BLOBS" <<'PY'
import os, hashlib, struct, sys
root, n = sys.argv[1], int(sys.argv[2])
b = os.path.join(root, "docker/registry/v2/blobs/sha256")
for i in range(n):
    seed = struct.pack(">Q", i); h = hashlib.sha256(seed).hexdigest()
    d = os.path.join(b, h[:2], h); os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "data"), "wb") as f: f.write(seed)
PY
now() { date +%s.%N; }
for r in $(seq 1 "$ROUNDS"); do
  port=$((20000 + RANDOM % 20000))
  start=$(now)
  "$bin" serve --listen 127.0.0.1:$port --root "$work/root" --log-level error & pid=$!
  for _ in $(seq 1 20000); do curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.002; done
  ready=$(now)
  for _ in $(seq 1 12000); do curl -fs "http://127.0.0.1:$port/metrics" | grep -qx 'stowage_cache_index_ready 1' && break; sleep 0.01; done
  indexed=$(now)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf 'round %d: start to /healthz %.3f s, usage index of %d blobs ready %.3f s\n' \
    "$r" "$(echo "$ready - $start" | bc)" "$BLOBS" "$(echo "$indexed - $start" | bc)"
done
