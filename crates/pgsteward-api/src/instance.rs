//! `PgInstance`: one PostgreSQL server, its storage, configuration and backups.

// kube's `printcolumn(...)` lists repeat `type_`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Affinity, ResourceRequirements, Toleration},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The PostgreSQL majors this release runs.
pub const SUPPORTED_MAJORS: [u32; 3] = [16, 17, 18];

/// Settings the image manages itself. Setting them in `config.parameters`
/// would break the image (paths, the socket, WAL archiving, restores) or
/// duplicate a dedicated field (`slowQueryLog`), so the CRD refuses them.
pub const IMAGE_MANAGED_PARAMETERS: &[&str] = &[
    "archive_cleanup_command",
    "archive_command",
    "archive_library",
    "archive_mode",
    "config_file",
    "data_directory",
    "external_pid_file",
    "hba_file",
    "ident_file",
    "include",
    "include_dir",
    "include_if_exists",
    "listen_addresses",
    "log_min_duration_statement",
    "logging_collector",
    "port",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restore_command",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
];

/// The longest `status.firstRecoverabilityPoint` the CRD accepts (an RFC
/// 3339 time needs at most 35 characters). The bound lets the API server
/// price the CEL rule that reads it; the operator never writes a longer one.
pub const FIRST_RECOVERABILITY_POINT_MAX_LEN: usize = 64;

/// The extension the image always preloads; `shared_preload_libraries` may add
/// to it but must keep it.
pub const ALWAYS_PRELOADED: &str = "pg_stat_statements";

/// Condition types, as they appear in `status.conditions`.
pub mod condition_type {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const BACKUP_HEALTHY: &str = "BackupHealthy";
    pub const UPGRADING: &str = "Upgrading";
    pub const RESTORING: &str = "Restoring";
    /// Every type, in the order status lists them.
    pub const ALL: [&str; 6] = [
        READY,
        PROGRESSING,
        DEGRADED,
        BACKUP_HEALTHY,
        UPGRADING,
        RESTORING,
    ];
}

fn image_managed_rule() -> kube::core::Rule {
    let list = IMAGE_MANAGED_PARAMETERS
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // The message names the offending keys with one bounded term per key:
    // the API server's cost estimator cannot bound `join()` or `filter()`
    // over map keys and rejects the whole CRD ("exceeds budget by factor of
    // more than 100x"; seen on a real kube-apiserver).
    let named = IMAGE_MANAGED_PARAMETERS
        .iter()
        .map(|p| format!("('{p}' in self ? ' {p}' : '')"))
        .collect::<Vec<_>>()
        .join(" + ");
    kube::core::Rule::new(format!("self.all(k, !(k in [{list}]))")).message(
        kube::core::Message::Expression(format!(
            "'config.parameters may not set' + {named} + \
             ': the image manages these settings (use spec.slowQueryLog for \
             log_min_duration_statement); remove them from config.parameters'"
        )),
    )
}

/// RFC 3339 times that CEL's `timestamp()` always parses, on the API server
/// (Go's `time.Parse`) as offline (chrono): real calendar dates, leap days
/// included, in the years 1000 to 2999; hours 00-23, minutes and seconds
/// 00-59; at most 9 fraction digits; an offset up to ±23:59 (checked once
/// against Go's `time.Parse` for every date of those years, and dates that
/// do not exist). `target.time`'s own rule
/// accepts any digits in those places (`2026-02-30T…`) and
/// `status.firstRecoverabilityPoint` is whatever the image reported: a rule
/// calls `timestamp()` only on a value that matches this, so it never fails
/// with an evaluation error; other values are left to the operator.
const CEL_TIMESTAMP_PATTERN: &str = concat!(
    "^(?:[12][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))",
    "|(?:[12][0-9](?:0[48]|[2468][048]|[13579][26])|(?:1[26]|2[048])00)-02-29)",
    "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:[.][0-9]{1,9})?",
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$",
);

/// An in-place restore to a time before `status.firstRecoverabilityPoint`
/// (the end of the oldest backup) cannot succeed: refuse it at admission.
///
/// The rule sits at the root, the only place that sees both spec and status.
/// With the status subresource, an update of the spec keeps the stored
/// status, so the rule compares the request with the point the operator last
/// wrote. It uses `oldSelf`, so it runs on updates only (on create there is
/// no status yet), and only when `spec.restore` changes: a status write that
/// moves the point past a request already made (and handled) is never
/// refused, nor is an unrelated spec change. The operator checks the same
/// thing again (`RestoreTargetBeforeFirstBackup`), with what CEL cannot see.
fn restore_after_first_recoverability_point_rule() -> kube::core::Rule {
    let time = "self.spec.restore.target.time";
    let first = "self.status.firstRecoverabilityPoint";
    let pattern = CEL_TIMESTAMP_PATTERN;
    kube::core::Rule::new(format!(
        "!has(self.spec.restore) || !has({time}) || !has(self.status) || !has({first}) \
         || (has(oldSelf.spec.restore) && oldSelf.spec.restore == self.spec.restore) \
         || !{time}.matches('{pattern}') || !{first}.matches('{pattern}') \
         || timestamp({time}) >= timestamp({first})"
    ))
    .message(kube::core::Message::Expression(format!(
        "'spec.restore.target.time ' + {time} + ' is before the first recoverability point: \
         the earliest time you can restore to is ' + {first} + \
         ' (status.firstRecoverabilityPoint, the end of the oldest backup kept); \
         use that time or a later one, or target.latest'"
    )))
    .field_path(".spec.restore.target.time")
}

/// A PostgreSQL server run by pgsteward.
///
/// The operator turns it into a ConfigMap (conf.d), a superuser Secret
/// (generated once unless `superuserSecretRef` names one), two Services and a
/// StatefulSet with one pod and one volume.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgsteward.io",
    version = "v1alpha1",
    kind = "PgInstance",
    plural = "pginstances",
    shortname = "pgi",
    category = "pgsteward",
    namespaced,
    status = "PgInstanceStatus",
    derive = "PartialEq",
    doc = "A PostgreSQL server run by pgsteward: storage, configuration, backups, restores and upgrades in one object.",
    printcolumn(
        name = "Version",
        type_ = "integer",
        description = "The PostgreSQL major the server runs",
        json_path = ".status.postgresVersion"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Whether the server accepts connections",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        description = "Short reason for the Ready condition",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        description = "When the last successful backup finished",
        json_path = ".status.lastBackup.finishedAt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = kube::core::Rule::new("self.metadata.name.size() <= 52 && !self.metadata.name.contains('.')")
        .message("metadata.name must be at most 52 characters and contain no '.': it names the StatefulSet and the Services (DNS labels)"),
    validation = restore_after_first_recoverability_point_rule(),
)]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.bootstrap) || !has(self.bootstrap.recovery) || has(self.backup)")
        .message("bootstrap.recovery reads from backup storage: set spec.backup to the storage (and credentials) that holds the backups"),
    validation = kube::core::Rule::new("!has(self.restore) || has(self.backup)")
        .message("restore reads from backup storage: set spec.backup before requesting a restore"),
    validation = kube::core::Rule::new("!has(self.restore) || !has(oldSelf.restore) || self.restore.requestId != oldSelf.restore.requestId || self.restore == oldSelf.restore")
        .message("a restore request cannot change once made: keep spec.restore as it is, or make a new request with a new requestId"),
)]
#[serde(rename_all = "camelCase")]
pub struct PgInstanceSpec {
    /// PostgreSQL major version: 16, 17 or 18. Raising it upgrades the data in
    /// place (pg_upgrade --link); it can never be lowered.
    #[schemars(range(min = 16, max = 18))]
    #[x_kube(validation = kube::core::Rule::new("self >= oldSelf")
        .message("postgresVersion cannot decrease: data written by a newer PostgreSQL cannot be opened by an older one; restore a backup into a new PgInstance instead"))]
    pub postgres_version: u32,

    /// Container image override. Default: the operator's image repository
    /// with the tag `<postgresVersion>-<variant>` (for example
    /// `ghcr.io/pgsteward/postgres:18-standard-trixie`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// The volume: size of the data you expect, and how much headroom to give it.
    pub storage: StorageSpec,

    /// CPU and memory for the PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels the pod must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations for the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Affinity rules for the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// PostgreSQL settings, written to conf.d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigSpec>,

    /// Log statements slower than a threshold. Omit it to turn slow-query
    /// logging off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_query_log: Option<SlowQueryLog>,

    /// Continuous archiving and scheduled base backups with WAL-G.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// How a new instance gets its first data. Without it, initdb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,

    /// An in-place restore request of this instance from its backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,

    /// A Secret with the superuser password. Without it the operator
    /// generates `<name>-superuser` once and never regenerates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_secret_ref: Option<SuperuserSecretRef>,
}

fn default_size_factor() -> f64 {
    2.5
}

/// The volume is `size × sizeFactor`, and a claim can only grow: a lower
/// product would claim a volume that never comes to exist (claim templates are
/// immutable and volumes cannot shrink). The API server has applied the
/// default factor before this runs; an object evaluated without defaults
/// (offline, in the tests) gets the same default here.
fn volume_cannot_shrink_rule() -> kube::core::Rule {
    let factor = |obj: &str| {
        format!(
            "(has({obj}.sizeFactor) ? {obj}.sizeFactor : {:?})",
            default_size_factor()
        )
    };
    let volume = |obj: &str| {
        format!(
            "quantity({obj}.size).asApproximateFloat() * {}",
            factor(obj)
        )
    };
    // The message names the sizes, not the products: string() of a double has
    // no bounded length, and the API server refuses a messageExpression it
    // cannot price (the quantity arithmetic is priced far above its budget).
    // A size that is not a quantity is refused by its own rule, with its own
    // message; without the guard this rule would add an evaluation error.
    kube::core::Rule::new(format!(
        "!isQuantity(self.size) || !isQuantity(oldSelf.size) || {} >= {}",
        volume("self"),
        volume("oldSelf")
    ))
    .message(
        kube::core::Message::Expression(
            "'storage.size × storage.sizeFactor cannot shrink: the volume was requested for storage.size ' + oldSelf.size + ' with the sizeFactor it had, and this change makes it smaller (storage.size ' + self.size + ' with the new sizeFactor); a volume cannot be made smaller, so keep size × sizeFactor at least as large (raise storage.size to lower sizeFactor), or restore a backup into a new PgInstance'"
                .into(),
        ),
    )
}

/// The data volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = kube::core::Rule::new("!isQuantity(self.size) || !isQuantity(oldSelf.size) || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0")
        .message("storage.size cannot shrink: a volume cannot be made smaller; to use less space, restore a backup into a new PgInstance"),
    validation = kube::core::Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("storage.storageClassName cannot change after creation: the volume is already provisioned; restore a backup into a new PgInstance to move storage classes"),
    validation = volume_cannot_shrink_rule(),
)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// The data size you expect, as a quantity (for example `10Gi`). The
    /// volume requested is `sizeFactor × size`, rounded up.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.trim() == self && isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("storage.size must be a positive quantity such as 10Gi or 500Mi"))]
    pub size: String,

    /// StorageClass of the volume. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// Headroom multiplier for the volume (at least 2.0): a restore keeps a
    /// snapshot of the old data beside the new (2×), plus WAL and logs.
    #[serde(default = "default_size_factor")]
    #[x_kube(validation = kube::core::Rule::new("self >= 2.0")
        .message("storage.sizeFactor must be at least 2.0: a restore keeps a copy of the old data beside the new one, so the volume needs twice the data size plus headroom"))]
    pub size_factor: f64,

    /// Delete the volume (PVC) when the PgInstance is deleted. Default false:
    /// the data, and the generated superuser Secret, are kept.
    #[serde(default)]
    pub delete_claim_on_delete: bool,
}

/// PostgreSQL settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSpec {
    /// Settings by name, written to `conf.d` with their values quoted.
    /// Values are strings: write `max_connections: "200"`.
    #[serde(default)]
    #[schemars(schema_with = "parameter_map_schema")]
    #[x_kube(
        validation = kube::core::Rule::new("self.all(k, k.matches('^[a-z][a-z0-9_]*([.][a-z][a-z0-9_]*)?$'))")
            .message("config.parameters names must be lower-case PostgreSQL setting names such as work_mem or pg_stat_statements.max"),
        validation = image_managed_rule(),
        validation = kube::core::Rule::new("!('shared_preload_libraries' in self) || self['shared_preload_libraries'].split(',').exists(l, l.trim() == 'pg_stat_statements')")
            .message("config.parameters.shared_preload_libraries must keep pg_stat_statements, which the image preloads: write for example 'pg_stat_statements,auto_explain'"),
        validation = kube::core::Rule::new("self.all(k, !self[k].contains('\\n') && !self[k].contains('\\r'))")
            .message("config.parameters values must be a single line"),
    )]
    pub parameters: BTreeMap<String, String>,
}

fn parameter_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 128,
        "additionalProperties": { "type": "string", "maxLength": 1024 },
    })
}

/// Slow-query logging (`log_min_duration_statement`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlowQueryLog {
    /// Log every statement that runs at least this many milliseconds.
    #[schemars(range(min = 0, max = 86400000))]
    pub threshold_ms: u32,
}

/// Backups: one storage kind, a schedule and retention.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = kube::core::Rule::new("[has(self.s3), has(self.gcs), has(self.azure), has(self.file)].filter(x, x).size() == 1")
        .message("backup needs exactly one storage kind: set one of backup.s3, backup.gcs, backup.azure or backup.file"),
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Cron schedule (5 fields, UTC) for full backups, for example `0 3 * * *`.
    /// Without it, WAL is still archived but no scheduled base backup runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^\\\\s*\\\\S+(\\\\s+\\\\S+){4}\\\\s*$')")
        .message("backup.schedule must be a 5-field cron expression such as '0 3 * * *' (minute hour day-of-month month day-of-week)"))]
    pub schedule: Option<String>,

    /// How many backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,

    /// S3 or an S3-compatible store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,

    /// Google Cloud Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsStorage>,

    /// Azure Blob Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStorage>,

    /// A directory: for tests and single-node use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileStorage>,

    /// WAL-G compression method. Default: the image's (lz4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,

    /// A Secret key holding a libsodium key: backups are encrypted with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_secret_ref: Option<SecretKeyRef>,
}

/// Retention of base backups.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Full backups to keep (and the WAL they need); older ones are deleted
    /// after each scheduled backup.
    #[schemars(range(min = 1, max = 1000))]
    pub full_backups: u32,
}

/// WAL-G compression methods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Lz4,
    Lzma,
    Zstd,
    Brotli,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Lzma => "lzma",
            Compression::Zstd => "zstd",
            Compression::Brotli => "brotli",
        }
    }
}

/// S3 storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Base prefix, `s3://bucket/path`. The image appends the major.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('s3://') && self.size() > 5")
        .message("backup.s3.prefix must look like s3://bucket/path"))]
    pub prefix: String,
    /// Endpoint URL for S3-compatible stores (MinIO, Ceph, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// Path-style addressing (needed by most S3-compatible stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Secret with the access key. Without it, the pod's own identity is used
    /// (IRSA, instance profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<S3Credentials>,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// Where the S3 keys are: a Secret in the instance's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Credentials {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1, max = 253))]
    pub access_key_id_key: String,
    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_access_key_key: String,
}

/// Google Cloud Storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GcsStorage {
    /// Base prefix, `gs://bucket/path`.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('gs://') && self.size() > 5")
        .message("backup.gcs.prefix must look like gs://bucket/path"))]
    pub prefix: String,
    /// Secret key holding a service account JSON key; it is mounted as a file.
    /// Without it, workload identity is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,
}

/// Azure Blob Storage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AzureStorage {
    /// Base prefix, `azure://container/path`.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('azure://') && self.size() > 8")
        .message("backup.azure.prefix must look like azure://container/path"))]
    pub prefix: String,
    /// Storage account name.
    #[schemars(length(min = 1, max = 64))]
    pub storage_account: String,
    /// Secret with `AZURE_STORAGE_ACCESS_KEY` or `AZURE_STORAGE_SAS_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// A directory.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileStorage {
    /// Absolute directory for backups.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/') && !self.startsWith('/var/lib/postgresql')")
        .message("backup.file.path must be an absolute directory outside /var/lib/postgresql (the data volume), such as /backups"))]
    pub path: String,
    /// A PersistentVolumeClaim mounted at `path`. Without it, `path` is
    /// inside the container and lost with it: for tests only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: Option<String>,
}

/// A Secret in the instance's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One key of a Secret in the instance's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_password_key() -> String {
    "password".into()
}

/// The superuser (`postgres`) password.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SuperuserSecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the password.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

/// How a new instance gets its data.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Create the instance from backups (point-in-time recovery, or a clone of
    /// another instance), instead of initdb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
}

/// Recovery from backups into a new instance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// Clone: the source instance's base prefix in the same storage kind and
    /// with the same credentials as `spec.backup`. Without it, this instance's
    /// own `spec.backup` prefix is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub source_prefix: Option<String>,
    /// Base backup to start from: `LATEST` (default) or a backup name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub backup_name: Option<String>,
    /// Where recovery stops.
    pub target: RecoveryTarget,
}

/// An in-place restore of this instance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Identifies this request; a request whose id already has a result is
    /// never run again. Use a new id for each restore.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$')")
        .message("restore.requestId must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit; use a new id for each restore"))]
    pub request_id: String,
    /// Base backup to start from: `LATEST` (default) or a backup name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub backup_name: Option<String>,
    /// Where recovery stops.
    pub target: RecoveryTarget,
}

/// Where recovery stops: exactly one of the fields.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = kube::core::Rule::new("[has(self.latest), has(self.time), has(self.lsn), has(self.xid), has(self.name), has(self.immediate)].filter(x, x).size() == 1")
        .message("target needs exactly one of latest, time, lsn, xid, name or immediate"),
)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryTarget {
    /// Replay all the WAL there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == true").message("target.latest can only be true; to stop earlier, use time, lsn, xid, name or immediate"))]
    pub latest: Option<bool>,
    /// Stop at this time (RFC 3339, for example `2026-11-21T10:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$')")
        .message("target.time must be an RFC 3339 time such as 2026-11-21T10:00:00Z"))]
    pub time: Option<String>,
    /// Stop at this WAL location, for example `0/3000060`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 17))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$')")
        .message("target.lsn must be a WAL location such as 0/3000060"))]
    pub lsn: Option<String>,
    /// Stop at this transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]+$')")
        .message("target.xid must be a transaction id (digits only)"))]
    pub xid: Option<String>,
    /// Stop at this named restore point (`pg_create_restore_point`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub name: Option<String>,
    /// Stop as soon as the base backup is consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == true").message("target.immediate can only be true"))]
    pub immediate: Option<bool>,
}

impl RecoveryTarget {
    /// The kind and value the image expects (`PGSTEWARD_RESTORE_TARGET` and
    /// `PGSTEWARD_RESTORE_TARGET_VALUE`).
    pub fn kind_and_value(&self) -> (&'static str, Option<&str>) {
        if let Some(t) = &self.time {
            ("time", Some(t))
        } else if let Some(l) = &self.lsn {
            ("lsn", Some(l))
        } else if let Some(x) = &self.xid {
            ("xid", Some(x))
        } else if let Some(n) = &self.name {
            ("name", Some(n))
        } else if self.immediate == Some(true) {
            ("immediate", None)
        } else {
            ("latest", None)
        }
    }
}

/// What the operator observed and did.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PgInstanceStatus {
    /// Ready, Progressing, Degraded, BackupHealthy, Upgrading, Restoring.
    /// `lastTransitionTime` changes only when a condition's status does.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The PostgreSQL major the server runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<u32>,
    /// The image the server runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The last successful backup, scheduled or on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRecord>,
    /// The newest backup taken by `spec.backup.schedule` (the image's
    /// scheduler tags them `scheduled-<UTC time>`). BackupHealthy judges its
    /// age: on-demand backups do not show that the schedule works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_backup: Option<BackupRecord>,
    /// The oldest time a restore can reach: the end of the oldest backup kept
    /// (RFC 3339). Bounded so the API server can price the CEL rule that
    /// compares `spec.restore` with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = FIRST_RECOVERABILITY_POINT_MAX_LEN))]
    pub first_recoverability_point: Option<String>,
    /// WAL archiving, from `pg_stat_archiver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiver: Option<ArchiverRecord>,
    /// The last in-place restore (`spec.restore`) and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore: Option<RestoreRecord>,
    /// The operation under way (at most one). A restarted operator resumes
    /// it from here instead of starting it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationRecord>,
    /// The last upgrade that failed and was rolled back: it is not retried
    /// until the spec changes (a new generation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_upgrade: Option<FailedUpgrade>,
    /// The conf.d content (a hash) that PostgreSQL has loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_revision: Option<String>,
    /// Settings that changed but wait for a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart: Option<Vec<String>>,
    /// The last restart the operator made for settings that needed one. It
    /// restarts once per configuration: if PostgreSQL still reports a
    /// pending restart afterwards, another restart would not help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<RestartRecord>,
    /// Operations requested but waiting for the one under way, in the order
    /// they will run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Vec<String>>,
}

/// `pg_stat_archiver`, as `pgsteward-status` reported it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArchiverRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_wal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_wal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_time: Option<String>,
}

/// A restart of the pod for settings that need one.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestartRecord {
    /// The conf.d content (`configRevision`) the restart was for.
    pub config_revision: String,
    /// The settings that needed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
}

/// An in-place restore and its outcome.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRecord {
    /// `spec.restore.requestId`.
    pub request_id: String,
    /// running, succeeded, failed, rolled_back, or rejected (refused by the
    /// operator before anything was touched).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The operation under way.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OperationRecord {
    /// upgrade, restore or restart.
    pub kind: String,
    /// The request id passed to the image (`PGSTEWARD_UPGRADE_ID`,
    /// `PGSTEWARD_RESTORE_ID`), or what a restart waits for.
    pub id: String,
    /// When the operator started it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Upgrade: the major and image it started from (put back on failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_major: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    /// Upgrade: the major it goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_major: Option<u32>,
    /// Restart: the uid of the pod that was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

/// An upgrade that failed; the previous image runs again.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FailedUpgrade {
    pub id: String,
    pub from_major: u32,
    pub to_major: u32,
    /// The spec generation that asked for it: a newer one retries.
    pub generation: i64,
    /// The step that failed, when the image reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The image used before the upgrade, which runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
}

/// One backup, as the image reported it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// WAL-G backup name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// WAL location where it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<String>,
    /// WAL location where it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_lsn: Option<String>,
}

impl PgInstance {
    /// The condition of this type, if status has one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}
