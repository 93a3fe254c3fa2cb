{{/* Chart name, truncated to the 63-character DNS label limit. */}}
{{- define "yatagarasu.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "yatagarasu.fullname" -}}
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

{{- define "yatagarasu.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every object of the release (no component). */}}
{{- define "yatagarasu.commonLabels" -}}
helm.sh/chart: {{ include "yatagarasu.chart" . }}
app.kubernetes.io/name: {{ include "yatagarasu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the proxy objects. */}}
{{- define "yatagarasu.labels" -}}
{{ include "yatagarasu.commonLabels" . }}
app.kubernetes.io/component: proxy
{{- end }}

{{/* Selector of the proxy pods. */}}
{{- define "yatagarasu.selectorLabels" -}}
app.kubernetes.io/name: {{ include "yatagarasu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
{{- end }}

{{/* Selector of the bundled Valkey pods. */}}
{{- define "yatagarasu.valkeySelectorLabels" -}}
app.kubernetes.io/name: {{ include "yatagarasu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: cache
{{- end }}

{{- define "yatagarasu.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "yatagarasu.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "yatagarasu.secretName" -}}
{{- if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else if .Values.credentials.create }}
{{- printf "%s-credentials" (include "yatagarasu.fullname" .) }}
{{- end }}
{{- end }}

{{- define "yatagarasu.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Redis URL used by the cache: explicit, else the bundled Valkey. */}}
{{- define "yatagarasu.redisUrl" -}}
{{- if .Values.cache.redis.url }}
{{- .Values.cache.redis.url }}
{{- else if .Values.valkey.enabled }}
{{- printf "redis://%s-valkey:6379" (include "yatagarasu.fullname" .) }}
{{- else }}
{{- fail "cache.redis.enabled needs cache.redis.url or valkey.enabled" }}
{{- end }}
{{- end }}

{{/*
The rendered config.yaml: .Values.config plus the keys the chart owns
(server.address, server.shutdown_grace_seconds, metrics, cache).
*/}}
{{- define "yatagarasu.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $server := default (dict) (get $cfg "server") }}
{{- $_ := set $server "address" (printf "0.0.0.0:%d" (int .Values.service.port)) }}
{{- $_ := set $server "shutdown_grace_seconds" (int .Values.shutdown.drainSeconds) }}
{{- $_ := set $cfg "server" $server }}
{{- $_ := set $cfg "metrics" (dict "enabled" .Values.metrics.enabled "port" (int .Values.metrics.port)) }}
{{- $cache := dict "memory" (deepCopy .Values.cache.memory) }}
{{- if .Values.cache.redis.enabled }}
{{- $redis := omit (deepCopy .Values.cache.redis) "url" }}
{{- $_ := set $redis "url" (include "yatagarasu.redisUrl" .) }}
{{- $_ := set $cache "redis" $redis }}
{{- end }}
{{- $_ := set $cfg "cache" $cache }}
{{- toYaml $cfg }}
{{- end }}
