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
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
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
        {{- if .Values.cluster.enabled }}
        - name: peer
          containerPort: {{ .Values.cluster.port }}
          protocol: TCP
        {{- end }}
      env:
        # The root filesystem is read-only: temporary files go to an emptyDir.
        - name: TMPDIR
          value: /tmp
        {{- if .Values.cluster.enabled }}
        # cluster.advertise is http://${POD_IP}:<port>.
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
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
        - name: data
          mountPath: {{ .Values.persistence.mountPath }}
        - name: tmp
          mountPath: /tmp
        {{- if include "stowage.hasSecrets" . }}
        - name: credentials
          mountPath: {{ include "stowage.secretsDir" . }}
          readOnly: true
        {{- end }}
        {{- if .Values.cluster.enabled }}
        - name: cluster-secret
          mountPath: {{ include "stowage.clusterSecretDir" . }}
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
    - name: tmp
      {{- if .Values.tmpSizeLimit }}
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- if not .Values.persistence.enabled }}
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
    {{- if .Values.cluster.enabled }}
    - name: cluster-secret
      secret:
        secretName: {{ include "stowage.clusterSecretName" . }}
        items:
          - key: {{ .Values.cluster.secretKey }}
            path: {{ .Values.cluster.secretKey }}
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
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
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
