{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "cachesync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Kept to 54 characters because resource names append "-consumer" (9) and
must stay within the 63 a Service name or label allows. A release name that already contains the
chart name is used as is.
*/}}
{{- define "cachesync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "cachesync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "cachesync.labels" -}}
helm.sh/chart: {{ include "cachesync.chart" . }}
{{ include "cachesync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cachesync
{{- end }}

{{/*
Labels that select this release's pods and services (both roles).
*/}}
{{- define "cachesync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cachesync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one role's resources. Call with (dict "root" $ "role" "tailer").
*/}}
{{- define "cachesync.roleLabels" -}}
{{ include "cachesync.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/*
Labels that select one role's pods. Call with (dict "root" $ "role" "tailer").
*/}}
{{- define "cachesync.roleSelectorLabels" -}}
{{ include "cachesync.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/*
Name of the service account the pods run as.
*/}}
{{- define "cachesync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cachesync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference: a digest wins over a tag; the tag defaults to the chart's appVersion.
*/}}
{{- define "cachesync.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the passwords: the user's existingSecret, or the one this chart creates.
*/}}
{{- define "cachesync.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else }}
{{- include "cachesync.fullname" . }}
{{- end }}
{{- end }}

{{/*
Where the config file and the secret files sit inside the container. Two separate directories:
kubelet mounts ConfigMap volumes read-only, so no other volume can be mounted inside one.
*/}}
{{- define "cachesync.configDir" -}}/etc/cachesync{{- end }}
{{- define "cachesync.configPath" -}}{{ include "cachesync.configDir" . }}/cachesync.yaml{{- end }}

{{/*
The cachesync.yaml the pods read: .Values.config, plus what the chart owns:
  - metrics.port is always .Values.metrics.port, so probes, container port and Service agree;
  - source.password / source.passwordFile (and redis.password / redis.passwordFile when
    secret.redisPassword is enabled) point at the chart's secret, unless the config already sets
    one of them: "${MYSQL_PASSWORD}" in env mode, a file under secret.mountPath in file mode.
Values are deep-copied first: .Values itself is never modified.
*/}}
{{- define "cachesync.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $secret := .Values.secret }}
{{- $metrics := get $cfg "metrics" | default dict }}
{{- $_ := set $metrics "port" (int .Values.metrics.port) }}
{{- $_ := set $cfg "metrics" $metrics }}
{{- $source := get $cfg "source" | default dict }}
{{- if not (or (hasKey $source "password") (hasKey $source "passwordFile")) }}
{{- if eq $secret.mode "file" }}
{{- $_ := set $source "passwordFile" (printf "%s/%s" $secret.mountPath $secret.mysqlPassword.key) }}
{{- else }}
{{- $_ := set $source "password" "${MYSQL_PASSWORD}" }}
{{- end }}
{{- end }}
{{- $_ := set $cfg "source" $source }}
{{- if $secret.redisPassword.enabled }}
{{- $redis := get $cfg "redis" | default dict }}
{{- if not (or (hasKey $redis "password") (hasKey $redis "passwordFile")) }}
{{- if eq $secret.mode "file" }}
{{- $_ := set $redis "passwordFile" (printf "%s/%s" $secret.mountPath $secret.redisPassword.key) }}
{{- else }}
{{- $_ := set $redis "password" "${REDIS_PASSWORD}" }}
{{- end }}
{{- end }}
{{- $_ := set $cfg "redis" $redis }}
{{- end }}
{{- if $secret.kafkaPassword.enabled }}
{{- $kafka := get $cfg "kafka" | default dict }}
{{- $sasl := get $kafka "sasl" | default dict }}
{{- if not (or (hasKey $sasl "password") (hasKey $sasl "passwordFile")) }}
{{- if eq $secret.mode "file" }}
{{- $_ := set $sasl "passwordFile" (printf "%s/%s" $secret.mountPath $secret.kafkaPassword.key) }}
{{- else }}
{{- $_ := set $sasl "password" "${KAFKA_PASSWORD}" }}
{{- end }}
{{- end }}
{{- $_ := set $kafka "sasl" $sasl }}
{{- $_ := set $cfg "kafka" $kafka }}
{{- end }}
{{- range $server := list "source" "kafka" "redis" }}
{{- $t := index $.Values.tls $server }}
{{- if $t.enabled }}
{{- $section := get $cfg $server | default dict }}
{{- $tls := get $section "tls" }}
{{- if not (kindIs "map" $tls) }}{{ $tls = dict }}{{ end }}
{{- if $t.existingSecret }}
{{- $dir := printf "%s/%s" $.Values.tls.mountPath $server }}
{{- if $t.caKey }}{{ $_ := set $tls "caFile" (printf "%s/%s" $dir $t.caKey) }}{{ end }}
{{- if $t.certKey }}{{ $_ := set $tls "certFile" (printf "%s/%s" $dir $t.certKey) }}{{ end }}
{{- if $t.keyKey }}{{ $_ := set $tls "keyFile" (printf "%s/%s" $dir $t.keyKey) }}{{ end }}
{{- end }}
{{- /* An empty mapping is TLS with every default: the system CAs, certificates verified. */}}
{{- $_ := set $section "tls" $tls }}
{{- $_ := set $cfg $server $section }}
{{- end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Fails the render on settings that cannot work, with a message naming the value to fix.
*/}}
{{- define "cachesync.validate" -}}
{{- if not (has .Values.secret.mode (list "file" "env")) }}
{{- fail (printf "secret.mode must be \"file\" or \"env\", not %q" (toString .Values.secret.mode)) }}
{{- end }}
{{- if and (eq .Values.secret.mode "file") (not (hasPrefix "/" (toString .Values.secret.mountPath))) }}
{{- fail "secret.mountPath must be an absolute path" }}
{{- end }}
{{- if hasPrefix (printf "%s/" (include "cachesync.configDir" .)) (printf "%s/" (trimSuffix "/" (toString .Values.secret.mountPath))) }}
{{- fail (printf "secret.mountPath must not be inside %s: the ConfigMap is mounted there read-only" (include "cachesync.configDir" .)) }}
{{- end }}
{{- if not (and .Values.metrics.port (gt (int .Values.metrics.port) 0) (lt (int .Values.metrics.port) 65536)) }}
{{- fail "metrics.port must be a TCP port (1-65535); 0 (a random port) cannot be probed" }}
{{- end }}
{{- if and .Values.consumer.enabled (lt (int .Values.consumer.replicaCount) 0) }}
{{- fail "consumer.replicaCount must be 0 or more" }}
{{- end }}
{{- if not ((.Values.config | default dict).mappings) }}
{{- fail "config.mappings is empty: list the tables cachesync maps to Redis keys (see the chart README)" }}
{{- end }}
{{- $source := (.Values.config | default dict).source | default dict }}
{{- if not (or .Values.secret.existingSecret .Values.secret.mysqlPassword.value (hasKey $source "password") (hasKey $source "passwordFile")) }}
{{- fail "secret.mysqlPassword.value is empty: set it (--set-string secret.mysqlPassword.value=...) or point secret.existingSecret at a Secret of your own" }}
{{- end }}
{{- if and .Values.secret.kafkaPassword.enabled (not ((.Values.config.kafka | default dict).sasl)) }}
{{- fail "secret.kafkaPassword.enabled needs config.kafka.sasl (mechanism and username) to give the password to" }}
{{- end }}
{{- range $server := list "source" "kafka" "redis" }}
{{- $t := index $.Values.tls $server }}
{{- if and $t.enabled $t.existingSecret (not (or $t.caKey $t.certKey)) }}
{{- fail (printf "tls.%s.existingSecret is set but neither tls.%s.caKey nor tls.%s.certKey names a key in it" $server $server $server) }}
{{- end }}
{{- if and $t.enabled (ne (empty $t.certKey) (empty $t.keyKey)) }}
{{- fail (printf "tls.%s: certKey and keyKey go together (a client certificate and its private key)" $server) }}
{{- end }}
{{- end }}
{{- if hasPrefix (printf "%s/" (include "cachesync.configDir" .)) (printf "%s/" (trimSuffix "/" (toString .Values.tls.mountPath))) }}
{{- fail (printf "tls.mountPath must not be inside %s: the ConfigMap is mounted there read-only" (include "cachesync.configDir" .)) }}
{{- end }}
{{- end }}

{{/*
Pod template shared by both roles. Call with (dict "root" $ "role" "tailer" "values" .Values.tailer).
*/}}
{{- define "cachesync.podTemplate" -}}
{{- $root := .root }}
{{- $values := .values }}
{{- $secret := $root.Values.secret }}
{{- $ctx := dict "root" $root "role" .role -}}

metadata:
  labels:
    {{- include "cachesync.roleSelectorLabels" $ctx | nindent 4 }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Config and chart-made secrets are read once at start: roll the pods when they change.
    checksum/config: {{ include "cachesync.config" $root | sha256sum }}
    {{- if not $secret.existingSecret }}
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    {{- end }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "cachesync.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
  # No Docker-link style env vars for every Service in the namespace: a Service named `mysql` would
  # otherwise set MYSQL_PORT=tcp://...:3306 and break a config that reads ${MYSQL_PORT}.
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
  containers:
    - name: {{ .role }}
      image: {{ include "cachesync.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        - run
        - --role
        - {{ .role }}
        - -c
        - {{ include "cachesync.configPath" $root }}
        {{- with $values.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        # So `kubectl exec ... -- cachesync status` finds the config without -c.
        - name: CACHESYNC_CONFIG
          value: {{ include "cachesync.configPath" $root }}
        {{- if eq $secret.mode "env" }}
        - name: MYSQL_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ include "cachesync.secretName" $root }}
              key: {{ $secret.mysqlPassword.key }}
        {{- if $secret.redisPassword.enabled }}
        - name: REDIS_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ include "cachesync.secretName" $root }}
              key: {{ $secret.redisPassword.key }}
        {{- end }}
        {{- if $secret.kafkaPassword.enabled }}
        - name: KAFKA_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ include "cachesync.secretName" $root }}
              key: {{ $secret.kafkaPassword.key }}
        {{- end }}
        {{- end }}
        {{- with $values.nodeOptions }}
        - name: NODE_OPTIONS
          value: {{ . | quote }}
        {{- end }}
        {{- with $root.Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $root.Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: metrics
          containerPort: {{ $root.Values.metrics.port }}
          protocol: TCP
      # Liveness and readiness wait until the process is first ready (connected and streaming), so a
      # slow start (servers still coming up, a long catch-up) is not killed as a hang.
      startupProbe:
        httpGet:
          path: /readyz
          port: metrics
        {{- toYaml $root.Values.startupProbe | nindent 8 }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: metrics
        {{- toYaml $root.Values.livenessProbe | nindent 8 }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: metrics
        {{- toYaml $root.Values.readinessProbe | nindent 8 }}
      {{- with $values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ include "cachesync.configDir" $root }}
          readOnly: true
        {{- if eq $secret.mode "file" }}
        - name: secrets
          mountPath: {{ $secret.mountPath }}
          readOnly: true
        {{- end }}
        {{- range $server := list "source" "kafka" "redis" }}
        {{- $t := index $root.Values.tls $server }}
        {{- if and $t.enabled $t.existingSecret }}
        - name: tls-{{ $server }}
          mountPath: {{ $root.Values.tls.mountPath }}/{{ $server }}
          readOnly: true
        {{- end }}
        {{- end }}
        # The root filesystem is read-only; Node and its libraries may still want a scratch dir.
        - name: tmp
          mountPath: /tmp
        {{- with $root.Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "cachesync.fullname" $root }}
    {{- if eq $secret.mode "file" }}
    - name: secrets
      secret:
        secretName: {{ include "cachesync.secretName" $root }}
        # 0440 (r--r-----), written in decimal so no YAML 1.1/1.2 octal ambiguity: readable through fsGroup.
        defaultMode: 288
        items:
          - key: {{ $secret.mysqlPassword.key }}
            path: {{ $secret.mysqlPassword.key }}
          {{- if $secret.redisPassword.enabled }}
          - key: {{ $secret.redisPassword.key }}
            path: {{ $secret.redisPassword.key }}
          {{- end }}
          {{- if $secret.kafkaPassword.enabled }}
          - key: {{ $secret.kafkaPassword.key }}
            path: {{ $secret.kafkaPassword.key }}
          {{- end }}
    {{- end }}
    {{- range $server := list "source" "kafka" "redis" }}
    {{- $t := index $root.Values.tls $server }}
    {{- if and $t.enabled $t.existingSecret }}
    - name: tls-{{ $server }}
      secret:
        secretName: {{ $t.existingSecret }}
        defaultMode: 288
        items:
          {{- range $key := list $t.caKey $t.certKey $t.keyKey }}
          {{- if $key }}
          - key: {{ $key }}
            path: {{ $key }}
          {{- end }}
          {{- end }}
    {{- end }}
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ $root.Values.tmpSizeLimit }}
    {{- with $root.Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with ($values.nodeSelector | default $root.Values.nodeSelector) }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with ($values.tolerations | default $root.Values.tolerations) }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with ($values.affinity | default $root.Values.affinity) }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- tpl (toYaml .) $root | nindent 4 }}
  {{- end }}
{{- end }}
