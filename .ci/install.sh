#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: Debian packages for the
# end-to-end clients and benchmarks, Redis running on 127.0.0.1:6379, and the
# Go modules downloaded. Pinned Go tools (registry, crane, regctl, helm) are
# built by the scripts that use them, cached under ~/.cache/stowage-tools.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need=()
for pkg in skopeo containerd podman squid jq curl wrk nginx-light redis-server chromium; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # nginx, squid and others start a system service on install (listening on
  # all interfaces); forbid that: the suite runs its own on loopback.
  policy=/usr/sbin/policy-rc.d added=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=1
  fi
  rc=0
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/tmp/stowage-apt.log 2>&1 || rc=$?
  [[ -n $added ]] && rm -f "$policy"
  ((rc == 0)) || { tail -20 /tmp/stowage-apt.log; exit 1; }
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
fi

go mod download
# The S3-compatible server of the object-storage tests (SeaweedFS), built
# once into the tool cache: several minutes on the first run.
bash -c '. .ci/lib.sh && need_weed'
echo "install: ok"
