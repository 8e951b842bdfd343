//! What the image reports, as Rust types: the result files every operation
//! writes (`results/<kind>/<id>.json`, docs/image-contract.md "Result
//! files") and the JSON `pgsteward-status` prints. Unknown fields are
//! ignored and every field the image may leave out is optional, so a newer
//! image does not break an older operator.
//!
//! A leaf: it uses nothing of the operator.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// How an operation ended (or that it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Succeeded,
    Failed,
    RolledBack,
}

/// One operation's result file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpResult<D> {
    pub kind: String,
    pub id: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub step: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub pg_major: Option<u32>,
    pub details: D,
}

/// `details` of a backup result.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupDetails {
    #[serde(default)]
    pub backup_name: Option<String>,
    #[serde(default)]
    pub start_lsn: Option<String>,
    #[serde(default)]
    pub finish_lsn: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub finish_time: Option<String>,
    #[serde(default)]
    pub permanent: Option<bool>,
    #[serde(default)]
    pub first_recoverability_point: Option<String>,
    /// Every backup in storage when the result was written, oldest first
    /// (null until `backup.sh` has listed them).
    #[serde(default)]
    pub backups: Option<Vec<ListedBackup>>,
}

/// The id prefix of the backups the image's scheduler takes
/// (`backup-scheduler.sh`: `backup.sh --id scheduled-<UTC yyyymmddThhmmssZ>`).
pub const SCHEDULED_ID_PREFIX: &str = "scheduled-";

/// One backup in storage, as `backup.sh` lists it in `details.backups`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedBackup {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub finish_time: Option<String>,
    #[serde(default)]
    pub start_lsn: Option<String>,
    #[serde(default)]
    pub finish_lsn: Option<String>,
    #[serde(default)]
    pub permanent: Option<bool>,
    /// The id `backup.sh` tagged it with; null for a backup taken
    /// otherwise (or listed by an image older than this field).
    #[serde(default)]
    pub pgsteward_id: Option<String>,
}

impl ListedBackup {
    /// Taken by the schedule (its id is `scheduled-…`).
    pub fn scheduled(&self) -> bool {
        self.pgsteward_id
            .as_deref()
            .is_some_and(|id| id.starts_with(SCHEDULED_ID_PREFIX))
    }
}

/// `details` of a restore result.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreDetails {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub target_value: Option<String>,
    #[serde(default)]
    pub backup_name: Option<String>,
    #[serde(default)]
    pub timeline: Option<u32>,
    #[serde(default)]
    pub reached_lsn: Option<String>,
}

/// `details` of an upgrade result.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeDetails {
    #[serde(default)]
    pub from_major: Option<u32>,
    #[serde(default)]
    pub to_major: Option<u32>,
    #[serde(default)]
    pub failed_step: Option<String>,
    #[serde(default)]
    pub pg_upgrade_log: Option<String>,
    #[serde(default)]
    pub cleaned_up: Option<bool>,
}

/// The container's termination message: the latest upgrade and restore
/// results, as the image publishes them for when exec cannot reach it.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct TerminationMessage {
    #[serde(default)]
    pub upgrade: Option<UpgradeResult>,
    #[serde(default)]
    pub restore: Option<RestoreResult>,
}

pub type BackupResult = OpResult<BackupDetails>;
pub type RestoreResult = OpResult<RestoreDetails>;
pub type UpgradeResult = OpResult<UpgradeDetails>;

/// `server` in `pgsteward-status`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerState {
    pub running: bool,
    #[serde(default)]
    pub in_recovery: Option<bool>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub version_num: Option<u32>,
    #[serde(default)]
    pub timeline: Option<u32>,
    #[serde(default)]
    pub current_lsn: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
}

/// `archiver` in `pgsteward-status` (`pg_stat_archiver`).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Archiver {
    #[serde(default)]
    pub archived_count: Option<i64>,
    #[serde(default)]
    pub last_archived_wal: Option<String>,
    #[serde(default)]
    pub last_archived_time: Option<String>,
    #[serde(default)]
    pub failed_count: Option<i64>,
    #[serde(default)]
    pub last_failed_wal: Option<String>,
    #[serde(default)]
    pub last_failed_time: Option<String>,
}

/// One setting that waits for a restart (`pg_settings.pending_restart`).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct PendingSetting {
    pub name: String,
    /// The value in use.
    #[serde(default)]
    pub setting: Option<String>,
    /// The value that waits for the restart.
    #[serde(default, rename = "pendingSetting")]
    pub pending_setting: Option<String>,
}

/// One line of a configuration file that failed to load
/// (`pg_file_settings.error`).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfigError {
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub line: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// The latest result of each kind.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Results {
    #[serde(default)]
    pub backup: Option<BackupResult>,
    #[serde(default)]
    pub restore: Option<RestoreResult>,
    #[serde(default)]
    pub upgrade: Option<UpgradeResult>,
}

/// What `pgsteward-status` prints.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    #[serde(default)]
    pub pg_major: Option<u32>,
    #[serde(default)]
    pub collected_at: Option<String>,
    #[serde(default)]
    pub server: ServerState,
    #[serde(default)]
    pub results: Results,
    #[serde(default)]
    pub in_progress: Option<serde_json::Value>,
    #[serde(default)]
    pub archiver: Option<Archiver>,
    #[serde(default)]
    pub pending_restart: Option<Vec<PendingSetting>>,
    #[serde(default)]
    pub config_errors: Option<Vec<ConfigError>>,
}

/// Why a script's output could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the image's output is not the JSON the contract describes")]
pub struct ParseError(#[source] pub serde_json::Error);

/// Parse one JSON document.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    serde_json::from_str(text.trim()).map_err(ParseError)
}

/// The last JSON object a script printed on stdout (`backup.sh` prints its
/// result at the end of every run; anything before it is ignored).
pub fn last_json_object<T: DeserializeOwned>(stdout: &str) -> Result<T, ParseError> {
    let text = stdout.trim_end();
    // Prefer the whole output (a pretty-printed object), else the last line
    // that holds one (compact output after other lines).
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(whole) => text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .map(|l| serde_json::from_str(l.trim()).map_err(ParseError))
            .unwrap_or(Err(ParseError(whole))),
    }
}
