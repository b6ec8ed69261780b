{{/* The release's full name: the release name, unless it already contains the chart's. */}}
{{- define "spiffe-aws-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "spiffe-aws-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "spiffe-aws-agent.labels" -}}
{{ include "spiffe-aws-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "spiffe-aws-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "spiffe-aws-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* A TOML string: JSON's string syntax is a TOML basic string. */}}
{{- define "spiffe-aws-agent.toml" -}}
{{- toJson . -}}
{{- end -}}

{{/* agent.toml: per-caller mode, every role bound to the callers it is for. */}}
{{- define "spiffe-aws-agent.config" -}}
spire_admin_socket = {{ include "spiffe-aws-agent.toml" (printf "unix://%s/%s" .Values.spire.adminSocketDir .Values.spire.adminSocketName) }}
per_caller_idle_seconds = {{ int .Values.perCallerIdleSeconds }}
{{- if not .Values.roles }}
{{- fail "values: roles needs at least one role (name, roleArn, spiffeId)" }}
{{- end }}
{{- range $i, $role := .Values.roles }}

[[role]]
name = {{ include "spiffe-aws-agent.toml" (required (printf "values: roles[%d].name is required" $i) $role.name) }}
trust_anchor_arn = {{ include "spiffe-aws-agent.toml" (required "values: trustAnchorArn (or the role's own) is required" (default $.Values.trustAnchorArn $role.trustAnchorArn)) }}
profile_arn = {{ include "spiffe-aws-agent.toml" (required "values: profileArn (or the role's own) is required" (default $.Values.profileArn $role.profileArn)) }}
role_arn = {{ include "spiffe-aws-agent.toml" (required (printf "values: roles[%d].roleArn is required" $i) $role.roleArn) }}
spiffe_id = {{ include "spiffe-aws-agent.toml" (required (printf "values: roles[%d].spiffeId is required (per-caller mode serves a role only to the callers bound to it)" $i) $role.spiffeId) }}
{{- with (default $.Values.region $role.region) }}
region = {{ include "spiffe-aws-agent.toml" . }}
{{- end }}
{{- with (default $.Values.sessionDuration $role.sessionDuration) }}
session_duration = {{ int . }}
{{- end }}
{{- end }}

[agent_socket]
path = {{ include "spiffe-aws-agent.toml" (printf "%s/%s" .Values.agentSocket.hostDir .Values.agentSocket.name) }}
{{- end -}}
