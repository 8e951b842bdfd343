//! Step 5, act: the decisions that drive operations, as pure functions.
//!
//! At most one operation runs per instance at a time, and it is recorded in
//! `status.operation` before anything is changed, so a restarted operator
//! resumes it (same request id, same image) instead of starting it again.
//! When several are requested at once they run in this order, and
//! `status.waiting` lists the ones that wait:
//!
//! 1. the operation already under way (whatever it is) finishes first;
//! 2. an in-place restore (`spec.restore`): it runs on the current major,
//!    whose backups it reads;
//! 3. a major upgrade (`spec.postgresVersion` raised);
//! 4. a restart for settings that need one (`pending_restart`);
//! 5. on-demand backups (`PgBackup`), one at a time, oldest first.
//!
//! Everything here takes values and returns values: no client, no clock
//! (the time is a parameter). The controller does the I/O.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Condition,
    jiff::{SignedDuration, Timestamp, tz::TimeZone},
};
use kube::ResourceExt;
use pgsteward_api::{
    PgBackup, PgBackupStatus, PgInstance,
    backup::BackupPhase,
    instance::{
        ArchiverRecord, BackupRecord, FIRST_RECOVERABILITY_POINT_MAX_LEN, FailedUpgrade,
        OperationRecord, RestartRecord, RestoreRecord, RestoreSpec, condition_type,
    },
};

use crate::conditions::condition;
use crate::image_state::{
    Archiver, BackupResult, Outcome, RestoreResult, StatusReport, UpgradeResult,
};

/// Operation kinds, as `status.operation.kind` spells them.
pub mod kind {
    pub const UPGRADE: &str = "upgrade";
    pub const RESTORE: &str = "restore";
    pub const RESTART: &str = "restart";
}

fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

// ------------------------------------------------------------ PgBackup

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

// ------------------------------------------------------ backup health

/// The gap between the two most recent times `schedule` fired before
/// `now` (UTC, as the image's scheduler runs it in the operator's pods).
/// None when the expression does not parse.
pub fn schedule_period(schedule: &str, now: Timestamp) -> Option<SignedDuration> {
    let cron: croner::Cron = schedule.trim().parse().ok()?;
    let now = now.to_zoned(TimeZone::UTC);
    let last = cron.find_previous_occurrence(&now, false).ok()?;
    let before = cron.find_previous_occurrence(&last, false).ok()?;
    Some(last.timestamp().duration_since(before.timestamp()))
}

/// The BackupHealthy condition: (status, reason, message). With a
/// schedule, what counts is the age of the last *scheduled* backup
/// (`last_scheduled`, see [`last_scheduled_backup`]): an on-demand backup
/// does not show that the schedule works. `last_backup` (any kind) is only
/// named in the message when it is newer, so that nobody takes it for one.
pub fn backup_health(
    schedule: Option<&str>,
    report: Option<&StatusReport>,
    last_scheduled: Option<&BackupRecord>,
    last_backup: Option<&BackupRecord>,
    now: Timestamp,
) -> (&'static str, &'static str, String) {
    let Some(report) = report else {
        return (
            "Unknown",
            "NotYetReported",
            "backups are configured; their health is reported once the pod runs".into(),
        );
    };
    if let Some(a) = &report.archiver
        && archiving_fails(a)
    {
        return (
            "False",
            "ArchivingFailing",
            format!(
                "WAL archiving fails: {} failures, last {} at {}; last success {} at {}. Check the storage and its credentials (pod log: wal-push)",
                a.failed_count.unwrap_or(0),
                a.last_failed_wal.as_deref().unwrap_or("?"),
                a.last_failed_time.as_deref().unwrap_or("?"),
                a.last_archived_wal.as_deref().unwrap_or("none"),
                a.last_archived_time.as_deref().unwrap_or("never"),
            ),
        );
    }
    if let Some(b) = &report.results.backup
        && matches!(b.outcome, Outcome::Failed | Outcome::RolledBack)
    {
        return (
            "False",
            "BackupFailed",
            format!(
                "the last backup ({}) failed at step {}: {}",
                b.id,
                b.step.as_deref().unwrap_or("?"),
                b.message.as_deref().unwrap_or("")
            ),
        );
    }
    // Nothing failed, but nothing says it works either.
    if !report.server.running {
        return (
            "Unknown",
            "NotRunning",
            "PostgreSQL is not running; backup health is reported once it runs".into(),
        );
    }
    let Some(schedule) = schedule else {
        return (
            "True",
            "Archiving",
            "WAL is archived; no schedule is set, so base backups are on demand (PgBackup)".into(),
        );
    };
    let Some(period) = schedule_period(schedule, now) else {
        return (
            "Unknown",
            "InvalidSchedule",
            format!("backup.schedule {schedule:?} cannot be read as a cron expression"),
        );
    };
    let finished = |b: Option<&BackupRecord>| {
        b.and_then(|b| b.finished_at.as_deref())
            .and_then(parse_time)
    };
    let scheduled_at = finished(last_scheduled);
    let limit = SignedDuration::from_secs(period.as_secs() * 2);
    let period_text = format!(
        "{}h{:02}m, {schedule:?}",
        period.as_secs() / 3600,
        (period.as_secs() % 3600) / 60
    );
    // A newer backup that is not the schedule's: said, not counted.
    let not_counted = match finished(last_backup) {
        Some(t) if scheduled_at.is_none_or(|s| t > s) => format!(
            "; a later backup, not scheduled, finished at {t}: backups on demand do not count"
        ),
        _ => String::new(),
    };
    let name = last_scheduled
        .and_then(|b| b.name.as_deref())
        .unwrap_or("?");
    match scheduled_at {
        Some(t) if now.duration_since(t) > limit => (
            "False",
            "BackupOverdue",
            format!(
                "the last scheduled backup ({name}) finished at {t}, more than twice the schedule's period ({period_text}) ago{not_counted}; check the pod log for the scheduled backups (backup-scheduler.sh)"
            ),
        ),
        Some(t) => (
            "True",
            "Healthy",
            format!("WAL is archived; the last scheduled backup ({name}) finished at {t}"),
        ),
        None => {
            let started = report.server.started_at.as_deref().and_then(parse_time);
            match started {
                Some(s) if now.duration_since(s) > limit => (
                    "False",
                    "BackupOverdue",
                    format!(
                        "no scheduled backup has finished, and the server has run since {s}, more than twice the schedule's period ({period_text}){not_counted}; check the pod log for the scheduled backups (backup-scheduler.sh)"
                    ),
                ),
                _ => (
                    "Unknown",
                    "NoScheduledBackupYet",
                    format!(
                        "WAL is archived; no scheduled backup has finished yet (schedule {schedule:?}){not_counted}"
                    ),
                ),
            }
        }
    }
}

/// Archiving fails when the last failure is newer than the last success.
pub fn archiving_fails(a: &Archiver) -> bool {
    let failed = a.last_failed_time.as_deref().and_then(parse_time);
    let archived = a.last_archived_time.as_deref().and_then(parse_time);
    match (failed, archived) {
        (Some(f), Some(ok)) => f > ok,
        (Some(_), None) => true,
        _ => false,
    }
}

/// `status.archiver` from the report.
pub fn archiver_record(a: &Archiver) -> ArchiverRecord {
    ArchiverRecord {
        last_archived_wal: a.last_archived_wal.clone(),
        last_archived_time: a.last_archived_time.clone(),
        failed_count: a.failed_count,
        last_failed_wal: a.last_failed_wal.clone(),
        last_failed_time: a.last_failed_time.clone(),
    }
}

/// How stale `status.archiver.lastArchived*` may get: progress alone is
/// written at most this often, so a busy server's archiving does not turn
/// every status write (and the reconcile it triggers) into another one.
pub const ARCHIVER_REFRESH: SignedDuration = SignedDuration::from_mins(5);

/// `status.archiver` from the report: rewritten at once when failures
/// change, otherwise only when the recorded success is older than
/// [`ARCHIVER_REFRESH`].
pub fn refresh_archiver(prior: Option<&ArchiverRecord>, a: &Archiver) -> ArchiverRecord {
    let next = archiver_record(a);
    let Some(old) = prior else {
        return next;
    };
    let same_failures =
        old.failed_count == next.failed_count && old.last_failed_wal == next.last_failed_wal;
    let fresh = match (
        old.last_archived_time.as_deref().and_then(parse_time),
        next.last_archived_time.as_deref().and_then(parse_time),
    ) {
        (Some(o), Some(n)) => n.duration_since(o) < ARCHIVER_REFRESH,
        (None, None) => true,
        _ => false,
    };
    if same_failures && fresh {
        old.clone()
    } else {
        next
    }
}

/// `status.lastScheduledBackup`: the newest backup the schedule took
/// (id `scheduled-…`) in the list of backups in storage that `result`
/// carries, unless the one recorded before (`prior`) finished later. Without
/// a list (a backup running, or one that failed before listing) or without
/// a scheduled backup in it (none yet, or deleted by retention), `prior`
/// stays: the time the schedule last worked is not forgotten.
pub fn last_scheduled_backup(
    prior: Option<&BackupRecord>,
    result: Option<&BackupResult>,
) -> Option<BackupRecord> {
    let finished = |b: &BackupRecord| b.finished_at.as_deref().and_then(parse_time);
    let listed = result
        .and_then(|r| r.details.backups.as_ref())
        .into_iter()
        .flatten()
        .filter(|b| b.scheduled())
        .map(|b| BackupRecord {
            name: b.name.clone(),
            started_at: b.start_time.clone(),
            finished_at: b.finish_time.clone(),
            start_lsn: b.start_lsn.clone(),
            finish_lsn: b.finish_lsn.clone(),
        })
        .filter_map(|b| finished(&b).map(|t| (t, b)))
        .max_by_key(|(t, _)| *t);
    match (prior, listed) {
        (Some(p), Some((t, _))) if finished(p).is_some_and(|pt| pt >= t) => Some(p.clone()),
        (_, Some((_, newest))) => Some(newest),
        (p, None) => p.cloned(),
    }
}

/// `status.lastBackup` from a successful backup result.
pub fn backup_record(result: &BackupResult) -> Option<BackupRecord> {
    (result.outcome == Outcome::Succeeded).then(|| BackupRecord {
        name: result.details.backup_name.clone(),
        started_at: result.details.start_time.clone(),
        finished_at: result.details.finish_time.clone(),
        start_lsn: result.details.start_lsn.clone(),
        finish_lsn: result.details.finish_lsn.clone(),
    })
}

/// `status.firstRecoverabilityPoint` from the point the image reported: its
/// own text when it fits the CRD's bound, otherwise the same time in RFC 3339
/// UTC; nothing for a longer text that is not a time (the API server would
/// refuse the whole status write).
pub fn recoverability_point(reported: &str) -> Option<String> {
    if reported.len() <= FIRST_RECOVERABILITY_POINT_MAX_LEN {
        return Some(reported.to_string());
    }
    parse_time(reported)
        .map(|t| t.to_string())
        .filter(|t| t.len() <= FIRST_RECOVERABILITY_POINT_MAX_LEN)
}

// ------------------------------------------------------------ upgrade

/// What the upgrade decision sees.
#[derive(Clone, Debug, Default)]
pub struct UpgradeInputs<'a> {
    pub spec_major: u32,
    pub generation: i64,
    /// `status.postgresVersion`: the major that ran last.
    pub running_major: Option<u32>,
    /// `status.image`: the image that ran last.
    pub running_image: Option<&'a str>,
    pub operation: Option<&'a OperationRecord>,
    pub failed: Option<&'a FailedUpgrade>,
    /// The latest upgrade result from `pgsteward-status`, if it was read.
    pub result: Option<&'a UpgradeResult>,
    /// The latest upgrade result in the container's termination message:
    /// what the last container to exit had recorded.
    pub terminated_result: Option<&'a UpgradeResult>,
    /// The postgres container's last exit code while it is not running.
    pub container_exit: Option<i32>,
    pub now: Option<&'a str>,
}

/// What to do about the major version.
#[derive(Clone, Debug, PartialEq)]
pub enum UpgradeDecision {
    /// Nothing to upgrade.
    Idle,
    /// An upgrade to this major failed for this generation: the previous
    /// image runs, Degraded stays until the spec changes.
    Blocked(FailedUpgrade),
    /// Record this operation, then move the StatefulSet to the new image.
    Start(OperationRecord),
    /// Under way: keep the new image. (step, message)
    InProgress(OperationRecord, Option<String>, String),
    /// Done: the image reported `succeeded`.
    Succeeded(OperationRecord, String),
    /// Failed before the point of no return (or refused): put the previous
    /// image back.
    RollBack(FailedUpgrade),
    /// Failed after the point of no return: the data is the new major; keep
    /// the new image (the image retries the step at each start). (step,
    /// message)
    FailedForward(OperationRecord, String, String),
    /// Rolled back without a result, but the upgrade had passed its point of
    /// no return (the previous image refuses the data and says so): record
    /// the operation again and move the pod forward to the new image.
    Resume(OperationRecord, UpgradeResult),
}

/// The request id for an upgrade: one per (from, to, generation), so a
/// retry after a rollback (which needs a spec change) is a new request.
pub fn upgrade_id(from: u32, to: u32, generation: i64) -> String {
    format!("upgrade-{from}-to-{to}-g{generation}")
}

/// The major an [`upgrade_id`] upgrades to.
pub fn upgrade_id_target(id: &str) -> Option<u32> {
    let (_, rest) = id.split_once("-to-")?;
    rest.split_once("-g")?.0.parse().ok()
}

/// Whether the data is the new major's: the result was recorded at or after
/// `start_new`, which the image records before the new cluster first starts.
pub fn passed_point_of_no_return(r: &UpgradeResult) -> bool {
    match r.outcome {
        Outcome::Succeeded => true,
        Outcome::RolledBack => false,
        Outcome::Running | Outcome::Failed => matches!(
            r.step.as_deref(),
            Some(
                "start_new"
                    | "ready"
                    | "analyze"
                    | "update_extensions"
                    | "backup"
                    | "cleanup"
                    | "done"
            )
        ),
    }
}

/// The newest result the operator can see for upgrade `id`: from
/// `pgsteward-status` while the container runs, else from the container's
/// termination message.
fn result_for<'a>(i: &UpgradeInputs<'a>, id: &str) -> Option<&'a UpgradeResult> {
    [i.result, i.terminated_result]
        .into_iter()
        .flatten()
        .find(|r| r.id == id)
}

/// The upgrade state machine. Rollback follows the image contract's table:
/// `rolled_back` and `failed` at `preflight` put the previous image back;
/// `failed` at `start_new` or later never does. The result comes from
/// `pgsteward-status`, or from the termination message when the new image's
/// container exits before exec can reach it. With neither, exit codes 2 and 4
/// ("refused before anything changed") and 1 roll back: the image publishes
/// its result before it exits, so no result means nothing was recorded. If
/// that ever proves wrong, the previous image refuses data past the point of
/// no return, publishes that upgrade's result, and `Resume` moves forward.
pub fn decide_upgrade(i: &UpgradeInputs) -> UpgradeDecision {
    if let Some(op) = i.operation.filter(|op| op.kind == kind::UPGRADE) {
        return match result_for(i, &op.id) {
            Some(r) => match (r.outcome, r.step.as_deref()) {
                (Outcome::Succeeded, _) => {
                    UpgradeDecision::Succeeded(op.clone(), r.message.clone().unwrap_or_default())
                }
                (Outcome::Running, step) => UpgradeDecision::InProgress(
                    op.clone(),
                    step.map(String::from),
                    r.message.clone().unwrap_or_default(),
                ),
                (Outcome::RolledBack, step) | (Outcome::Failed, step @ Some("preflight")) => {
                    UpgradeDecision::RollBack(failed_from(op, i.generation, step, r))
                }
                (Outcome::Failed, step) => UpgradeDecision::FailedForward(
                    op.clone(),
                    step.unwrap_or("unknown").to_string(),
                    r.message.clone().unwrap_or_default(),
                ),
            },
            None => match i.container_exit {
                Some(code @ (1 | 2 | 4)) => UpgradeDecision::RollBack(FailedUpgrade {
                    id: op.id.clone(),
                    from_major: op.from_major.unwrap_or_default(),
                    to_major: op.to_major.unwrap_or(i.spec_major),
                    generation: i.generation,
                    step: None,
                    message: Some(format!(
                        "the PostgreSQL {} image exited {code} during the upgrade before its result could be read; the previous image runs again and the step and message are filled in from the result file once it runs",
                        op.to_major.unwrap_or(i.spec_major)
                    )),
                    from_image: op.from_image.clone(),
                }),
                _ => UpgradeDecision::InProgress(
                    op.clone(),
                    None,
                    format!(
                        "waiting for the PostgreSQL {} image to start and report the upgrade",
                        op.to_major.unwrap_or(i.spec_major)
                    ),
                ),
            },
        };
    }
    let Some(running) = i.running_major else {
        return UpgradeDecision::Idle;
    };
    if i.spec_major <= running {
        return UpgradeDecision::Idle;
    }
    if let Some(f) = i.failed
        && f.to_major == i.spec_major
        && f.generation == i.generation
    {
        if let Some(r) = result_for(i, &f.id).filter(|r| passed_point_of_no_return(r)) {
            return UpgradeDecision::Resume(
                OperationRecord {
                    kind: kind::UPGRADE.into(),
                    id: f.id.clone(),
                    started_at: i.now.map(String::from),
                    from_major: Some(f.from_major),
                    from_image: f.from_image.clone(),
                    to_major: Some(f.to_major),
                    pod_uid: None,
                },
                r.clone(),
            );
        }
        return UpgradeDecision::Blocked(f.clone());
    }
    UpgradeDecision::Start(OperationRecord {
        kind: kind::UPGRADE.into(),
        id: upgrade_id(running, i.spec_major, i.generation),
        started_at: i.now.map(String::from),
        from_major: Some(running),
        from_image: i.running_image.map(String::from),
        to_major: Some(i.spec_major),
        pod_uid: None,
    })
}

fn failed_from(
    op: &OperationRecord,
    generation: i64,
    step: Option<&str>,
    r: &UpgradeResult,
) -> FailedUpgrade {
    let mut message = r.message.clone().unwrap_or_default();
    if let Some(log) = &r.details.pg_upgrade_log {
        // The end of pg_upgrade's output names the cause.
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        message.push_str(" | pg_upgrade: ");
        message.push_str(&tail.join(" / "));
    }
    FailedUpgrade {
        id: op.id.clone(),
        from_major: op.from_major.or(r.details.from_major).unwrap_or_default(),
        to_major: op.to_major.or(r.details.to_major).unwrap_or_default(),
        generation,
        step: r
            .details
            .failed_step
            .clone()
            .or_else(|| step.map(String::from)),
        message: Some(message),
        from_image: op.from_image.clone(),
    }
}

/// A failed upgrade whose step and message were unknown when it was rolled
/// back, completed from the result the previous image reports.
pub fn complete_failed_upgrade(
    failed: &FailedUpgrade,
    result: Option<&UpgradeResult>,
) -> FailedUpgrade {
    match result {
        Some(r) if r.id == failed.id && failed.step.is_none() => {
            let op = OperationRecord {
                kind: kind::UPGRADE.into(),
                id: failed.id.clone(),
                from_major: Some(failed.from_major),
                to_major: Some(failed.to_major),
                from_image: failed.from_image.clone(),
                ..Default::default()
            };
            failed_from(&op, failed.generation, r.step.as_deref(), r)
        }
        _ => failed.clone(),
    }
}

// ------------------------------------------------------------ restore

/// What to do about `spec.restore`.
#[derive(Clone, Debug, PartialEq)]
pub enum RestoreDecision {
    /// No request, or it already has a result.
    Idle,
    /// Refused before anything is touched: (reason, message).
    Reject(&'static str, String),
    /// Another operation runs first.
    Wait(String),
    /// Record this operation, then put the request on the pod template.
    Start(OperationRecord),
    /// Under way: (step, message).
    InProgress(OperationRecord, Option<String>, String),
    /// Finished (succeeded, failed or rolled back).
    Finished(RestoreRecord),
}

/// The restore state machine.
pub fn decide_restore(
    request: Option<&RestoreSpec>,
    last: Option<&RestoreRecord>,
    operation: Option<&OperationRecord>,
    result: Option<&RestoreResult>,
    first_recoverability_point: Option<&str>,
    now: Timestamp,
) -> RestoreDecision {
    let Some(request) = request else {
        return RestoreDecision::Idle;
    };
    let id = &request.request_id;
    if let Some(l) = last.filter(|l| &l.request_id == id) {
        match l.outcome.as_str() {
            "running" => {}
            // Refused by the operator: it stays refused (a new request
            // needs a new id), with the same reason and message.
            "rejected" => {
                let reason = match l.step.as_deref() {
                    Some("RestoreTargetInFuture") => "RestoreTargetInFuture",
                    Some("RestoreTargetBeforeFirstBackup") => "RestoreTargetBeforeFirstBackup",
                    Some("InvalidRestoreTarget") => "InvalidRestoreTarget",
                    _ => "RestoreRejected",
                };
                return RestoreDecision::Reject(reason, l.message.clone().unwrap_or_default());
            }
            _ => return RestoreDecision::Idle,
        }
    }
    if let Some(op) = operation {
        if op.kind == kind::RESTORE && &op.id == id {
            return match result.filter(|r| &r.id == id) {
                Some(r) if r.outcome != Outcome::Running => {
                    RestoreDecision::Finished(restore_record(r))
                }
                Some(r) => RestoreDecision::InProgress(
                    op.clone(),
                    r.step.clone(),
                    r.message.clone().unwrap_or_default(),
                ),
                None => RestoreDecision::InProgress(
                    op.clone(),
                    None,
                    "waiting for the pod to restart with the restore request".into(),
                ),
            };
        }
        return RestoreDecision::Wait(format!(
            "restore {id} waits for the {} {} to finish",
            op.kind, op.id
        ));
    }
    if let Some(target) = &request.target.time {
        let Some(t) = parse_time(target) else {
            return RestoreDecision::Reject(
                "InvalidRestoreTarget",
                format!("spec.restore.target.time {target:?} is not an RFC 3339 time"),
            );
        };
        if t > now {
            return RestoreDecision::Reject(
                "RestoreTargetInFuture",
                format!(
                    "spec.restore.target.time {target} is in the future (now {now}): nothing was touched; pick a time in the past, or use target.latest"
                ),
            );
        }
        if let Some(first) = first_recoverability_point.and_then(parse_time)
            && t < first
        {
            return RestoreDecision::Reject(
                "RestoreTargetBeforeFirstBackup",
                format!(
                    "spec.restore.target.time {target} is before the first recoverability point {first}: nothing was touched; the earliest time you can restore to is {first}"
                ),
            );
        }
    }
    RestoreDecision::Start(OperationRecord {
        kind: kind::RESTORE.into(),
        id: id.clone(),
        started_at: Some(now.to_string()),
        ..Default::default()
    })
}

/// `status.lastRestore` from the image's result.
pub fn restore_record(r: &RestoreResult) -> RestoreRecord {
    RestoreRecord {
        request_id: r.id.clone(),
        outcome: match r.outcome {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
        }
        .into(),
        step: r.step.clone(),
        started_at: r.started_at.clone(),
        finished_at: r.finished_at.clone(),
        message: r.message.clone(),
    }
}

// ------------------------------------------------------------ config

/// What the server says about its configuration after a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigDecision {
    /// Every setting is loaded.
    Loaded,
    /// A value was refused (`pg_file_settings.error`): the server keeps its
    /// old value. The message is PostgreSQL's.
    Invalid(String),
    /// These settings need a restart (`pending_restart`).
    NeedsRestart(Vec<String>),
}

/// Reload or restart, from `pgsteward-status` after `pg_reload_conf()`.
/// An invalid value wins over a pending restart: restarting would not help.
pub fn config_decision(report: &StatusReport) -> ConfigDecision {
    let errors = report.config_errors.as_deref().unwrap_or_default();
    if !errors.is_empty() {
        return ConfigDecision::Invalid(
            errors
                .iter()
                .map(|e| {
                    format!(
                        "{} (line {} of {}): {}",
                        e.name.as_deref().unwrap_or("?"),
                        e.line.unwrap_or(0),
                        e.file.as_deref().unwrap_or("?"),
                        e.error.as_deref().unwrap_or("invalid")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    let pending = report.pending_restart.as_deref().unwrap_or_default();
    if !pending.is_empty() {
        return ConfigDecision::NeedsRestart(pending.iter().map(|p| p.name.clone()).collect());
    }
    ConfigDecision::Loaded
}

/// The command that makes the server re-read its configuration (`PGDATA`
/// is in the container's environment, which exec inherits).
pub fn reload_command() -> Vec<String> {
    ["pg_ctl", "reload", "--silent"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The command that prints the mounted conf.d files, in the order
/// [`crate::build::conf_d`] lists them, to compare with the ConfigMap: the
/// kubelet updates a mounted ConfigMap a while after it changes.
pub fn mounted_config_command(files: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    std::iter::once("cat".to_string())
        .chain(
            files
                .keys()
                .map(|k| format!("{}/{k}", crate::build::CONF_D_PATH)),
        )
        .collect()
}

/// Whether the mounted files are the ones the ConfigMap holds.
pub fn mounted_config_matches(
    files: &std::collections::BTreeMap<String, String>,
    cat_stdout: &str,
) -> bool {
    files.values().map(String::as_str).collect::<String>() == cat_stdout
}

/// A stable fingerprint of the conf.d content (FNV-1a, hex).
pub fn config_revision(files: &std::collections::BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in files {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

// ------------------------------------------------------------ the plan

/// What `plan` sees of the pod, besides `pgsteward-status`.
#[derive(Clone, Debug, Default)]
pub struct PodView<'a> {
    pub uid: Option<&'a str>,
    /// The image the pod's postgres container was created with.
    pub image: Option<&'a str>,
    /// Its postgres container runs (it may not be Ready yet).
    pub running: bool,
    /// The pod is being deleted already.
    pub terminating: bool,
    /// `PGSTEWARD_UPGRADE_ID` on the live StatefulSet's pod template.
    pub template_upgrade_id: Option<&'a str>,
    /// The postgres container's last exit code while it is not running.
    pub container_exit: Option<i32>,
    /// The results in the postgres container's termination message (its
    /// current or last run).
    pub terminated: crate::image_state::TerminationMessage,
}

/// An event to publish: (warning?, reason, note).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// Everything `act` decided for one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What the StatefulSet runs.
    pub run: crate::build::Run,
    /// `status.operation` from now on.
    pub operation: Option<OperationRecord>,
    /// Write `operation` to status before applying (a new operation is
    /// recorded before anything changes).
    pub record_first: bool,
    pub failed_upgrade: Option<FailedUpgrade>,
    pub last_restore: Option<RestoreRecord>,
    pub last_backup: Option<BackupRecord>,
    pub last_scheduled_backup: Option<BackupRecord>,
    pub first_recoverability_point: Option<String>,
    pub archiver: Option<ArchiverRecord>,
    pub waiting: Option<Vec<String>>,
    pub pending_restart: Option<Vec<String>>,
    pub last_restart: Option<RestartRecord>,
    /// The major the server runs now, when an operation says so.
    pub postgres_version: Option<u32>,
    /// Conditions set by operations (replace the ones status computed).
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    pub events: Vec<PlanEvent>,
    /// Delete the pod (a restart for settings that need one).
    pub restart_pod: bool,
}

/// Decide every operation for this reconcile, in the documented order
/// (see the module documentation).
pub fn plan(
    instance: &PgInstance,
    settings: &crate::build::Settings,
    report: Option<&StatusReport>,
    pod: &PodView,
    now: Timestamp,
) -> Plan {
    use condition_type::{BACKUP_HEALTHY, DEGRADED, PROGRESSING, RESTORING, UPGRADING};
    let prior = instance.status.clone().unwrap_or_default();
    let spec = &instance.spec;
    let generation = instance.metadata.generation;
    let now_text = Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    let mut run = crate::build::Run::from_spec(instance, settings);
    let mut p = Plan {
        run: run.clone(),
        operation: prior.operation.clone(),
        record_first: false,
        failed_upgrade: prior.failed_upgrade.clone(),
        last_restore: prior.last_restore.clone(),
        last_backup: prior.last_backup.clone(),
        last_scheduled_backup: prior.last_scheduled_backup.clone(),
        first_recoverability_point: prior.first_recoverability_point.clone(),
        archiver: prior.archiver.clone(),
        waiting: None,
        pending_restart: prior.pending_restart.clone(),
        last_restart: prior.last_restart.clone(),
        postgres_version: None,
        conditions: Vec::new(),
        events: Vec::new(),
        restart_pod: false,
    };
    let mut degraded: Vec<(&'static str, String)> = Vec::new();
    let mut waiting: Vec<String> = Vec::new();

    // Backups and archiving, from the image's own report.
    if let Some(r) = report {
        if let Some(b) = &r.results.backup {
            if let Some(rec) = backup_record(b) {
                p.last_backup = Some(rec);
            }
            p.last_scheduled_backup =
                last_scheduled_backup(p.last_scheduled_backup.as_ref(), Some(b));
            if let Some(frp) = b
                .details
                .first_recoverability_point
                .as_deref()
                .and_then(recoverability_point)
            {
                p.first_recoverability_point = Some(frp);
            }
        }
        if let Some(a) = &r.archiver {
            p.archiver = Some(refresh_archiver(prior.archiver.as_ref(), a));
        }
    }
    if let Some(b) = &spec.backup {
        let (s, reason, message) = backup_health(
            b.schedule.as_deref(),
            report,
            p.last_scheduled_backup.as_ref(),
            p.last_backup.as_ref(),
            now,
        );
        // Without a report this reconcile, keep what was reported last.
        let keep = report.is_none()
            && instance
                .condition(BACKUP_HEALTHY)
                .is_some_and(|c| c.reason != "NotConfigured");
        if !keep {
            p.conditions
                .push(condition(BACKUP_HEALTHY, s, reason, message, generation));
        }
    }

    // 0. A restore before the first start (spec.bootstrap.recovery) that the
    // image refused: the container exits at every start rather than create
    // an empty database, so its result is only in the termination message.
    if prior.postgres_version.is_none()
        && let Some(r) = pod.terminated.restore.as_ref().filter(|r| {
            Some(r.id.as_str()) == crate::build::bootstrap_request_id(instance).as_deref()
                && matches!(r.outcome, Outcome::Failed | Outcome::RolledBack)
        })
    {
        let message = format!(
            "the restore before the first start ({}) failed at step {}: {}. No empty database is created over it: fix spec.bootstrap.recovery, then delete and re-create this PgInstance (the claim is kept by default; no database was created on it).",
            r.id,
            r.step.as_deref().unwrap_or("?"),
            r.message.as_deref().unwrap_or("").trim_end_matches('.'),
        );
        degraded.push(("BootstrapRecoveryFailed", message.clone()));
        p.conditions.push(condition(
            RESTORING,
            "False",
            "Failed",
            message.clone(),
            generation,
        ));
        // Not "starting": it will not start until the instance is re-created.
        p.conditions.push(condition(
            PROGRESSING,
            "False",
            "BootstrapRecoveryFailed",
            message,
            generation,
        ));
    }

    // 1. Restore.
    let restore = decide_restore(
        spec.restore.as_ref(),
        prior.last_restore.as_ref(),
        prior.operation.as_ref(),
        report.and_then(|r| r.results.restore.as_ref()),
        p.first_recoverability_point.as_deref(),
        now,
    );
    let restore_env = || spec.restore.as_ref().map(crate::build::RestoreRequest::of);
    match &restore {
        RestoreDecision::Idle => {
            // A finished request stays on the pod template: the image never
            // runs an id with a result again, and removing it would restart
            // the pod for nothing.
            if let Some(l) = spec.restore.as_ref().and_then(|r| {
                prior
                    .last_restore
                    .as_ref()
                    .filter(|l| l.request_id == r.request_id && l.outcome != "rejected")
            }) {
                run.restore = restore_env();
                // The outcome stays visible while spec.restore names it; a
                // failed request keeps the instance Degraded until it is
                // replaced (new requestId) or removed.
                let message = format!(
                    "restore {} {}: {}",
                    l.request_id,
                    l.outcome.replace('_', " "),
                    l.message.as_deref().unwrap_or("")
                );
                let reason = match l.outcome.as_str() {
                    "succeeded" => "Succeeded",
                    "rolled_back" => "RolledBack",
                    _ => "Failed",
                };
                if reason != "Succeeded" {
                    degraded.push(("RestoreFailed", message.clone()));
                }
                p.conditions
                    .push(condition(RESTORING, "False", reason, message, generation));
            }
        }
        RestoreDecision::Reject(reason, message) => {
            degraded.push((reason, message.clone()));
            p.conditions.push(condition(
                RESTORING,
                "False",
                "Rejected",
                message.clone(),
                generation,
            ));
            if let Some(req) = &spec.restore {
                p.last_restore = Some(RestoreRecord {
                    request_id: req.request_id.clone(),
                    outcome: "rejected".into(),
                    step: Some((*reason).into()),
                    started_at: None,
                    finished_at: None,
                    message: Some(message.clone()),
                });
            }
        }
        RestoreDecision::Wait(message) => {
            waiting.push(message.clone());
            p.conditions.push(condition(
                RESTORING,
                "False",
                "Waiting",
                message.clone(),
                generation,
            ));
        }
        RestoreDecision::Start(op) => {
            p.operation = Some(op.clone());
            p.record_first = true;
            run.restore = restore_env();
            let message = format!(
                "restore {} requested: the pod restarts and the image restores in place (the old data is kept until the restore is verified)",
                op.id
            );
            p.last_restore = Some(RestoreRecord {
                request_id: op.id.clone(),
                outcome: "running".into(),
                step: None,
                started_at: Some(now_text.clone()),
                finished_at: None,
                message: Some(message.clone()),
            });
            p.conditions.push(condition(
                RESTORING,
                "True",
                "InPlace",
                message.clone(),
                generation,
            ));
            p.events.push(PlanEvent {
                warning: false,
                reason: "RestoreStarted",
                note: message,
            });
        }
        RestoreDecision::InProgress(op, step, message) => {
            run.restore = restore_env();
            let text = match step {
                Some(s) => format!("restore {} at step {s}: {message}", op.id),
                None => format!("restore {}: {message}", op.id),
            };
            if let Some(l) = p.last_restore.as_mut() {
                l.step = step.clone();
                l.message = Some(text.clone());
            }
            p.conditions
                .push(condition(RESTORING, "True", "InPlace", text, generation));
        }
        RestoreDecision::Finished(record) => {
            run.restore = restore_env();
            p.operation = None;
            let message = format!(
                "restore {} {}: {}",
                record.request_id,
                record.outcome.replace('_', " "),
                record.message.as_deref().unwrap_or("")
            );
            let (reason, warning) = match record.outcome.as_str() {
                "succeeded" => ("Succeeded", false),
                "rolled_back" => ("RolledBack", true),
                _ => ("Failed", true),
            };
            if warning {
                degraded.push(("RestoreFailed", message.clone()));
            }
            p.last_restore = Some(RestoreRecord {
                started_at: prior
                    .last_restore
                    .as_ref()
                    .and_then(|l| l.started_at.clone())
                    .or_else(|| record.started_at.clone()),
                ..record.clone()
            });
            p.conditions.push(condition(
                RESTORING,
                "False",
                reason,
                message.clone(),
                generation,
            ));
            p.events.push(PlanEvent {
                warning,
                reason: if warning {
                    "RestoreFailed"
                } else {
                    "RestoreSucceeded"
                },
                note: message,
            });
        }
    }

    // 2. Upgrade (after a restore, which reads the current major's backups).
    let upgrade_blocked_by_restore = matches!(
        restore,
        RestoreDecision::Start(_) | RestoreDecision::InProgress(..)
    );
    let inputs = UpgradeInputs {
        spec_major: spec.postgres_version,
        generation: generation.unwrap_or_default(),
        running_major: prior.postgres_version,
        running_image: prior.image.as_deref(),
        operation: p.operation.as_ref(),
        failed: prior.failed_upgrade.as_ref(),
        result: report.and_then(|r| r.results.upgrade.as_ref()),
        terminated_result: pod.terminated.upgrade.as_ref(),
        container_exit: pod.container_exit,
        now: Some(&now_text),
    };
    let upgrade = decide_upgrade(&inputs);
    let previous_image = |major: u32, image: Option<&String>| {
        image.cloned().unwrap_or_else(|| {
            let mut old = instance.clone();
            old.spec.postgres_version = major;
            settings.image_for(&old)
        })
    };
    match upgrade {
        UpgradeDecision::Idle => {
            p.failed_upgrade = None;
            // A finished upgrade's request stays on the pod template: the
            // image does nothing for data already at its major, and removing
            // it would restart the pod for nothing.
            if let Some(id) = pod
                .template_upgrade_id
                .filter(|id| upgrade_id_target(id) == Some(run.major))
            {
                run.upgrade_id = Some(id.to_string());
            }
            // And Upgrading keeps saying how the last upgrade ended.
            match instance
                .condition(UPGRADING)
                .filter(|c| c.reason == "Succeeded")
            {
                Some(done) => p.conditions.push(Condition {
                    observed_generation: generation,
                    ..done.clone()
                }),
                None => {
                    p.conditions
                        .push(condition(UPGRADING, "False", "NoUpgrade", "", generation))
                }
            }
        }
        UpgradeDecision::Start(op) if upgrade_blocked_by_restore => {
            let message = format!(
                "the upgrade to PostgreSQL {} waits for restore {} to finish",
                spec.postgres_version,
                spec.restore
                    .as_ref()
                    .map(|r| r.request_id.as_str())
                    .unwrap_or("?")
            );
            waiting.push(message.clone());
            let from = op.from_major.unwrap_or(spec.postgres_version);
            run.major = from;
            run.image = previous_image(from, op.from_image.as_ref());
            p.conditions.push(condition(
                UPGRADING, "False", "Waiting", message, generation,
            ));
        }
        UpgradeDecision::Start(op) => {
            let message = format!(
                "upgrading from PostgreSQL {} to {} ({}): the pod restarts on the new image, which upgrades the data with pg_upgrade --link",
                op.from_major.unwrap_or_default(),
                op.to_major.unwrap_or_default(),
                op.id
            );
            run.upgrade_id = Some(op.id.clone());
            p.operation = Some(op);
            p.record_first = true;
            p.failed_upgrade = None;
            p.conditions.push(condition(
                UPGRADING,
                "True",
                "InProgress",
                message.clone(),
                generation,
            ));
            p.events.push(PlanEvent {
                warning: false,
                reason: "UpgradeStarted",
                note: message,
            });
        }
        UpgradeDecision::InProgress(op, step, message) => {
            run.upgrade_id = Some(op.id.clone());
            let reason = match step.as_deref() {
                Some("analyze" | "update_extensions" | "backup" | "cleanup" | "ready") => {
                    "PostUpgrade"
                }
                _ => "InProgress",
            };
            let text = match &step {
                Some(s) => format!("{}: step {s}: {message}", op.id),
                None => format!("{}: {message}", op.id),
            };
            p.conditions
                .push(condition(UPGRADING, "True", reason, text, generation));
        }
        UpgradeDecision::Succeeded(op, message) => {
            run.upgrade_id = Some(op.id.clone());
            p.operation = None;
            p.failed_upgrade = None;
            p.postgres_version = op.to_major;
            let text = format!("{}: {message}", op.id);
            p.conditions.push(condition(
                UPGRADING,
                "False",
                "Succeeded",
                text.clone(),
                generation,
            ));
            p.events.push(PlanEvent {
                warning: false,
                reason: "UpgradeSucceeded",
                note: text,
            });
        }
        UpgradeDecision::RollBack(f) => {
            run.major = f.from_major;
            run.image = previous_image(f.from_major, f.from_image.as_ref());
            run.upgrade_id = None;
            p.operation = None;
            let message = failed_message(&f);
            degraded.push(("UpgradeFailed", message.clone()));
            p.conditions.push(condition(
                UPGRADING,
                "False",
                "RolledBack",
                message.clone(),
                generation,
            ));
            p.events.push(PlanEvent {
                warning: true,
                reason: "UpgradeRolledBack",
                note: message,
            });
            p.failed_upgrade = Some(f);
        }
        UpgradeDecision::Blocked(f) => {
            let reported = [
                report.and_then(|r| r.results.upgrade.as_ref()),
                pod.terminated.upgrade.as_ref(),
            ]
            .into_iter()
            .flatten()
            .find(|r| r.id == f.id);
            let f = complete_failed_upgrade(&f, reported);
            run.major = f.from_major;
            run.image = previous_image(f.from_major, f.from_image.as_ref());
            let message = failed_message(&f);
            degraded.push(("UpgradeFailed", message.clone()));
            p.conditions.push(condition(
                UPGRADING,
                "False",
                "RolledBack",
                message,
                generation,
            ));
            p.failed_upgrade = Some(f);
        }
        UpgradeDecision::Resume(op, result) => {
            let message = format!(
                "upgrade {} had passed its point of no return (step {}: {}) when the previous image was put back, which refuses the PostgreSQL {} data: the pod moves to the PostgreSQL {} image again to finish the upgrade",
                op.id,
                result.step.as_deref().unwrap_or("?"),
                result.message.as_deref().unwrap_or(""),
                op.to_major.unwrap_or_default(),
                op.to_major.unwrap_or_default(),
            );
            run.upgrade_id = Some(op.id.clone());
            p.operation = Some(op);
            p.record_first = true;
            p.failed_upgrade = None;
            p.conditions.push(condition(
                UPGRADING,
                "True",
                "Resumed",
                message.clone(),
                generation,
            ));
            p.events.push(PlanEvent {
                warning: true,
                reason: "UpgradeResumed",
                note: message,
            });
        }
        UpgradeDecision::FailedForward(op, step, message) => {
            run.upgrade_id = Some(op.id.clone());
            let text = format!(
                "upgrade {} failed at step {step} after the point of no return: {message} The data is PostgreSQL {} now; the previous image is NOT put back. The image retries the step at each start.",
                op.id,
                op.to_major.unwrap_or_default()
            );
            degraded.push(("UpgradeFailedAfterPointOfNoReturn", text.clone()));
            p.conditions.push(condition(
                UPGRADING,
                "True",
                "Failed",
                text.clone(),
                generation,
            ));
            if instance
                .condition(DEGRADED)
                .is_none_or(|c| c.reason != "UpgradeFailedAfterPointOfNoReturn")
            {
                p.events.push(PlanEvent {
                    warning: true,
                    reason: "UpgradeFailed",
                    note: text,
                });
            }
        }
    }

    // 3. Settings that need a restart, once no other operation runs.
    match report.map(config_decision) {
        Some(ConfigDecision::Invalid(message)) => {
            degraded.push((
                "InvalidParameter",
                format!(
                    "PostgreSQL refused a setting and keeps its previous value: {message}; fix spec.config.parameters"
                ),
            ));
        }
        Some(ConfigDecision::NeedsRestart(names)) => {
            p.pending_restart = Some(names.clone());
            let list = names.join(", ");
            let revision = config_revision(&crate::build::conf_d(instance));
            let already = prior
                .last_restart
                .as_ref()
                .filter(|r| r.config_revision == revision);
            match (&p.operation, pod.uid) {
                (None, Some(_)) if already.is_some() => {
                    let message = format!(
                        "PostgreSQL still reports {list} as waiting for a restart, after the pod was restarted for this configuration at {}; another restart would not help, so the operator does not restart it again. Compare `SELECT name, setting, pending_restart FROM pg_settings WHERE pending_restart` with spec.config.parameters (ALTER SYSTEM or a -c option overrides conf.d), then change spec.config",
                        already
                            .and_then(|r| r.restarted_at.as_deref())
                            .unwrap_or("?")
                    );
                    degraded.push(("RestartDidNotApply", message.clone()));
                    p.conditions.push(condition(
                        PROGRESSING,
                        "False",
                        "RestartDidNotApply",
                        message,
                        generation,
                    ));
                }
                (None, Some(uid)) => {
                    p.operation = Some(OperationRecord {
                        kind: kind::RESTART.into(),
                        id: format!("restart-{}", names.join("-")),
                        started_at: Some(now_text.clone()),
                        pod_uid: Some(uid.to_string()),
                        ..Default::default()
                    });
                    p.record_first = true;
                    p.restart_pod = true;
                    p.last_restart = Some(RestartRecord {
                        config_revision: revision,
                        settings: names.clone(),
                        restarted_at: Some(now_text.clone()),
                    });
                    let message =
                        format!("restarting the pod: changed settings need a restart ({list})");
                    p.conditions.push(condition(
                        PROGRESSING,
                        "True",
                        "PendingRestart",
                        message.clone(),
                        generation,
                    ));
                    p.events.push(PlanEvent {
                        warning: false,
                        reason: "Restart",
                        note: message,
                    });
                }
                (Some(op), _) if op.kind != kind::RESTART => {
                    let message = format!(
                        "a restart for {list} waits for the {} {} to finish",
                        op.kind, op.id
                    );
                    waiting.push(message.clone());
                    p.conditions.push(condition(
                        PROGRESSING,
                        "True",
                        "PendingRestart",
                        message,
                        generation,
                    ));
                }
                _ => {
                    p.conditions.push(condition(
                        PROGRESSING,
                        "True",
                        "PendingRestart",
                        format!("waiting for the pod to restart for {list}"),
                        generation,
                    ));
                }
            }
        }
        Some(ConfigDecision::Loaded) => p.pending_restart = None,
        None => {}
    }
    // A StatefulSet does not replace a pod that is not Ready (Kubernetes'
    // "forced rollback" limitation): a pod whose container does not run, on
    // another image than the one decided here (an upgrade put back, or
    // resumed), would stay as it is. Delete it; the StatefulSet creates it
    // again from the template.
    if !p.restart_pod
        && !pod.running
        && !pod.terminating
        && pod.uid.is_some()
        && pod.image.is_some_and(|image| image != run.image)
    {
        p.restart_pod = true;
        p.events.push(PlanEvent {
            warning: false,
            reason: "PodReplaced",
            note: format!(
                "the pod's container does not run and has image {}, not {}: deleting it so that the StatefulSet creates it from the current template",
                pod.image.unwrap_or_default(),
                run.image
            ),
        });
    }
    // A restart is over once the pod is a new one.
    // (Whether the new pod has the settings, its own report says next.)
    if let Some(op) = &p.operation
        && op.kind == kind::RESTART
        && !p.restart_pod
        && pod.uid.is_some()
        && op.pod_uid.as_deref() != pod.uid
    {
        p.operation = None;
    }

    if !degraded.is_empty() {
        let reason = degraded[0].0;
        let message = degraded
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        p.conditions
            .push(condition(DEGRADED, "True", reason, message, generation));
    }
    p.waiting = (!waiting.is_empty()).then_some(waiting);
    p.run = run;
    p
}

fn failed_message(f: &FailedUpgrade) -> String {
    format!(
        "the upgrade from PostgreSQL {} to {} ({}) failed{}: {} PostgreSQL {} runs again on the previous image with its data as it was. It is not retried until the spec changes: fix the cause, then change the spec (for example re-apply it with any change) to retry under a new id.",
        f.from_major,
        f.to_major,
        f.id,
        f.step
            .as_deref()
            .map(|s| format!(" at step {s}"))
            .unwrap_or_default(),
        f.message.as_deref().unwrap_or(""),
        f.from_major
    )
}
