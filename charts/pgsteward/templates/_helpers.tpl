{{/* The chart name, or nameOverride. */}}
{{- define "pgsteward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of every object the chart creates. */}}
{{- define "pgsteward.fullname" -}}
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

{{- define "pgsteward.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pgsteward.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgsteward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pgsteward.labels" -}}
helm.sh/chart: {{ include "pgsteward.chart" . }}
{{ include "pgsteward.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: pgsteward
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pgsteward.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pgsteward.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pgsteward.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "pgsteward.leaseName" -}}
{{- default (printf "%s-leader" (include "pgsteward.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Refuse combinations the schema cannot express clearly.
*/}}
{{- define "pgsteward.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicas: %d needs leaderElection.enabled: true; without it every pod reconciles and they fight over the same objects" (int .Values.replicas)) }}
{{- end }}
{{- if ne (len .Values.watchNamespaces) (len (uniq .Values.watchNamespaces)) }}
{{- fail "watchNamespaces lists a namespace twice; list each once" }}
{{- end }}
{{- end }}
