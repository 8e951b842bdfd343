//! `PgBackup`: an on-demand backup of a `PgInstance`.
//!
//! The operator execs `backup.sh --id <uid>` in the instance's pod and copies
//! the result here (see `pgsteward-operator`'s `backup` module).

// kube's `printcolumn(...)` lists repeat `type_`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An on-demand base backup of one PgInstance.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pgsteward.io",
    version = "v1alpha1",
    kind = "PgBackup",
    plural = "pgbackups",
    shortname = "pgb",
    category = "pgsteward",
    namespaced,
    status = "PgBackupStatus",
    derive = "PartialEq",
    doc = "An on-demand base backup of a PgInstance.",
    printcolumn(
        name = "Instance",
        type_ = "string",
        json_path = ".spec.instanceRef.name"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Backup", type_ = "string", json_path = ".status.backupName"),
    printcolumn(
        name = "Begin LSN",
        type_ = "string",
        json_path = ".status.startLsn",
        priority = "1"
    ),
    printcolumn(
        name = "End LSN",
        type_ = "string",
        json_path = ".status.finishLsn",
        priority = "1"
    ),
    printcolumn(name = "Finished", type_ = "date", json_path = ".status.finishedAt"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf")
    .message("a PgBackup's spec cannot change: create a new PgBackup instead"))]
#[serde(rename_all = "camelCase")]
pub struct PgBackupSpec {
    /// The instance to back up, in the same namespace.
    pub instance_ref: InstanceRef,
    /// Keep this backup regardless of retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent: Option<bool>,
}

/// A PgInstance in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRef {
    /// PgInstance name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where a backup is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// What happened to the backup.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PgBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// WAL-G backup name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// One line a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The id passed to `backup.sh --id` (the PgBackup's uid); the image never
    /// runs an id twice, so a restarted operator asks again safely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
}
