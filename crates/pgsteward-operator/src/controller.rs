//! The reconcile of one PgInstance: observe → validate → build → apply →
//! status, wrapped in a finalizer for cleanup, with events, metrics and
//! per-instance backoff on errors.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, ObjectReference, Pod, Secret, Service},
    },
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
use pgsteward_api::{PgBackup, PgInstance, instance::condition_type};
use rand::RngExt;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    act, apply, build,
    conditions::{condition, override_conditions, transitions},
    context::{Context, backoff, instance_ref, note, scoped_api},
    error::{Error, Result, chain},
    image_state::{self, StatusReport},
    names, observe, status, validate,
};

/// The finalizer that runs cleanup before a PgInstance goes away.
pub const FINALIZER: &str = "pgsteward.io/cleanup";
/// The label every owned object carries; owned watches select on it.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=pgsteward";
/// The instances' pods (their StatefulSets' template labels).
pub const POD_SELECTOR: &str = "app.kubernetes.io/name=pgsteward-postgres";
/// Requeue after a successful reconcile of a ready instance (a resync).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Requeue while an instance is not ready yet, to refresh its messages.
pub const RECHECK: Duration = Duration::from_secs(30);

/// How long `pgsteward-status`, `cat` and `pg_ctl reload` may take.
pub const SHORT_EXEC: Duration = Duration::from_secs(30);

/// What the pod's status says about the postgres container.
#[derive(Debug, Default)]
struct ContainerState {
    running: bool,
    /// The last exit code while it is not running.
    exit: Option<i32>,
    image: Option<String>,
    /// The termination message of its current or last run.
    termination_message: Option<String>,
}

fn container_state(pod: &k8s_openapi::api::core::v1::Pod) -> ContainerState {
    let status = pod.status.as_ref();
    let phase_running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| {
            s.containers
                .iter()
                .find(|c| c.name == crate::exec::CONTAINER)
        })
        .and_then(|c| c.image.clone());
    let Some(cs) = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == crate::exec::CONTAINER))
    else {
        return ContainerState {
            running: phase_running,
            image,
            ..Default::default()
        };
    };
    let state = cs.state.as_ref();
    let terminated = state
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
    let termination_message = terminated.and_then(|t| t.message.clone());
    if state.is_some_and(|s| s.running.is_some()) {
        return ContainerState {
            running: true,
            image,
            termination_message,
            ..Default::default()
        };
    }
    ContainerState {
        running: false,
        exit: terminated.map(|t| t.exit_code),
        image,
        termination_message,
    }
}

/// The results in a termination message (anything else, such as a message
/// from another image, reads as none).
fn termination_results(message: Option<&str>) -> image_state::TerminationMessage {
    message
        .and_then(|m| image_state::parse::<image_state::TerminationMessage>(m).ok())
        .unwrap_or_default()
}

/// The instance a pod belongs to (its `app.kubernetes.io/instance` label,
/// in its namespace): a container that exits or starts is acted on at once,
/// not at the next 30 s check (an upgrade's rollback was 24 s late against a
/// real kubelet).
pub fn instance_of_pod(pod: &impl Resource) -> Option<ObjectRef<DeserializeGuard<PgInstance>>> {
    let meta = pod.meta();
    let name = meta.labels.as_ref()?.get("app.kubernetes.io/instance")?;
    Some(instance_ref(name, meta.namespace.as_deref()))
}

/// Run `pgsteward-status` in the pod, when its container runs.
async fn read_report(ctx: &Context, ns: &str, pod: &str) -> Option<StatusReport> {
    match ctx
        .exec
        .exec(ns, pod, vec!["pgsteward-status".into()], SHORT_EXEC)
        .await
    {
        Ok(out) if out.exit_code == 0 => match image_state::parse(&out.stdout) {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(pod, error = %chain(&e), "pgsteward-status printed something else");
                None
            }
        },
        Ok(out) => {
            warn!(pod, code = out.exit_code, stderr = %out.stderr.trim(), "pgsteward-status failed");
            None
        }
        Err(e) => {
            debug!(pod, error = %chain(&e), "pgsteward-status could not run");
            None
        }
    }
}

/// Reload the configuration once the mounted files match the ConfigMap.
/// Returns whether the server re-read them.
async fn reload_config(ctx: &Context, ns: &str, pod: &str, instance: &PgInstance) -> bool {
    let files = build::conf_d(instance);
    if !files.is_empty() {
        match ctx
            .exec
            .exec(ns, pod, act::mounted_config_command(&files), SHORT_EXEC)
            .await
        {
            Ok(out) if out.exit_code == 0 && act::mounted_config_matches(&files, &out.stdout) => {}
            Ok(_) => {
                debug!(pod, "the mounted conf.d does not match the ConfigMap yet");
                return false;
            }
            Err(e) => {
                debug!(pod, error = %chain(&e), "could not read the mounted conf.d");
                return false;
            }
        }
    }
    match ctx
        .exec
        .exec(ns, pod, act::reload_command(), SHORT_EXEC)
        .await
    {
        Ok(out) if out.exit_code == 0 => true,
        Ok(out) => {
            warn!(pod, code = out.exit_code, stderr = %out.stderr.trim(), "pg_ctl reload failed");
            false
        }
        Err(e) => {
            debug!(pod, error = %chain(&e), "could not reload");
            false
        }
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn reference(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(PgInstance::api_version(&()).into_owned()),
        kind: Some(PgInstance::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    }
}

async fn publish(
    ctx: &Context,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ev: Event,
) {
    ctx.publish(&reference(meta), ev).await;
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
                    Event {
                        type_: EventType::Warning,
                        reason: e.event_reason().into(),
                        note: note(text),
                        action: "Reconcile".into(),
                        secondary: None,
                    },
                )
                .await;
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Requeue after a failure: exponential from 5 s to 5 min per instance,
/// at least a minute on HTTP 429, with ±20 % jitter so retries spread out.
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

fn new_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// observe → validate → act (decide) → build → apply → act (pod) → status.
pub async fn apply_instance(instance: &PgInstance, ctx: &Context) -> Result<Action> {
    let observed = Box::pin(observe::observe(&ctx.client, instance)).await?;
    let now = Timestamp::now();
    let ns = instance.namespace().unwrap_or_else(|| "default".into());
    let pod_name = names::pod(&instance.name_any());
    let container = observed
        .pod
        .as_ref()
        .map(container_state)
        .unwrap_or_default();
    let mut report = if container.running {
        Box::pin(read_report(ctx, &ns, &pod_name)).await
    } else {
        None
    };
    // Configuration: reload once the kubelet has updated the mounted files.
    let desired_revision = act::config_revision(&build::conf_d(instance));
    let prior_status = instance.status.clone().unwrap_or_default();
    let mut config_revision = prior_status.config_revision.clone();
    if report.as_ref().is_some_and(|r| r.server.running)
        && config_revision.as_deref() != Some(desired_revision.as_str())
        && prior_status.operation.is_none()
        && Box::pin(reload_config(ctx, &ns, &pod_name, instance)).await
    {
        info!(revision = %desired_revision, "configuration reloaded");
        config_revision = Some(desired_revision.clone());
        report = Box::pin(read_report(ctx, &ns, &pod_name)).await.or(report);
    }
    match validate::validate(instance, &observed) {
        Ok(valid) => {
            let pod_uid = observed.pod.as_ref().and_then(|p| p.metadata.uid.clone());
            // An exit code says something about an upgrade only when the
            // pod runs the new image.
            let spec_image = ctx.settings.image_for(instance);
            let template_upgrade_id = observed
                .statefulset
                .as_ref()
                .and_then(|sts| sts.spec.as_ref())
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| {
                    p.containers
                        .iter()
                        .find(|c| c.name == crate::exec::CONTAINER)
                })
                .and_then(|c| c.env.as_ref())
                .and_then(|env| env.iter().find(|e| e.name == "PGSTEWARD_UPGRADE_ID"))
                .and_then(|e| e.value.clone());
            let pod_view = act::PodView {
                uid: pod_uid.as_deref(),
                template_upgrade_id: template_upgrade_id.as_deref(),
                image: container.image.as_deref(),
                running: container.running,
                terminating: observed
                    .pod
                    .as_ref()
                    .is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
                container_exit: container
                    .exit
                    .filter(|_| container.image.as_deref() == Some(spec_image.as_str())),
                terminated: termination_results(container.termination_message.as_deref()),
            };
            let plan = act::plan(instance, &ctx.settings, report.as_ref(), &pod_view, now);
            // A new operation is recorded before anything changes, so a
            // restarted operator resumes it instead of starting another.
            let mut current = instance.clone();
            if plan.record_first {
                let mut first = prior_status.clone();
                first.operation = plan.operation.clone();
                first.last_restore = plan.last_restore.clone();
                first.last_restart = plan.last_restart.clone();
                Box::pin(write_status(&current, &first, ctx)).await?;
                current.status = Some(first);
            }
            let password = if instance.spec.superuser_secret_ref.is_none()
                && observed.generated_superuser_secret.is_none()
            {
                new_password()
            } else {
                String::new()
            };
            let desired = build::build_with(instance, &valid, &observed, &password, &plan.run);
            let applied = Box::pin(apply::apply(&ctx.client, desired, &observed)).await?;
            for w in &applied.written {
                ctx.metrics
                    .object_written(w.split('/').next().unwrap_or_default());
            }
            if !applied.written.is_empty() {
                info!(objects = ?applied.written, "applied");
                publish(
                    ctx,
                    &instance.metadata,
                    Event {
                        type_: EventType::Normal,
                        reason: "Applied".into(),
                        note: note(format!("applied {}", applied.written.join(", "))),
                        action: "Apply".into(),
                        secondary: None,
                    },
                )
                .await;
            }
            if plan.restart_pod
                && let Some(uid) = pod_uid.as_deref()
            {
                restart_pod(ctx, &ns, &pod_name, uid).await?;
            }
            for e in &plan.events {
                ctx.metrics.operation_event(e.reason);
                publish(
                    ctx,
                    &instance.metadata,
                    Event {
                        type_: if e.warning {
                            EventType::Warning
                        } else {
                            EventType::Normal
                        },
                        reason: e.reason.into(),
                        note: note(e.note.clone()),
                        action: "Operate".into(),
                        secondary: None,
                    },
                )
                .await;
            }
            let health = status::Health::of_applied(&applied, &observed);
            let image = applied
                .statefulset
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_else(|| plan.run.image.clone());
            let mut next = status::desired_status_for(
                instance,
                &health,
                None,
                Some(&image),
                plan.run.major,
                now,
            );
            next.operation = plan.operation.clone();
            next.failed_upgrade = plan.failed_upgrade.clone();
            next.last_restore = plan.last_restore.clone();
            next.last_backup = plan.last_backup.clone();
            next.last_scheduled_backup = plan.last_scheduled_backup.clone();
            next.first_recoverability_point = plan.first_recoverability_point.clone();
            next.archiver = plan.archiver.clone();
            next.waiting = plan.waiting.clone();
            next.pending_restart = plan.pending_restart.clone();
            next.last_restart = plan.last_restart.clone();
            next.config_revision = config_revision.clone();
            if let Some(v) = plan.postgres_version {
                next.postgres_version = Some(v);
            }
            let mut conditions = plan.conditions.clone();
            // Between a ConfigMap change and the reload (the kubelet updates
            // mounted files within a minute or so) every object matches the
            // spec, but the server does not run it yet: say so.
            if report.as_ref().is_some_and(|r| r.server.running)
                && config_revision.as_deref() != Some(desired_revision.as_str())
                && !conditions
                    .iter()
                    .any(|c| c.type_ == condition_type::PROGRESSING)
            {
                conditions.push(condition(
                    condition_type::PROGRESSING,
                    "True",
                    "ConfigPending",
                    format!(
                        "the configuration changed; PostgreSQL reloads it once the kubelet has updated the mounted conf.d files (checked every {} s)",
                        RECHECK.as_secs()
                    ),
                    instance.metadata.generation,
                ));
            }
            override_conditions(&mut next, &prior_status.conditions, conditions, now);
            Box::pin(write_status(&current, &next, ctx)).await?;
            let ready = health.ready && health.rolled_out;
            let settled = next.operation.is_none()
                && config_revision.as_deref() == Some(desired_revision.as_str());
            Ok(Action::requeue(if ready && settled {
                RESYNC
            } else {
                RECHECK
            }))
        }
        Err(problems) => {
            let health = status::Health::of_observed(&observed);
            let mut next = status::desired_status(instance, &health, Some(&problems), None, now);
            // Nothing was applied: an operation's conditions stay as they were.
            let kept: Vec<_> = prior_status
                .conditions
                .iter()
                .filter(|c| {
                    c.type_ == condition_type::UPGRADING || c.type_ == condition_type::RESTORING
                })
                .cloned()
                .collect();
            override_conditions(&mut next, &prior_status.conditions, kept, now);
            Box::pin(write_status(instance, &next, ctx)).await?;
            Err(Error::InvalidSpec(problems))
        }
    }
}

/// Delete the pod: the StatefulSet starts it again (a restart for settings
/// that need one, or a pod stuck on another image). Only the pod that was
/// observed (`uid`): one the StatefulSet created since is left alone.
async fn restart_pod(ctx: &Context, ns: &str, pod: &str, uid: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.client.clone(), ns);
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(pod, &params).await {
        Ok(_) => Ok(()),
        // Gone, or already replaced by another pod of the same name.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(Error::Operate {
            what: format!("restart pod {pod}"),
            source,
        }),
    }
}

async fn write_status(
    instance: &PgInstance,
    next: &pgsteward_api::PgInstanceStatus,
    ctx: &Context,
) -> Result<()> {
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
        publish(
            ctx,
            &instance.metadata,
            Event {
                type_: if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: c.reason.clone(),
                note: note(format!(
                    "{} is {} ({}){message}",
                    c.type_, c.status, c.reason
                )),
                action: "Status".into(),
                secondary: None,
            },
        )
        .await;
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
            names::data_claim(&name)
        )
    } else {
        format!(
            "deleting {name}: claim {} {}is kept with the data; delete {} yourself to free it, or recreate the PgInstance with the same name to use it again",
            names::data_claim(&name),
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
        Event {
            type_: EventType::Normal,
            reason: "Cleanup".into(),
            note: note(note_text),
            action: "Delete".into(),
            secondary: None,
        },
    )
    .await;
    ctx.metrics
        .set_conditions(&key_of(&instance.metadata), None);
    Ok(Action::await_change())
}

/// Run the controller for one namespace (or all with `None`) until shutdown.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let owned = || watcher::Config::default().labels(MANAGED_SELECTOR);
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let backups = crate::backups::run(ctx.clone(), namespace.clone(), shutdown.clone());
    info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "controller starting"
    );
    let instances = Controller::new(
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
        |backup| crate::backups::instance_of_finished_backup(&backup),
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
    });
    futures::future::join(instances, backups).await;
}
