//! Table-driven tests of every operation decision (`act`). The inputs are
//! the real result files that the image tier's tests produce, committed in
//! `e2e/fixtures/state/`, read from there so the two sides cannot drift.

// Tables of cases are tuples, on purpose.
#![allow(clippy::type_complexity)]

use std::path::PathBuf;

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::{SignedDuration, Timestamp},
};
use pgsteward_api::{
    PgBackup, PgBackupStatus, PgInstance,
    backup::BackupPhase,
    instance::{BackupRecord, FailedUpgrade, OperationRecord, RestoreRecord, RestoreSpec},
};
use pgsteward_operator::{
    act::{
        self,
        backup::BackupGate,
        config::ConfigDecision,
        restore::RestoreDecision,
        upgrade::{UpgradeDecision, UpgradeInputs},
    },
    conditions,
    image_state::{self, BackupResult, RestoreResult, StatusReport, UpgradeResult},
};
use serde_json::{Value, json};

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../e2e/fixtures/state")
        .join(name)
}

/// A result file from `e2e/fixtures/state/`, written by the image tier
/// (`e2e/image/`) and committed. A missing or malformed one fails the test:
/// the two sides of the contract must not drift apart silently.
fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} is missing ({e}); the image tier writes it with PGSTEWARD_UPDATE_FIXTURES=1",
            path.display()
        )
    });
    image_state::parse(&text)
        .unwrap_or_else(|e| panic!("{} does not match the contract: {e:?}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    fixture(name)
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// What `pgsteward-status` prints (same keys as its jq program), around
/// results taken from the fixtures.
fn report(results: Value, archiver: Value, pending: Value, errors: Value) -> StatusReport {
    image_state::parse(
        &json!({
            "pgMajor": 18, "collectedAt": "2026-11-21T07:00:00Z",
            "pgdata": "/var/lib/postgresql/18/docker",
            "server": {"running": true, "inRecovery": false, "version": "18.1",
                       "versionNum": 180001, "timeline": 1, "currentLsn": "0/4000000",
                       "startedAt": "2026-11-21T06:00:00Z"},
            "storage": {"configured": true, "kind": "file", "major": 18},
            "results": results, "inProgress": null,
            "archiver": archiver, "pendingRestart": pending, "configErrors": errors,
        })
        .to_string(),
    )
    .expect("a pgsteward-status document parses")
}

fn healthy_archiver() -> Value {
    json!({"archivedCount": 3, "lastArchivedWal": "000000010000000000000003",
           "lastArchivedTime": "2026-11-21T06:07:43Z", "failedCount": 0,
           "lastFailedWal": null, "lastFailedTime": null, "statsReset": "2026-11-21T06:00:00Z"})
}

// ------------------------------------------------------------------ backup

#[test]
fn backup_results_become_pgbackup_phases() {
    // (fixture, exit code, phase, backup name, message contains)
    let table: &[(&str, i32, BackupPhase, Option<&str>, &str)] = &[
        (
            "backup-succeeded.json",
            0,
            BackupPhase::Succeeded,
            Some("base_000000010000000000000003"),
            "taken",
        ),
        (
            "backup-succeeded-scheduled.json",
            0,
            BackupPhase::Succeeded,
            Some("base_000000010000000000000003"),
            "taken",
        ),
        (
            "backup-failed-push.json",
            1,
            BackupPhase::Failed,
            None,
            "failed at step backup-push: wal-g backup-push failed",
        ),
        (
            "backup-failed-no-storage.json",
            3,
            BackupPhase::Failed,
            None,
            "failed at step check: no backup storage configured",
        ),
    ];
    for (name, code, phase, backup, message) in table {
        let result = fixture::<BackupResult>(name);
        let st = act::backup::backup_status_from_result(&PgBackupStatus::default(), &result, *code);
        assert_eq!(st.phase, Some(*phase), "{name}");
        assert_eq!(st.backup_name.as_deref(), *backup, "{name}");
        assert!(
            st.message.as_deref().unwrap_or_default().contains(message),
            "{name}: {:?}",
            st.message
        );
        assert_eq!(st.backup_id.as_deref(), Some(result.id.as_str()));
        if *phase == BackupPhase::Succeeded {
            assert!(st.start_lsn.is_some(), "{name}");
            assert_eq!(st.start_lsn, result.details.start_lsn, "{name}");
            assert_eq!(st.finish_lsn, result.details.finish_lsn, "{name}");
            assert!(
                st.started_at.is_some() && st.finished_at.is_some(),
                "{name}"
            );
        }
    }
}

#[test]
fn backup_exit_codes_without_a_result() {
    let prior = PgBackupStatus {
        phase: Some(BackupPhase::Running),
        ..Default::default()
    };
    // Lock held by another backup (a scheduled one): retry later, no change.
    assert_eq!(
        act::backup::backup_status_without_result(&prior, 5, "locked"),
        None
    );
    for (code, contains) in [
        (2, "refused its arguments"),
        (3, "no backup storage"),
        (137, "exited 137 without a result: killed"),
    ] {
        let st = act::backup::backup_status_without_result(&prior, code, "a log line\nkilled\n")
            .unwrap();
        assert_eq!(st.phase, Some(BackupPhase::Failed), "{code}");
        assert!(st.message.unwrap().contains(contains), "{code}");
    }
}

#[test]
fn backup_command_passes_the_id_and_permanent() {
    assert_eq!(
        act::backup::backup_command("uid-1", false),
        vec!["backup.sh", "--id", "uid-1"]
    );
    assert_eq!(
        act::backup::backup_command("uid-1", true),
        vec!["backup.sh", "--id", "uid-1", "--permanent"]
    );
}

fn instance(ready: Option<&str>, operation: Option<OperationRecord>, backup: bool) -> PgInstance {
    let mut spec = json!({"postgresVersion": 18, "storage": {"size": "1Gi"}});
    if backup {
        spec["backup"] = json!({"file": {"path": "/backups"}});
    }
    let mut i: PgInstance = serde_json::from_value(json!({
        "apiVersion": "pgsteward.io/v1alpha1", "kind": "PgInstance",
        "metadata": {"name": "db", "namespace": "shop", "generation": 1},
        "spec": spec,
    }))
    .unwrap();
    let mut st = pgsteward_api::PgInstanceStatus {
        operation,
        ..Default::default()
    };
    if let Some(r) = ready {
        st.conditions.push(conditions::condition(
            "Ready",
            r,
            if r == "True" { "Running" } else { "Starting" },
            "msg",
            Some(1),
        ));
    }
    i.status = Some(st);
    i
}

fn pgbackup(name: &str, created: &str, phase: Option<BackupPhase>) -> PgBackup {
    let mut b: PgBackup = serde_json::from_value(json!({
        "apiVersion": "pgsteward.io/v1alpha1", "kind": "PgBackup",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "creationTimestamp": created},
        "spec": {"instanceRef": {"name": "db"}},
    }))
    .unwrap();
    b.status = phase.map(|p| PgBackupStatus {
        phase: Some(p),
        ..Default::default()
    });
    b
}

#[test]
fn backup_gate_fails_waits_or_goes_and_says_which() {
    let me = pgbackup("b2", "2026-11-21T10:00:00Z", None);
    let older_pending = pgbackup("b1", "2026-11-21T09:00:00Z", Some(BackupPhase::Pending));
    let running = pgbackup("b0", "2026-11-21T08:00:00Z", Some(BackupPhase::Running));
    let done = pgbackup("b-1", "2026-11-21T07:00:00Z", Some(BackupPhase::Succeeded));
    let newer = pgbackup("b3", "2026-11-21T11:00:00Z", None);
    let ready = instance(Some("True"), None, true);
    let upgrading = instance(
        Some("True"),
        Some(OperationRecord {
            kind: "upgrade".into(),
            id: "upgrade-17-to-18-g2".into(),
            ..Default::default()
        }),
        true,
    );
    let cases: Vec<(&str, Option<PgInstance>, Vec<PgBackup>, &str, &str)> = vec![
        ("missing instance", None, vec![], "fail", "does not exist"),
        (
            "no storage",
            Some(instance(Some("True"), None, false)),
            vec![],
            "fail",
            "no spec.backup",
        ),
        (
            "not ready",
            Some(instance(Some("False"), None, true)),
            vec![],
            "wait",
            "to be Ready (Ready=False, Starting",
        ),
        (
            "never reported",
            Some(instance(None, None, true)),
            vec![],
            "wait",
            "has not reported",
        ),
        (
            "an upgrade runs",
            Some(upgrading),
            vec![],
            "wait",
            "upgrade upgrade-17-to-18-g2",
        ),
        (
            "another backup runs",
            Some(ready.clone()),
            vec![running.clone(), done.clone()],
            "wait",
            "PgBackup b0, which is running",
        ),
        (
            "an older one waits",
            Some(ready.clone()),
            vec![older_pending, done.clone()],
            "wait",
            "PgBackup b1, which was created first",
        ),
        (
            "free to go",
            Some(ready.clone()),
            vec![done, newer],
            "go",
            "",
        ),
    ];
    for (what, inst, others, expect, contains) in cases {
        let gate = act::backup::backup_gate(&me, inst.as_ref(), &others);
        match (expect, &gate) {
            ("go", BackupGate::Go) => {}
            ("wait", BackupGate::Wait(m)) | ("fail", BackupGate::Fail(m)) => {
                assert!(m.contains(contains), "{what}: {m}")
            }
            _ => panic!("{what}: expected {expect}, got {gate:?}"),
        }
    }
}

// ----------------------------------------------------------- backup health

/// A backup record `d` after `b` finished (the same backup, later).
fn finished_later(b: &BackupRecord, d: SignedDuration) -> BackupRecord {
    BackupRecord {
        finished_at: Some((ts(b.finished_at.as_deref().unwrap()) + d).to_string()),
        ..b.clone()
    }
}

#[test]
fn the_last_scheduled_backup_comes_from_the_listed_backups_tagged_scheduled() {
    // Real results: a scheduled backup; an on-demand one taken after it
    // (its list holds both); an on-demand one alone; a failed push (no list).
    let scheduled: BackupResult = fixture("backup-succeeded-scheduled.json");
    let after: BackupResult = fixture("backup-succeeded-after-scheduled.json");
    let on_demand: BackupResult = fixture("backup-succeeded.json");
    let failed: BackupResult = fixture("backup-failed-push.json");
    assert!(scheduled.id.starts_with("scheduled-"), "{}", scheduled.id);
    let listed = after.details.backups.as_ref().unwrap();
    assert_eq!(
        listed.iter().map(|b| b.scheduled()).collect::<Vec<_>>(),
        [true, false],
        "{listed:?}"
    );
    let own = act::backup_health::last_scheduled_backup(None, Some(&scheduled)).unwrap();
    assert_eq!(own.name, scheduled.details.backup_name);
    assert_eq!(own.finished_at, scheduled.details.finish_time);
    assert_eq!(own.start_lsn, scheduled.details.start_lsn);
    let in_after = act::backup_health::last_scheduled_backup(None, Some(&after)).unwrap();
    assert_eq!(in_after.name, listed[0].name);
    assert_ne!(
        in_after.name, after.details.backup_name,
        "not the on-demand one"
    );
    let older = finished_later(&in_after, SignedDuration::from_hours(-24));
    let newer = finished_later(&in_after, SignedDuration::from_hours(24));
    // (what, prior, result, expected)
    let table: Vec<(
        &str,
        Option<&BackupRecord>,
        Option<&BackupResult>,
        Option<&BackupRecord>,
    )> = vec![
        ("nothing known", None, None, None),
        (
            "only on-demand backups listed",
            None,
            Some(&on_demand),
            None,
        ),
        (
            "only on-demand backups listed, kept",
            Some(&older),
            Some(&on_demand),
            Some(&older),
        ),
        (
            "no list (failed before listing), kept",
            Some(&older),
            Some(&failed),
            Some(&older),
        ),
        (
            "a newer scheduled backup listed",
            Some(&older),
            Some(&after),
            Some(&in_after),
        ),
        (
            "the recorded one is newer, kept",
            Some(&newer),
            Some(&after),
            Some(&newer),
        ),
        (
            "the same one",
            Some(&in_after),
            Some(&after),
            Some(&in_after),
        ),
    ];
    for (what, prior, result, expected) in table {
        assert_eq!(
            act::backup_health::last_scheduled_backup(prior, result).as_ref(),
            expected,
            "{what}"
        );
    }
}

#[test]
fn backup_health_judges_the_last_scheduled_backup_not_on_demand_ones() {
    let ok = fixture_json("backup-succeeded-after-scheduled.json");
    let failed = fixture_json("backup-failed-push.json");
    let ok_result: BackupResult = serde_json::from_value(ok.clone()).unwrap();
    // The scheduled backup and the on-demand one after it, as plan() records them.
    let scheduled = act::backup_health::last_scheduled_backup(None, Some(&ok_result)).unwrap();
    let on_demand =
        act::backup_health::backup_record(&ok_result).expect("a succeeded backup is recorded");
    assert_ne!(scheduled.name, on_demand.name);
    let finished = ts(scheduled.finished_at.as_deref().unwrap());
    let hours = |h: i64| finished + SignedDuration::from_hours(h);
    // An on-demand PgBackup taken six days after the schedule's last backup.
    let on_demand_later = finished_later(&scheduled, SignedDuration::from_hours(6 * 24));
    let on_demand_later = BackupRecord {
        name: on_demand.name.clone(),
        ..on_demand_later
    };
    let failing = json!({"archivedCount": 3, "lastArchivedWal": "000000010000000000000003",
        "lastArchivedTime": "2026-11-21T06:07:43Z", "failedCount": 4,
        "lastFailedWal": "000000010000000000000004", "lastFailedTime": "2026-11-21T06:20:00Z"});
    let recovered = json!({"archivedCount": 9, "lastArchivedWal": "000000010000000000000005",
        "lastArchivedTime": "2026-11-21T06:30:00Z", "failedCount": 4,
        "lastFailedWal": "000000010000000000000004", "lastFailedTime": "2026-11-21T06:20:00Z"});
    let started_just_before = hours(-1).to_string();
    let started_long_before = hours(-72).to_string();
    let t = |r: &BackupRecord| r.finished_at.clone().unwrap();
    let scheduled_at = ts(&t(&scheduled)).to_string();
    let on_demand_at = ts(&t(&on_demand_later)).to_string();
    // (what, schedule, results, archiver, last scheduled, last of any kind,
    //  server started, now, status, reason, the message says)
    let table: Vec<(
        &str,
        Option<&str>,
        Value,
        Value,
        Option<&BackupRecord>,
        Option<&BackupRecord>,
        &str,
        Timestamp,
        &str,
        &str,
        Vec<&str>,
    )> = vec![
        (
            "scheduled recent, on-demand recent",
            Some("0 3 * * *"),
            json!({"backup": ok}),
            healthy_archiver(),
            Some(&scheduled),
            Some(&on_demand),
            &started_long_before,
            hours(1),
            "True",
            "Healthy",
            vec![
                "last scheduled backup",
                scheduled.name.as_deref().unwrap(),
                &scheduled_at,
            ],
        ),
        (
            "scheduled overdue, on-demand recent",
            Some("0 3 * * *"),
            json!({"backup": ok}),
            healthy_archiver(),
            Some(&scheduled),
            Some(&on_demand_later),
            &started_long_before,
            hours(7 * 24),
            "False",
            "BackupOverdue",
            vec![
                "the last scheduled backup",
                &scheduled_at,
                "more than twice the schedule's period (24h00m",
                &on_demand_at,
                "on demand do not count",
            ],
        ),
        (
            "daily, scheduled 47 h old",
            Some("0 3 * * *"),
            json!({"backup": ok}),
            healthy_archiver(),
            Some(&scheduled),
            Some(&on_demand),
            &started_long_before,
            hours(47),
            "True",
            "Healthy",
            vec![&scheduled_at],
        ),
        (
            "daily, scheduled 49 h old",
            Some("0 3 * * *"),
            json!({"backup": ok}),
            healthy_archiver(),
            Some(&scheduled),
            Some(&on_demand),
            &started_long_before,
            hours(49),
            "False",
            "BackupOverdue",
            vec![&scheduled_at],
        ),
        (
            "hourly, scheduled 3 h old",
            Some("@hourly"),
            json!({"backup": ok}),
            healthy_archiver(),
            Some(&scheduled),
            Some(&scheduled),
            &started_long_before,
            hours(3),
            "False",
            "BackupOverdue",
            vec!["(1h00m, \"@hourly\")"],
        ),
        (
            "no scheduled backup yet, server just started, on-demand only",
            Some("0 3 * * *"),
            json!({"backup": ok}),
            healthy_archiver(),
            None,
            Some(&on_demand),
            &started_just_before,
            hours(1),
            "Unknown",
            "NoScheduledBackupYet",
            vec![
                "no scheduled backup has finished yet",
                "on demand do not count",
            ],
        ),
        (
            "no backup at all yet",
            Some("0 3 * * *"),
            json!({"backup": null}),
            healthy_archiver(),
            None,
            None,
            &started_just_before,
            hours(1),
            "Unknown",
            "NoScheduledBackupYet",
            vec!["no scheduled backup has finished yet"],
        ),
        (
            "no scheduled backup in 3 days of a daily schedule",
            Some("0 3 * * *"),
            json!({"backup": ok}),
            healthy_archiver(),
            None,
            Some(&on_demand),
            &started_long_before,
            hours(1),
            "False",
            "BackupOverdue",
            vec![
                "no scheduled backup has finished",
                &started_long_before,
                "on demand do not count",
            ],
        ),
        (
            "archiving fails",
            Some("0 3 * * *"),
            json!({"backup": ok}),
            failing,
            Some(&scheduled),
            Some(&on_demand),
            &started_long_before,
            hours(1),
            "False",
            "ArchivingFailing",
            vec!["000000010000000000000004"],
        ),
        (
            "archiving recovered",
            Some("0 3 * * *"),
            json!({"backup": ok}),
            recovered,
            Some(&scheduled),
            Some(&on_demand),
            &started_long_before,
            hours(1),
            "True",
            "Healthy",
            vec![],
        ),
        (
            "the newest backup failed",
            Some("0 3 * * *"),
            json!({"backup": failed}),
            healthy_archiver(),
            Some(&scheduled),
            Some(&on_demand),
            &started_long_before,
            hours(1),
            "False",
            "BackupFailed",
            vec!["backup-push"],
        ),
        (
            "no schedule: on demand only",
            None,
            json!({"backup": ok}),
            healthy_archiver(),
            None,
            Some(&on_demand),
            &started_long_before,
            hours(500),
            "True",
            "Archiving",
            vec![],
        ),
    ];
    for (what, schedule, results, archiver, last_scheduled, last, started, now, st, reason, says) in
        table
    {
        let mut r = report(results, archiver, json!([]), json!([]));
        r.server.started_at = Some(started.to_string());
        let (s, why, message) =
            act::backup_health::backup_health(schedule, Some(&r), last_scheduled, last, now);
        assert_eq!((s, why), (st, reason), "{what}: {message}");
        assert!(!message.is_empty(), "{what}");
        for part in says {
            assert!(
                message.contains(part),
                "{what}: {part:?} not in {message:?}"
            );
        }
    }
    // The scheduled one is the newest: nothing said about other backups.
    let mut r = report(
        json!({"backup": ok}),
        healthy_archiver(),
        json!([]),
        json!([]),
    );
    r.server.started_at = Some(started_long_before.clone());
    let (_, _, message) = act::backup_health::backup_health(
        Some("0 3 * * *"),
        Some(&r),
        Some(&scheduled),
        Some(&scheduled),
        hours(49),
    );
    assert!(!message.contains("not scheduled"), "{message}");
    let (s, why, _) =
        act::backup_health::backup_health(Some("0 3 * * *"), None, None, None, hours(1));
    assert_eq!((s, why), ("Unknown", "NotYetReported"));
}

#[test]
fn plan_records_the_last_scheduled_backup_and_an_on_demand_one_does_not_refresh_it() {
    let settings = pgsteward_operator::build::Settings::default();
    let spec = json!({"postgresVersion": 18, "storage": {"size": "1Gi"},
        "backup": {"schedule": "0 3 * * *", "file": {"path": "/backups"}}});
    let scheduled: BackupResult = fixture("backup-succeeded-scheduled.json");
    let at = ts(scheduled.details.finish_time.as_deref().unwrap());
    let results = |name: &str| json!({"backup": fixture_json(name)});
    let health = |p: &act::Plan| {
        let c = p
            .conditions
            .iter()
            .find(|c| c.type_ == "BackupHealthy")
            .unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    };
    // The schedule's backup is reported: recorded as both.
    let i = running_instance(
        spec.clone(),
        json!({"postgresVersion": 18, "conditions": []}),
    );
    let r = report(
        results("backup-succeeded-scheduled.json"),
        healthy_archiver(),
        json!([]),
        json!([]),
    );
    let p = act::plan(&i, &settings, Some(&r), &act::pod::PodView::default(), at);
    assert_eq!(
        p.last_scheduled_backup,
        act::backup_health::backup_record(&scheduled)
    );
    assert_eq!(p.last_backup, act::backup_health::backup_record(&scheduled));
    assert_eq!(health(&p).1, "Healthy");

    // Three days later only an on-demand backup is reported, and the storage
    // it lists holds no scheduled backup (deleted by retention): lastBackup
    // moves, lastScheduledBackup stays, and the schedule is overdue.
    let now = at + SignedDuration::from_hours(72);
    let status = json!({"postgresVersion": 18, "conditions": [],
        "lastScheduledBackup": p.last_scheduled_backup, "lastBackup": p.last_backup});
    let i = running_instance(spec.clone(), status);
    let r = report(
        results("backup-succeeded.json"),
        healthy_archiver(),
        json!([]),
        json!([]),
    );
    let p2 = act::plan(&i, &settings, Some(&r), &act::pod::PodView::default(), now);
    let on_demand: BackupResult = fixture("backup-succeeded.json");
    assert_eq!(
        p2.last_backup,
        act::backup_health::backup_record(&on_demand)
    );
    assert_eq!(p2.last_scheduled_backup, p.last_scheduled_backup);
    let (s, reason, message) = health(&p2);
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", "BackupOverdue"),
        "{message}"
    );
    assert!(message.contains(&at.to_string()), "{message}");

    // Without a report this reconcile, both records stay.
    let p3 = act::plan(&i, &settings, None, &act::pod::PodView::default(), now);
    assert_eq!(p3.last_scheduled_backup, p.last_scheduled_backup);
}

#[test]
fn backup_health_is_unknown_while_the_server_does_not_run() {
    // The real report of a pod whose server is down (a restore under way).
    let down: StatusReport = fixture("status-server-down-restore-running.json");
    assert!(!down.server.running);
    for schedule in [None, Some("0 3 * * *")] {
        let (status, reason, message) = act::backup_health::backup_health(
            schedule,
            Some(&down),
            None,
            None,
            ts("2026-11-21T07:00:00Z"),
        );
        assert_eq!((status, reason), ("Unknown", "NotRunning"), "{message}");
    }
}

#[test]
fn schedule_period_is_the_gap_between_the_last_two_runs() {
    let now = ts("2026-11-21T12:00:00Z");
    let h = |s: &str| act::backup_health::schedule_period(s, now).map(|d| d.as_secs() / 3600);
    assert_eq!(h("0 3 * * *"), Some(24));
    assert_eq!(h("@daily"), Some(24));
    assert_eq!(h("0 */6 * * *"), Some(6));
    assert_eq!(h("30 1 * * 0"), Some(24 * 7));
    assert_eq!(h("not a schedule"), None);
}

// ----------------------------------------------------------------- upgrade

fn upgrade_op(id: &str) -> OperationRecord {
    OperationRecord {
        kind: "upgrade".into(),
        id: id.into(),
        started_at: Some("2026-11-21T06:00:00Z".into()),
        from_major: Some(17),
        from_image: Some("ghcr.io/pgsteward/postgres:17-standard-trixie".into()),
        to_major: Some(18),
        pod_uid: None,
    }
}

#[test]
fn upgrade_results_drive_the_rollback_decision() {
    // (fixture, decision, rollback?, step, message contains)
    let table: &[(&str, &str, &str, &str)] = &[
        (
            "upgrade-succeeded.json",
            "succeeded",
            "done",
            "upgraded from PostgreSQL 17 to 18",
        ),
        (
            "upgrade-running-cleanup.json",
            "in_progress",
            "cleanup",
            "post-upgrade work",
        ),
        (
            "upgrade-rolled_back-check.json",
            "roll_back",
            "check",
            "could not access file",
        ),
        (
            "upgrade-failed-preflight.json",
            "roll_back",
            "preflight",
            "no PostgreSQL 17 binaries in the stash",
        ),
        // After the point of no return: never put the old image back.
        (
            "upgrade-failed-backup.json",
            "failed_forward",
            "backup",
            "after the point of no return",
        ),
    ];
    for (name, expect, step, contains) in table {
        let result = fixture::<UpgradeResult>(name);
        let op = upgrade_op(&result.id);
        let inputs = UpgradeInputs {
            spec_major: 18,
            generation: 2,
            running_major: Some(17),
            running_image: op.from_image.as_deref(),
            operation: Some(&op),
            result: Some(&result),
            ..Default::default()
        };
        match (*expect, act::upgrade::decide_upgrade(&inputs)) {
            ("succeeded", UpgradeDecision::Succeeded(o, m)) => {
                assert_eq!(o, op);
                assert!(m.contains(contains), "{name}: {m}");
                assert_eq!(result.step.as_deref(), Some(*step));
            }
            ("in_progress", UpgradeDecision::InProgress(o, s, m)) => {
                assert_eq!(o, op);
                assert_eq!(s.as_deref(), Some(*step), "{name}");
                assert!(m.contains(contains), "{name}: {m}");
            }
            ("roll_back", UpgradeDecision::RollBack(f)) => {
                assert_eq!(f.step.as_deref(), Some(*step), "{name}");
                assert!(
                    f.message.as_deref().unwrap().contains(contains),
                    "{name}: {f:?}"
                );
                assert_eq!((f.from_major, f.to_major, f.generation), (17, 18, 2));
                assert_eq!(
                    f.from_image, op.from_image,
                    "{name}: the previous image goes back"
                );
            }
            ("failed_forward", UpgradeDecision::FailedForward(o, s, m)) => {
                assert_eq!(o, op, "{name}: the operation stays, the new image stays");
                assert_eq!(s, *step);
                assert!(m.contains(contains), "{name}: {m}");
            }
            (_, other) => panic!("{name}: expected {expect}, got {other:?}"),
        }
    }
}

#[test]
fn a_rolled_back_upgrade_carries_pg_upgrades_own_message() {
    let result = fixture::<UpgradeResult>("upgrade-rolled_back-check.json");
    let op = upgrade_op(&result.id);
    let UpgradeDecision::RollBack(f) = act::upgrade::decide_upgrade(&UpgradeInputs {
        spec_major: 18,
        generation: 2,
        running_major: Some(17),
        operation: Some(&op),
        result: Some(&result),
        ..Default::default()
    }) else {
        panic!("rolled_back must roll back");
    };
    let message = f.message.unwrap();
    assert!(message.contains("failed at step check"), "{message}");
    assert!(message.contains("pg_upgrade: "), "{message}");
    assert!(
        message.contains("FATAL:  could not access file"),
        "{message}"
    );
}

#[test]
fn upgrade_starts_once_resumes_and_is_not_retried_until_the_spec_changes() {
    let failed = FailedUpgrade {
        id: "upgrade-17-to-18-g2".into(),
        from_major: 17,
        to_major: 18,
        generation: 2,
        step: Some("check".into()),
        message: Some("pg_upgrade --check failed".into()),
        from_image: Some("img:17".into()),
    };
    let op = upgrade_op("upgrade-17-to-18-g2");
    let other_result: Option<UpgradeResult> = Some(fixture("upgrade-succeeded.json"));
    let base = UpgradeInputs {
        spec_major: 18,
        generation: 2,
        running_major: Some(17),
        running_image: Some("img:17"),
        now: Some("2026-11-21T06:00:00Z"),
        ..Default::default()
    };
    // The id names its target major (a finished request stays on the pod
    // template while the data is at that major).
    assert_eq!(
        act::upgrade::upgrade_id_target("upgrade-17-to-18-g2"),
        Some(18)
    );
    assert_eq!(
        act::upgrade::upgrade_id_target("upgrade-9-to-10-g12"),
        Some(10)
    );
    assert_eq!(act::upgrade::upgrade_id_target("custom"), None);
    // Raising the version starts an upgrade with an id per generation.
    match act::upgrade::decide_upgrade(&base) {
        UpgradeDecision::Start(o) => {
            assert_eq!(o.id, "upgrade-17-to-18-g2");
            assert_eq!((o.from_major, o.to_major), (Some(17), Some(18)));
            assert_eq!(o.from_image.as_deref(), Some("img:17"));
        }
        other => panic!("{other:?}"),
    }
    // Same version: nothing. Never installed yet: nothing (the first start
    // is initdb, not an upgrade).
    for (running, spec) in [(Some(18), 18), (None, 18)] {
        let i = UpgradeInputs {
            spec_major: spec,
            running_major: running,
            ..base.clone()
        };
        assert_eq!(act::upgrade::decide_upgrade(&i), UpgradeDecision::Idle);
    }
    // Recorded in status: a restarted operator resumes, it does not start
    // a second one, even when the spec changed meanwhile.
    let resumed = UpgradeInputs {
        operation: Some(&op),
        generation: 3,
        ..base.clone()
    };
    match act::upgrade::decide_upgrade(&resumed) {
        UpgradeDecision::InProgress(o, None, m) => {
            assert_eq!(o, op);
            assert!(m.contains("waiting for the PostgreSQL 18 image"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // A result with another id (an earlier request) says nothing about this one.
    if let Some(r) = &other_result {
        let i = UpgradeInputs {
            operation: Some(&op),
            result: Some(r),
            ..base.clone()
        };
        assert!(matches!(
            act::upgrade::decide_upgrade(&i),
            UpgradeDecision::InProgress(..)
        ));
    }
    // The new image's container exits before its result can be read:
    // 1, 2 and 4 put the old image back; a kill (137) does not.
    for (code, rollback) in [(1, true), (2, true), (4, true), (137, false)] {
        let i = UpgradeInputs {
            operation: Some(&op),
            container_exit: Some(code),
            ..base.clone()
        };
        let d = act::upgrade::decide_upgrade(&i);
        assert_eq!(
            matches!(d, UpgradeDecision::RollBack(_)),
            rollback,
            "{code}: {d:?}"
        );
    }
    // Rolled back for generation 2: blocked while the spec stays.
    let blocked = UpgradeInputs {
        failed: Some(&failed),
        ..base.clone()
    };
    assert_eq!(
        act::upgrade::decide_upgrade(&blocked),
        UpgradeDecision::Blocked(failed.clone())
    );
    // A spec change (generation 3) retries, under a new id.
    let retried = UpgradeInputs {
        failed: Some(&failed),
        generation: 3,
        ..base.clone()
    };
    match act::upgrade::decide_upgrade(&retried) {
        UpgradeDecision::Start(o) => assert_eq!(o.id, "upgrade-17-to-18-g3"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_point_of_no_return_is_read_from_every_real_upgrade_result() {
    for (name, passed) in [
        ("upgrade-rolled_back-check.json", false),
        ("upgrade-failed-preflight.json", false),
        ("upgrade-termination-rolled_back.json", false),
        ("upgrade-termination-start_new.json", true),
        ("upgrade-running-cleanup.json", true),
        ("upgrade-failed-backup.json", true),
        ("upgrade-succeeded.json", true),
    ] {
        let r = fixture::<UpgradeResult>(name);
        assert_eq!(
            act::upgrade::passed_point_of_no_return(&r),
            passed,
            "{name}"
        );
    }
}

#[test]
fn a_container_that_exits_is_judged_by_the_result_in_its_termination_message() {
    // The new image's container exited; exec cannot reach it. What it
    // recorded last decides, whatever the exit code.
    let past = fixture::<UpgradeResult>("upgrade-termination-start_new.json");
    let rolled_back = fixture::<UpgradeResult>("upgrade-termination-rolled_back.json");
    let older_request: UpgradeResult = fixture("upgrade-succeeded.json");
    let op = upgrade_op(&past.id);
    let base = UpgradeInputs {
        spec_major: 18,
        generation: 2,
        running_major: Some(17),
        running_image: op.from_image.as_deref(),
        operation: Some(&op),
        ..Default::default()
    };
    for code in [1, 2, 137] {
        // Past the point of no return: the new image stays.
        let d = act::upgrade::decide_upgrade(&UpgradeInputs {
            terminated_result: Some(&past),
            container_exit: Some(code),
            ..base.clone()
        });
        match d {
            UpgradeDecision::InProgress(o, step, m) => {
                assert_eq!(o, op);
                assert_eq!(step.as_deref(), Some("start_new"));
                assert!(m.contains("point of no return"), "{m}");
            }
            other => panic!("exit {code}: the new image must stay, got {other:?}"),
        }
    }
    // Rolled back before it: the previous image goes back, with the step
    // and pg_upgrade's own words.
    let mut rolled = rolled_back.clone();
    rolled.id = op.id.clone();
    match act::upgrade::decide_upgrade(&UpgradeInputs {
        terminated_result: Some(&rolled),
        container_exit: Some(1),
        ..base.clone()
    }) {
        UpgradeDecision::RollBack(f) => {
            assert_eq!(f.step.as_deref(), Some("check"));
            let m = f.message.unwrap();
            assert!(m.contains("pg_upgrade: "), "{m}");
            assert!(m.contains("pg_stat_statements"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // pgsteward-status's result for an older request does not hide the
    // termination message's result for this one.
    let mut older = older_request.clone();
    older.id = "upgrade-16-to-17-g1".into();
    assert!(matches!(
        act::upgrade::decide_upgrade(&UpgradeInputs {
            result: Some(&older),
            terminated_result: Some(&past),
            container_exit: Some(1),
            ..base.clone()
        }),
        UpgradeDecision::InProgress(..)
    ));
}

#[test]
fn the_previous_image_refusing_upgraded_data_moves_the_pod_forward_again() {
    let past = fixture::<UpgradeResult>("upgrade-termination-start_new.json");
    let rolled_back = fixture::<UpgradeResult>("upgrade-termination-rolled_back.json");
    // Rolled back on an exit code alone: the step was unknown.
    let failed = FailedUpgrade {
        id: past.id.clone(),
        from_major: 17,
        to_major: 18,
        generation: 2,
        step: None,
        message: Some("exited 1 before its result could be read".into()),
        from_image: Some("img:17".into()),
    };
    let base = UpgradeInputs {
        spec_major: 18,
        generation: 2,
        running_major: Some(17),
        running_image: Some("img:17"),
        failed: Some(&failed),
        now: Some("2026-11-21T06:10:00Z"),
        ..Default::default()
    };
    // The old image exits 2 and publishes the upgrade's result: past the
    // point of no return, so the operation is recorded again, same id.
    match act::upgrade::decide_upgrade(&UpgradeInputs {
        terminated_result: Some(&past),
        container_exit: Some(2),
        ..base.clone()
    }) {
        UpgradeDecision::Resume(op, r) => {
            assert_eq!(op.id, failed.id, "the same request, not a new one");
            assert_eq!((op.from_major, op.to_major), (Some(17), Some(18)));
            assert_eq!(op.from_image.as_deref(), Some("img:17"));
            assert_eq!(r.step.as_deref(), Some("start_new"));
        }
        other => panic!("{other:?}"),
    }
    // A real rollback, another request's result, or none: stays blocked.
    let mut rolled = rolled_back.clone();
    rolled.id = failed.id.clone();
    let mut other = past.clone();
    other.id = "upgrade-17-to-18-g1".into();
    for terminated in [Some(&rolled), Some(&other), None] {
        assert_eq!(
            act::upgrade::decide_upgrade(&UpgradeInputs {
                terminated_result: terminated,
                ..base.clone()
            }),
            UpgradeDecision::Blocked(failed.clone())
        );
    }

    // The whole plan: the new image, the operation recorded before the
    // StatefulSet changes, a warning event, Upgrading=True/Resumed.
    let settings = pgsteward_operator::build::Settings::default();
    let i = running_instance(
        json!({"postgresVersion": 18, "storage": {"size": "1Gi"}}),
        json!({"postgresVersion": 17, "image": "img:17", "conditions": [],
               "failedUpgrade": {"id": past.id, "fromMajor": 17, "toMajor": 18, "generation": 4,
                                 "fromImage": "img:17",
                                 "message": "exited 1 before its result could be read"}}),
    );
    let pod = act::pod::PodView {
        container_exit: None,
        terminated: image_state::TerminationMessage {
            upgrade: Some(past.clone()),
            restore: None,
        },
        ..Default::default()
    };
    let p = act::plan(&i, &settings, None, &pod, ts("2026-11-21T06:10:00Z"));
    assert!(p.record_first);
    assert_eq!(p.failed_upgrade, None);
    assert_eq!(
        p.operation.as_ref().map(|o| o.id.as_str()),
        Some(past.id.as_str())
    );
    assert_eq!(p.run.major, 18);
    assert_eq!(p.run.image, settings.image_for(&i));
    assert_eq!(p.run.upgrade_id.as_deref(), Some(past.id.as_str()));
    let upgrading = p
        .conditions
        .iter()
        .find(|c| c.type_ == "Upgrading")
        .unwrap();
    assert_eq!(
        (upgrading.status.as_str(), upgrading.reason.as_str()),
        ("True", "Resumed")
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.warning && e.reason == "UpgradeResumed")
    );
}

#[test]
fn a_bootstrap_restore_the_image_refused_is_explained_from_the_termination_message() {
    let settings = pgsteward_operator::build::Settings::default();
    let published: image_state::TerminationMessage =
        fixture("termination-restore-failed-bootstrap.json");
    let spec = json!({"postgresVersion": 18, "storage": {"size": "1Gi"},
        "backup": {"file": {"path": "/backups"}},
        "bootstrap": {"recovery": {"target": {"time": "2026-11-21T06:00:00Z"}}}});
    let i = running_instance(spec, json!({"conditions": []}));
    let now = ts("2026-11-21T08:00:00Z");
    // (what, the id in the message, explained?)
    for (what, id, explained) in [
        ("this instance's request", "bootstrap-u1", true),
        (
            "another instance's request on a reused claim",
            "bootstrap-other",
            false,
        ),
    ] {
        let mut message = published.clone();
        message.restore.as_mut().unwrap().id = id.into();
        let pod = act::pod::PodView {
            uid: Some("pod-1"),
            container_exit: Some(1),
            terminated: message,
            ..Default::default()
        };
        let p = act::plan(&i, &settings, None, &pod, now);
        let restoring = p.conditions.iter().find(|c| c.type_ == "Restoring");
        let degraded = p
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True");
        if explained {
            let r = restoring.unwrap();
            assert_eq!(
                (r.status.as_str(), r.reason.as_str()),
                ("False", "Failed"),
                "{what}"
            );
            assert!(r.message.contains("at step validate"), "{}", r.message);
            assert!(
                r.message.contains("earliest time you can restore to"),
                "{}",
                r.message
            );
            assert!(
                r.message.contains("re-create this PgInstance"),
                "{}",
                r.message
            );
            assert!(r.message.contains(". No empty database"), "{}", r.message);
            assert_eq!(
                degraded.unwrap().reason,
                "BootstrapRecoveryFailed",
                "{what}"
            );
            // It is not "starting": it will not until it is re-created.
            let progressing = p.conditions.iter().find(|c| c.type_ == "Progressing");
            assert_eq!(
                progressing.map(|c| (c.status.as_str(), c.reason.as_str())),
                Some(("False", "BootstrapRecoveryFailed"))
            );
        } else {
            assert!(restoring.is_none(), "{what}: {restoring:?}");
            assert!(degraded.is_none(), "{what}: {degraded:?}");
        }
    }
}

#[test]
fn an_unconfirmed_rollback_is_completed_from_the_result_the_old_image_reports() {
    let mut result = fixture::<UpgradeResult>("upgrade-rolled_back-check.json");
    result.id = "upgrade-17-to-18-g2".into();
    let unknown = FailedUpgrade {
        id: "upgrade-17-to-18-g2".into(),
        from_major: 17,
        to_major: 18,
        generation: 2,
        step: None,
        message: Some("exited 1".into()),
        from_image: Some("img:17".into()),
    };
    let done = act::upgrade::complete_failed_upgrade(&unknown, Some(&result));
    assert_eq!(done.step.as_deref(), Some("check"));
    assert!(done.message.unwrap().contains("could not access file"));
    assert_eq!(done.generation, 2);
    assert_eq!(done.from_image.as_deref(), Some("img:17"));
    // Another id's result changes nothing.
    result.id = "other".into();
    assert_eq!(
        act::upgrade::complete_failed_upgrade(&unknown, Some(&result)),
        unknown
    );
}

// ----------------------------------------------------------------- restore

fn restore_request(id: &str, target: Value) -> RestoreSpec {
    serde_json::from_value(json!({"requestId": id, "target": target})).unwrap()
}

#[test]
fn restore_results_finish_the_request_with_their_outcome() {
    // (fixture, outcome, step)
    let table = [
        ("restore-succeeded-in-place.json", "succeeded", "finished"),
        ("restore-rolled_back-fetch.json", "rolled_back", "rollback"),
        (
            "restore-rolled_back-recovery.json",
            "rolled_back",
            "rollback",
        ),
        ("restore-failed-no-storage.json", "failed", "validate"),
        (
            "restore-failed-not-enough-space.json",
            "failed",
            "check-space",
        ),
        ("restore-failed-unknown-backup.json", "failed", "validate"),
        (
            "restore-failed-target-before-first-backup.json",
            "failed",
            "validate",
        ),
        ("restore-failed-gap.json", "failed", "validate"),
        ("restore-rolled_back-outage.json", "rolled_back", "rollback"),
        ("restore-succeeded-clone.json", "succeeded", "finished"),
        ("restore-succeeded-pitr.json", "succeeded", "finished"),
    ];
    for (name, outcome, step) in table {
        let result = fixture::<RestoreResult>(name);
        let request = restore_request(&result.id, json!({"latest": true}));
        let op = OperationRecord {
            kind: "restore".into(),
            id: result.id.clone(),
            ..Default::default()
        };
        let now = ts("2026-11-21T07:00:00Z");
        match act::restore::decide_restore(
            Some(&request),
            None,
            Some(&op),
            Some(&result),
            None,
            now,
        ) {
            RestoreDecision::Finished(record) => {
                assert_eq!(record.request_id, result.id, "{name}");
                assert_eq!(record.outcome, outcome, "{name}");
                assert_eq!(record.step.as_deref(), Some(step), "{name}");
                assert_eq!(record.message, result.message, "{name}");
                assert!(record.started_at.is_some() && record.finished_at.is_some());
                // Once recorded, the same request id is never run again.
                assert_eq!(
                    act::restore::decide_restore(
                        Some(&request),
                        Some(&record),
                        None,
                        None,
                        None,
                        now
                    ),
                    RestoreDecision::Idle,
                    "{name}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn restore_targets_are_checked_before_anything_is_touched() {
    // The image refused this target in its own test (the fixture is
    // rewritten by each image-tier run, with that run's times); the
    // operator refuses it earlier, from status.firstRecoverabilityPoint.
    let image_refused = fixture::<RestoreResult>("restore-failed-target-before-first-backup.json");
    assert_eq!(image_refused.outcome, image_state::Outcome::Failed);
    let before = image_refused.details.target_value.clone().unwrap();
    let first_backup_end = ts(&before) + k8s_openapi::jiff::SignedDuration::from_secs(2);
    let first_text = first_backup_end.to_string();
    let first = Some(first_text.as_str());
    let now = first_backup_end + k8s_openapi::jiff::SignedDuration::from_hours(1);
    let later =
        |h: i64| (first_backup_end + k8s_openapi::jiff::SignedDuration::from_mins(h)).to_string();
    let table: Vec<(Value, &str)> = vec![
        (json!({"time": before}), "RestoreTargetBeforeFirstBackup"),
        (json!({"time": later(120)}), "RestoreTargetInFuture"),
        (json!({"time": later(30)}), "start"),
        (json!({"latest": true}), "start"),
        (json!({"lsn": "0/3000060"}), "start"),
    ];
    for (target, expect) in table {
        let request = restore_request("r-1", target.clone());
        match (
            expect,
            act::restore::decide_restore(Some(&request), None, None, None, first, now),
        ) {
            ("start", RestoreDecision::Start(op)) => {
                assert_eq!((op.kind.as_str(), op.id.as_str()), ("restore", "r-1"))
            }
            (reason, RestoreDecision::Reject(r, m)) => {
                assert_eq!(r, reason, "{target}");
                assert!(m.contains("nothing was touched"), "{m}");
            }
            (_, other) => panic!("{target}: {other:?}"),
        }
    }
}

#[test]
fn the_first_recoverability_point_written_to_status_fits_the_crd() {
    // What WAL-G reports is kept as it is.
    assert_eq!(
        act::backup_health::recoverability_point("2026-11-21T07:00:00.123456Z").as_deref(),
        Some("2026-11-21T07:00:00.123456Z")
    );
    // A longer text that is a time is written as RFC 3339 UTC; one that is
    // not a time is not written (the API server would refuse the status).
    let long = "2026-11-21T09:00:00+02:00[America/Argentina/ComodRivadavia][u-ca=iso8601]";
    assert!(long.len() > pgsteward_api::instance::FIRST_RECOVERABILITY_POINT_MAX_LEN);
    assert_eq!(
        act::backup_health::recoverability_point(long).as_deref(),
        Some("2026-11-21T07:00:00Z")
    );
    assert_eq!(
        act::backup_health::recoverability_point(&"x".repeat(65)),
        None
    );
}

#[test]
fn a_restore_waits_for_the_operation_under_way_and_resumes_its_own() {
    let now = ts("2026-11-21T07:00:00Z");
    let request = restore_request("r-2", json!({"latest": true}));
    let upgrade = upgrade_op("upgrade-17-to-18-g2");
    match act::restore::decide_restore(Some(&request), None, Some(&upgrade), None, None, now) {
        RestoreDecision::Wait(m) => assert!(
            m.contains("waits for the upgrade upgrade-17-to-18-g2"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let own = OperationRecord {
        kind: "restore".into(),
        id: "r-2".into(),
        ..Default::default()
    };
    assert!(matches!(
        act::restore::decide_restore(Some(&request), None, Some(&own), None, None, now),
        RestoreDecision::InProgress(_, None, _)
    ));
    // A previous request's record does not stop a new id.
    let previous = RestoreRecord {
        request_id: "r-1".into(),
        outcome: "succeeded".into(),
        ..Default::default()
    };
    assert!(matches!(
        act::restore::decide_restore(Some(&request), Some(&previous), None, None, None, now),
        RestoreDecision::Start(_)
    ));
    assert_eq!(
        act::restore::decide_restore(None, Some(&previous), None, None, None, now),
        RestoreDecision::Idle
    );
    // A refused request stays refused under its id, with its reason.
    let refused = RestoreRecord {
        request_id: "r-2".into(),
        outcome: "rejected".into(),
        step: Some("RestoreTargetInFuture".into()),
        message: Some("in the future".into()),
        ..Default::default()
    };
    assert_eq!(
        act::restore::decide_restore(Some(&request), Some(&refused), None, None, None, now),
        RestoreDecision::Reject("RestoreTargetInFuture", "in the future".into())
    );
}

// ------------------------------------------------------------------ config

#[test]
fn reload_or_restart_from_pending_restart_and_file_errors() {
    let results = json!({"backup": fixture_json("backup-succeeded.json"),
                         "upgrade": null, "restore": null});
    let table: Vec<(&str, Value, Value, ConfigDecision)> = vec![
        ("loaded", json!([]), json!([]), ConfigDecision::Loaded),
        ("server down: nothing known", Value::Null, Value::Null, ConfigDecision::Loaded),
        (
            "needs a restart",
            json!([{"name": "shared_buffers", "setting": "16384", "unit": "8kB", "source": "configuration file"},
                   {"name": "max_connections", "setting": "100", "unit": null, "source": "configuration file"}]),
            json!([]),
            ConfigDecision::NeedsRestart(vec!["shared_buffers".into(), "max_connections".into()]),
        ),
        (
            "invalid value wins",
            json!([{"name": "shared_buffers", "setting": "16384"}]),
            json!([{"file": "/etc/postgresql/conf.d/20-parameters.conf", "line": 3, "name": "work_mem",
                    "error": "setting could not be applied"}]),
            ConfigDecision::Invalid(
                "work_mem (line 3 of /etc/postgresql/conf.d/20-parameters.conf): setting could not be applied".into(),
            ),
        ),
    ];
    for (what, pending, errors, expect) in table {
        let r = report(results.clone(), healthy_archiver(), pending, errors);
        assert_eq!(act::config::config_decision(&r), expect, "{what}");
    }
}

#[test]
fn a_pending_restart_restarts_once_per_configuration() {
    let settings = pgsteward_operator::build::Settings::default();
    let spec = json!({"postgresVersion": 18, "storage": {"size": "1Gi"},
                      "config": {"parameters": {"shared_buffers": "64MB"}}});
    let current = running_instance(spec.clone(), json!({"postgresVersion": 18}));
    let revision = act::config::config_revision(&pgsteward_operator::build::conf_d(&current));
    let pending = report(
        json!({"backup": null, "upgrade": null, "restore": null}),
        healthy_archiver(),
        json!([{"name": "shared_buffers", "setting": "16384"}]),
        json!([]),
    );
    let pod = act::pod::PodView {
        uid: Some("pod-2"),
        ..Default::default()
    };
    let now = ts("2026-11-21T08:00:00Z");
    // (what, status.lastRestart's revision, restart?, Degraded reason)
    let table: &[(&str, Option<&str>, bool, Option<&str>)] = &[
        ("never restarted", None, true, None),
        (
            "restarted for another configuration",
            Some("0123456789abcdef"),
            true,
            None,
        ),
        (
            "restarted for this one and still pending",
            Some(revision.as_str()),
            false,
            Some("RestartDidNotApply"),
        ),
    ];
    for (what, last, restart, degraded) in table {
        let status = match last {
            Some(r) => json!({"postgresVersion": 18, "lastRestart": {
                "configRevision": r, "settings": ["shared_buffers"],
                "restartedAt": "2026-11-21T07:00:00Z"}}),
            None => json!({"postgresVersion": 18}),
        };
        let i = running_instance(spec.clone(), status);
        let p = act::plan(&i, &settings, Some(&pending), &pod, now);
        assert_eq!(p.restart_pod, *restart, "{what}");
        assert_eq!(
            p.pending_restart,
            Some(vec!["shared_buffers".into()]),
            "{what}"
        );
        let reason = p
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
            .map(|c| c.reason.as_str());
        assert_eq!(reason, *degraded, "{what}");
        if *restart {
            let r = p.last_restart.as_ref().unwrap();
            assert_eq!(r.config_revision, revision, "{what}");
            assert_eq!(r.restarted_at.as_deref(), Some("2026-11-21T08:00:00Z"));
            assert_eq!(
                p.operation.as_ref().unwrap().pod_uid.as_deref(),
                Some("pod-2")
            );
        } else {
            assert_eq!(p.operation, None, "{what}");
            let c = p.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
            assert!(c.message.contains("2026-11-21T07:00:00Z"), "{}", c.message);
        }
    }
}

#[test]
fn config_revision_changes_with_the_content_only() {
    let a = [("a.conf".to_string(), "x = '1'\n".to_string())].into();
    let b = [("a.conf".to_string(), "x = '2'\n".to_string())].into();
    assert_eq!(
        act::config::config_revision(&a),
        act::config::config_revision(&a.clone())
    );
    assert_ne!(
        act::config::config_revision(&a),
        act::config::config_revision(&b)
    );
}

// ------------------------------------------------ pgsteward-status parsing

#[test]
fn pgsteward_status_output_parses_with_every_result_kind() {
    let (b, r, u) = (
        fixture_json("backup-succeeded.json"),
        fixture_json("restore-succeeded-in-place.json"),
        fixture_json("upgrade-running-cleanup.json"),
    );
    let rep = report(
        json!({"backup": b, "restore": r, "upgrade": u}),
        healthy_archiver(),
        json!([]),
        json!([]),
    );
    assert!(rep.server.running);
    let backup = rep.results.backup.unwrap();
    assert!(backup.details.first_recoverability_point.is_some());
    // One backup: the first recoverability point is its end.
    assert_eq!(
        backup.details.first_recoverability_point,
        backup.details.finish_time
    );
    assert_eq!(rep.results.restore.unwrap().details.timeline, Some(2));
    assert_eq!(
        rep.results.upgrade.unwrap().step.as_deref(),
        Some("cleanup")
    );
    assert_eq!(
        rep.archiver.unwrap().last_archived_wal.as_deref(),
        Some("000000010000000000000003")
    );
    // A server that is down: only `running: false`.
    let down: StatusReport = image_state::parse(
        r#"{"pgMajor": 18, "server": {"running": false}, "results": {"backup": null, "restore": null, "upgrade": null},
            "archiver": null, "pendingRestart": null, "configErrors": null, "inProgress": null}"#,
    )
    .unwrap();
    assert!(!down.server.running);
    assert_eq!(act::config::config_decision(&down), ConfigDecision::Loaded);
}

#[test]
fn backup_sh_stdout_is_read_as_its_last_json_object() {
    let result = fixture_json("backup-succeeded.json");
    let pretty = serde_json::to_string_pretty(&result).unwrap();
    let compact = format!("some noise\n{}\n", serde_json::to_string(&result).unwrap());
    for out in [pretty, compact] {
        let parsed: BackupResult = image_state::last_json_object(&out).unwrap();
        assert_eq!(parsed.id, "b-first");
    }
    assert!(image_state::last_json_object::<BackupResult>("no json here").is_err());
}

// ------------------------------------------------------------- conditions

#[test]
fn overriding_a_condition_moves_its_time_only_when_its_status_changes() {
    let t0 = ts("2026-11-21T06:00:00Z");
    let t1 = ts("2026-11-21T07:00:00Z");
    let prior = vec![Condition {
        type_: "Upgrading".into(),
        status: "True".into(),
        reason: "InProgress".into(),
        message: "step check".into(),
        observed_generation: Some(2),
        last_transition_time: Time(t0),
    }];
    // (status, reason, expected time)
    for (st, reason, time) in [("True", "PostUpgrade", t0), ("False", "RolledBack", t1)] {
        let mut s = pgsteward_api::PgInstanceStatus {
            conditions: prior.clone(),
            ..Default::default()
        };
        conditions::override_conditions(
            &mut s,
            &prior,
            vec![conditions::condition("Upgrading", st, reason, "m", Some(2))],
            t1,
        );
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Upgrading")
            .unwrap();
        assert_eq!(
            (c.reason.as_str(), c.last_transition_time.0),
            (reason, time)
        );
    }
}

#[test]
fn real_pgsteward_status_documents_drive_reload_restart_and_restore_progress() {
    let (up, down) = (
        fixture::<StatusReport>("status.json"),
        fixture::<StatusReport>("status-server-down-restore-running.json"),
    );
    // The running server has both a pending restart (shared_buffers) and a
    // refused value (work_mem): the refused value is reported first.
    assert!(up.server.running);
    match act::config::config_decision(&up) {
        ConfigDecision::Invalid(m) => {
            assert!(m.starts_with("work_mem (line 1 of "), "{m}");
            assert!(m.ends_with("setting could not be applied"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let mut restart_only = up.clone();
    restart_only.config_errors = Some(vec![]);
    assert_eq!(
        act::config::config_decision(&restart_only),
        ConfigDecision::NeedsRestart(vec!["shared_buffers".into()])
    );
    let pending = &up.pending_restart.as_ref().unwrap()[0];
    assert_eq!(pending.pending_setting.as_deref(), Some("64MB"));
    // Backup health from the same document: archiving works, a backup
    // exists, but it was taken on demand: no scheduled backup yet.
    let last = act::backup_health::backup_record(up.results.backup.as_ref().unwrap()).unwrap();
    let last_scheduled =
        act::backup_health::last_scheduled_backup(None, up.results.backup.as_ref());
    assert_eq!(last_scheduled, None);
    let now = ts(last.finished_at.as_deref().unwrap());
    let (s, reason, _) =
        act::backup_health::backup_health(Some("0 3 * * *"), Some(&up), None, Some(&last), now);
    assert_eq!((s, reason), ("Unknown", "NoScheduledBackupYet"));
    assert!(!act::backup_health::archiving_fails(
        up.archiver.as_ref().unwrap()
    ));

    // Server down during an in-place restore: nothing is known about the
    // configuration, and the restore is in progress at its step.
    assert!(!down.server.running);
    assert_eq!(act::config::config_decision(&down), ConfigDecision::Loaded);
    let result = down.results.restore.as_ref().unwrap();
    let request = restore_request(&result.id, json!({"immediate": true}));
    let op = OperationRecord {
        kind: "restore".into(),
        id: result.id.clone(),
        ..Default::default()
    };
    match act::restore::decide_restore(Some(&request), None, Some(&op), Some(result), None, now) {
        RestoreDecision::InProgress(_, step, _) => assert_eq!(step.as_deref(), Some("fetch")),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------------- plan

fn running_instance(spec: Value, status: Value) -> PgInstance {
    serde_json::from_value(json!({
        "apiVersion": "pgsteward.io/v1alpha1", "kind": "PgInstance",
        "metadata": {"name": "db", "namespace": "shop", "generation": 4, "uid": "u1"},
        "spec": spec, "status": status,
    }))
    .unwrap()
}

#[test]
fn a_restore_and_an_upgrade_requested_at_once_run_restore_first_and_status_says_what_waits() {
    let settings = pgsteward_operator::build::Settings::default();
    let spec = json!({"postgresVersion": 18, "storage": {"size": "1Gi"},
        "backup": {"file": {"path": "/backups"}},
        "restore": {"requestId": "r-1", "target": {"latest": true}}});
    let status = json!({"postgresVersion": 17, "image": "ghcr.io/pgsteward/postgres:17-standard-trixie",
        "conditions": []});
    let now = ts("2026-11-21T07:00:00Z");
    let i = running_instance(spec.clone(), status);
    let p = act::plan(&i, &settings, None, &act::pod::PodView::default(), now);
    assert_eq!(
        p.operation.as_ref().map(|o| o.kind.as_str()),
        Some("restore")
    );
    assert!(p.record_first);
    assert_eq!(p.run.major, 17, "the restore runs on the current major");
    assert_eq!(p.run.image, "ghcr.io/pgsteward/postgres:17-standard-trixie");
    assert_eq!(p.run.upgrade_id, None);
    assert_eq!(p.run.restore.as_ref().map(|r| r.id.as_str()), Some("r-1"));
    let waiting = p.waiting.clone().unwrap();
    assert_eq!(waiting.len(), 1);
    assert!(
        waiting[0].contains("upgrade to PostgreSQL 18 waits for restore r-1"),
        "{waiting:?}"
    );
    let upgrading = p
        .conditions
        .iter()
        .find(|c| c.type_ == "Upgrading")
        .unwrap();
    assert_eq!(
        (upgrading.status.as_str(), upgrading.reason.as_str()),
        ("False", "Waiting")
    );

    // Once the restore has its result, the upgrade starts.
    let done = json!({"postgresVersion": 17, "image": "ghcr.io/pgsteward/postgres:17-standard-trixie",
        "conditions": [], "lastRestore": {"requestId": "r-1", "outcome": "succeeded"}});
    let i = running_instance(spec, done);
    let p = act::plan(&i, &settings, None, &act::pod::PodView::default(), now);
    let op = p.operation.unwrap();
    assert_eq!(
        (op.kind.as_str(), op.id.as_str()),
        ("upgrade", "upgrade-17-to-18-g4")
    );
    assert_eq!(p.run.major, 18);
    assert_eq!(p.run.upgrade_id.as_deref(), Some("upgrade-17-to-18-g4"));
    // The finished restore request stays on the template.
    assert_eq!(p.run.restore.as_ref().map(|r| r.id.as_str()), Some("r-1"));
    assert_eq!(p.waiting, None);
}

#[test]
fn a_pod_that_does_not_run_on_another_image_is_replaced_a_running_one_never() {
    let settings = pgsteward_operator::build::Settings::default();
    let i = running_instance(
        json!({"postgresVersion": 18, "storage": {"size": "1Gi"}}),
        json!({"postgresVersion": 18, "conditions": []}),
    );
    let decided = settings.image_for(&i);
    let old = "ghcr.io/pgsteward/postgres:17-standard-trixie";
    // (what, pod image, running, terminating, replaced)
    let table: &[(&str, &str, bool, bool, bool)] = &[
        ("crash-looping on another image", old, false, false, true),
        (
            "running on another image: the rolling update replaces it",
            old,
            true,
            false,
            false,
        ),
        ("already being deleted", old, false, true, false),
        (
            "crash-looping on the decided image: nothing a new pod would change",
            &decided,
            false,
            false,
            false,
        ),
    ];
    for (what, image, running, terminating, replaced) in table {
        let pod = act::pod::PodView {
            uid: Some("pod-1"),
            image: Some(image),
            running: *running,
            terminating: *terminating,
            ..Default::default()
        };
        let p = act::plan(&i, &settings, None, &pod, ts("2026-11-21T08:00:00Z"));
        assert_eq!(p.restart_pod, *replaced, "{what}");
        assert_eq!(
            p.events.iter().any(|e| e.reason == "PodReplaced"),
            *replaced,
            "{what}"
        );
    }
}

#[test]
fn the_pod_environment_carries_the_requests_and_an_in_place_restore_replaces_bootstrap() {
    use pgsteward_operator::build::{self, RestoreRequest, Run};
    let i = running_instance(
        json!({"postgresVersion": 18, "storage": {"size": "1Gi"},
               "backup": {"file": {"path": "/backups"}},
               "bootstrap": {"recovery": {"target": {"latest": true}}}}),
        json!({"postgresVersion": 17}),
    );
    let env = |run: &Run| -> Vec<(String, String)> {
        build::container_env_for(&i, run)
            .into_iter()
            .filter(|e| {
                e.name.starts_with("PGSTEWARD_RESTORE")
                    || e.name == "PGSTEWARD_UPGRADE_ID"
                    || e.name == "PGDATA"
            })
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    };
    let rollback = Run {
        major: 17,
        image: "img:17".into(),
        upgrade_id: None,
        restore: None,
    };
    let e = env(&rollback);
    assert_eq!(
        e[0],
        ("PGDATA".into(), "/var/lib/postgresql/17/docker".into())
    );
    assert!(
        e.iter()
            .any(|(k, v)| k == "PGSTEWARD_RESTORE_MODE" && v == "bootstrap")
    );
    let upgrade = Run {
        major: 18,
        upgrade_id: Some("upgrade-17-to-18-g4".into()),
        ..rollback.clone()
    };
    assert!(env(&upgrade).contains(&("PGSTEWARD_UPGRADE_ID".into(), "upgrade-17-to-18-g4".into())));
    let restore = Run {
        major: 18,
        restore: Some(RestoreRequest {
            id: "r-1".into(),
            target: "time".into(),
            target_value: Some("2026-11-21T06:30:00Z".into()),
            backup: "LATEST".into(),
        }),
        ..rollback
    };
    assert_eq!(
        env(&restore),
        vec![
            ("PGDATA".into(), "/var/lib/postgresql/18/docker".into()),
            ("PGSTEWARD_RESTORE_ID".into(), "r-1".into()),
            ("PGSTEWARD_RESTORE_MODE".into(), "in-place".into()),
            ("PGSTEWARD_RESTORE_TARGET".into(), "time".into()),
            (
                "PGSTEWARD_RESTORE_TARGET_VALUE".into(),
                "2026-11-21T06:30:00Z".into()
            ),
            ("PGSTEWARD_RESTORE_BACKUP".into(), "LATEST".into()),
        ]
    );
}

#[test]
fn archiving_progress_is_written_at_most_every_few_minutes_failures_at_once() {
    use pgsteward_operator::image_state::Archiver;
    let at = |wal: &str, time: &str, failed: i64| Archiver {
        archived_count: Some(1),
        last_archived_wal: Some(wal.into()),
        last_archived_time: Some(time.into()),
        failed_count: Some(failed),
        last_failed_wal: (failed > 0).then(|| "000000010000000000000009".into()),
        last_failed_time: (failed > 0).then(|| "2026-11-21T06:01:00Z".into()),
    };
    let first = act::backup_health::refresh_archiver(None, &at("01", "2026-11-21T06:00:00Z", 0));
    assert_eq!(first.last_archived_wal.as_deref(), Some("01"));
    // (what, next report, expected recorded WAL, failures)
    let table = [
        (
            "progress within 5 min: kept",
            at("02", "2026-11-21T06:04:00Z", 0),
            "01",
            0,
        ),
        (
            "progress after 5 min: written",
            at("03", "2026-11-21T06:06:00Z", 0),
            "03",
            0,
        ),
        (
            "a failure: written at once",
            at("02", "2026-11-21T06:01:30Z", 1),
            "02",
            1,
        ),
    ];
    for (what, next, wal, failed) in table {
        let r = act::backup_health::refresh_archiver(Some(&first), &next);
        assert_eq!(r.last_archived_wal.as_deref(), Some(wal), "{what}");
        assert_eq!(r.failed_count, Some(failed), "{what}");
    }
}

// -------------------------------------------------------------------- pod

#[test]
fn the_pod_view_counts_an_exit_code_only_on_the_spec_image_and_reads_the_template_request() {
    use pgsteward_operator::observe::{ContainerState, ObservedPod};
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(json!({"metadata": {"name": "db-0", "uid": "pod-1"}})).unwrap();
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "spec": {"selector": {}, "serviceName": "db-hl", "template": {"spec": {"containers": [
            {"name": "postgres", "env": [{"name": "PGSTEWARD_UPGRADE_ID", "value": "upgrade-17-to-18-g4"}]}
        ]}}}
    }))
    .unwrap();
    let exited_on = |image: &str| ObservedPod {
        ordinal: 0,
        name: "db-0".into(),
        pod: Some(pod.clone()),
        container: ContainerState {
            running: false,
            exit: Some(2),
            image: Some(image.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let new_image = exited_on("img:18");
    let view = act::pod::PodView::of(Some(&new_image), Some(&sts), "img:18");
    assert_eq!(view.uid, Some("pod-1"));
    assert_eq!(view.container_exit, Some(2));
    assert_eq!(view.template_upgrade_id, Some("upgrade-17-to-18-g4"));
    // The previous image exiting says nothing about the upgrade.
    let old_image = exited_on("img:17");
    let view = act::pod::PodView::of(Some(&old_image), Some(&sts), "img:18");
    assert_eq!(view.container_exit, None);
    // No pod yet: only the template is seen.
    let view = act::pod::PodView::of(None, Some(&sts), "img:18");
    assert_eq!((view.uid, view.running), (None, false));
    assert_eq!(view.template_upgrade_id, Some("upgrade-17-to-18-g4"));
}

#[test]
fn a_plan_records_its_operation_first_and_writes_only_the_fields_operations_own() {
    let settings = pgsteward_operator::build::Settings::default();
    let spec = json!({"postgresVersion": 18, "storage": {"size": "1Gi"}});
    let status = json!({"postgresVersion": 17, "image": "ghcr.io/pgsteward/postgres:17-standard-trixie",
        "observedGeneration": 3, "configRevision": "abc", "conditions": []});
    let i = running_instance(spec, status);
    let p = act::plan(
        &i,
        &settings,
        None,
        &act::pod::PodView::default(),
        ts("2026-11-21T07:00:00Z"),
    );
    assert!(p.record_first);
    assert!(!p.settled(), "an upgrade runs");
    let prior = i.status.clone().unwrap();
    let first = p.recorded(&prior);
    assert_eq!(first.operation, p.operation);
    assert_eq!(
        (first.observed_generation, first.image.as_deref()),
        (
            Some(3),
            Some("ghcr.io/pgsteward/postgres:17-standard-trixie")
        ),
        "everything else stays as it was"
    );
    let mut next = prior.clone();
    p.record_into(&mut next);
    assert_eq!(next.operation, p.operation);
    assert_eq!(next.config_revision.as_deref(), Some("abc"));
    assert_eq!(
        next.postgres_version,
        Some(17),
        "the upgrade has not succeeded"
    );
    assert_eq!(
        next.conditions, prior.conditions,
        "conditions are status's to merge"
    );
}
