//! Step 6, status: conditions from the StatefulSet and its pod, following
//! the Kubernetes API conventions, with the fields and conditions `act`
//! decided, written by server-side apply only when something changed. A
//! condition's `lastTransitionTime` moves only when its status does, so an
//! idle reconcile computes the status already there.
//!
//! The last step: it may use every step before it. It writes the
//! PgInstance's status and nothing else.

use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Condition,
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use pgsteward_api::{
    PgInstance, PgInstanceStatus,
    instance::condition_type::{
        BACKUP_HEALTHY, DEGRADED, PROGRESSING, READY, RESTORING, UPGRADING,
    },
};

use crate::{
    act::Plan,
    apply::Applied,
    conditions::{condition, merge_conditions, override_conditions},
    error::{Error, Problems, Result},
    names::{self, FIELD_MANAGER},
    observe::Observed,
};

/// What the StatefulSet and its pod say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    /// The StatefulSet exists.
    pub exists: bool,
    /// A pod is ready (accepts connections).
    pub ready: bool,
    /// The pod runs the StatefulSet's current template.
    pub rolled_out: bool,
    /// Why the pod is not ready, when it says: (reason, message).
    pub pod_problem: Option<(String, String)>,
    /// The pod has not been created yet.
    pub pod_missing: bool,
}

impl Health {
    /// Health of objects that were just applied.
    pub fn of_applied(applied: &Applied, observed: &Observed) -> Self {
        health(Some(&applied.statefulset), target_pod(observed))
    }

    /// Health of what is there, when the spec could not be applied.
    pub fn of_observed(observed: &Observed) -> Self {
        health(observed.statefulset.as_ref(), target_pod(observed))
    }
}

fn target_pod(observed: &Observed) -> Option<&Pod> {
    observed.target_pod().and_then(|p| p.pod.as_ref())
}

/// Read the StatefulSet's status and the pod's container state.
pub fn health(sts: Option<&StatefulSet>, pod: Option<&Pod>) -> Health {
    let Some(sts) = sts else {
        return Health::default();
    };
    let generation = sts.metadata.generation.unwrap_or(0);
    let st = sts.status.clone().unwrap_or_default();
    let ready = st.ready_replicas.unwrap_or(0) >= 1;
    let rolled_out = st.observed_generation.unwrap_or(0) >= generation
        && st.updated_replicas.unwrap_or(0) >= 1
        && st.current_revision.is_some()
        && st.current_revision == st.update_revision;
    let pod_problem = pod.and_then(pod_problem);
    Health {
        exists: true,
        ready,
        rolled_out,
        pod_problem,
        pod_missing: pod.is_none(),
    }
}

fn pod_problem(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(reason) = &w.reason
            && reason != "ContainerCreating"
        {
            let message = w.message.clone().unwrap_or_default();
            return Some((
                reason.clone(),
                format!("container {}: {reason} {message}", cs.name)
                    .trim()
                    .to_string(),
            ));
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            return Some((
                "Unschedulable".into(),
                format!(
                    "pod {} cannot be scheduled: {}",
                    pod.name_any(),
                    c.message.clone().unwrap_or_default()
                ),
            ));
        }
    }
    None
}

/// The status the instance should have. `applied_image` is the image of the
/// StatefulSet apply just wrote or confirmed (None when validation stopped
/// the reconcile before apply). `now` stamps conditions whose status changes.
pub fn desired_status(
    instance: &PgInstance,
    health: &Health,
    problems: Option<&Problems>,
    applied_image: Option<&str>,
    now: Timestamp,
) -> PgInstanceStatus {
    desired_status_for(
        instance,
        health,
        problems,
        applied_image,
        instance.spec.postgres_version,
        now,
    )
}

/// [`desired_status`] for a StatefulSet that runs `major`, which differs
/// from the spec's while an upgrade is rolled back (the previous image runs
/// again). The operation records (`operation`, `lastRestore`, ...) are kept
/// as they were; `act` sets them.
pub fn desired_status_for(
    instance: &PgInstance,
    health: &Health,
    problems: Option<&Problems>,
    applied_image: Option<&str>,
    major: u32,
    now: Timestamp,
) -> PgInstanceStatus {
    let prior = instance.status.clone().unwrap_or_default();
    let generation = instance.metadata.generation;
    let running_now = applied_image.is_some() && health.ready && health.rolled_out;
    let degraded = match problems {
        Some(p) => condition(DEGRADED, "True", p.reason(), p.message(), generation),
        None => condition(DEGRADED, "False", "AsExpected", "", generation),
    };
    let upgrading = match prior.postgres_version {
        Some(running) if major > running => condition(
            UPGRADING,
            "True",
            "InProgress",
            format!(
                "upgrading from PostgreSQL {running} to {major}: the image upgrades the data at start"
            ),
            generation,
        ),
        _ => condition(UPGRADING, "False", "NoUpgrade", "", generation),
    };
    let desired = vec![
        ready(instance, health, problems, major),
        progressing(health, problems, running_now, generation),
        degraded,
        backup_healthy(instance),
        upgrading,
        restoring(instance, running_now),
    ];
    PgInstanceStatus {
        conditions: merge_conditions(&prior.conditions, desired, now),
        observed_generation: generation,
        postgres_version: if running_now {
            Some(major)
        } else {
            prior.postgres_version
        },
        image: match applied_image {
            Some(image) if running_now => Some(image.to_string()),
            _ => prior.image.clone(),
        },
        ..prior
    }
}

/// Ready: the server accepts connections; otherwise the most useful reason
/// it does not (the spec's problem, a missing object, the pod's own).
fn ready(
    instance: &PgInstance,
    health: &Health,
    problems: Option<&Problems>,
    major: u32,
) -> Condition {
    let generation = instance.metadata.generation;
    let name = instance.name_any();
    match (health, problems) {
        (h, _) if h.ready && h.rolled_out => condition(
            READY,
            "True",
            "Running",
            format!("PostgreSQL {major} accepts connections"),
            generation,
        ),
        (h, _) if h.ready => condition(
            READY,
            "True",
            "RollingOut",
            "PostgreSQL accepts connections; the pod is being replaced with the current spec",
            generation,
        ),
        (_, Some(p)) => condition(READY, "False", p.reason(), p.message(), generation),
        (h, None) if !h.exists => condition(
            READY,
            "False",
            "Creating",
            format!("creating StatefulSet {}", names::statefulset(&name)),
            generation,
        ),
        (h, None) if h.pod_missing => condition(
            READY,
            "False",
            "Creating",
            format!("waiting for pod {} to be created", names::pod(&name, 0)),
            generation,
        ),
        (
            Health {
                pod_problem: Some((reason, message)),
                ..
            },
            None,
        ) => condition(READY, "False", reason, message.clone(), generation),
        _ => condition(
            READY,
            "False",
            "Starting",
            "PostgreSQL is starting; crash recovery, WAL replay or a restore can take a while",
            generation,
        ),
    }
}

/// Progressing: whether the objects are still being made to match the spec.
fn progressing(
    health: &Health,
    problems: Option<&Problems>,
    running_now: bool,
    generation: Option<i64>,
) -> Condition {
    match problems {
        Some(_) => condition(
            PROGRESSING,
            "False",
            "Blocked",
            "waiting for the spec to be fixed (see the Degraded condition)",
            generation,
        ),
        None if running_now => condition(
            PROGRESSING,
            "False",
            "UpToDate",
            "every object matches the spec",
            generation,
        ),
        None if !health.exists => condition(
            PROGRESSING,
            "True",
            "Creating",
            "creating the objects",
            generation,
        ),
        None if health.ready => condition(
            PROGRESSING,
            "True",
            "RollingOut",
            "the pod is being replaced with the current spec",
            generation,
        ),
        None => condition(
            PROGRESSING,
            "True",
            "Starting",
            "waiting for PostgreSQL to accept connections",
            generation,
        ),
    }
}

/// BackupHealthy as `act` last reported it, or why it has not.
fn backup_healthy(instance: &PgInstance) -> Condition {
    let generation = instance.metadata.generation;
    match &instance.spec.backup {
        None => condition(
            BACKUP_HEALTHY,
            "False",
            "NotConfigured",
            "spec.backup is not set: this instance has no backups",
            generation,
        ),
        Some(_) => match instance.condition(BACKUP_HEALTHY) {
            // Kept as the backup-state reader last wrote it.
            Some(c) if c.reason != "NotConfigured" => c.clone(),
            _ => condition(
                BACKUP_HEALTHY,
                "Unknown",
                "NotYetReported",
                "backups are configured; their health is reported once the image has reported a backup",
                generation,
            ),
        },
    }
}

/// Restoring: the restore before the first start, while it runs.
fn restoring(instance: &PgInstance, running_now: bool) -> Condition {
    let generation = instance.metadata.generation;
    let bootstrapping = instance
        .spec
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.recovery.is_some())
        && instance
            .status
            .as_ref()
            .and_then(|s| s.postgres_version)
            .is_none()
        && !running_now;
    if bootstrapping {
        condition(
            RESTORING,
            "True",
            "BootstrapRecovery",
            "the image restores the data from backups before the first start",
            generation,
        )
    } else {
        condition(RESTORING, "False", "NoRestore", "", generation)
    }
}

/// The status after a reconcile that applied the spec: from the applied
/// objects, with what the operations decided (their conditions replace the
/// computed ones of the same type).
pub fn applied_status(
    instance: &PgInstance,
    health: &Health,
    applied: &Applied,
    plan: &Plan,
    now: Timestamp,
) -> PgInstanceStatus {
    let image = applied
        .statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_else(|| plan.run.image.clone());
    let mut next = desired_status_for(instance, health, None, Some(&image), plan.run.major, now);
    plan.record_into(&mut next);
    let prior = instance.status.clone().unwrap_or_default();
    override_conditions(&mut next, &prior.conditions, plan.conditions.clone(), now);
    next
}

/// The status when the spec was refused: nothing was applied, so an
/// operation's conditions stay as they were.
pub fn refused_status(
    instance: &PgInstance,
    observed: &Observed,
    problems: &Problems,
    now: Timestamp,
) -> PgInstanceStatus {
    let health = Health::of_observed(observed);
    let mut next = desired_status(instance, &health, Some(problems), None, now);
    let prior = instance.status.clone().unwrap_or_default();
    let kept: Vec<_> = prior
        .conditions
        .iter()
        .filter(|c| c.type_ == UPGRADING || c.type_ == RESTORING)
        .cloned()
        .collect();
    override_conditions(&mut next, &prior.conditions, kept, now);
    next
}

/// Write `status` with server-side apply, unless it equals what is there.
/// Returns whether a write was made.
pub async fn write_if_changed(
    client: &Client,
    instance: &PgInstance,
    status: &PgInstanceStatus,
) -> Result<bool> {
    if instance.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let name = instance.name_any();
    let api: Api<PgInstance> =
        Api::namespaced(client.clone(), &instance.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "pgsteward.io/v1alpha1",
        "kind": "PgInstance",
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        api.patch_status(&name, &params, &Patch::Apply(&patch)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(source)) => Err(Error::Status { name, source }),
        Err(_) => Err(Error::StatusTimeout { name }),
    }
}
