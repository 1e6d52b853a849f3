{{/* Names, labels and the values every template shares. */}}

{{- define "voxrouter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "voxrouter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's name: "<fullname>-<component>", within 63 characters. */}}
{{- define "voxrouter.componentName" -}}
{{- printf "%s-%s" (include "voxrouter.fullname" .root | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{- define "voxrouter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "voxrouter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voxrouter.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Call with (dict "root" $ "component" "gateway"). */}}
{{- define "voxrouter.labels" -}}
helm.sh/chart: {{ include "voxrouter.chart" .root }}
{{ include "voxrouter.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: voxrouter
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "voxrouter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "voxrouter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "voxrouter.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) -}}
{{- end -}}

{{- define "voxrouter.engineImage" -}}
{{- $repository := default .Values.image.repository .Values.engine.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.engine.image.tag -}}
{{- printf "%s:%s" $repository (toString $tag) -}}
{{- end -}}

{{/* The Secret the chart makes for URLs given in values (external database / Redis). */}}
{{- define "voxrouter.urlSecretName" -}}
{{- include "voxrouter.componentName" (dict "root" . "component" "urls") -}}
{{- end -}}

{{- define "voxrouter.postgresql.secretName" -}}
{{- default (include "voxrouter.componentName" (dict "root" . "component" "postgresql")) .Values.postgresql.auth.existingSecret -}}
{{- end -}}

{{- define "voxrouter.postgresql.host" -}}
{{- include "voxrouter.componentName" (dict "root" . "component" "postgresql") -}}
{{- end -}}

{{- define "voxrouter.redis.host" -}}
{{- include "voxrouter.componentName" (dict "root" . "component" "redis") -}}
{{- end -}}

{{- define "voxrouter.engine.url" -}}
{{- printf "http://%s:%d" (include "voxrouter.componentName" (dict "root" . "component" "engine")) (int .Values.engine.port) -}}
{{- end -}}

{{/*
Checks no JSON schema can express; run by every template that renders a workload.
*/}}
{{- define "voxrouter.validate" -}}
{{- $v := .Values -}}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- $pgExternal := or $v.postgresql.external.url $v.postgresql.external.existingSecret -}}
{{- if and $v.postgresql.bundled $pgExternal -}}
{{- fail "postgresql: set either postgresql.bundled=true or postgresql.external.url / existingSecret, not both" -}}
{{- end -}}
{{- if not (or $v.postgresql.bundled $pgExternal) -}}
{{- fail "postgresql: the gateway needs PostgreSQL on Kubernetes: set postgresql.bundled=true or postgresql.external.url / postgresql.external.existingSecret" -}}
{{- end -}}
{{- if and $v.postgresql.external.url $v.postgresql.external.existingSecret -}}
{{- fail "postgresql.external: set url or existingSecret, not both" -}}
{{- end -}}
{{- if and $v.postgresql.external.url (not (regexMatch "^postgres(ql)?://" $v.postgresql.external.url)) -}}
{{- fail "postgresql.external.url must start with postgresql:// (or postgres://)" -}}
{{- end -}}
{{- $redisExternal := or $v.redis.external.url $v.redis.external.existingSecret -}}
{{- if and $v.redis.bundled $redisExternal -}}
{{- fail "redis: set either redis.bundled=true or redis.external.url / existingSecret, not both" -}}
{{- end -}}
{{- if and $v.redis.external.url $v.redis.external.existingSecret -}}
{{- fail "redis.external: set url or existingSecret, not both" -}}
{{- end -}}
{{- if and $v.redis.external.url (not (regexMatch "^rediss?://" $v.redis.external.url)) -}}
{{- fail "redis.external.url must start with redis:// or rediss://" -}}
{{- end -}}
{{- if and $v.engine.enabled (not $v.engine.models.existingClaim) (gt (int $v.engine.replicas) 1) (has "ReadWriteOnce" $v.engine.models.persistence.accessModes) -}}
{{- fail "engine.replicas > 1 cannot share a ReadWriteOnce model volume: use engine.models.existingClaim or a ReadOnlyMany / ReadWriteMany access mode" -}}
{{- end -}}
{{- end -}}

{{/*
The gateway's config: .Values.config, plus, when the engine pods are enabled and routeGateway is
set, `url:` (and `token_env:`) for each engine they serve, under the `local` provider's options.
*/}}
{{- define "voxrouter.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if and .Values.engine.enabled .Values.engine.routeGateway -}}
{{- $local := dict -}}
{{- range $id, $provider := $config.providers -}}
{{- if and (kindIs "map" $provider) (eq (toString $provider.adapter) "local") (not $local.found) -}}
{{- $_ := set $local "found" $provider -}}
{{- end -}}
{{- end -}}
{{- if not $local.found -}}
{{- fail "engine.routeGateway: config.providers has no provider with `adapter: local` to route to the engine pods" -}}
{{- end -}}
{{- $provider := $local.found -}}
{{- if not (kindIs "map" $provider.options) -}}
{{- $_ := set $provider "options" dict -}}
{{- end -}}
{{- if not (kindIs "map" $provider.options.engines) -}}
{{- $_ := set $provider.options "engines" dict -}}
{{- end -}}
{{- $url := include "voxrouter.engine.url" . -}}
{{- range $name := .Values.engine.names -}}
{{- $engine := get $provider.options.engines $name -}}
{{- if not (kindIs "map" $engine) -}}
{{- $engine = dict "engine" $name -}}
{{- $_ := set $provider.options.engines $name $engine -}}
{{- end -}}
{{- $_ := set $engine "url" $url -}}
{{- if $.Values.engine.token.existingSecret -}}
{{- $_ := set $engine "token_env" "VOXROUTER_ENGINE_TOKEN" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/* An HTTP probe from (dict "probe" $probe "port" "http"). */}}
{{- define "voxrouter.httpProbe" -}}
httpGet:
  path: {{ .probe.path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end -}}

{{/* Plain env vars from a name -> value map, sorted by name. */}}
{{- define "voxrouter.envMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end -}}

{{/* VOXROUTER_DATABASE_URL, from the bundled PostgreSQL's password or an external URL. */}}
{{- define "voxrouter.databaseEnv" -}}
{{- if .Values.postgresql.bundled }}
- name: VOXROUTER_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "voxrouter.postgresql.secretName" . }}
      key: {{ .Values.postgresql.auth.passwordKey }}
- name: VOXROUTER_DATABASE_URL
  value: {{ printf "postgresql://%s:$(VOXROUTER_POSTGRES_PASSWORD)@%s:%d/%s" .Values.postgresql.auth.username (include "voxrouter.postgresql.host" .) (int .Values.postgresql.port) .Values.postgresql.auth.database | quote }}
{{- else if .Values.postgresql.external.existingSecret }}
- name: VOXROUTER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgresql.external.existingSecret }}
      key: {{ .Values.postgresql.external.existingSecretKey }}
{{- else if .Values.postgresql.external.url }}
- name: VOXROUTER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "voxrouter.urlSecretName" . }}
      key: database-url
{{- end }}
{{- end -}}

{{/* VOXROUTER_REDIS_URL and VOXROUTER_REDIS_PREFIX; nothing without a Redis. */}}
{{- define "voxrouter.redisEnv" -}}
{{- $configured := true -}}
{{- if .Values.redis.bundled }}
- name: VOXROUTER_REDIS_URL
  value: {{ printf "redis://%s:%d/0" (include "voxrouter.redis.host" .) (int .Values.redis.port) | quote }}
{{- else if .Values.redis.external.existingSecret }}
- name: VOXROUTER_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.existingSecretKey }}
{{- else if .Values.redis.external.url }}
- name: VOXROUTER_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "voxrouter.urlSecretName" . }}
      key: redis-url
{{- else }}
{{- $configured = false }}
{{- end }}
{{- if $configured }}
- name: VOXROUTER_REDIS_PREFIX
  value: {{ .Values.redis.prefix | quote }}
{{- end }}
{{- end -}}
