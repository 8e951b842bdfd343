//! In-place restores (`spec.restore`) and the restore before the first start
//! (`spec.bootstrap.recovery`): the restore state machine, the Restoring
//! condition (and Progressing when a bootstrap restore was refused),
//! `status.lastRestore`, the restore request on the pod template
//! (`Run::restore`) and the restore events.
//!
//! A restore runs on the current major (whose backups it reads), so it goes
//! before an upgrade; it waits for any other operation under way.

use k8s_openapi::jiff::Timestamp;
use pgsteward_api::instance::{
    OperationRecord, RestoreRecord, RestoreSpec,
    condition_type::{PROGRESSING, RESTORING},
};

use super::{Inputs, Notices, Plan, PlanEvent, kind, parse_time};
use crate::{
    build::{RestoreRequest, bootstrap_request_id},
    conditions::condition,
    image_state::{Outcome, RestoreResult},
};

/// A restore before the first start that the image refused: the container
/// exits at every start rather than create an empty database, so its result
/// is only in the termination message.
pub(super) fn contribute_bootstrap(i: &Inputs, p: &mut Plan, n: &mut Notices) {
    if i.prior.postgres_version.is_some() {
        return;
    }
    let Some(r) = i.pod.terminated.restore.as_ref().filter(|r| {
        Some(r.id.as_str()) == bootstrap_request_id(i.instance).as_deref()
            && matches!(r.outcome, Outcome::Failed | Outcome::RolledBack)
    }) else {
        return;
    };
    let message = format!(
        "the restore before the first start ({}) failed at step {}: {}. No empty database is created over it: fix spec.bootstrap.recovery, then delete and re-create this PgInstance (the claim is kept by default; no database was created on it).",
        r.id,
        r.step.as_deref().unwrap_or("?"),
        r.message.as_deref().unwrap_or("").trim_end_matches('.'),
    );
    n.degraded
        .push(("BootstrapRecoveryFailed", message.clone()));
    p.conditions.push(condition(
        RESTORING,
        "False",
        "Failed",
        message.clone(),
        i.generation,
    ));
    // Not "starting": it will not start until the instance is re-created.
    p.conditions.push(condition(
        PROGRESSING,
        "False",
        "BootstrapRecoveryFailed",
        message,
        i.generation,
    ));
}

/// This reconcile's restore. Returns whether a restore starts or runs, which
/// holds back an upgrade.
pub(super) fn contribute(i: &Inputs, p: &mut Plan, n: &mut Notices) -> bool {
    let restore = decide_restore(
        i.instance.spec.restore.as_ref(),
        i.prior.last_restore.as_ref(),
        i.prior.operation.as_ref(),
        i.report.and_then(|r| r.results.restore.as_ref()),
        p.first_recoverability_point.as_deref(),
        i.now,
    );
    match &restore {
        RestoreDecision::Idle => idle(i, p, n),
        RestoreDecision::Reject(reason, message) => reject(i, p, n, reason, message),
        RestoreDecision::Wait(message) => {
            n.waiting.push(message.clone());
            p.conditions.push(condition(
                RESTORING,
                "False",
                "Waiting",
                message.clone(),
                i.generation,
            ));
        }
        RestoreDecision::Start(op) => start(i, p, op),
        RestoreDecision::InProgress(op, step, message) => {
            p.run.restore = request_env(i);
            let text = match step {
                Some(s) => format!("restore {} at step {s}: {message}", op.id),
                None => format!("restore {}: {message}", op.id),
            };
            if let Some(l) = p.last_restore.as_mut() {
                l.step = step.clone();
                l.message = Some(text.clone());
            }
            p.conditions
                .push(condition(RESTORING, "True", "InPlace", text, i.generation));
        }
        RestoreDecision::Finished(record) => finished(i, p, n, record),
    }
    matches!(
        restore,
        RestoreDecision::Start(_) | RestoreDecision::InProgress(..)
    )
}

/// The image's request for `spec.restore`, for the pod template.
fn request_env(i: &Inputs) -> Option<RestoreRequest> {
    i.instance.spec.restore.as_ref().map(RestoreRequest::of)
}

fn idle(i: &Inputs, p: &mut Plan, n: &mut Notices) {
    // A finished request stays on the pod template: the image never runs an
    // id with a result again, and removing it would restart the pod for
    // nothing.
    let Some(l) = i.instance.spec.restore.as_ref().and_then(|r| {
        i.prior
            .last_restore
            .as_ref()
            .filter(|l| l.request_id == r.request_id && l.outcome != "rejected")
    }) else {
        return;
    };
    p.run.restore = request_env(i);
    // The outcome stays visible while spec.restore names it; a failed request
    // keeps the instance Degraded until it is replaced (new requestId) or
    // removed.
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
        n.degraded.push(("RestoreFailed", message.clone()));
    }
    p.conditions
        .push(condition(RESTORING, "False", reason, message, i.generation));
}

fn reject(i: &Inputs, p: &mut Plan, n: &mut Notices, reason: &'static str, message: &str) {
    n.degraded.push((reason, message.to_string()));
    p.conditions.push(condition(
        RESTORING,
        "False",
        "Rejected",
        message,
        i.generation,
    ));
    if let Some(req) = &i.instance.spec.restore {
        p.last_restore = Some(RestoreRecord {
            request_id: req.request_id.clone(),
            outcome: "rejected".into(),
            step: Some(reason.into()),
            started_at: None,
            finished_at: None,
            message: Some(message.to_string()),
        });
    }
}

fn start(i: &Inputs, p: &mut Plan, op: &OperationRecord) {
    p.operation = Some(op.clone());
    p.record_first = true;
    p.run.restore = request_env(i);
    let message = format!(
        "restore {} requested: the pod restarts and the image restores in place (the old data is kept until the restore is verified)",
        op.id
    );
    p.last_restore = Some(RestoreRecord {
        request_id: op.id.clone(),
        outcome: "running".into(),
        step: None,
        started_at: Some(i.now_text.clone()),
        finished_at: None,
        message: Some(message.clone()),
    });
    p.conditions.push(condition(
        RESTORING,
        "True",
        "InPlace",
        message.clone(),
        i.generation,
    ));
    p.events.push(PlanEvent {
        warning: false,
        reason: "RestoreStarted",
        note: message,
    });
}

fn finished(i: &Inputs, p: &mut Plan, n: &mut Notices, record: &RestoreRecord) {
    p.run.restore = request_env(i);
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
        n.degraded.push(("RestoreFailed", message.clone()));
    }
    p.last_restore = Some(RestoreRecord {
        started_at: i
            .prior
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
        i.generation,
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
    if let Some(target) = &request.target.time
        && let Some(rejected) = reject_target_time(target, first_recoverability_point, now)
    {
        return rejected;
    }
    RestoreDecision::Start(OperationRecord {
        kind: kind::RESTORE.into(),
        id: id.clone(),
        started_at: Some(now.to_string()),
        ..Default::default()
    })
}

/// A target time the image could not restore to, refused before anything
/// is touched.
fn reject_target_time(
    target: &str,
    first_recoverability_point: Option<&str>,
    now: Timestamp,
) -> Option<RestoreDecision> {
    let Some(t) = parse_time(target) else {
        return Some(RestoreDecision::Reject(
            "InvalidRestoreTarget",
            format!("spec.restore.target.time {target:?} is not an RFC 3339 time"),
        ));
    };
    if t > now {
        return Some(RestoreDecision::Reject(
            "RestoreTargetInFuture",
            format!(
                "spec.restore.target.time {target} is in the future (now {now}): nothing was touched; pick a time in the past, or use target.latest"
            ),
        ));
    }
    if let Some(first) = first_recoverability_point.and_then(parse_time)
        && t < first
    {
        return Some(RestoreDecision::Reject(
            "RestoreTargetBeforeFirstBackup",
            format!(
                "spec.restore.target.time {target} is before the first recoverability point {first}: nothing was touched; the earliest time you can restore to is {first}"
            ),
        ));
    }
    None
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
