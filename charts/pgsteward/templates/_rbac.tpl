{{/*
The operator's permissions come from files/rbac.json, which is the output of
`pgsteward-operator rbac`: the table in crates/pgsteward-operator/src/rbac.rs,
the one place that lists every API call the operator makes and why.
e2e/chart/test_rbac.py fails when the file and the binary disagree, or when
what this chart renders differs from the table by a single verb. Regenerate
with e2e/chart/sync.sh, which runs:

  cargo run -q --locked -p pgsteward-operator -- rbac > charts/pgsteward/files/rbac.json

Scopes: "instances" (every watched namespace: a ClusterRole, or one Role per
namespace), "leaderElection" (the release namespace), "installCrds" (only for
`make run`; the chart installs the CRDs itself and never grants it).
*/}}
{{- define "pgsteward.rbacTable" -}}
{{- $table := .Files.Get "files/rbac.json" | fromJsonArray }}
{{- if not $table }}
{{- fail "files/rbac.json is missing or empty: cargo run -q --locked -p pgsteward-operator -- rbac > charts/pgsteward/files/rbac.json" }}
{{- end }}
{{- toJson $table }}
{{- end }}

{{/* The rules of one scope, as a YAML list; each carries its reason. */}}
{{- define "pgsteward.rules" -}}
{{- $ctx := index . 0 }}
{{- $scope := index . 1 }}
{{- range $rule := include "pgsteward.rbacTable" $ctx | fromJsonArray }}
{{- if eq $rule.scope $scope }}
# {{ $rule.why }}
- apiGroups: [{{ $rule.apiGroup | quote }}]
  resources: [{{ $rule.resource | quote }}]
  verbs: {{ toJson $rule.verbs }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Leader election: creating a Lease cannot be limited to one name (it does not
exist yet); everything else on Leases is limited to the operator's own.
*/}}
{{- define "pgsteward.rules.leaderElection" -}}
{{- $lease := include "pgsteward.leaseName" . }}
{{- range $rule := include "pgsteward.rbacTable" . | fromJsonArray }}
{{- if eq $rule.scope "leaderElection" }}
{{- $named := without $rule.verbs "create" }}
# {{ $rule.why }}
{{- if has "create" $rule.verbs }}
- apiGroups: [{{ $rule.apiGroup | quote }}]
  resources: [{{ $rule.resource | quote }}]
  verbs: ["create"]
{{- end }}
{{- if $named }}
- apiGroups: [{{ $rule.apiGroup | quote }}]
  resources: [{{ $rule.resource | quote }}]
  resourceNames: [{{ $lease | quote }}]
  verbs: {{ toJson $named }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
