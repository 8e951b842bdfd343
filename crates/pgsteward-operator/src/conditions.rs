//! Leaf: the rules of a condition list, per the Kubernetes API conventions.
//! A condition's `lastTransitionTime` moves only when its status does, so an
//! idle reconcile computes the conditions already there. Used by `act`
//! (each operation's conditions) and `status`; it uses nothing of the
//! operator.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use pgsteward_api::{
    PgInstanceStatus,
    instance::condition_type::{ALL, DEGRADED},
};

/// A condition with this generation (its time is set by [`merge_conditions`]).
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Replace the conditions of the types in `overrides` (keeping each one's
/// `lastTransitionTime` while its status is unchanged, against `prior`).
pub fn override_conditions(
    status: &mut PgInstanceStatus,
    prior: &[Condition],
    overrides: Vec<Condition>,
    now: Timestamp,
) {
    let mut desired: Vec<Condition> = status
        .conditions
        .iter()
        .filter(|c| !overrides.iter().any(|o| o.type_ == c.type_))
        .cloned()
        .collect();
    desired.extend(overrides);
    status.conditions = merge_conditions(prior, desired, now);
}

/// Keep each condition's `lastTransitionTime` while its status is unchanged;
/// stamp `now` (to the second) when it changes or first appears. Conditions
/// are ordered as in [`ALL`].
pub fn merge_conditions(
    prior: &[Condition],
    desired: Vec<Condition>,
    now: Timestamp,
) -> Vec<Condition> {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let mut out: Vec<Condition> = desired
        .into_iter()
        .map(|mut c| {
            c.last_transition_time = match prior.iter().find(|p| p.type_ == c.type_) {
                Some(p) if p.status == c.status => p.last_transition_time.clone(),
                _ => Time(now),
            };
            c
        })
        .collect();
    out.sort_by_key(|c| ALL.iter().position(|t| *t == c.type_).unwrap_or(ALL.len()));
    out
}

/// The conditions whose status changed (or that appeared as True for
/// Degraded): (type, new condition, previous status).
pub fn transitions<'a>(
    prior: &[Condition],
    next: &'a [Condition],
) -> Vec<(&'a Condition, Option<String>)> {
    next.iter()
        .filter_map(|c| {
            let before = prior
                .iter()
                .find(|p| p.type_ == c.type_)
                .map(|p| p.status.clone());
            let changed = match &before {
                Some(b) => *b != c.status,
                None => c.type_ == DEGRADED && c.status == "True",
            };
            changed.then_some((c, before))
        })
        .collect()
}
