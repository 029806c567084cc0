#!/usr/bin/env bash
# End-to-end pull through Stowage whose upstream is reachable ONLY through a
# throttled forward proxy (squid with a ~2 MB/s delay pool):
#
#   crane -> Stowage -> squid (127.0.0.1, hosts_file) -> registry (127.0.0.1)
#
# The upstream is configured as http://registry.stowage.test:PORT, a name that
# resolves only inside squid (its hosts_file), so a pull that works proves the
# traffic crossed the proxy; squid's access log is checked too.
#
# Usage: .ci/e2e-proxy.sh       (root or sudo for missing Debian packages)
# Env:   see .ci/lib.sh; PROXY_RATE bytes/s of the delay pool (default 2097152)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lib_init e2e-proxy
start=$SECONDS
RATE=${PROXY_RATE:-2097152}
NAME=registry.stowage.test

step "tools"
apt_need curl:curl jq:jq squid:squid
SQUID=$(command -v squid)
need_registry
need_crane
build_stowage
crane() { "$CRANE" "$@"; }

UP=$(free_port)
SQ=$(free_port)
SP=$(free_port)

step "upstream registry on 127.0.0.1:$UP"
start_registry upstream "$WORK/upstream" "$UP"

step "seeding a ~20 MB three-layer image"
mkdir -p "$WORK/layers"
for l in a:8192 b:7168 c:5120; do
  n=${l%%:*}
  mkdir -p "$WORK/layers/$n"
  head -c "$((${l#*:} * 1024))" /dev/urandom >"$WORK/layers/$n/$n.bin"
  tar -C "$WORK/layers/$n" --owner=0 --group=0 --numeric-owner -czf "$WORK/layers/$n.tgz" "$n.bin"
done
{
  crane append --insecure -f "$WORK/layers/a.tgz" -f "$WORK/layers/b.tgz" -f "$WORK/layers/c.tgz" \
    -t "127.0.0.1:$UP/library/big:v1-unplatformed"
  crane mutate --insecure --set-platform linux/amd64 -t "127.0.0.1:$UP/library/big:v1" "127.0.0.1:$UP/library/big:v1-unplatformed"
} >"$WORK/logs/seed.log" 2>&1 || { cat "$WORK/logs/seed.log" >&2; die "seeding failed"; }
want=$(crane digest --insecure "127.0.0.1:$UP/library/big:v1")
crane manifest --insecure "127.0.0.1:$UP/library/big:v1" >"$WORK/manifest.json"
mapfile -t layers < <(jq -r '.layers[].digest' "$WORK/manifest.json")
total=$(jq '[.layers[].size, .config.size] | add' "$WORK/manifest.json")
log "upstream library/big:v1 = $want, $((total / 1024)) KiB in ${#layers[@]} layers"

step "squid on 127.0.0.1:$SQ (delay pool $RATE B/s)"
S="$WORK/squid"
mkdir -p "$S"
echo "127.0.0.1 $NAME" >"$S/hosts"
user_line=""
if [[ $(id -u) -eq 0 ]]; then
  # squid started as root switches to an unprivileged user: let it in.
  suser=proxy
  id "$suser" >/dev/null 2>&1 || suser=nobody
  user_line="cache_effective_user $suser"
  chmod 711 "$WORK"
  chown -R "$suser" "$S"
fi
cat >"$S/squid.conf" <<EOF
http_port 127.0.0.1:$SQ
visible_hostname stowage-e2e
$user_line
pid_filename none
cache_log $S/cache.log
access_log stdio:$S/access.log squid
logfile_rotate 0
coredump_dir $S
cache deny all
cache_mem 8 MB
shutdown_lifetime 1 seconds
# registry.stowage.test exists only here.
hosts_file $S/hosts
acl from_local src 127.0.0.1/32 ::1
acl test_upstream dstdomain $NAME
http_access allow from_local test_upstream
http_access deny all
# Throttle everything to about $RATE bytes/s. Squid refills the bucket once
# a second and caps it at the max, so max = rate (a max below the rate would
# cap the throughput at max bytes/s).
delay_pools 1
delay_class 1 1
delay_parameters 1 $RATE/$RATE
delay_access 1 allow all
EOF
"$SQUID" -k parse -f "$S/squid.conf" >"$WORK/logs/squid-parse.log" 2>&1 \
  || { cat "$WORK/logs/squid-parse.log" >&2; die "squid config rejected"; }
bg_start squid "$SQUID" -N -f "$S/squid.conf"
wait_url "http://127.0.0.1:$SQ/" 30 "$BG_PID" || { tail -n 20 "$S/cache.log" >&2; die "squid did not start"; }

if getent hosts "$NAME" >/dev/null 2>&1; then
  fail "$NAME must not resolve outside the proxy (it does here: $(getent hosts "$NAME"))"
else
  pass "$NAME does not resolve outside the proxy"
fi
check_eq "squid forwards to http://$NAME:$UP/v2/" 200 \
  "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -x "http://127.0.0.1:$SQ" "http://$NAME:$UP/v2/" || true)"

step "stowage on 127.0.0.1:$SP, upstream docker.io via the proxy"
cat >"$WORK/stowage.yaml" <<EOF
listen: 127.0.0.1:$SP
storage:
  driver: filesystem
  root: $WORK/cache
default_upstream: docker.io
log:
  format: text
  level: info
upstreams:
  docker.io:
    endpoints: [http://$NAME:$UP]
    proxy: http://127.0.0.1:$SQ
EOF
start_stowage stowage "$SP" --config "$WORK/stowage.yaml"

step "pull through Stowage -> squid -> upstream"
t0=$(date +%s.%N)
check "crane: pull 127.0.0.1:$SP/library/big:v1 through the proxy" \
  timeout 240 "$CRANE" pull --insecure "127.0.0.1:$SP/library/big:v1" "$WORK/big.tar"
t1=$(date +%s.%N)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
mbs=$(awk -v s="$secs" -v n="$total" 'BEGIN {printf "%.2f", (s > 0 ? n / s / 1048576 : 0)}')
echo "transfer: $((total / 1024)) KiB in ${secs}s through the proxy (${mbs} MiB/s; pool $((RATE / 1024)) KiB/s)"
check_eq "crane: digest through Stowage equals upstream" "$want" \
  "$(crane digest --insecure "127.0.0.1:$SP/library/big:v1" 2>"$WORK/logs/digest.log" || true)"
check "crane: validate --remote (every blob re-hashed)" \
  timeout 120 "$CRANE" validate --insecure --remote "127.0.0.1:$SP/library/big:v1"

sleep 1  # squid logs a request when it completes
A="$S/access.log"
check_eq "squid access log: manifest request for library/big" yes \
  "$(grep -q "http://$NAME:$UP/v2/library/big/manifests/" "$A" && echo yes || echo no)"
for d in "${layers[@]}"; do
  check_eq "squid access log: blob ${d:7:12} fetched through the proxy" yes \
    "$(grep -q "http://$NAME:$UP/v2/library/big/blobs/$d" "$A" && echo yes || echo no)"
done
# With the delay pool, the blobs cannot arrive faster than ~RATE: half of the
# ideal time is a safe lower bound (a shorter pull bypassed the proxy).
min=$(awk -v n="$total" -v r="$RATE" 'BEGIN {printf "%.1f", n / r / 2}')
check_eq "transfer throttled by the proxy (>= ${min}s)" yes \
  "$(awk -v s="$secs" -v m="$min" 'BEGIN {print (s >= m ? "yes" : "no")}')"

step "second pull: from the cache"
before=$(grep -c "/blobs/" "$A" || true)
t0=$(date +%s.%N)
check "crane: second pull (cached)" timeout 60 "$CRANE" pull --insecure "127.0.0.1:$SP/library/big:v1" "$WORK/big2.tar"
t1=$(date +%s.%N)
echo "cached pull: $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')s"
sleep 1
check_eq "second pull fetched no blob through the proxy" "$before" "$(grep -c "/blobs/" "$A" || true)"

echo
echo "squid access log ($(wc -l <"$A") lines):"
awk '{print "  " $4, $5, $6, $7}' "$A" | head -n 20
printf '\ne2e-proxy: %ss\n' "$((SECONDS - start))"
summary
