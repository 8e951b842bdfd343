//! Major upgrades (`spec.postgresVersion` raised): the upgrade state machine
//! with its rollback, the Upgrading condition, `status.failedUpgrade` and
//! `postgresVersion` once an upgrade succeeded, what the pod runs meanwhile
//! (`Run::major`, `image`, `upgrade_id`) and the upgrade events.
//!
//! An upgrade waits for an in-place restore (which reads the current
//! major's backups), and a restart waits for it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use pgsteward_api::instance::{
    FailedUpgrade, OperationRecord,
    condition_type::{DEGRADED, UPGRADING},
};

use super::{Inputs, Notices, Plan, PlanEvent, kind};
use crate::{
    conditions::condition,
    image_state::{Outcome, UpgradeResult},
};

/// This reconcile's upgrade. `restore_runs`: an in-place restore starts or
/// runs, and the upgrade waits for it.
pub(super) fn contribute(i: &Inputs, restore_runs: bool, p: &mut Plan, n: &mut Notices) {
    let inputs = UpgradeInputs {
        spec_major: i.instance.spec.postgres_version,
        generation: i.generation.unwrap_or_default(),
        running_major: i.prior.postgres_version,
        running_image: i.prior.image.as_deref(),
        operation: p.operation.as_ref(),
        failed: i.prior.failed_upgrade.as_ref(),
        result: i.report.and_then(|r| r.results.upgrade.as_ref()),
        terminated_result: i.pod.terminated.upgrade.as_ref(),
        container_exit: i.pod.container_exit,
        now: Some(&i.now_text),
    };
    match decide_upgrade(&inputs) {
        UpgradeDecision::Idle => idle(i, p),
        UpgradeDecision::Start(op) if restore_runs => wait_for_restore(i, p, n, &op),
        UpgradeDecision::Start(op) => start(i, p, op),
        UpgradeDecision::InProgress(op, step, message) => {
            p.run.upgrade_id = Some(op.id.clone());
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
                .push(condition(UPGRADING, "True", reason, text, i.generation));
        }
        UpgradeDecision::Succeeded(op, message) => succeeded(i, p, op, &message),
        UpgradeDecision::RollBack(f) => roll_back(i, p, n, f),
        UpgradeDecision::Blocked(f) => blocked(i, p, n, &f),
        UpgradeDecision::Resume(op, result) => resume(i, p, op, &result),
        UpgradeDecision::FailedForward(op, step, message) => {
            failed_forward(i, p, n, &op, &step, &message)
        }
    }
}

/// The image of `major` before the upgrade: the one recorded, or the
/// default image of that major.
fn previous_image(i: &Inputs, major: u32, image: Option<&String>) -> String {
    image.cloned().unwrap_or_else(|| {
        let mut old = i.instance.clone();
        old.spec.postgres_version = major;
        i.settings.image_for(&old)
    })
}

/// Put the previous major and image back on the pod template.
fn run_previous(i: &Inputs, p: &mut Plan, major: u32, image: Option<&String>) {
    p.run.major = major;
    p.run.image = previous_image(i, major, image);
}

fn idle(i: &Inputs, p: &mut Plan) {
    p.failed_upgrade = None;
    // A finished upgrade's request stays on the pod template: the image does
    // nothing for data already at its major, and removing it would restart
    // the pod for nothing.
    if let Some(id) = i
        .pod
        .template_upgrade_id
        .filter(|id| upgrade_id_target(id) == Some(p.run.major))
    {
        p.run.upgrade_id = Some(id.to_string());
    }
    // And Upgrading keeps saying how the last upgrade ended.
    match i
        .instance
        .condition(UPGRADING)
        .filter(|c| c.reason == "Succeeded")
    {
        Some(done) => p.conditions.push(Condition {
            observed_generation: i.generation,
            ..done.clone()
        }),
        None => p
            .conditions
            .push(condition(UPGRADING, "False", "NoUpgrade", "", i.generation)),
    }
}

fn wait_for_restore(i: &Inputs, p: &mut Plan, n: &mut Notices, op: &OperationRecord) {
    let spec = &i.instance.spec;
    let message = format!(
        "the upgrade to PostgreSQL {} waits for restore {} to finish",
        spec.postgres_version,
        spec.restore
            .as_ref()
            .map(|r| r.request_id.as_str())
            .unwrap_or("?")
    );
    n.waiting.push(message.clone());
    run_previous(
        i,
        p,
        op.from_major.unwrap_or(spec.postgres_version),
        op.from_image.as_ref(),
    );
    p.conditions.push(condition(
        UPGRADING,
        "False",
        "Waiting",
        message,
        i.generation,
    ));
}

fn start(i: &Inputs, p: &mut Plan, op: OperationRecord) {
    let message = format!(
        "upgrading from PostgreSQL {} to {} ({}): the pod restarts on the new image, which upgrades the data with pg_upgrade --link",
        op.from_major.unwrap_or_default(),
        op.to_major.unwrap_or_default(),
        op.id
    );
    under_way(i, p, op, "InProgress", (false, "UpgradeStarted"), message);
}

fn succeeded(i: &Inputs, p: &mut Plan, op: OperationRecord, message: &str) {
    p.run.upgrade_id = Some(op.id.clone());
    p.operation = None;
    p.failed_upgrade = None;
    p.postgres_version = op.to_major;
    let text = format!("{}: {message}", op.id);
    p.conditions.push(condition(
        UPGRADING,
        "False",
        "Succeeded",
        text.clone(),
        i.generation,
    ));
    p.events.push(PlanEvent {
        warning: false,
        reason: "UpgradeSucceeded",
        note: text,
    });
}

fn roll_back(i: &Inputs, p: &mut Plan, n: &mut Notices, f: FailedUpgrade) {
    run_previous(i, p, f.from_major, f.from_image.as_ref());
    p.run.upgrade_id = None;
    p.operation = None;
    let message = failed_message(&f);
    n.degraded.push(("UpgradeFailed", message.clone()));
    p.conditions.push(condition(
        UPGRADING,
        "False",
        "RolledBack",
        message.clone(),
        i.generation,
    ));
    p.events.push(PlanEvent {
        warning: true,
        reason: "UpgradeRolledBack",
        note: message,
    });
    p.failed_upgrade = Some(f);
}

fn blocked(i: &Inputs, p: &mut Plan, n: &mut Notices, f: &FailedUpgrade) {
    let reported = [
        i.report.and_then(|r| r.results.upgrade.as_ref()),
        i.pod.terminated.upgrade.as_ref(),
    ]
    .into_iter()
    .flatten()
    .find(|r| r.id == f.id);
    let f = complete_failed_upgrade(f, reported);
    run_previous(i, p, f.from_major, f.from_image.as_ref());
    let message = failed_message(&f);
    n.degraded.push(("UpgradeFailed", message.clone()));
    p.conditions.push(condition(
        UPGRADING,
        "False",
        "RolledBack",
        message,
        i.generation,
    ));
    p.failed_upgrade = Some(f);
}

fn resume(i: &Inputs, p: &mut Plan, op: OperationRecord, result: &UpgradeResult) {
    let message = format!(
        "upgrade {} had passed its point of no return (step {}: {}) when the previous image was put back, which refuses the PostgreSQL {} data: the pod moves to the PostgreSQL {} image again to finish the upgrade",
        op.id,
        result.step.as_deref().unwrap_or("?"),
        result.message.as_deref().unwrap_or(""),
        op.to_major.unwrap_or_default(),
        op.to_major.unwrap_or_default(),
    );
    under_way(i, p, op, "Resumed", (true, "UpgradeResumed"), message);
}

/// The upgrade `op` under way: its request on the pod template, recorded in
/// status before anything changes, Upgrading=True for `reason`, and the
/// (warning, reason) event, both with `message`.
fn under_way(
    i: &Inputs,
    p: &mut Plan,
    op: OperationRecord,
    reason: &str,
    (warning, event): (bool, &'static str),
    message: String,
) {
    p.run.upgrade_id = Some(op.id.clone());
    p.operation = Some(op);
    p.record_first = true;
    p.failed_upgrade = None;
    p.conditions.push(condition(
        UPGRADING,
        "True",
        reason,
        message.clone(),
        i.generation,
    ));
    p.events.push(PlanEvent {
        warning,
        reason: event,
        note: message,
    });
}

fn failed_forward(
    i: &Inputs,
    p: &mut Plan,
    n: &mut Notices,
    op: &OperationRecord,
    step: &str,
    message: &str,
) {
    p.run.upgrade_id = Some(op.id.clone());
    let text = format!(
        "upgrade {} failed at step {step} after the point of no return: {message} The data is PostgreSQL {} now; the previous image is NOT put back. The image retries the step at each start.",
        op.id,
        op.to_major.unwrap_or_default()
    );
    n.degraded
        .push(("UpgradeFailedAfterPointOfNoReturn", text.clone()));
    p.conditions.push(condition(
        UPGRADING,
        "True",
        "Failed",
        text.clone(),
        i.generation,
    ));
    if i.instance
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
        return decide_under_way(i, op);
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

/// The upgrade `op` is under way: follow its result, or without one the
/// container's exit code.
fn decide_under_way(i: &UpgradeInputs, op: &OperationRecord) -> UpgradeDecision {
    match result_for(i, &op.id) {
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
    }
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
