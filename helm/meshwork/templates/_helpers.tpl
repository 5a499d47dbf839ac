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
{{- $etcdTls := $api.etcd.tls.existingSecret -}}
{{- if and $etcdTls (ne $api.etcd.mode "external") -}}
{{- fail "clustermesh.apiserver.etcd.tls.existingSecret is for etcd.mode=external (the sidecar etcd is reached on loopback): unset it, or use etcd.mode=external" -}}
{{- end -}}
{{- if eq $api.etcd.mode "external" -}}
{{- $https := 0 -}}
{{- range $api.etcd.endpoints -}}
{{- if hasPrefix "https://" . -}}{{- $https = add1 $https -}}
{{- else if not (hasPrefix "http://" .) -}}
{{- fail (printf "clustermesh.apiserver.etcd.endpoints: %q has no scheme: write http://host:port (plaintext) or https://host:port (TLS, with etcd.tls.existingSecret)" .) -}}
{{- end -}}
{{- end -}}
{{- if and (gt $https 0) (lt $https (len $api.etcd.endpoints)) -}}
{{- fail "clustermesh.apiserver.etcd.endpoints mixes https:// and http://: the http:// ones would be plaintext; write every endpoint as https://" -}}
{{- end -}}
{{- if and (gt $https 0) (not $etcdTls) -}}
{{- fail "clustermesh.apiserver.etcd.endpoints are https://: set clustermesh.apiserver.etcd.tls.existingSecret to a Secret with ca.crt (the CA of etcd's server certificate) and tls.crt/tls.key (a client certificate etcd trusts)" -}}
{{- end -}}
{{- if and $etcdTls (eq $https 0) -}}
{{- fail "clustermesh.apiserver.etcd.tls.existingSecret is set but the endpoints are http://: the connection would be plaintext; write them as https://" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.encryption.strictMode.enabled (not .Values.encryption.enabled) -}}
{{- fail "encryption.strictMode.enabled needs encryption.enabled=true" -}}
{{- end -}}
{{- end }}

{{/*
The API server's address for in-cluster configuration, when k8sServiceHost
is set: without kube-proxy nothing translates the kubernetes Service's
ClusterIP until the agents have read it from this very API server, so the
agents (and the mesh-apiserver) must reach it directly.
*/}}
{{- define "meshwork.k8sServiceEnv" -}}
{{- if .Values.k8sServiceHost }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.k8sServiceHost | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.k8sServicePort | quote }}
{{- end }}
{{- end }}
