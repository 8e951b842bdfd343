{{/*
The operator's permissions. They mirror crates/pgsteward-operator/src/rbac.rs,
the one list the operator's code keeps; e2e/chart/test_rbac.py renders this
chart and fails when the two differ by a single verb.

pgsteward.rules.instances: what it does to PgInstances, PgBackups and the
objects it owns, in every namespace it watches (a ClusterRole, or one Role per
watched namespace).
*/}}
{{- define "pgsteward.rules.instances" -}}
- apiGroups: ["pgsteward.io"]
  resources: ["pginstances", "pgbackups"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["pgsteward.io"]
  resources: ["pginstances/status", "pgbackups/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["configmaps", "secrets", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["create"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
pgsteward.rules.leaderElection: the Lease one replica holds while it
reconciles, in the release namespace only. Creating cannot be limited to one
name (the object does not exist yet); reading and renewing can.
*/}}
{{- define "pgsteward.rules.leaderElection" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "pgsteward.leaseName" . | quote }}]
  verbs: ["get", "patch"]
{{- end }}
