{{/* Common labels. */}}
{{- define "meshwork.labels" -}}
app.kubernetes.io/part-of: meshwork
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* Image of a component: <repository>/<component>:<tag or appVersion>. */}}
{{- define "meshwork.image" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{ $root.Values.image.repository }}/{{ $component }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- end }}

{{/* The mesh-apiserver's in-cluster address, for node-agents. */}}
{{- define "meshwork.apiserverAddress" -}}
mesh-apiserver.{{ .Release.Namespace }}.svc:{{ .Values.clustermesh.apiserver.port }}
{{- end }}

{{/* Refuse combinations the binaries would refuse, at render time, with what to do. */}}
{{- define "meshwork.validate" -}}
{{- $api := .Values.clustermesh.apiserver -}}
{{- if and (eq $api.etcd.mode "memory") (gt (int $api.replicas) 1) -}}
{{- fail "clustermesh.apiserver.etcd.mode=memory keeps state in one process: set replicas to 1, or use etcd.mode=external for several replicas" -}}
{{- end -}}
{{- if and (eq $api.etcd.mode "sidecar") (gt (int $api.replicas) 1) -}}
{{- fail "clustermesh.apiserver.etcd.mode=sidecar gives each replica its own etcd, so replicas would not share state: use etcd.mode=external with endpoints for several replicas" -}}
{{- end -}}
{{- if and (eq $api.etcd.mode "external") (empty $api.etcd.endpoints) -}}
{{- fail "clustermesh.apiserver.etcd.mode=external needs clustermesh.apiserver.etcd.endpoints" -}}
{{- end -}}
{{- if and .Values.encryption.strictMode.enabled (not .Values.encryption.enabled) -}}
{{- fail "encryption.strictMode.enabled needs encryption.enabled=true" -}}
{{- end -}}
{{- end }}
