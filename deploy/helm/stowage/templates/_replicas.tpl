{{/*
Several replicas as one cache: which storage the replicas share, the Redis
that coordinates them (an address, or the chart's own), S3 credentials, and
the shutdown timing of rolling updates.
*/}}

{{/* config.storage.driver, "filesystem" when unset. */}}
{{- define "stowage.driver" -}}
{{- (.Values.config.storage | default dict).driver | default "filesystem" }}
{{- end }}

{{/* "true" when the cache is in an S3 bucket (no volume for it). */}}
{{- define "stowage.s3" -}}
{{- if eq (include "stowage.driver" .) "s3" }}true{{ end }}
{{- end }}

{{/* The most Stowage pods there may be: the HPA's maximum, or replicaCount. */}}
{{- define "stowage.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.maxReplicas }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* "true" when there may be more than one Stowage pod. */}}
{{- define "stowage.multiReplica" -}}
{{- if gt (int (include "stowage.maxReplicas" .)) 1 }}true{{ end }}
{{- end }}

{{/*
"true" when all replicas use one cache: an S3 bucket, or one
PersistentVolumeClaim mounted by every pod (not perReplica, not emptyDir).
*/}}
{{- define "stowage.sharedStorage" -}}
{{- $p := .Values.persistence }}
{{- if include "stowage.s3" . }}true
{{- else if and (eq (include "stowage.driver" .) "filesystem") $p.enabled (not $p.perReplica) }}true
{{- end }}
{{- end }}

{{/* "true" when one PVC that is not ReadWriteMany is mounted by every pod. */}}
{{- define "stowage.sharedRWO" -}}
{{- $p := .Values.persistence }}
{{- if and (include "stowage.sharedStorage" .) (not (include "stowage.s3" .)) (not (has "ReadWriteMany" $p.accessModes)) }}true{{ end }}
{{- end }}

{{/* The chart's Redis: its objects' name, and the address Stowage uses. */}}
{{- define "stowage.redisName" -}}
{{- printf "%s-redis" (include "stowage.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "stowage.redisSecretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "stowage.redisName" .) }}
{{- end }}
{{/* The environment variable of the Stowage container holding the chart Redis' password. */}}
{{- define "stowage.redisPasswordEnv" -}}STOWAGE_REDIS_PASSWORD{{- end }}
{{- define "stowage.redisAuth" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.enabled }}true{{ end }}
{{- end }}

{{/* host:port of the Redis Stowage coordinates through; empty without one. */}}
{{- define "stowage.redisAddr" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s:%d" (include "stowage.redisName" .) (int .Values.redis.port) }}
{{- else }}
{{- (.Values.config.redis | default dict).addr | default "" }}
{{- end }}
{{- end }}

{{/*
The chart Redis' password: redis.auth.password, else the value in the
Secret as the cluster has it (kept from an earlier install, so every
replica and the Redis agree across upgrades; or the existingSecret's),
else a new random one for the chart's own Secret ("" for an existingSecret
the render cannot see). Computed once per render and remembered, so that
the Secret and the pods' checksum annotations see the same value.
*/}}
{{- define "stowage.redisPassword" -}}
{{- $memo := .Values.redis.auth }}
{{- if not (hasKey $memo "_rendered") }}
{{- $v := $memo.password }}
{{- if not $v }}
{{- $old := lookup "v1" "Secret" .Release.Namespace (include "stowage.redisSecretName" .) }}
{{- if and $old $old.data (hasKey $old.data $memo.secretKey) }}
{{- $v = index $old.data $memo.secretKey | b64dec }}
{{- else if not $memo.existingSecret }}
{{- $v = randAlphaNum 40 }}
{{- end }}
{{- end }}
{{- $_ := set $memo "_rendered" $v }}
{{- end }}
{{- $memo._rendered }}
{{- end }}

{{/* S3 credentials: whether the chart passes them, the Secret, where it is mounted. */}}
{{- define "stowage.s3Credentials" -}}
{{- $c := .Values.s3 }}
{{- if or $c.existingSecret $c.accessKey $c.secretKey }}true{{ end }}
{{- end }}
{{- define "stowage.s3SecretName" -}}
{{- .Values.s3.existingSecret | default (printf "%s-s3" (include "stowage.fullname" .)) }}
{{- end }}
{{- define "stowage.s3SecretDir" -}}/etc/stowage/s3{{- end }}

{{/*
Seconds in a Go duration ("30s", "2m", "1m30s", "0"), rounded up. The
schema allows only what Go's time.ParseDuration reads.
*/}}
{{- define "stowage.durationSeconds" -}}
{{- $units := dict "ns" 1e-9 "us" 1e-6 "µs" 1e-6 "ms" 1e-3 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- $total := 0.0 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" (toString .) -1 }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . }}
{{- $total = addf $total (mulf (float64 $num) (get $units (trimPrefix $num .))) }}
{{- end }}
{{- ceil $total | int }}
{{- end }}

{{/* config.server.shutdown_timeout in seconds (the binary's default: 30s). */}}
{{- define "stowage.shutdownSeconds" -}}
{{- include "stowage.durationSeconds" ((.Values.config.server | default dict).shutdown_timeout | default "30s") }}
{{- end }}

{{/*
The pre-stop pause: the kubelet's sleep action needs Kubernetes 1.30
(beta, on by default; alpha behind a feature gate in 1.29). 0 on older
clusters, where the pod has no pre-stop pause.
*/}}
{{- define "stowage.preStopSeconds" -}}
{{- if semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version }}{{ int .Values.preStopSleepSeconds }}{{ else }}0{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the value given, else the pre-stop pause plus
server.shutdown_timeout plus 10 s for closing, so that the kubelet never
kills Stowage before its own shutdown deadline.
*/}}
{{- define "stowage.terminationGracePeriod" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (include "stowage.preStopSeconds" . | int) (include "stowage.shutdownSeconds" . | int) 10 }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Whether the PodDisruptionBudget is rendered: as set, or (null) when there may be several pods. */}}
{{- define "stowage.pdbEnabled" -}}
{{- $e := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "invalid" $e }}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- else if $e }}true{{ end }}
{{- end }}

{{/* The pods' affinity: the values' own, else anti-affinity by host when there may be several pods. */}}
{{- define "stowage.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if and (include "stowage.multiReplica" .) (ne .Values.podAntiAffinity "none") }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "stowage.serverSelectorLabels" . | fromYaml)) }}
podAntiAffinity:
{{- if eq .Values.podAntiAffinity "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{- toYaml $term | nindent 6 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Rules for several replicas, Redis and S3; part of stowage.validate. */}}
{{- define "stowage.validateReplicas" -}}
{{- $p := .Values.persistence }}
{{- $cfg := .Values.config | default dict }}
{{- $redisCfg := $cfg.redis | default dict }}
{{- $s3 := include "stowage.s3" . }}
{{- $n := include "stowage.maxReplicas" . }}
{{- if and .Values.redis.enabled $redisCfg.addr }}
{{- fail "redis.enabled runs a Redis in the release and sets config.redis.addr to it: leave config.redis.addr empty, or set redis.enabled=false to use the Redis at that address" }}
{{- end }}
{{- if and (include "stowage.redisAuth" .) $redisCfg.password_env }}
{{- fail "redis.auth passes the chart Redis' password itself: leave config.redis.password_env empty" }}
{{- end }}
{{- if and .Values.redis.auth.existingSecret .Values.redis.auth.password }}
{{- fail "redis.auth.password is ignored with redis.auth.existingSecret: set one of them" }}
{{- end }}
{{- if and (include "stowage.multiReplica" .) (include "stowage.sharedStorage" .) (not (include "stowage.redisAddr" .)) }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled on shared storage needs Redis: set redis.enabled=true (a small Redis in the release) or config.redis.addr. Without it the replicas the HPA adds under load would each download the same blobs, revalidate the same tags and run eviction on the cache without one another's access times" }}
{{- end }}
{{- fail (printf "replicaCount %s on shared storage needs Redis: set redis.enabled=true (a small Redis in the release) or config.redis.addr. Without it every replica downloads each blob, revalidates each tag and runs eviction on the cache by itself" $n) }}
{{- end }}
{{- if and (include "stowage.multiReplica" .) (include "stowage.redisAddr" .) (not (include "stowage.sharedStorage" .)) (eq (include "stowage.driver" .) "filesystem") }}
{{- fail "Redis coordinates replicas that share one cache, but each replica has its own (persistence.perReplica=true, or an emptyDir): a replica would wait for downloads that land in another replica's cache. Drop Redis (config.redis.addr, redis.enabled, cluster.enabled), or share one ReadWriteMany volume or an S3 bucket" }}
{{- end }}
{{- if $s3 }}
{{- if $p.perReplica }}
{{- fail "persistence.perReplica has no meaning with config.storage.driver=s3: every replica uses the bucket" }}
{{- end }}
{{- if $p.existingClaim }}
{{- fail "persistence.existingClaim is not used with config.storage.driver=s3: the cache is the bucket (staging uses s3.staging)" }}
{{- end }}
{{- $params := ($cfg.storage | default dict).s3 | default dict }}
{{- if or $params.accesskey $params.secretkey }}
{{- fail "config.storage.s3.accesskey/secretkey would put the keys in a ConfigMap: set s3.existingSecret, or s3.accessKey and s3.secretKey (the chart makes a Secret)" }}
{{- end }}
{{- if and (include "stowage.s3Credentials" .) (or $params.accesskey_file $params.secretkey_file $params.accesskey_env $params.secretkey_env) }}
{{- fail "the s3 credentials are set twice: by s3.existingSecret/accessKey/secretKey and by config.storage.s3.*_file or *_env" }}
{{- end }}
{{- if (($cfg.cache | default dict).min_free) }}
{{- fail "config.cache.min_free measures a filesystem's free space: a bucket has none; use config.cache.max_size" }}
{{- end }}
{{- else if include "stowage.s3Credentials" . }}
{{- fail "s3.existingSecret/accessKey/secretKey are for config.storage.driver=s3" }}
{{- end }}
{{- if and .Values.s3.existingSecret (or .Values.s3.accessKey .Values.s3.secretKey) }}
{{- fail "s3.accessKey/secretKey are ignored with s3.existingSecret: set one or the other" }}
{{- end }}
{{- if and (not .Values.s3.existingSecret) (or .Values.s3.accessKey .Values.s3.secretKey) (not (and .Values.s3.accessKey .Values.s3.secretKey)) }}
{{- fail "s3.accessKey and s3.secretKey go together" }}
{{- end }}
{{- $need := add (include "stowage.preStopSeconds" . | int) (include "stowage.shutdownSeconds" . | int) }}
{{- if lt (include "stowage.terminationGracePeriod" . | int) $need }}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than preStopSleepSeconds plus config.server.shutdown_timeout (%ds): the kubelet would kill running downloads; leave it empty (null) to derive it" (int .Values.terminationGracePeriodSeconds) $need) }}
{{- end }}
{{- end }}

{{/* Labels of the chart Redis' pods. */}}
{{- define "stowage.redisSelectorLabels" -}}
{{ include "stowage.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/* The chart Redis' image: repository@digest or repository:tag. */}}
{{- define "stowage.redisImage" -}}
{{- $i := .Values.redis.image }}
{{- if $i.digest }}{{ printf "%s@%s" $i.repository $i.digest }}{{ else }}{{ printf "%s:%s" $i.repository $i.tag }}{{ end }}
{{- end }}

{{/*
config.redis.namespace for a shared volume, unless set: "<namespace>.<claim>".
The binary's default hashes the cache root's path, which is the same
(persistence.mountPath) in every release: two releases on their own volumes
sharing one Redis would wait on each other's leases. The claim tells caches
apart, and releases mounting the same existingClaim still coordinate. An S3
bucket needs nothing: the default hashes the bucket, endpoint and prefix.
*/}}
{{- define "stowage.redisNamespace" -}}
{{- $given := ((.Values.config.redis | default dict).namespace) }}
{{- if and (not $given) (include "stowage.redisAddr" .) (include "stowage.sharedStorage" .) (not (include "stowage.s3" .)) }}
{{- $ns := printf "%s.%s" .Release.Namespace (.Values.persistence.existingClaim | default (include "stowage.fullname" .)) }}
{{- if gt (len $ns) 64 }}{{ $ns = printf "pvc-%s" ($ns | sha256sum | trunc 16) }}{{ end }}
{{- $ns }}
{{- end }}
{{- end }}

{{/*
Peer streaming: cluster.enabled as set, or (null) on when several pods
share one cache through Redis, so that a client on any replica gets a
running download's bytes as the owning replica receives them.
*/}}
{{- define "stowage.clusterEnabled" -}}
{{- $e := .Values.cluster.enabled }}
{{- if kindIs "invalid" $e }}
{{- if and (include "stowage.multiReplica" .) (include "stowage.sharedStorage" .) (include "stowage.redisAddr" .) }}true{{ end }}
{{- else if $e }}true{{ end }}
{{- end }}
