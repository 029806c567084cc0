{{/* Pod spec of a prefetch run (hook Job and CronJob). */}}
{{- define "stowage.prefetchPodSpec" -}}
{{- if not (include "stowage.adminEnabled" .) }}
{{- fail "prefetch.hook and prefetch.cronJob post to the admin API: set credentials.adminToken (or existingSecret with adminTokenKey)" }}
{{- end }}
{{- $url := printf "http://%s:%d" (include "stowage.fullname" .) (int .Values.service.port) }}
{{- if .Values.tls.enabled }}
{{- /* the name the certificate holds (docs/kubernetes.md) */}}
{{- $url = printf "https://%s:%d" (include "stowage.serviceHost" .) (int .Values.service.port) }}
{{- end }}
serviceAccountName: {{ include "stowage.serviceAccountName" . }}
automountServiceAccountToken: false
restartPolicy: Never
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
initContainers:
  # Without `helm install --wait` the hook can start before Stowage is ready.
  # With TLS busybox's wget cannot check the certificate: this only waits for
  # /healthz, and the prefetch below verifies the server (--server-ca).
  - name: wait-for-server
    image: {{ printf "%s:%s" .Values.prefetch.waitImage.repository .Values.prefetch.waitImage.tag }}
    command:
      - sh
      - -c
      - until wget -q -O /dev/null -T 5 {{ if .Values.tls.enabled }}--no-check-certificate {{ end }}{{ $url }}/healthz; do echo "waiting for {{ $url }}"; sleep 3; done
    resources:
      {{- toYaml .Values.prefetch.resources | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
containers:
  - name: prefetch
    image: {{ include "stowage.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args:
      - prefetch
      - --server
      - {{ $url }}
      {{- if include "stowage.tlsCA" . }}
      - --server-ca
      - {{ include "stowage.caDir" . }}/ca.crt
      {{- end }}
      - -f
      - /lists/images.txt
    env:
      - name: TMPDIR
        value: /tmp
      # The admin API's bearer token, from the chart's credentials Secret.
      - name: STOWAGE_ADMIN_TOKEN
        valueFrom:
          secretKeyRef:
            name: {{ include "stowage.secretName" . }}
            key: {{ include "stowage.adminTokenKey" . }}
    resources:
      {{- toYaml .Values.prefetch.resources | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: lists
        mountPath: /lists
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- if include "stowage.tlsCA" . }}
      - name: ca
        mountPath: {{ include "stowage.caDir" . }}
        readOnly: true
      {{- end }}
volumes:
  - name: lists
    configMap:
      name: {{ include "stowage.fullname" . }}-prefetch
  {{- if include "stowage.tlsCA" . }}
  - name: ca
    {{- include "stowage.caVolumeSource" . | nindent 4 }}
  {{- end }}
  - name: tmp
    emptyDir: {}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
