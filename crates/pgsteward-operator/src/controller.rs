//! The PgInstance controller. [`apply_instance`] is the reconcile
//! pipeline, each step called once, in order (DESIGN.md):
//!
//! ```text
//! observe → validate → act (decide) → build → apply → act (carry out) → status
//! ```
//!
//! `act` is entered twice because what `build` makes depends on its
//! decision (which image runs, which request is on the pod template) and
//! what it does to the pod must follow the apply. Around the pipeline, and
//! only here: the finalizer that runs cleanup, events, metrics and the
//! per-instance backoff. The steps themselves publish nothing.

use std::{sync::Arc, time::Instant};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, ObjectReference, Pod, Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::DeleteParams,
    core::error_boundary::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType},
        finalizer::{self, finalizer},
        reflector::ObjectRef,
        watcher,
    },
};
use pgsteward_api::{
    PgBackup, PgInstance, PgInstanceStatus, backup::BackupPhase, instance::condition_type,
};
use rand::RngExt;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    act::{self, Plan},
    apply::{self, Applied},
    build,
    conditions::transitions,
    context::{Context, backoff, instance_ref, note, scoped_api},
    error::{Error, Problems, Result, chain},
    names,
    observe::{self, Observed},
    status, validate,
};

/// The finalizer that runs cleanup before a PgInstance goes away.
pub const FINALIZER: &str = "pgsteward.io/cleanup";
/// The label every owned object carries; owned watches select on it.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=pgsteward";
/// The instances' pods (their StatefulSets' template labels).
pub const POD_SELECTOR: &str = "app.kubernetes.io/name=pgsteward-postgres";
/// Requeue after a successful reconcile of a ready instance (a resync).
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(300);

/// The instance a pod belongs to (its `app.kubernetes.io/instance` label,
/// in its namespace): a container that exits or starts is acted on at once,
/// not at the next 30 s check (an upgrade's rollback was 24 s late against a
/// real kubelet).
pub fn instance_of_pod(pod: &impl Resource) -> Option<ObjectRef<DeserializeGuard<PgInstance>>> {
    let meta = pod.meta();
    let name = meta.labels.as_ref()?.get("app.kubernetes.io/instance")?;
    Some(instance_ref(name, meta.namespace.as_deref()))
}

/// The instance to look at again when `backup` changes: its own, once the
/// backup has finished, so `status.lastBackup` and `BackupHealthy` show it
/// now rather than at the next resync.
pub fn instance_of_finished_backup(
    backup: &DeserializeGuard<PgBackup>,
) -> Option<ObjectRef<DeserializeGuard<PgInstance>>> {
    let b = backup.0.as_ref().ok()?;
    let finished = matches!(
        b.status.as_ref().and_then(|s| s.phase),
        Some(BackupPhase::Succeeded | BackupPhase::Failed)
    );
    finished.then(|| instance_ref(&b.spec.instance_ref.name, b.metadata.namespace.as_deref()))
}

fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn reference(meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(PgInstance::api_version(&()).into_owned()),
        kind: Some(PgInstance::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    }
}

/// Publish an event about the PgInstance `meta` names.
async fn publish(
    ctx: &Context,
    meta: &ObjectMeta,
    type_: EventType,
    reason: &str,
    action: &str,
    text: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: note(text),
        action: action.into(),
        secondary: None,
    };
    ctx.publish(&reference(meta), event).await;
}

/// The controller's reconcile: metrics, a Warning event on error.
pub async fn reconcile(
    obj: Arc<DeserializeGuard<PgInstance>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let meta = match &obj.0 {
        Ok(i) => i.metadata.clone(),
        Err(invalid) => invalid.metadata.clone(),
    };
    let key = key_of(&meta);
    let span = info_span!("reconcile", instance = %key);
    async move {
        let started = Instant::now();
        let result = match &obj.0 {
            Ok(instance) => reconcile_instance(Arc::new(instance.clone()), &ctx).await,
            Err(invalid) => Err(Error::InvalidObject(Box::new(invalid.clone()))),
        };
        ctx.metrics.reconciled(
            started.elapsed(),
            result.as_ref().err().map(Error::metric_label),
        );
        match &result {
            Ok(action) => {
                ctx.succeeded(&key);
                debug!(?action, "reconciled");
            }
            Err(e) => {
                let text = chain(e);
                warn!(error = %text, kind = e.metric_label(), "reconcile failed");
                publish(
                    &ctx,
                    &meta,
                    EventType::Warning,
                    e.event_reason(),
                    "Reconcile",
                    text,
                )
                .await;
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Requeue after a failure, later after each one in a row (see [`backoff`]).
pub fn error_policy(
    obj: Arc<DeserializeGuard<PgInstance>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let meta = match &obj.0 {
        Ok(i) => &i.metadata,
        Err(invalid) => &invalid.metadata,
    };
    Action::requeue(backoff(ctx.failed(&key_of(meta)), err.api_status()))
}

async fn reconcile_instance(instance: Arc<PgInstance>, ctx: &Context) -> Result<Action> {
    let api: Api<PgInstance> = Api::namespaced(
        ctx.client.clone(),
        &instance.namespace().unwrap_or_else(|| "default".into()),
    );
    finalizer(&api, FINALIZER, instance, |event| async move {
        match event {
            finalizer::Event::Apply(instance) => Box::pin(apply_instance(&instance, ctx)).await,
            finalizer::Event::Cleanup(instance) => cleanup(&instance, ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer {
            finalizer: FINALIZER,
            source: Box::new(other),
        },
    })
}

/// The superuser password to create, when the operator creates the Secret
/// (empty otherwise: it is not used).
fn new_password(instance: &PgInstance, observed: &Observed) -> String {
    if instance.spec.superuser_secret_ref.is_some() || observed.generated_superuser_secret.is_some()
    {
        return String::new();
    }
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The pipeline: observe → validate → act (decide) → build → apply → act
/// (carry out) → status.
pub async fn apply_instance(instance: &PgInstance, ctx: &Context) -> Result<Action> {
    let observed = Box::pin(observe::observe(&ctx.client, ctx.exec.as_ref(), instance)).await?;
    let now = Timestamp::now();
    let valid = match validate::validate(instance, &observed) {
        Ok(valid) => valid,
        Err(problems) => return Box::pin(refuse(instance, &observed, problems, ctx, now)).await,
    };
    let plan = Box::pin(act::decide(
        ctx.exec.as_ref(),
        instance,
        &ctx.settings,
        &observed,
        now,
    ))
    .await;
    let current = Box::pin(record_operation(instance, &plan, ctx)).await?;
    let password = new_password(instance, &observed);
    let desired = build::build_with(instance, &valid, &observed, &password, &plan.run);
    let applied = Box::pin(apply::apply(&ctx.client, desired, &observed)).await?;
    announce_applied(ctx, instance, &applied).await;
    act::carry_out(&ctx.client, instance, &plan, &observed).await?;
    announce_plan(ctx, instance, &plan).await;
    let health = status::Health::of_applied(&applied, &observed);
    let next = status::applied_status(instance, &health, &applied, &plan, now);
    Box::pin(write_status(&current, &next, ctx)).await?;
    let ready = health.ready && health.rolled_out;
    Ok(Action::requeue(if ready && plan.settled() {
        RESYNC
    } else {
        act::RECHECK
    }))
}

/// The spec cannot be applied: say why in status, apply nothing, and fail
/// the reconcile (a Warning event, and a retry with backoff).
async fn refuse(
    instance: &PgInstance,
    observed: &Observed,
    problems: Problems,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action> {
    let next = status::refused_status(instance, observed, &problems, now);
    Box::pin(write_status(instance, &next, ctx)).await?;
    Err(Error::InvalidSpec(problems))
}

/// A new operation is recorded before anything changes, so a restarted
/// operator resumes it instead of starting another. Returns the instance as
/// it is after that write.
async fn record_operation(instance: &PgInstance, plan: &Plan, ctx: &Context) -> Result<PgInstance> {
    let mut current = instance.clone();
    if plan.record_first {
        let first = plan.recorded(&instance.status.clone().unwrap_or_default());
        Box::pin(write_status(&current, &first, ctx)).await?;
        current.status = Some(first);
    }
    Ok(current)
}

/// Metrics and an event for the objects apply wrote.
async fn announce_applied(ctx: &Context, instance: &PgInstance, applied: &Applied) {
    for w in &applied.written {
        ctx.metrics
            .object_written(w.split('/').next().unwrap_or_default());
    }
    if applied.written.is_empty() {
        return;
    }
    info!(objects = ?applied.written, "applied");
    let text = format!("applied {}", applied.written.join(", "));
    publish(
        ctx,
        &instance.metadata,
        EventType::Normal,
        "Applied",
        "Apply",
        text,
    )
    .await;
}

/// Metrics and an event for each event the operations asked for.
async fn announce_plan(ctx: &Context, instance: &PgInstance, plan: &Plan) {
    for e in &plan.events {
        ctx.metrics.operation_event(e.reason);
        let type_ = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            ctx,
            &instance.metadata,
            type_,
            e.reason,
            "Operate",
            e.note.clone(),
        )
        .await;
    }
}

/// Write the status (when it changed), with metrics, and an event for each
/// condition whose status changed.
async fn write_status(instance: &PgInstance, next: &PgInstanceStatus, ctx: &Context) -> Result<()> {
    let prior = instance.status.clone().unwrap_or_default().conditions;
    let written = status::write_if_changed(&ctx.client, instance, next).await;
    ctx.metrics.status_write(match &written {
        Ok(true) => "written",
        Ok(false) => "unchanged",
        Err(Error::StatusTimeout { .. }) => "timeout",
        Err(_) => "error",
    });
    written?;
    ctx.metrics.set_conditions(
        &key_of(&instance.metadata),
        Some(
            next.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
        ),
    );
    for (c, before) in transitions(&prior, &next.conditions) {
        let warning = (c.type_ == condition_type::DEGRADED && c.status == "True")
            || (c.type_ == condition_type::READY
                && c.status == "False"
                && before.as_deref() == Some("True"));
        let message = if c.message.is_empty() {
            String::new()
        } else {
            format!(": {}", c.message)
        };
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let text = format!("{} is {} ({}){message}", c.type_, c.status, c.reason);
        publish(ctx, &instance.metadata, type_, &c.reason, "Status", text).await;
    }
    Ok(())
}

/// Before the PgInstance goes: owner references let the garbage collector
/// remove the ConfigMap, Services and StatefulSet. The data claim stays
/// (StatefulSet retention policy) and so does the generated superuser
/// Secret, whose password belongs to that data, unless
/// `storage.deleteClaimOnDelete` is set: then the Secret is deleted here and
/// the StatefulSet deletes its claim.
pub async fn cleanup(instance: &PgInstance, ctx: &Context) -> Result<Action> {
    let name = instance.name_any();
    let ns = instance.namespace().unwrap_or_else(|| "default".into());
    let generated = instance.spec.superuser_secret_ref.is_none();
    let note_text = if instance.spec.storage.delete_claim_on_delete {
        if generated {
            let secret = names::superuser_secret(&name);
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            match api.delete(&secret, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(Error::Cleanup {
                        kind: "Secret".into(),
                        name: secret,
                        source,
                    });
                }
            }
        }
        format!(
            "deleting {name}: storage.deleteClaimOnDelete is set, so claim {} and the generated superuser Secret are deleted too",
            names::data_claim(&name, 0)
        )
    } else {
        format!(
            "deleting {name}: claim {} {}is kept with the data; delete {} yourself to free it, or recreate the PgInstance with the same name to use it again",
            names::data_claim(&name, 0),
            if generated {
                format!(
                    "and Secret {} (its password) ",
                    names::superuser_secret(&name)
                )
            } else {
                String::new()
            },
            if generated { "them" } else { "it" },
        )
    };
    info!(instance = %name, "{note_text}");
    publish(
        ctx,
        &instance.metadata,
        EventType::Normal,
        "Cleanup",
        "Delete",
        note_text,
    )
    .await;
    ctx.metrics
        .set_conditions(&key_of(&instance.metadata), None);
    Ok(Action::await_change())
}

/// Run the PgInstance controller for one namespace (or all with `None`)
/// until shutdown. (`main` runs the PgBackup controller beside it.)
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let owned = || watcher::Config::default().labels(MANAGED_SELECTOR);
    info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "controller starting"
    );
    Controller::new(
        scoped_api::<DeserializeGuard<PgInstance>>(&client, &namespace),
        watcher::Config::default(),
    )
    .owns(
        scoped_api::<DeserializeGuard<StatefulSet>>(&client, &namespace),
        owned(),
    )
    .owns(
        scoped_api::<DeserializeGuard<Service>>(&client, &namespace),
        owned(),
    )
    .owns(
        scoped_api::<DeserializeGuard<ConfigMap>>(&client, &namespace),
        owned(),
    )
    .watches(
        scoped_api::<DeserializeGuard<PgBackup>>(&client, &namespace),
        watcher::Config::default(),
        |backup| instance_of_finished_backup(&backup),
    )
    .watches(
        scoped_api::<DeserializeGuard<Pod>>(&client, &namespace),
        watcher::Config::default().labels(POD_SELECTOR),
        |pod| instance_of_pod(&pod),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            debug!(error = %chain(&e), "controller event");
        }
    })
    .await;
}
