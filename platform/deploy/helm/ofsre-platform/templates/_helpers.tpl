{{/*
Named templates shared by every manifest. Each takes a dict {root: $, name: <module>}
unless it says otherwise, because the templates range over .Values.modules.
*/}}

{{/* Base name: fullnameOverride, else the release name. Takes $. */}}
{{- define "ofsre-platform.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
<base>-<module>, at most 63 characters (a DNS-1035 label, the Service limit). The base is
cut, never the module suffix, so two modules can never truncate to the same name.
*/}}
{{- define "ofsre-platform.moduleName" -}}
{{- $budget := int (sub 62 (len .name)) -}}
{{- $base := include "ofsre-platform.fullname" .root | trunc $budget | trimSuffix "-" -}}
{{- printf "%s-%s" $base .name -}}
{{- end -}}

{{/* Labels that select a module's pods: stable across upgrades (a Deployment selector is immutable). */}}
{{- define "ofsre-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* Every label: the selector labels plus version and ownership. */}}
{{- define "ofsre-platform.labels" -}}
{{ include "ofsre-platform.selectorLabels" . }}
app.kubernetes.io/part-of: ofsre
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* The image reference; the tag defaults to the chart's appVersion. Takes $. */}}
{{- define "ofsre-platform.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Environment of a module's container or the migrate Job (a list of EnvVar). Takes
{root: $, name: <module>, extra: <env the chart computes for this module>, env: <the module's env map>}
and optionally secretExtra: {NAME: {secret, key}} read from Secrets the chart computes
(the Deployments' OFSRE_GATEWAY_SECRET).
Plain values are inline rather than in a ConfigMap: pre-install hooks run before any
ConfigMap of the release exists, and an inline change rolls the pods by itself.
Plain values are collected in one dict first, so each name appears once (duplicate env
names break Helm's three-way merge): platform settings, then the chosen queue backend's
and log shipper's settings, then `extra`, then .Values.env, then the module's env; a later
one wins.
A name given both plainly and from a Secret fails the render.
*/}}
{{- define "ofsre-platform.env" -}}
{{- $v := .root.Values -}}
{{- $plain := dict
    "OFSRE_SERVICE" .name
    "OFSRE_ENV" $v.environment
    "OFSRE_VERSION" (default .root.Chart.AppVersion $v.image.tag)
    "OFSRE_LOG_LEVEL" $v.logLevel
    "OFSRE_DATA_DIR" $v.dataDir
    "OFSRE_QUEUE_BACKEND" $v.queue.backend
    "OFSRE_LOG_SHIPPER" $v.logShipper.type
    "OTEL_RESOURCE_ATTRIBUTES" "k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE)" -}}
{{- with $v.commit }}{{ $_ := set $plain "OFSRE_COMMIT" . }}{{ end -}}
{{- with $v.otel.endpoint }}{{ $_ := set $plain "OTEL_EXPORTER_OTLP_ENDPOINT" . }}{{ end -}}
{{- $secret := dict "OFSRE_DATABASE_URL" (dict
    "secret" (required "database.existingSecret is required" $v.database.existingSecret)
    "key" (required "database.secretKey is required" $v.database.secretKey)) -}}
{{- $layers := list (get $v.queue.settings $v.queue.backend | default dict) -}}
{{- $secret = merge $secret (.secretExtra | default dict) ($v.queue.secretEnv | default dict) -}}
{{- if ne $v.logShipper.type "none" -}}
{{- /* Spool undelivered log batches to the pod's data emptyDir: they survive a container restart. */ -}}
{{- $_ := set $plain "OFSRE_LOG_SPOOL_DIR" (printf "%s/log-spool" $v.dataDir) -}}
{{- $layers = append $layers (get $v.logShipper.settings $v.logShipper.type | default dict) -}}
{{- $secret = merge $secret ($v.logShipper.secretEnv | default dict) -}}
{{- end -}}
{{- $layers = concat $layers (list .extra $v.env .env) -}}
{{- range $layer := $layers }}
{{- range $key, $value := $layer }}{{ $_ := set $plain $key $value }}{{ end }}
{{- end }}
{{- range $key, $_ := $secret }}
{{- if hasKey $plain $key }}{{ fail (printf "%s is set both as a plain value and from a Secret" $key) }}{{ end }}
{{- end -}}
{{- /* Downward API first: Kubernetes expands $(VAR) only from variables listed earlier. */ -}}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- range $key, $ref := $secret }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secret | quote }}
      key: {{ $ref.key | quote }}
{{- end }}
{{- range $key, $value := $plain }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
The gateway's OFSRE_UPSTREAMS: {"<module>": ["http://<its Service>.<namespace>.svc:<port>"]}
for every enabled module marked upstream. One URL each: the Service spreads connections
across the module's pods (see README "Known limits" on keep-alive connections).
Takes $.
*/}}
{{- define "ofsre-platform.upstreams" -}}
{{- $upstreams := dict -}}
{{- range $name, $m := .Values.modules -}}
{{- if and $m.enabled $m.upstream -}}
{{- $svc := include "ofsre-platform.moduleName" (dict "root" $ "name" $name) -}}
{{- $_ := set $upstreams $name (list (printf "http://%s.%s.svc:%v" $svc $.Release.Namespace $.Values.servicePort)) -}}
{{- end -}}
{{- end -}}
{{- toJson $upstreams -}}
{{- end -}}

{{/*
The two writable emptyDirs (/tmp and the data dir) that a read-only root filesystem needs,
shared by the Deployments and the migrate Job. Both take $.
*/}}
{{- define "ofsre-platform.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
- name: data
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{- define "ofsre-platform.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .Values.dataDir }}
{{- end -}}

{{/*
Payments v4 signing keys (values `jws`), read-only: the platform's private JWK from a Secret
(OFSRE_JWS_KEY_FILE) and the participants' JWKS from a ConfigMap (OFSRE_JWKS_DIR). Each of the
three takes $ and gives nothing for what is unset: the env (as JSON, merged into the module's
`extra`), the volumes and the mounts.
*/}}
{{- define "ofsre-platform.jwsEnv" -}}
{{- $env := dict -}}
{{- with .Values.jws.keySecret }}{{ $_ := set $env "OFSRE_JWS_KEY_FILE" (printf "/etc/ofsre/jws/%s" $.Values.jws.keySecretKey) }}{{ end -}}
{{- with .Values.jws.jwksConfigMap }}{{ $_ := set $env "OFSRE_JWKS_DIR" "/etc/ofsre/jwks" }}{{ end -}}
{{- toJson $env -}}
{{- end -}}

{{- define "ofsre-platform.jwsVolumes" -}}
{{- with .Values.jws.keySecret }}
- name: jws-key
  secret:
    secretName: {{ . | quote }}
    items:
      - key: {{ $.Values.jws.keySecretKey | quote }}
        path: {{ $.Values.jws.keySecretKey | quote }}
    defaultMode: 0440
{{- end }}
{{- with .Values.jws.jwksConfigMap }}
- name: jwks
  configMap:
    name: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "ofsre-platform.jwsVolumeMounts" -}}
{{- if .Values.jws.keySecret }}
- name: jws-key
  mountPath: /etc/ofsre/jws
  readOnly: true
{{- end }}
{{- if .Values.jws.jwksConfigMap }}
- name: jwks
  mountPath: /etc/ofsre/jwks
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The Secret holding OFSRE_GATEWAY_SECRET, shared by the gateway and every module:
{secret, key}. gatewaySecret.existingSecret if set, else the one templates/secret.yaml
creates. Takes $.
*/}}
{{- define "ofsre-platform.gatewaySecretRef" -}}
{{- $name := .Values.gatewaySecret.existingSecret | default (include "ofsre-platform.moduleName" (dict "root" . "name" "gateway-secret")) -}}
{{- toJson (dict "secret" $name "key" .Values.gatewaySecret.secretKey) -}}
{{- end -}}
