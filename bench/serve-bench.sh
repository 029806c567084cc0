#!/usr/bin/env bash
# Cache-hit serving benchmark over real loopback sockets, with wrk:
#   Stowage (cached 64 MiB blob, cached tag manifest)
#   nginx  (sendfile on) serving the very same blob file from Stowage's cache
#   the stock distribution registry serving Stowage's cache root
# See bench/README.md for how to read the table.
#
# Usage: bench/serve-bench.sh
# Env:   BENCH_DURATION (s per run, default 5) BENCH_ROUNDS (3) BENCH_CONNS (4) BENCH_THREADS (2)
#        BLOB_MIB (64); STOWAGE_BIN, STOWAGE_TOOLS_DIR, KEEP_WORK as in .ci/lib.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../.ci/lib.sh"

lib_init serve-bench
start=$SECONDS
DUR=${BENCH_DURATION:-5}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-4}
THREADS=${BENCH_THREADS:-2}
MIB=${BLOB_MIB:-64}
((DUR >= 1 && DUR <= 60)) || die "BENCH_DURATION must be 1..60"
((ROUNDS >= 1 && ROUNDS <= 9)) || die "BENCH_ROUNDS must be 1..9"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

apt_need curl:curl jq:jq wrk:wrk nginx:nginx-light
NGINX=$(command -v nginx)
need_registry
build_stowage

UP=$(free_port); SP=$(free_port); NP=$(free_port); RP=$(free_port)
step "upstream registry, seeding a ${MIB} MiB blob"
start_registry upstream "$WORK/upstream" "$UP"
UPSTREAM_PID=$BG_PID

head -c "$((MIB * 1048576))" /dev/urandom >"$WORK/blob.bin"
blob="sha256:$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)"
blob_size=$(stat -c %s "$WORK/blob.bin")

# push_blob FILE DIGEST: monolithic upload through the registry API.
push_blob() {
  local loc sep
  loc=$(curl -fsS -D - -o /dev/null -X POST "http://127.0.0.1:$UP/v2/library/bench/blobs/uploads/" |
        tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  [[ -n "$loc" ]] || die "no upload location"
  [[ "$loc" == /* ]] && loc="http://127.0.0.1:$UP$loc"
  sep='?'; [[ "$loc" == *\?* ]] && sep='&'
  curl -fsS -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' \
    --data-binary "@$1" "$loc${sep}digest=$2"
}
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{}}' \
  "$blob" >"$WORK/config.json"
cfg="sha256:$(sha256sum "$WORK/config.json" | cut -d' ' -f1)"
push_blob "$WORK/blob.bin" "$blob"
push_blob "$WORK/config.json" "$cfg"
MT=application/vnd.oci.image.manifest.v1+json
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
  "$MT" "$cfg" "$(stat -c %s "$WORK/config.json")" "$blob" "$blob_size" >"$WORK/manifest.json"
curl -fsS -o /dev/null -X PUT -H "Content-Type: $MT" --data-binary "@$WORK/manifest.json" \
  "http://127.0.0.1:$UP/v2/library/bench/manifests/v1"

step "stowage: warm the cache"
ROOT="$WORK/cache"
# --log-level warn: no per-request access log, like nginx (access_log off)
# and the registry (accesslog disabled) below.
start_stowage stowage "$SP" --root "$ROOT" --upstream "docker.io=http://127.0.0.1:$UP" \
  --default-upstream docker.io --log-level warn
got=$(curl -fsS -H "Accept: $MT" "http://127.0.0.1:$SP/v2/library/bench/manifests/v1" | sha256sum | cut -d' ' -f1)
[[ "sha256:$got" == "$(sha256sum "$WORK/manifest.json" | awk '{print "sha256:" $1}')" ]] || die "manifest through Stowage differs"
got=$(curl -fsS "http://127.0.0.1:$SP/v2/library/bench/blobs/$blob" | sha256sum | cut -d' ' -f1)
[[ "sha256:$got" == "$blob" ]] || die "blob through Stowage differs"
hex=${blob#sha256:}
DATA="$ROOT/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
[[ -f "$DATA" ]] || die "blob not in the cache layout at $DATA"
# From here on everything is a cache hit: the upstream is gone.
stop_pid "$UPSTREAM_PID"

step "nginx (sendfile) on the cached blob file, registry on the cache root"
N="$WORK/nginx"
mkdir -p "$N/www" "$N/tmp"
ln -s "$DATA" "$N/www/blob"
cat >"$N/nginx.conf" <<EOF
$( [[ $(id -u) -eq 0 ]] && echo "user root;" )
worker_processes auto;
daemon off;
pid $N/nginx.pid;
error_log $N/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $N/tmp/body;
  proxy_temp_path $N/tmp/proxy;
  fastcgi_temp_path $N/tmp/fastcgi;
  uwsgi_temp_path $N/tmp/uwsgi;
  scgi_temp_path $N/tmp/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NP;
    root $N/www;
  }
}
EOF
bg_start nginx "$NGINX" -p "$N" -e "$N/error.log" -c "$N/nginx.conf"
wait_url "http://127.0.0.1:$NP/blob" 20 "$BG_PID" || { cat "$N/error.log" >&2; die "nginx did not start"; }
start_registry registry "$ROOT" "$RP" readonly

for u in "http://127.0.0.1:$NP/blob" "http://127.0.0.1:$RP/v2/docker.io/library/bench/blobs/$blob"; do
  n=$(curl -fsS -o /dev/null -w '%{size_download}' "$u") || die "GET $u failed"
  [[ "$n" == "$blob_size" ]] || die "GET $u: $n bytes, want $blob_size"
done

cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.bytes,
    summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

# run_wrk LABEL URL [ACCEPT]: one wrk run; appends a row to $WORK/rows.
: >"$WORK/rows"
run_wrk() {
  local label=$1 url=$2 accept=${3:-} args=() line
  [[ -n "$accept" ]] && args=(-H "Accept: $accept")
  log "wrk ${DUR}s: $label"
  timeout $((DUR + 30)) wrk -t "$THREADS" -c "$CONNS" -d "${DUR}s" --timeout 10s "${args[@]}" \
    -s "$WORK/report.lua" "$url" >"$WORK/logs/wrk-${label// /_}.log" 2>&1 || true
  line=$(grep '^RESULT ' "$WORK/logs/wrk-${label// /_}.log" || true)
  [[ -n "$line" ]] || { cat "$WORK/logs/wrk-${label// /_}.log" >&2; die "wrk $label produced no result"; }
  echo "$label ${line#RESULT }" >>"$WORK/rows"
}

step "wrk: ${THREADS} threads, ${CONNS} connections, ${DUR}s per run, ${ROUNDS} interleaved rounds"
for ((round = 1; round <= ROUNDS; round++)); do
  run_wrk "stowage-blob"      "http://127.0.0.1:$SP/v2/library/bench/blobs/$blob"
  run_wrk "nginx-blob"        "http://127.0.0.1:$NP/blob"
  run_wrk "registry-blob"     "http://127.0.0.1:$RP/v2/docker.io/library/bench/blobs/$blob"
  run_wrk "stowage-manifest"  "http://127.0.0.1:$SP/v2/library/bench/manifests/v1" "$MT"
  run_wrk "registry-manifest" "http://127.0.0.1:$RP/v2/docker.io/library/bench/manifests/v1" "$MT"
done

echo
printf 'machine: %s, %s cores, %s; load average before: %s\n' "$(uname -sr)" "$(nproc)" \
  "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" "$LOAD0"
printf 'blob %d MiB; wrk -t%s -c%s -d%ss, %s rounds (median run shown); all on 127.0.0.1\n\n' \
  "$MIB" "$THREADS" "$CONNS" "$DUR" "$ROUNDS"
# Per target, the run with the median throughput (bytes/s, then requests/s),
# plus the min..max range.
awk '{print $1, $3 / $4, $2 / $4, $0}' "$WORK/rows" | sort -k1,1 -k2,2g -k3,3g | cut -d' ' -f4- | awk '
  function flush(   m, k) {
    if (n == 0) return
    m = int((n + 1) / 2); k = key
    split(row[m], f, " ")
    s = f[4] / 1e6
    rps[k] = f[2] / s; mbs[k] = f[3] / s / 1e6
    split(row[1], a, " "); split(row[n], b, " ")
    lo = (k ~ /blob/) ? a[3] / (a[4] / 1e6) / 1e6 : a[2] / (a[4] / 1e6)
    hi = (k ~ /blob/) ? b[3] / (b[4] / 1e6) / 1e6 : b[2] / (b[4] / 1e6)
    line[k] = sprintf("%-18s %10.1f %10.1f %10.2f %10.2f %7d   %.0f..%.0f %s", k, rps[k], mbs[k],
      f[5] / 1000, f[6] / 1000, f[7], lo, hi, (k ~ /blob/) ? "MB/s" : "req/s")
    n = 0
  }
  $1 != key { flush(); key = $1 }
  { row[++n] = $0 }
  END {
    flush()
    printf "%-18s %10s %10s %10s %10s %7s   %s\n", "target", "req/s", "MB/s", "p50 ms", "p99 ms", "errors", "range over rounds"
    split("stowage-blob nginx-blob registry-blob stowage-manifest registry-manifest", order, " ")
    for (i = 1; i <= 5; i++) print line[order[i]]
    print ""
    printf "stowage/nginx    blob MB/s:      %.2f (target >= 0.90)\n", mbs["stowage-blob"] / mbs["nginx-blob"]
    printf "stowage/registry blob MB/s:      %.2f\n", mbs["stowage-blob"] / mbs["registry-blob"]
    printf "stowage/registry manifest req/s: %.2f\n", rps["stowage-manifest"] / rps["registry-manifest"]
  }'
printf '\nserve-bench: %ss\n' "$((SECONDS - start))"
