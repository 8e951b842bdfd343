//! Step 5, act: the operations, one module each. Each owns its decision
//! (pure, tested on its own), the status fields and conditions it sets, and
//! its events; [`config`] and [`pod`] also own the changes they make in the
//! pod (the reload, the deletion that restarts it).
//!
//! This module only orders them. At most one operation runs per instance at
//! a time, and it is recorded in `status.operation` before anything is
//! changed, so a restarted operator resumes it (same request id, same image)
//! instead of starting it again. When several are requested at once they
//! run in this order, and `status.waiting` lists the ones that wait:
//!
//! 1. the operation already under way (whatever it is) finishes first;
//! 2. an in-place restore (`spec.restore`, [`restore`]): it runs on the
//!    current major, whose backups it reads;
//! 3. a major upgrade (`spec.postgresVersion` raised, [`upgrade`]);
//! 4. a restart for settings that need one (`pending_restart`, [`config`]);
//! 5. on-demand backups (`PgBackup`, [`backup`]), one at a time, oldest
//!    first, run by the PgBackup controller once the instance has none of
//!    the above under way.
//!
//! Backup health ([`backup_health`]) is no operation: it reads the report.
//!
//! An operation's module sets only its own status fields and conditions
//! in the [`Plan`]; what is Degraded, and what waits, it hands to this
//! module, which gathers them into one Degraded condition and
//! `status.waiting`.
//!
//! `act` may use the steps before it (observe, validate, build, apply) and
//! leaf modules; never `status` or a controller. Its decisions take values
//! and return values (the time is a parameter); [`decide`] and [`carry_out`]
//! are the only functions here that reach the pod.

pub mod backup;
pub mod backup_health;
pub mod config;
pub mod pod;
pub mod restore;
pub mod upgrade;

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::{Client, ResourceExt};
use pgsteward_api::{
    PgInstance, PgInstanceStatus,
    instance::{
        ArchiverRecord, BackupRecord, FailedUpgrade, OperationRecord, RestartRecord, RestoreRecord,
        condition_type::DEGRADED,
    },
};

use pod::PodView;

use crate::{
    build::{Run, Settings},
    conditions::condition,
    error::Result,
    exec::PodExec,
    image_state::StatusReport,
    observe::Observed,
};

/// Operation kinds, as `status.operation.kind` spells them.
pub mod kind {
    pub const UPGRADE: &str = "upgrade";
    pub const RESTORE: &str = "restore";
    pub const RESTART: &str = "restart";
}

/// How soon an instance that has not settled (an operation runs, a
/// configuration waits for the kubelet, the pod is not ready) is looked at
/// again, to refresh its messages.
pub const RECHECK: Duration = Duration::from_secs(30);

fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse().ok()
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
    pub run: Run,
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
    /// `status.configRevision`: the conf.d revision the server has loaded.
    pub config_revision: Option<String>,
    /// The server has not loaded the ConfigMap's configuration yet.
    pub config_pending: bool,
    /// The major the server runs now, when an operation says so.
    pub postgres_version: Option<u32>,
    /// Conditions set by operations (replace the ones status computed).
    pub conditions: Vec<Condition>,
    pub events: Vec<PlanEvent>,
    /// Delete the pod (a restart for settings that need one).
    pub restart_pod: bool,
}

impl Plan {
    /// Nothing changes: every record as the last reconcile left it.
    fn continuing(prior: &PgInstanceStatus, run: Run) -> Self {
        Self {
            run,
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
            config_revision: prior.config_revision.clone(),
            config_pending: false,
            postgres_version: None,
            conditions: Vec::new(),
            events: Vec::new(),
            restart_pod: false,
        }
    }

    /// The status to write before anything changes: the prior one with this
    /// plan's operation (and the records that go with it).
    pub fn recorded(&self, prior: &PgInstanceStatus) -> PgInstanceStatus {
        PgInstanceStatus {
            operation: self.operation.clone(),
            last_restore: self.last_restore.clone(),
            last_restart: self.last_restart.clone(),
            ..prior.clone()
        }
    }

    /// Set the status fields the operations own.
    pub fn record_into(&self, status: &mut PgInstanceStatus) {
        status.operation = self.operation.clone();
        status.failed_upgrade = self.failed_upgrade.clone();
        status.last_restore = self.last_restore.clone();
        status.last_backup = self.last_backup.clone();
        status.last_scheduled_backup = self.last_scheduled_backup.clone();
        status.first_recoverability_point = self.first_recoverability_point.clone();
        status.archiver = self.archiver.clone();
        status.waiting = self.waiting.clone();
        status.pending_restart = self.pending_restart.clone();
        status.last_restart = self.last_restart.clone();
        status.config_revision = self.config_revision.clone();
        if let Some(v) = self.postgres_version {
            status.postgres_version = Some(v);
        }
    }

    /// No operation runs and the server runs the ConfigMap's configuration.
    pub fn settled(&self) -> bool {
        self.operation.is_none() && !self.config_pending
    }
}

/// What every operation's decision reads.
struct Inputs<'a> {
    instance: &'a PgInstance,
    settings: &'a Settings,
    report: Option<&'a StatusReport>,
    pod: &'a PodView<'a>,
    now: Timestamp,
    /// `now` to the second, as status records times.
    now_text: String,
    /// The status as the last reconcile left it.
    prior: PgInstanceStatus,
    generation: Option<i64>,
}

/// What operations found wrong or waiting, gathered into one Degraded
/// condition and `status.waiting`.
#[derive(Default)]
struct Notices {
    /// (reason, message); the first reason is the condition's.
    degraded: Vec<(&'static str, String)>,
    waiting: Vec<String>,
}

/// Decide every operation for this reconcile, in the documented order
/// (see the module documentation).
pub fn plan(
    instance: &PgInstance,
    settings: &Settings,
    report: Option<&StatusReport>,
    pod: &PodView,
    now: Timestamp,
) -> Plan {
    let i = Inputs {
        instance,
        settings,
        report,
        pod,
        now,
        now_text: Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string(),
        prior: instance.status.clone().unwrap_or_default(),
        generation: instance.metadata.generation,
    };
    let mut p = Plan::continuing(&i.prior, Run::from_spec(instance, settings));
    let mut n = Notices::default();
    backup_health::contribute(&i, &mut p);
    restore::contribute_bootstrap(&i, &mut p, &mut n);
    let restore_runs = restore::contribute(&i, &mut p, &mut n);
    upgrade::contribute(&i, restore_runs, &mut p, &mut n);
    config::contribute(&i, &mut p, &mut n);
    pod::replace_if_stuck(&i, &mut p);
    config::end_restart(&i, &mut p);
    if let Some((reason, _)) = n.degraded.first() {
        let message = n
            .degraded
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        p.conditions
            .push(condition(DEGRADED, "True", reason, message, i.generation));
    }
    p.waiting = (!n.waiting.is_empty()).then_some(n.waiting);
    p
}

/// Before anything is built: reload a changed configuration in the pod
/// operations target, then [`plan`] from what the pod reports after it.
pub async fn decide(
    exec: &dyn PodExec,
    instance: &PgInstance,
    settings: &Settings,
    observed: &Observed,
    now: Timestamp,
) -> Plan {
    let ns = instance.namespace().unwrap_or_else(|| "default".into());
    let target = observed.target_pod();
    let loaded = Box::pin(config::reload_if_changed(exec, &ns, instance, target)).await;
    let pod = PodView::of(
        target,
        observed.statefulset.as_ref(),
        &settings.image_for(instance),
    );
    let mut p = plan(instance, settings, loaded.report.as_ref(), &pod, now);
    config::contribute_loaded(instance, &loaded, &mut p);
    p
}

/// After apply: what the plan asks of the pod itself (today: delete it, so
/// that the StatefulSet starts it again).
pub async fn carry_out(
    client: &Client,
    instance: &PgInstance,
    plan: &Plan,
    observed: &Observed,
) -> Result<()> {
    let Some(target) = observed.target_pod() else {
        return Ok(());
    };
    if plan.restart_pod
        && let Some(uid) = target.pod.as_ref().and_then(|p| p.metadata.uid.as_deref())
    {
        let ns = instance.namespace().unwrap_or_else(|| "default".into());
        pod::delete_pod(client, &ns, &target.name, uid).await?;
    }
    Ok(())
}
