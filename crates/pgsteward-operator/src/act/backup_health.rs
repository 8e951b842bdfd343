//! Backup health: `status.lastBackup`, `lastScheduledBackup`,
//! `firstRecoverabilityPoint` and `archiver` from the image's report, and the
//! BackupHealthy condition. It starts no operation and holds none: it only
//! reads what the pod reports and what earlier reconciles recorded.

use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
use pgsteward_api::instance::{
    ArchiverRecord, BackupRecord, FIRST_RECOVERABILITY_POINT_MAX_LEN,
    condition_type::BACKUP_HEALTHY,
};

use super::{Inputs, Plan, parse_time};
use crate::{
    conditions::condition,
    image_state::{Archiver, BackupResult, Outcome, StatusReport},
};

/// This reconcile's contribution: the backup records from the report, then
/// BackupHealthy when `spec.backup` is set. Without a report this
/// reconcile, the condition stays as it was last reported.
pub(super) fn contribute(i: &Inputs, p: &mut Plan) {
    if let Some(r) = i.report {
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
            p.archiver = Some(refresh_archiver(i.prior.archiver.as_ref(), a));
        }
    }
    if let Some(b) = &i.instance.spec.backup {
        let (s, reason, message) = backup_health(
            b.schedule.as_deref(),
            i.report,
            p.last_scheduled_backup.as_ref(),
            p.last_backup.as_ref(),
            i.now,
        );
        let keep = i.report.is_none()
            && i.instance
                .condition(BACKUP_HEALTHY)
                .is_some_and(|c| c.reason != "NotConfigured");
        if !keep {
            p.conditions
                .push(condition(BACKUP_HEALTHY, s, reason, message, i.generation));
        }
    }
}

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
    schedule_health(schedule, period, report, last_scheduled, last_backup, now)
}

/// BackupHealthy for a schedule that fires every `period`: the last
/// scheduled backup (or, before the first, the server's start) may be at
/// most two periods old.
fn schedule_health(
    schedule: &str,
    period: SignedDuration,
    report: &StatusReport,
    last_scheduled: Option<&BackupRecord>,
    last_backup: Option<&BackupRecord>,
    now: Timestamp,
) -> (&'static str, &'static str, String) {
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
