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

{{/* registry/repository:tag (or @digest); the registry is set in one place, image.registry. */}}
{{- define "yatagarasu.image" -}}
{{- $repo := .Values.image.repository }}
{{- with .Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Redis URL of standalone mode: explicit, else the bundled Valkey. */}}
{{- define "yatagarasu.redisUrl" -}}
{{- if .Values.cache.redis.url }}
{{- .Values.cache.redis.url }}
{{- else if .Values.valkey.enabled }}
{{- printf "redis://%s-valkey:6379" (include "yatagarasu.fullname" .) }}
{{- else }}
{{- fail "cache.redis.enabled: set cache.redis.url (your Valkey/Redis), cache.redis.mode cluster/sentinel with cache.redis.urls, or valkey.enabled (a single bundled Valkey, for trials)" }}
{{- end }}
{{- end }}

{{/* The config's cache block: .Values.cache, redis filled in per mode. */}}
{{- define "yatagarasu.cache" -}}
{{- $cache := deepCopy .Values.cache }}
{{- $redis := omit (default (dict) $cache.redis) "mode" "url" "urls" "sentinel_master" }}
{{- if .Values.cache.redis.enabled }}
{{- $mode := default "standalone" .Values.cache.redis.mode }}
{{- if eq $mode "standalone" }}
{{- $_ := set $redis "url" (include "yatagarasu.redisUrl" .) }}
{{- else if has $mode (list "cluster" "sentinel") }}
{{- if .Values.valkey.enabled }}
{{- fail (printf "cache.redis.mode %s points at an external %s: turn valkey.enabled off (the bundled Valkey is a single standalone server)" $mode $mode) }}
{{- end }}
{{- $urls := .Values.cache.redis.urls }}
{{- if not $urls }}
{{- fail (printf "cache.redis.urls: list the %s's nodes (redis://host:port, one per node)" $mode) }}
{{- end }}
{{- $_ := set $redis "mode" $mode }}
{{- $_ := set $redis "urls" $urls }}
{{- if eq $mode "sentinel" }}
{{- $_ := set $redis "sentinel_master" (required "cache.redis.sentinel_master: the name of the master the sentinels watch (e.g. mymaster)" .Values.cache.redis.sentinel_master) }}
{{- end }}
{{- else }}
{{- fail (printf "cache.redis.mode: %q is not standalone, cluster or sentinel" $mode) }}
{{- end }}
{{- end }}
{{- $_ := set $cache "redis" $redis }}
{{- toYaml $cache }}
{{- end }}

{{/*
The rendered config.yaml: .Values.config, the keys the chart fills in
(server.address, server.shutdown_grace_seconds, server.tls, metrics.enabled,
metrics.port, metrics.admin_token, cache), then .Values.extraConfig merged
over everything.
*/}}
{{- define "yatagarasu.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- if not $cfg.buckets }}
{{- fail "config.buckets is empty: list the buckets to serve (name, path_prefix, s3.bucket, s3.region, replicas); see the example in values.yaml and docs/DEPLOYMENT.md" }}
{{- end }}
{{- $server := default (dict) (get $cfg "server") }}
{{- $_ := set $server "address" (printf "0.0.0.0:%d" (int .Values.service.port)) }}
{{- $_ := set $server "shutdown_grace_seconds" (int .Values.shutdown.drainSeconds) }}
{{- if .Values.tls.enabled }}
{{- $_ := required "tls.secretName: the kubernetes.io/tls Secret (tls.crt, tls.key) to serve, e.g. from a cert-manager Certificate" .Values.tls.secretName }}
{{- $tls := default (dict) (get $server "tls") }}
{{- $_ := set $tls "cert_file" (printf "%s/tls.crt" .Values.tls.mountPath) }}
{{- $_ := set $tls "key_file" (printf "%s/tls.key" .Values.tls.mountPath) }}
{{- $_ := set $tls "min_version" (toString .Values.tls.minVersion) }}
{{- if .Values.tls.clientCa.secretName }}
{{- $_ := set $tls "client_ca_file" (printf "%s/ca.crt" .Values.tls.clientCa.mountPath) }}
{{- end }}
{{- $_ := set $server "tls" $tls }}
{{- else if .Values.tls.clientCa.secretName }}
{{- fail "tls.clientCa.secretName: mutual TLS needs TLS on the listener: set tls.enabled and tls.secretName too" }}
{{- end }}
{{- if .Values.s3Api.tokenKey.existingSecret }}
{{- $s3api := default (dict) (get $server "s3_api") }}
{{- $_ := set $s3api "token_key" "${YATAGARASU_LISTING_TOKEN_KEY}" }}
{{- $_ := set $server "s3_api" $s3api }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- $metrics := default (dict) (get $cfg "metrics") }}
{{- $_ := set $metrics "enabled" .Values.metrics.enabled }}
{{- $_ := set $metrics "port" (int .Values.metrics.port) }}
{{- if .Values.metrics.adminToken.existingSecret }}
{{- $_ := set $metrics "admin_token" "${YATAGARASU_ADMIN_TOKEN}" }}
{{- end }}
{{- if .Values.metrics.tls.enabled }}
{{- if not .Values.tls.enabled }}
{{- fail "metrics.tls.enabled: the metrics port serves the certificate of tls.secretName: set tls.enabled and tls.secretName too" }}
{{- end }}
{{- $mtls := default (dict) (get $metrics "tls") }}
{{- $_ := set $mtls "cert_file" (printf "%s/tls.crt" .Values.tls.mountPath) }}
{{- $_ := set $mtls "key_file" (printf "%s/tls.key" .Values.tls.mountPath) }}
{{- $_ := set $mtls "min_version" (toString .Values.tls.minVersion) }}
{{- $_ := set $metrics "tls" $mtls }}
{{- end }}
{{- $_ := set $cfg "metrics" $metrics }}
{{- $_ := set $cfg "cache" (include "yatagarasu.cache" . | fromYaml) }}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.extraConfig) }}
{{- include "yatagarasu.checkVariables" (dict "root" . "config" $cfg) }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Fail at install, not at pod start: every ${VAR} without a default in the
config must come from somewhere the pod gets it (the credentials Secret, env,
or the admin token). The keys of an existing Secret are not known offline:
list them in credentials.keys when the config references them.
*/}}
{{- define "yatagarasu.checkVariables" -}}
{{- $v := .root.Values }}
{{- $provided := list "YATAGARASU_ADMIN_TOKEN" "YATAGARASU_LISTING_TOKEN_KEY" }}
{{- range $v.env }}{{ $provided = append $provided .name }}{{ end }}
{{- if $v.credentials.existingSecret }}
{{- $provided = concat $provided (default (list) $v.credentials.keys) }}
{{- else if $v.credentials.create }}
{{- $provided = concat $provided (keys $v.credentials.data) }}
{{- end }}
{{- range (regexFindAll "\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}" (toYaml .config) -1) }}
{{- $name := trimSuffix "}" (trimPrefix "${" .) }}
{{- if not (has $name $provided) }}
{{- fail (printf "config uses %s but nothing provides %s: set credentials.existingSecret (a Secret with key %s) and list %s in credentials.keys, or add it to env (or drop the static key: with no access_key/secret_key the pod's own AWS identity is used, see serviceAccount.annotations)" . $name $name $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A probe (.probe) given the rendered config (.config, parsed). An httpGet on
the proxy port ("http" or service.port) moves to the metrics port when the
proxy port requires client certificates (server.tls.client_ca_file): the
kubelet has none. The scheme is that of the listener probed: HTTPS when the
proxy port has server.tls / the metrics port has metrics.tls, HTTP otherwise.
A probe on another port is left as given.
*/}}
{{- define "yatagarasu.probe" -}}
{{- $v := .root.Values }}
{{- $p := deepCopy .probe }}
{{- $server := default (dict) .config.server }}
{{- $metrics := default (dict) .config.metrics }}
{{- $serverTls := default (dict) $server.tls }}
{{- $metricsTls := default (dict) $metrics.tls }}
{{- with $p.httpGet }}
{{- $port := toString .port }}
{{- $onProxy := or (eq $port "http") (eq $port (toString $v.service.port)) }}
{{- if and $onProxy $serverTls.client_ca_file }}
{{- if not $metrics.enabled }}
{{- fail (printf "%s: the proxy port requires client certificates (server.tls.client_ca_file) and the kubelet has none, so the probes move to the metrics port: keep metrics.enabled on" $.name) }}
{{- end }}
{{- $_ := set . "port" "metrics" }}
{{- $port = "metrics" }}
{{- $onProxy = false }}
{{- end }}
{{- $onMetrics := or (eq $port "metrics") (eq $port (toString $v.metrics.port)) }}
{{- if $onProxy }}
{{- $_ := set . "scheme" (ternary "HTTPS" "HTTP" (not (empty $serverTls))) }}
{{- else if $onMetrics }}
{{- if $metricsTls.client_ca_file }}
{{- fail (printf "%s: metrics.tls.client_ca_file would make the metrics port require client certificates, which the kubelet's probes (and Prometheus, unless given one) do not have" $.name) }}
{{- end }}
{{- $_ := set . "scheme" (ternary "HTTPS" "HTTP" (not (empty $metricsTls))) }}
{{- end }}
{{- end }}
{{- toYaml $p }}
{{- end }}

{{/* "true" when the rendered config serves the metrics port over TLS. */}}
{{- define "yatagarasu.metricsTls" -}}
{{- $cfg := include "yatagarasu.config" . | fromYaml }}
{{- if (default (dict) (default (dict) $cfg.metrics).tls) }}true{{ end }}
{{- end }}

{{/* Whether the cluster serves the Prometheus Operator kind given. */}}
{{- define "yatagarasu.hasMonitoring" -}}
{{- if .root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind) }}true{{ end }}
{{- end }}
