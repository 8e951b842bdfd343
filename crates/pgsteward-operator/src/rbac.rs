//! Every Kubernetes API call the operator makes, as RBAC rules: the one
//! place that lists them. `pgsteward-operator rbac` prints this table as
//! JSON; the Helm chart's ClusterRole is compared with it, and the mocked-API
//! tests check that each request a reconcile makes is covered here. A table,
//! used by nothing at run time but the `rbac` subcommand.

use serde::Serialize;

/// Who needs a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Reconciling instances: in every watched namespace.
    Instances,
    /// The leader-election Lease: in the operator's own namespace.
    LeaderElection,
    /// `install-crds` / `run --install-crds` only (used by `make run`; the
    /// Helm chart installs the CRDs itself and does not grant this).
    InstallCrds,
}

/// One rule: an API group, a resource and the verbs used on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Which code makes the calls.
    pub why: &'static str,
}

pub const RULES: &[Rule] = &[
    Rule {
        api_group: "pgsteward.io",
        resource: "pginstances",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Instances,
        why: "controller watch, and the PgBackup controller's watch that wakes waiting PgBackups (list, watch); startup check that the CRD is installed (list); finalizer add/remove (JSON patch); the PgBackup controller reads its instance (get)",
    },
    Rule {
        api_group: "pgsteward.io",
        resource: "pginstances/status",
        verbs: &["patch"],
        scope: Scope::Instances,
        why: "status::write_if_changed (server-side apply)",
    },
    Rule {
        api_group: "pgsteward.io",
        resource: "pgbackups",
        verbs: &["list", "watch"],
        scope: Scope::Instances,
        why: "PgBackup controller watch, and the PgInstance controller's (a finished backup updates its instance at once) (list, watch); one backup per instance at a time (list)",
    },
    Rule {
        api_group: "pgsteward.io",
        resource: "pgbackups/status",
        verbs: &["patch"],
        scope: Scope::Instances,
        why: "backups::write (server-side apply of a PgBackup's status)",
    },
    Rule {
        api_group: "",
        resource: "configmaps",
        verbs: &["get", "list", "watch", "create", "patch"],
        scope: Scope::Instances,
        why: "observe (get), owned watch (list, watch), apply (server-side apply: patch, and create the first time)",
    },
    Rule {
        api_group: "",
        resource: "services",
        verbs: &["get", "list", "watch", "create", "patch"],
        scope: Scope::Instances,
        why: "observe (get), owned watch (list, watch), apply (patch, create)",
    },
    Rule {
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["get", "list", "watch", "create", "patch"],
        scope: Scope::Instances,
        why: "observe (get), owned watch (list, watch), apply (patch, create)",
    },
    Rule {
        api_group: "",
        resource: "secrets",
        verbs: &["get", "create", "patch", "delete"],
        scope: Scope::Instances,
        why: "observe referenced and generated Secrets (get), create the superuser Secret once (patch, create), cleanup with deleteClaimOnDelete (delete)",
    },
    Rule {
        api_group: "",
        resource: "persistentvolumeclaims",
        verbs: &["get", "patch"],
        scope: Scope::Instances,
        why: "observe the data claim and a file-backup claim (get); grow the data claim when storage.size grows (patch)",
    },
    Rule {
        api_group: "",
        resource: "pods",
        verbs: &["get", "list", "watch", "delete"],
        scope: Scope::Instances,
        why: "observe the instance's pod for status messages (get); watch the instances' pods so a container that exits is acted on at once (list, watch); restart it for settings that need a restart, or replace it when it is stuck on another image (delete)",
    },
    Rule {
        api_group: "",
        resource: "pods/exec",
        verbs: &["get", "create"],
        scope: Scope::Instances,
        why: "exec pgsteward-status, cat conf.d, pg_ctl reload and backup.sh in the instance's pod (websocket exec: create, and get on older API servers)",
    },
    Rule {
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Instances,
        why: "transition and Warning events (create; patch when a repeated event becomes a series)",
    },
    Rule {
        api_group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "patch"],
        scope: Scope::LeaderElection,
        why: "leader election (kube-lease-manager: get, create, server-side apply)",
    },
    Rule {
        api_group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        verbs: &["get", "list", "watch", "create", "patch"],
        scope: Scope::InstallCrds,
        why: "install-crds: server-side apply of the CRDs, then wait until they are Established",
    },
];

/// Whether the table allows `verb` on `group`/`resource`.
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    RULES
        .iter()
        .any(|r| r.api_group == group && r.resource == resource && r.verbs.contains(&verb))
}

/// The table as pretty JSON.
pub fn to_json() -> String {
    serde_json::to_string_pretty(RULES).expect("the RBAC table serializes")
}
