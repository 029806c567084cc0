{{/* Pod spec of a prefetch run (hook Job and CronJob). */}}
{{- define "stowage.prefetchPodSpec" -}}
{{- if not (include "stowage.adminEnabled" .) }}
{{- fail "prefetch.hook and prefetch.cronJob post to the admin API: set credentials.adminToken (or existingSecret with adminTokenKey)" }}
{{- end }}
{{- $url := printf "http://%s:%d" (include "stowage.fullname" .) (int .Values.service.port) }}
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
  - name: wait-for-server
    image: {{ printf "%s:%s" .Values.prefetch.waitImage.repository .Values.prefetch.waitImage.tag }}
    command:
      - sh
      - -c
      - until wget -q -O /dev/null -T 5 {{ $url }}/healthz; do echo "waiting for {{ $url }}"; sleep 3; done
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
volumes:
  - name: lists
    configMap:
      name: {{ include "stowage.fullname" . }}-prefetch
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
