{{/* The chart name, shortened to the 63 characters of a label. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; objects add -web, -worker, ... (kept under 63 characters). */}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one tier: (dict "root" $ "component" "web") */}}
{{- define "switchboard.componentLabels" -}}
{{ include "switchboard.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchboard.componentSelectorLabels" -}}
{{ include "switchboard.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret every pod reads (envFrom): existingSecret, else <fullname>-secrets. */}}
{{- define "switchboard.secretName" -}}
{{- default (printf "%s-secrets" (include "switchboard.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "switchboard.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The inbox stream and consumer group (bot/keys.py Keys.inbox(), bot/inbox.py GROUP). */}}
{{- define "switchboard.inboxStream" -}}
{{- printf "%s:inbox" (default "sb" .Values.config.BOT_KEY_PREFIX) -}}
{{- end -}}
{{- define "switchboard.inboxGroup" -}}engine{{- end -}}

{{/* terminationGracePeriodSeconds: above BOT_SHUTDOWN_GRACE_S by the margin. */}}
{{- define "switchboard.terminationGrace" -}}
{{- $grace := default "30" .Values.config.BOT_SHUTDOWN_GRACE_S | toString | float64 | ceil | int -}}
{{- add $grace .Values.terminationGraceMarginSeconds -}}
{{- end -}}

{{/* Both tiers fail fast on conflicting scalers. */}}
{{- define "switchboard.validate" -}}
{{- if and .Values.worker.keda.enabled .Values.worker.hpa.enabled -}}
{{- fail "worker.keda.enabled and worker.hpa.enabled are exclusive: KEDA creates its own HPA" -}}
{{- end -}}
{{- if and .Values.worker.keda.enabled (not .Values.worker.keda.address) -}}
{{- fail "worker.keda.address (the Redis host:port) is required when worker.keda.enabled" -}}
{{- end -}}
{{- if and .Values.secrets.externalSecret.enabled (not .Values.secrets.externalSecret.secretStoreRef.name) -}}
{{- fail "secrets.externalSecret.secretStoreRef.name is required when secrets.externalSecret.enabled" -}}
{{- end -}}
{{- end -}}

{{/* Environment the chart owns (wins over the ConfigMap and the Secret). */}}
{{- define "switchboard.fixedEnv" -}}
- name: BOT_HTTP_HOST
  value: "0.0.0.0"
- name: BOT_HTTP_PORT
  value: "8080"
- name: BOT_METRICS_PORT
  value: "8080"
- name: BOT_DATA_DIR
  value: /data
{{- /* the hook Job migrates; without it (migrations.enabled false) the pods do */}}
- name: BOT_MIGRATE_ON_START
  value: {{ ternary "false" "true" .Values.migrations.enabled | quote }}
{{- end -}}

{{/* Checksums of what the pods read, so a change rolls them. */}}
{{- define "switchboard.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/externalsecret.yaml") . | sha256sum }}
{{- end -}}

{{/*
The pod template of a tier: (dict "root" $ "component" "web" "tier" .Values.web "args" (list ...))
*/}}
{{- define "switchboard.podTemplate" -}}
{{- $root := .root -}}
{{- $tier := .tier -}}
{{- $labels := dict "root" $root "component" .component -}}
metadata:
  labels:
    {{- include "switchboard.componentLabels" $labels | nindent 4 }}
    {{- with $tier.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- include "switchboard.checksums" $root | nindent 4 }}
    {{- with $tier.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "switchboard.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ include "switchboard.terminationGrace" $root }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tier.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .component }}
      image: {{ include "switchboard.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      ports:
        - name: http
          containerPort: 8080
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "switchboard.fullname" $root }}
        - secretRef:
            name: {{ include "switchboard.secretName" $root }}
        {{- with $root.Values.extraEnvFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        {{- include "switchboard.fixedEnv" $root | nindent 8 }}
        {{- if eq .component "worker" }}
        - name: BOT_CONCURRENCY
          value: {{ $tier.concurrency | quote }}
        {{- end }}
        {{- with $root.Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      startupProbe:
        {{- $startup := dict "httpGet" (dict "path" "/health/live" "port" "http") "periodSeconds" 5 "timeoutSeconds" 3 "failureThreshold" 60 }}
        {{- toYaml (mergeOverwrite $startup $tier.startupProbe) | nindent 8 }}
      livenessProbe:
        {{- $live := dict "httpGet" (dict "path" "/health/live" "port" "http") "periodSeconds" 10 "timeoutSeconds" 3 "failureThreshold" 3 }}
        {{- toYaml (mergeOverwrite $live $tier.livenessProbe) | nindent 8 }}
      readinessProbe:
        {{- $ready := dict "httpGet" (dict "path" "/health/ready" "port" "http") "periodSeconds" 10 "timeoutSeconds" 5 "failureThreshold" 3 }}
        {{- toYaml (mergeOverwrite $ready $tier.readinessProbe) | nindent 8 }}
      {{- if and (eq .component "web") (gt (int $tier.preStopSleepSeconds) 0) }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ $tier.preStopSleepSeconds }}
      {{- end }}
      resources:
        {{- toYaml $tier.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: data
          mountPath: /data
        {{- if $root.Values.files }}
        - name: files
          mountPath: /etc/switchboard
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $root.Values.tmpSizeLimit }}
    - name: data
      emptyDir:
        sizeLimit: {{ $root.Values.dataSizeLimit }}
    {{- if $root.Values.files }}
    - name: files
      configMap:
        name: {{ include "switchboard.fullname" $root }}-files
    {{- end }}
  {{- with $tier.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tier.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tier.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $tier.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
