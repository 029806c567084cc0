{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "stowage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, unless the release name already holds the chart name. */}}
{{- define "stowage.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "stowage.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stowage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stowage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stowage.labels" -}}
helm.sh/chart: {{ include "stowage.chart" . }}
{{ include "stowage.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stowage
{{- end }}

{{- define "stowage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stowage.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Stowage image reference: repository@digest or repository:tag. */}}
{{- define "stowage.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* "statefulset" when every replica gets its own volume, else "deployment". */}}
{{- define "stowage.workloadKind" -}}
{{- if and .Values.persistence.enabled .Values.persistence.perReplica (not (include "stowage.s3" .)) }}StatefulSet{{ else }}Deployment{{ end }}
{{- end }}

{{- define "stowage.secretName" -}}
{{- .Values.credentials.existingSecret | default (printf "%s-credentials" (include "stowage.fullname" .)) }}
{{- end }}

{{/* Secret key holding an upstream's password: passwordKey or "<host>.password" (":" is not allowed in a key). */}}
{{- define "stowage.passwordKey" -}}
{{- $c := index . 1 }}
{{- $c.passwordKey | default (printf "%s.password" (index . 0 | replace ":" "_")) }}
{{- end }}

{{- define "stowage.adminTokenKey" -}}
{{- .Values.credentials.adminTokenKey | default "admin-token" }}
{{- end }}

{{- define "stowage.adminEnabled" -}}
{{- if or .Values.credentials.adminToken (and .Values.credentials.existingSecret .Values.credentials.adminTokenKey) }}true{{ end }}
{{- end }}

{{/* Whether a Secret volume is mounted at all. */}}
{{- define "stowage.hasSecrets" -}}
{{- if or .Values.credentials.upstreams (include "stowage.adminEnabled" .) }}true{{ end }}
{{- end }}

{{- define "stowage.secretsDir" -}}/etc/stowage/secrets{{- end }}

{{/*
The Stowage config file: .Values.config plus what the chart owns (listen,
storage.root, credential file paths). Rendered as YAML.
*/}}
{{- define "stowage.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := set $cfg "listen" (printf ":%d" (int .Values.containerPort)) }}
{{- $storage := deepCopy ($cfg.storage | default dict) }}
{{- if include "stowage.s3" . }}
{{- if include "stowage.s3Credentials" . }}
{{- $s3 := deepCopy ($storage.s3 | default dict) }}
{{- $_ := set $s3 "accesskey_file" (printf "%s/%s" (include "stowage.s3SecretDir" .) .Values.s3.accessKeyKey) }}
{{- $_ := set $s3 "secretkey_file" (printf "%s/%s" (include "stowage.s3SecretDir" .) .Values.s3.secretKeyKey) }}
{{- $_ := set $storage "s3" $s3 }}
{{- end }}
{{- else }}
{{- $_ := set $storage "root" .Values.persistence.mountPath }}
{{- end }}
{{- $_ := set $cfg "storage" $storage }}
{{- if .Values.redis.enabled }}
{{- $redis := deepCopy ($cfg.redis | default dict) }}
{{- $_ := set $redis "addr" (include "stowage.redisAddr" .) }}
{{- if include "stowage.redisAuth" . }}
{{- $_ := set $redis "password_env" (include "stowage.redisPasswordEnv" .) }}
{{- end }}
{{- $_ := set $cfg "redis" $redis }}
{{- end }}
{{- with include "stowage.redisNamespace" . }}
{{- $redis := deepCopy ($cfg.redis | default dict) }}
{{- $_ := set $redis "namespace" . }}
{{- $_ := set $cfg "redis" $redis }}
{{- end }}
{{- $cap := include "stowage.cacheCap" . }}
{{- if $cap }}
{{- $cache := deepCopy ($cfg.cache | default dict) }}
{{- if not (hasKey $cache "max_size") }}
{{- $_ := set $cache "max_size" $cap }}
{{- $_ := set $cfg "cache" $cache }}
{{- end }}
{{- end }}
{{- $dir := include "stowage.secretsDir" . }}
{{- if .Values.credentials.upstreams }}
{{- $ups := deepCopy ($cfg.upstreams | default dict) }}
{{- range $host, $c := .Values.credentials.upstreams }}
{{- $u := deepCopy ((get $ups $host) | default dict) }}
{{- $auth := deepCopy ($u.auth | default dict) }}
{{- if $c.username }}
{{- $_ := set $auth "username" $c.username }}
{{- end }}
{{- $_ := set $auth "password_file" (printf "%s/%s" $dir (include "stowage.passwordKey" (list $host $c))) }}
{{- $_ := set $u "auth" $auth }}
{{- $_ := set $ups $host $u }}
{{- end }}
{{- $_ := set $cfg "upstreams" $ups }}
{{- end }}
{{- if include "stowage.adminEnabled" . }}
{{- $admin := deepCopy ($cfg.admin | default dict) }}
{{- $_ := set $admin "token_file" (printf "%s/%s" $dir (include "stowage.adminTokenKey" .)) }}
{{- $_ := set $cfg "admin" $admin }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $_ := set $cfg "tls" (dict "cert_file" (printf "%s/tls.crt" (include "stowage.tlsDir" .)) "key_file" (printf "%s/tls.key" (include "stowage.tlsDir" .))) }}
{{- end }}
{{- if .Values.clientAuth.enabled }}
{{- $auth := deepCopy ($cfg.auth | default dict) }}
{{- $_ := set $auth "htpasswd" (printf "%s/%s" (include "stowage.htpasswdDir" .) .Values.clientAuth.secretKey) }}
{{- $_ := set $cfg "auth" $auth }}
{{- end }}
{{- if include "stowage.clusterEnabled" . }}
{{- $cl := deepCopy ($cfg.cluster | default dict) }}
{{- $_ := set $cl "listen" (printf ":%d" (int .Values.cluster.port)) }}
{{- $_ := set $cl "advertise" (printf "http://${POD_IP}:%d" (int .Values.cluster.port)) }}
{{- $_ := set $cl "secret_file" (printf "%s/%s" (include "stowage.clusterSecretDir" .) .Values.cluster.secretKey) }}
{{- $_ := set $cfg "cluster" $cl }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Peer streaming: the Secret with the replicas' shared secret, and where it is mounted. */}}
{{- define "stowage.clusterSecretName" -}}
{{- .Values.cluster.existingSecret | default (printf "%s-cluster" (include "stowage.fullname" .)) }}
{{- end }}
{{- define "stowage.clusterSecretDir" -}}/etc/stowage/cluster{{- end }}

{{/* The URL nodes use to reach Stowage; shell syntax, $NODE_IP / $SVC_IP expanded in the pod. */}}
{{- define "stowage.nodeEndpoint" -}}
{{- $e := .Values.nodeConfigurator.endpoint }}
{{- $scheme := ternary "https" "http" (.Values.tls.enabled | default false) }}
{{- if eq $e.mode "nodePort" }}
{{- printf "%s://${NODE_IP}:%d" $scheme (int $e.nodePort) }}
{{- else if eq $e.mode "clusterIP" }}
{{- printf "%s://${SVC_IP}:%d" $scheme (int .Values.service.port) }}
{{- else if eq $e.mode "url" }}
{{- required "nodeConfigurator.endpoint.url is required with mode=url" $e.url | trimSuffix "/" }}
{{- else }}
{{- fail (printf "nodeConfigurator.endpoint.mode %q: want nodePort, clusterIP or url" $e.mode) }}
{{- end }}
{{- end }}

{{/* Rules that keep a broken combination from installing. */}}
{{- define "stowage.validate" -}}
{{- $p := .Values.persistence }}
{{- if and (include "stowage.sharedRWO" .) (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "more than one replica sharing one ReadWriteOnce volume: set persistence.perReplica=true, or persistence.accessModes [ReadWriteMany] (also for an existingClaim that is ReadWriteMany), or config.storage.driver=s3" }}
{{- end }}
{{- if and $p.perReplica $p.existingClaim }}
{{- fail "persistence.existingClaim cannot be used with persistence.perReplica=true" }}
{{- end }}
{{- if and (include "stowage.pdbEnabled" .) (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if and (include "stowage.clusterEnabled" .) (not (include "stowage.redisAddr" .)) }}
{{- fail "cluster.enabled needs Redis (redis.enabled=true or config.redis.addr): replicas find a fill's owner through its Redis lease" }}
{{- end }}
{{- if and (include "stowage.clusterEnabled" .) (eq (int .Values.cluster.port) (int .Values.containerPort)) }}
{{- fail "cluster.port must differ from containerPort: the internal endpoint is never served on the client API" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret, e.g. from cert-manager)" }}
{{- end }}
{{- if and .Values.tls.enabled (eq .Values.tls.ca.source "secret") (not .Values.tls.ca.secretName) }}
{{- fail "tls.ca.source=secret needs tls.ca.secretName" }}
{{- end }}
{{- if and .Values.tls.enabled (eq .Values.tls.ca.source "configMap") (not .Values.tls.ca.configMapName) }}
{{- fail "tls.ca.source=configMap needs tls.ca.configMapName" }}
{{- end }}
{{- $nc := .Values.nodeConfigurator }}
{{- if and .Values.tls.enabled $nc.enabled (eq $nc.endpoint.mode "nodePort") (not $nc.skipVerify) }}
{{- fail "tls.enabled with nodeConfigurator.endpoint.mode=nodePort: each node would reach Stowage at its own IP, which no certificate names for every node. Use endpoint.mode=clusterIP (pin service.clusterIP and put that IP in the certificate) or endpoint.mode=url with a name the certificate holds, or set nodeConfigurator.skipVerify=true (encrypted, not authenticated)" }}
{{- end }}
{{- if and .Values.clientAuth.enabled (not .Values.clientAuth.existingSecret) (not .Values.clientAuth.htpasswd) }}
{{- fail "clientAuth.enabled needs clientAuth.existingSecret or clientAuth.htpasswd" }}
{{- end }}
{{- if and .Values.cluster.secret (lt (len .Values.cluster.secret) 16) }}
{{- fail "cluster.secret must be at least 16 characters" }}
{{- end }}
{{- if .Values.credentials.existingSecret }}
{{- range $host, $c := .Values.credentials.upstreams }}
{{- if $c.password }}
{{- fail (printf "credentials.upstreams.%s.password is ignored with credentials.existingSecret; set passwordKey" $host) }}
{{- end }}
{{- end }}
{{- end }}
{{- include "stowage.validateReplicas" . }}
{{- end }}

{{/* storageClassName line: omitted for the default class, "" for "-". */}}
{{- define "stowage.storageClass" -}}
{{- $sc := .Values.persistence.storageClass }}
{{- if eq $sc "-" }}
storageClassName: ""
{{- else if $sc }}
storageClassName: {{ $sc | quote }}
{{- end }}
{{- end }}

{{/* Selector of the Stowage server pods (not the prefetch or node-configurator pods). */}}
{{- define "stowage.serverSelectorLabels" -}}
{{ include "stowage.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* Client-facing TLS and htpasswd: Secrets and where they are mounted (directories, so updates reach the pod). */}}
{{- define "stowage.tlsDir" -}}/etc/stowage/tls{{- end }}
{{- define "stowage.htpasswdDir" -}}/etc/stowage/htpasswd{{- end }}
{{- define "stowage.htpasswdSecretName" -}}
{{- .Values.clientAuth.existingSecret | default (printf "%s-htpasswd" (include "stowage.fullname" .)) }}
{{- end }}

{{/*
TLS for the chart's own clients (ServiceMonitor, node configurator, prefetch
Job). serviceHost: the Service's DNS name they use and check the certificate
for. tlsCA: "true" when they trust the CA of tls.ca (not the system roots).
caName/caKey: the Secret or ConfigMap holding it and its key. caVolumeSource:
a volume with only that key, as the file ca.crt (never tls.key); optional, so
that a missing key leaves the file absent and the client names it, instead
of a pod stuck creating.
*/}}
{{- define "stowage.serviceHost" -}}
{{- printf "%s.%s.svc" (include "stowage.fullname" .) .Release.Namespace }}
{{- end }}
{{- define "stowage.tlsCA" -}}
{{- if and .Values.tls.enabled (ne .Values.tls.ca.source "system") }}true{{ end }}
{{- end }}
{{- define "stowage.caName" -}}
{{- $ca := .Values.tls.ca }}
{{- if eq $ca.source "secret" }}{{ $ca.secretName }}
{{- else if eq $ca.source "configMap" }}{{ $ca.configMapName }}
{{- else }}{{ .Values.tls.secretName }}{{ end }}
{{- end }}
{{- define "stowage.caVolumeSource" -}}
{{- $items := list (dict "key" .Values.tls.ca.key "path" "ca.crt") }}
{{- if eq .Values.tls.ca.source "configMap" }}
{{- toYaml (dict "configMap" (dict "name" (include "stowage.caName" .) "items" $items "optional" true)) }}
{{- else }}
{{- toYaml (dict "secret" (dict "secretName" (include "stowage.caName" .) "items" $items "optional" true)) }}
{{- end }}
{{- end }}
{{- define "stowage.caDir" -}}/etc/stowage/ca{{- end }}

{{/* A probe from values, switched to HTTPS when the server serves TLS. */}}
{{- define "stowage.probe" -}}
{{- $p := deepCopy (index . 1) }}
{{- if and (index . 0).Values.tls.enabled $p.httpGet }}
{{- $_ := set $p.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- toYaml $p }}
{{- end }}

{{/*
The cache cap: persistence.cacheShare percent of the volume's size
(persistence.size, or emptyDirSizeLimit without persistence), in MiB; empty
when the size is unknown (an existingClaim, no emptyDir limit, an S3 bucket)
or the share 0. Sizes are Kubernetes quantities.
*/}}
{{- define "stowage.cacheCap" -}}
{{- $p := .Values.persistence }}
{{- $size := "" }}
{{- if include "stowage.s3" . }}
{{- /* a bucket: no size known */}}
{{- else if not $p.enabled }}
{{- $size = $p.emptyDirSizeLimit | default "" | toString }}
{{- else if not $p.existingClaim }}
{{- $size = $p.size | default "" | toString }}
{{- end }}
{{- $share := $p.cacheShare | default 0 | int }}
{{- if and $size (gt $share 0) }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $size }}
{{- $unit := trimPrefix $num $size }}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 }}
{{- if or (not $num) (not (hasKey $units $unit)) }}
{{- fail (printf "persistence size %q is not a Kubernetes quantity the chart understands (e.g. 50Gi, 500G)" $size) }}
{{- end }}
{{- $bytes := mulf (float64 $num) (get $units $unit) }}
{{- printf "%.0fMiB" (floor (divf (mulf $bytes $share) 104857600.0)) }}
{{- end }}
{{- end }}
