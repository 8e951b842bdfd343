//! On-demand backups (`PgBackup`): whether one may run now, the command the
//! PgBackup controller execs, and the PgBackup's status from its result.
//!
//! Owns `PgBackup.status`. It reads the instance's status (Ready, its
//! operation) but never writes it: what a backup means for the instance
//! (`lastBackup`, BackupHealthy) is [`super::backup_health`]'s.

use kube::ResourceExt;
use pgsteward_api::{
    PgBackup, PgBackupStatus, PgInstance, backup::BackupPhase, instance::condition_type,
};

use crate::image_state::{BackupResult, Outcome};

/// Whether a PgBackup may run now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupGate {
    /// Exec `backup.sh` now.
    Go,
    /// Stay Pending; the message says what it waits for.
    Wait(String),
    /// Fail for good; the message says why and what to do.
    Fail(String),
}

/// Decide whether `backup` may run. A missing instance, or one without
/// backup storage, fails at once (retrying cannot help and the spec of a
/// PgBackup cannot change); an instance that is not Ready, that runs an
/// operation, or that another PgBackup is using, makes it wait. Among
/// waiting PgBackups of one instance the oldest goes first.
pub fn backup_gate(
    backup: &PgBackup,
    instance: Option<&PgInstance>,
    others: &[PgBackup],
) -> BackupGate {
    let ns = backup.namespace().unwrap_or_default();
    let target = &backup.spec.instance_ref.name;
    let Some(instance) = instance else {
        return BackupGate::Fail(format!(
            "PgInstance {ns}/{target} does not exist: a backup of a missing instance is refused; create the PgInstance, then a new PgBackup"
        ));
    };
    if instance.spec.backup.is_none() {
        return BackupGate::Fail(format!(
            "PgInstance {ns}/{target} has no spec.backup (no backup storage): set spec.backup on the instance, then create a new PgBackup"
        ));
    }
    match instance.condition(condition_type::READY) {
        Some(c) if c.status == "True" => {}
        Some(c) => {
            return BackupGate::Wait(format!(
                "waiting for PgInstance {target} to be Ready (Ready={}, {}: {})",
                c.status, c.reason, c.message
            ));
        }
        None => {
            return BackupGate::Wait(format!(
                "waiting for PgInstance {target} to be Ready (it has not reported yet)"
            ));
        }
    }
    if let Some(op) = instance.status.as_ref().and_then(|s| s.operation.as_ref()) {
        return BackupGate::Wait(format!(
            "waiting for the {} {} of PgInstance {target} to finish",
            op.kind, op.id
        ));
    }
    let same_instance = |b: &&PgBackup| {
        b.spec.instance_ref.name == *target && b.metadata.uid != backup.metadata.uid
    };
    let phase = |b: &PgBackup| b.status.as_ref().and_then(|s| s.phase);
    if let Some(running) = others
        .iter()
        .filter(same_instance)
        .find(|b| phase(b) == Some(BackupPhase::Running))
    {
        return BackupGate::Wait(format!(
            "waiting for PgBackup {}, which is running on PgInstance {target}: one backup runs per instance at a time",
            running.name_any()
        ));
    }
    let order = |b: &PgBackup| {
        (
            b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            b.name_any(),
        )
    };
    if let Some(first) = others
        .iter()
        .filter(same_instance)
        .filter(|b| matches!(phase(b), None | Some(BackupPhase::Pending)))
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .find(|b| order(b) < order(backup))
    {
        return BackupGate::Wait(format!(
            "waiting for PgBackup {}, which was created first: one backup runs per instance at a time",
            first.name_any()
        ));
    }
    BackupGate::Go
}

/// The command the operator execs for a PgBackup.
pub fn backup_command(id: &str, permanent: bool) -> Vec<String> {
    let mut cmd = vec!["backup.sh".to_string(), "--id".into(), id.to_string()];
    if permanent {
        cmd.push("--permanent".into());
    }
    cmd
}

/// A PgBackup's status from `backup.sh`'s result and exit code.
pub fn backup_status_from_result(
    prior: &PgBackupStatus,
    result: &BackupResult,
    exit_code: i32,
) -> PgBackupStatus {
    let d = &result.details;
    let phase = match result.outcome {
        Outcome::Running => BackupPhase::Running,
        Outcome::Succeeded => BackupPhase::Succeeded,
        Outcome::Failed | Outcome::RolledBack => BackupPhase::Failed,
    };
    let mut message = result.message.clone().unwrap_or_default();
    if exit_code == 6 && !message.contains("retention") {
        message.push_str(" (retention failed: see the pod log)");
    }
    if phase == BackupPhase::Failed
        && let Some(step) = &result.step
    {
        message = format!("failed at step {step}: {message}");
    }
    PgBackupStatus {
        phase: Some(phase),
        backup_name: d.backup_name.clone(),
        start_lsn: d.start_lsn.clone(),
        finish_lsn: d.finish_lsn.clone(),
        started_at: d
            .start_time
            .clone()
            .or_else(|| result.started_at.clone())
            .or_else(|| prior.started_at.clone()),
        finished_at: d.finish_time.clone().or_else(|| result.finished_at.clone()),
        message: Some(message),
        observed_generation: prior.observed_generation,
        backup_id: Some(result.id.clone()),
    }
}

/// A PgBackup's status when `backup.sh` printed no result: `None` means
/// "try again later" (exit 5: another backup, perhaps a scheduled one,
/// holds the lock).
pub fn backup_status_without_result(
    prior: &PgBackupStatus,
    exit_code: i32,
    stderr: &str,
) -> Option<PgBackupStatus> {
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim();
    let message = match exit_code {
        5 => return None,
        2 => format!("backup.sh refused its arguments (exit 2): {last}"),
        3 => format!("no backup storage is configured in the pod (exit 3): {last}"),
        c => format!("backup.sh exited {c} without a result: {last}"),
    };
    Some(PgBackupStatus {
        phase: Some(BackupPhase::Failed),
        message: Some(message),
        ..prior.clone()
    })
}
