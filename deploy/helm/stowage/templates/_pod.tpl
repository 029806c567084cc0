{{/* Pod template shared by the Deployment and the StatefulSet. */}}
{{- define "stowage.podTemplate" -}}
metadata:
  labels:
    {{- include "stowage.serverSelectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "stowage.config" . | sha256sum }}
    {{- if and .Values.clientAuth.enabled (not .Values.clientAuth.existingSecret) }}
    checksum/htpasswd: {{ .Values.clientAuth.htpasswd | sha256sum }}
    {{- end }}
    {{- if and (include "stowage.hasSecrets" .) (not .Values.credentials.existingSecret) }}
    checksum/credentials: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- end }}
    {{- if include "stowage.redisAuth" . }}
    # A new Redis password restarts Stowage with it (and the Redis).
    checksum/redis-password: {{ include "stowage.redisPassword" . | sha256sum }}
    {{- end }}
    {{- if and (include "stowage.s3" .) (include "stowage.s3Credentials" .) (not .Values.s3.existingSecret) }}
    checksum/s3: {{ printf "%s\n%s" .Values.s3.accessKey .Values.s3.secretKey | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "stowage.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  # Pre-stop pause + server.shutdown_timeout + 10s, unless set: the kubelet
  # must not kill downloads that Stowage's own shutdown would let finish.
  terminationGracePeriodSeconds: {{ include "stowage.terminationGracePeriod" . }}
  containers:
    - name: stowage
      image: {{ include "stowage.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - serve
        - --config
        - /etc/stowage/config.yaml
        {{- with .Values.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
        {{- if include "stowage.clusterEnabled" . }}
        - name: peer
          containerPort: {{ .Values.cluster.port }}
          protocol: TCP
        {{- end }}
      env:
        # The root filesystem is read-only: temporary files go to an emptyDir.
        - name: TMPDIR
          value: /tmp
        {{- if include "stowage.clusterEnabled" . }}
        # cluster.advertise is http://${POD_IP}:<port>.
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- end }}
        {{- if include "stowage.redisAuth" . }}
        # config.redis.password_env names it.
        - name: {{ include "stowage.redisPasswordEnv" . }}
          valueFrom:
            secretKeyRef:
              name: {{ include "stowage.redisSecretName" . }}
              key: {{ .Values.redis.auth.secretKey }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $preStop := include "stowage.preStopSeconds" . | int }}
      {{- if gt $preStop 0 }}
      # Before SIGTERM: the terminating pod leaves the Service's endpoints
      # while it still accepts connections, so no client is refused; then
      # Stowage drains (/readyz 503) and lets responses and fills finish.
      lifecycle:
        preStop:
          sleep:
            seconds: {{ $preStop }}
      {{- end }}
      {{- with .Values.startupProbe }}
      startupProbe:
        {{- include "stowage.probe" (list $ .) | nindent 8 }}
      {{- end }}
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- include "stowage.probe" (list $ .) | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- include "stowage.probe" (list $ .) | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/stowage/config.yaml
          subPath: config.yaml
          readOnly: true
        {{- if not (include "stowage.s3" .) }}
        - name: data
          mountPath: {{ .Values.persistence.mountPath }}
        {{- end }}
        - name: tmp
          mountPath: /tmp
        {{- if include "stowage.hasSecrets" . }}
        - name: credentials
          mountPath: {{ include "stowage.secretsDir" . }}
          readOnly: true
        {{- end }}
        {{- if include "stowage.clusterEnabled" . }}
        - name: cluster-secret
          mountPath: {{ include "stowage.clusterSecretDir" . }}
          readOnly: true
        {{- end }}
        {{- if and (include "stowage.s3" .) (include "stowage.s3Credentials" .) }}
        - name: s3-credentials
          mountPath: {{ include "stowage.s3SecretDir" . }}
          readOnly: true
        {{- end }}
        {{- if .Values.tls.enabled }}
        - name: tls
          mountPath: {{ include "stowage.tlsDir" . }}
          readOnly: true
        {{- end }}
        {{- if .Values.clientAuth.enabled }}
        - name: htpasswd
          mountPath: {{ include "stowage.htpasswdDir" . }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "stowage.fullname" . }}
    {{- if include "stowage.s3" . }}
    # TMPDIR holds the staging of running fills: with S3 a blob is
    # downloaded and verified here, then uploaded on commit.
    - name: tmp
      {{- if .Values.s3.staging.volume }}
      {{- toYaml .Values.s3.staging.volume | nindent 6 }}
      {{- else if .Values.s3.staging.sizeLimit }}
      emptyDir:
        sizeLimit: {{ .Values.s3.staging.sizeLimit }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- else }}
    - name: tmp
      {{- if .Values.tmpSizeLimit }}
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
    {{- if include "stowage.s3" . }}
    {{- /* the cache is the bucket: no data volume */}}
    {{- else if not .Values.persistence.enabled }}
    - name: data
      {{- if .Values.persistence.emptyDirSizeLimit }}
      emptyDir:
        sizeLimit: {{ .Values.persistence.emptyDirSizeLimit }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- else if not .Values.persistence.perReplica }}
    - name: data
      persistentVolumeClaim:
        claimName: {{ .Values.persistence.existingClaim | default (include "stowage.fullname" .) }}
    {{- end }}
    {{- if include "stowage.hasSecrets" . }}
    - name: credentials
      secret:
        secretName: {{ include "stowage.secretName" . }}
        defaultMode: 0440
    {{- end }}
    {{- if include "stowage.clusterEnabled" . }}
    - name: cluster-secret
      secret:
        secretName: {{ include "stowage.clusterSecretName" . }}
        items:
          - key: {{ .Values.cluster.secretKey }}
            path: {{ .Values.cluster.secretKey }}
        defaultMode: 0440
    {{- end }}
    {{- if and (include "stowage.s3" .) (include "stowage.s3Credentials" .) }}
    - name: s3-credentials
      secret:
        secretName: {{ include "stowage.s3SecretName" . }}
        items:
          - key: {{ .Values.s3.accessKeyKey }}
            path: {{ .Values.s3.accessKeyKey }}
          - key: {{ .Values.s3.secretKeyKey }}
            path: {{ .Values.s3.secretKeyKey }}
        defaultMode: 0440
    {{- end }}
    {{- if .Values.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ .Values.tls.secretName }}
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
        defaultMode: 0440
    {{- end }}
    {{- if .Values.clientAuth.enabled }}
    - name: htpasswd
      secret:
        secretName: {{ include "stowage.htpasswdSecretName" . }}
        items:
          - key: {{ .Values.clientAuth.secretKey }}
            path: {{ .Values.clientAuth.secretKey }}
        defaultMode: 0440
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "stowage.affinity" . }}
  affinity:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
