{{/* Names and labels. */}}
{{- define "raygate.fullname" -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "raygate.labels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "raygate.selector" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "raygate.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "raygate.redisSecret" -}}
{{- default (printf "%s-redis" (include "raygate.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{- define "raygate.tenantsSecret" -}}
{{- default (printf "%s-tenants" (include "raygate.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/*
The Redis password when the chart renders its Secret: redis.password, else derived from
the namespace, the release and redis.passwordSalt. The same on every render (helm
template, GitOps), never looked up or drawn at random.
*/}}
{{- define "raygate.redisPassword" -}}
{{- if .Values.redis.password -}}
{{- .Values.redis.password -}}
{{- else -}}
{{- $salt := required "redis.password, redis.existingSecret or redis.passwordSalt is required" .Values.redis.passwordSalt -}}
{{- printf "raygate-redis\n%s\n%s\n%s" .Release.Namespace .Release.Name $salt | sha256sum | trunc 32 -}}
{{- end -}}
{{- end -}}

{{/* Pod annotations that roll the pods when the chart's Redis password changes. */}}
{{- define "raygate.passwordChecksum" -}}
{{- if not .Values.redis.existingSecret -}}
checksum/redis-password: {{ include "raygate.redisPassword" . | sha256sum }}
{{- end -}}
{{- end -}}

{{/* A store's URL: "quota" or "cache" (the chart's own StatefulSet or external.<store>Url). */}}
{{- define "raygate.redisUrl" -}}
{{- $ := index . 0 -}}
{{- $store := index . 1 -}}
{{- if $.Values.redis.internal.enabled -}}
redis://{{ include "raygate.fullname" $ }}-redis-{{ $store }}:6379/0
{{- else -}}
{{- required (printf "redis.external.%sUrl is required when redis.internal.enabled is false" $store) (index $.Values.redis.external (printf "%sUrl" $store)) -}}
{{- end -}}
{{- end -}}

{{/*
Security contexts. Every pod runs as a non-root uid with the runtime's seccomp profile;
every container without privilege escalation or capabilities. The image's USER
(Dockerfile) is 1000:1000; Redis's image's user is 999 in group 1000.
*/}}
{{- define "raygate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: 1000
fsGroup: 1000
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "raygate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities: {drop: [ALL]}
{{- end -}}

{{/*
The Serve config: the profile's own file (a copy of serve_config.yaml or
configs/gpu.yaml), with the values' overrides merged in and the cluster's
Redis, tenants file and HTTP settings. Unknown model ids in the overrides fail.
*/}}
{{- define "raygate.serveConfig" -}}
{{- $file := ternary "files/gpu.yaml" "files/serve_config.yaml" (eq .Values.app.profile "gpu") -}}
{{- $serve := .Files.Get $file | fromYaml -}}
{{- $app := index $serve.applications 0 -}}
{{- $args := $app.args -}}
{{- range $section := list "models" "embedders" "rerankers" -}}
{{- $overrides := index $.Values.app $section -}}
{{- $ids := list -}}
{{- range $entry := (index $args $section | default list) -}}
{{- $ids = append $ids $entry.id -}}
{{- if hasKey $overrides $entry.id -}}
{{- $_ := mergeOverwrite $entry (deepCopy (index $overrides $entry.id)) -}}
{{- end -}}
{{- end -}}
{{- range $id, $_ := $overrides -}}
{{- if not (has $id $ids) -}}
{{- fail (printf "app.%s.%s: no such id in the %s profile (ids: %s)" $section $id $.Values.app.profile (join ", " $ids)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $_ := set $args "gateway" (mergeOverwrite (default dict $args.gateway) (deepCopy .Values.app.gateway)) -}}
{{- $_ := set $args "routing" (mergeOverwrite (default dict $args.routing) (deepCopy .Values.app.routing)) -}}
{{- $auth := dict "enabled" .Values.auth.enabled "tenants_file" "/etc/raygate/tenants.yaml" -}}
{{- if and (not .Values.auth.enabled) $args.auth.anonymous_tenant -}}
{{- $_ := set $auth "anonymous_tenant" $args.auth.anonymous_tenant -}}
{{- end -}}
{{- $_ := set $args "auth" $auth -}}
{{- $_ := set $args.quota "redis_url" (include "raygate.redisUrl" (list . "quota")) -}}
{{- $_ := set $args.quota "redis_password_env" "RAYGATE_REDIS_PASSWORD" -}}
{{- if $args.cache -}}
{{- $_ := set $args.cache "redis_url" (include "raygate.redisUrl" (list . "cache")) -}}
{{- $_ := set $args.cache "redis_password_env" "RAYGATE_REDIS_PASSWORD" -}}
{{- end -}}
{{- $http := dict "host" "0.0.0.0" "port" 8000 "request_timeout_s" .Values.app.requestTimeoutS -}}
{{- $config := dict "proxy_location" .Values.app.proxyLocation "http_options" $http "applications" (list $app) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* What every Ray pod's container shares: image, env, the tenants file. */}}
{{- define "raygate.rayContainer" -}}
image: {{ include "raygate.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
workingDir: /app
env:
  - name: RAYGATE_REDIS_PASSWORD
    valueFrom:
      secretKeyRef: {name: {{ include "raygate.redisSecret" . }}, key: redis-password}
  - name: HF_HUB_OFFLINE
    value: {{ ternary "1" "0" (eq .Values.app.profile "local") | quote }}
  {{- /* the cluster's environment: a copy of configs/cluster.env (NAME=value lines) */}}
  {{- range $line := splitList "\n" (.Files.Get "files/cluster.env") }}
  {{- $line = trim $line }}
  {{- if and $line (not (hasPrefix "#" $line)) }}
  {{- $pair := regexSplit "=" $line 2 }}
  - name: {{ index $pair 0 }}
    value: {{ index $pair 1 | quote }}
  {{- end }}
  {{- end }}
volumeMounts:
  - {name: tenants, mountPath: /etc/raygate, readOnly: true}
securityContext: {{- include "raygate.containerSecurityContext" . | nindent 2 }}
{{- end -}}

{{- define "raygate.rayVolumes" -}}
volumes:
  - name: tenants
    secret: {secretName: {{ include "raygate.tenantsSecret" . }}}
{{- end -}}

{{/*
redis.conf of a store: (list "quota"|"cache" its-values). The quota store keeps every
bucket and lease: a full store refuses writes (the gateway then applies
quota.on_redis_error) and every write is appended to disk. The cache store evicts its
least recently used entries and keeps nothing on disk.
*/}}
{{- define "raygate.redisConf" -}}
{{- $store := index . 0 -}}
{{- $values := index . 1 -}}
port 6379
dir /data
maxmemory {{ $values.maxmemory }}
{{- if eq $store "quota" }}
maxmemory-policy noeviction
appendonly yes
appendfsync everysec
{{- else }}
maxmemory-policy volatile-lru
appendonly no
{{- end }}
save ""
include /run/redis/auth.conf
{{- end -}}
