//! The PgBackup controller: an on-demand backup is an exec of
//! `backup.sh --id <uid> [--permanent]` in the instance's pod, whose result
//! becomes the PgBackup's status.
//!
//! - A missing instance, or one without backup storage: Failed at once,
//!   with a message (the spec of a PgBackup cannot change, so waiting could
//!   not help; create a new PgBackup).
//! - An instance that is not Ready, runs an operation (upgrade, restore,
//!   restart), or is being backed up by another PgBackup: Pending, with a
//!   message that says what it waits for. The controller watches
//!   PgInstances too, so a change to the instance (it becomes Ready, its
//!   operation ends) wakes its waiting PgBackups at once; they are also
//!   checked again every 30 s. The oldest waiting PgBackup goes first.
//! - Running is written before the exec. A restarted operator finds it
//!   Running and execs again with the same id: `backup.sh` then prints the
//!   result it already has, or exits 5 while that backup still holds the
//!   lock (checked again later). No backup is taken twice.
//!
//! The decisions are [`crate::act::backup`]'s; this module does the I/O
//! around them and writes PgBackup status only, never the instance's. It
//! shares [`crate::context`] with the PgInstance controller and imports
//! nothing of it.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    core::error_boundary::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType},
        reflector::ObjectRef,
        watcher,
    },
};
use pgsteward_api::{PgBackup, PgBackupStatus, PgInstance, backup::BackupPhase};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    act::backup::{
        BackupGate, backup_command, backup_gate, backup_status_from_result,
        backup_status_without_result,
    },
    context::{Context, backoff, note, scoped_api},
    error::{Error, Result, chain},
    image_state::{self, BackupResult},
    names::{self, FIELD_MANAGER},
};

/// How long one backup may take before the operator stops waiting for
/// its exec (the backup itself goes on in the pod; the next exec with the
/// same id picks up its result).
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How often a waiting PgBackup is checked again, whatever its instance
/// does (a change to the instance wakes it sooner).
pub const WAIT: Duration = Duration::from_secs(30);

fn pending(prior: &PgBackupStatus, message: String) -> PgBackupStatus {
    PgBackupStatus {
        phase: Some(BackupPhase::Pending),
        message: Some(message),
        ..prior.clone()
    }
}

/// Write a PgBackup's status by server-side apply, when it changed.
async fn write(client: &Client, backup: &PgBackup, status: &PgBackupStatus) -> Result<()> {
    if backup.status.as_ref() == Some(status) {
        return Ok(());
    }
    let name = backup.name_any();
    let api: Api<PgBackup> =
        Api::namespaced(client.clone(), &backup.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "pgsteward.io/v1alpha1",
        "kind": "PgBackup",
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::Operate {
        what: format!("write the status of PgBackup {name}"),
        source,
    })
}

/// A Normal event when a backup succeeded, a Warning when it failed, on
/// the PgBackup (`kubectl describe pgbackup`).
async fn publish(ctx: &Context, backup: &PgBackup, phase: BackupPhase, message: String) {
    let (type_, reason) = match phase {
        BackupPhase::Succeeded => (EventType::Normal, "BackupSucceeded"),
        _ => (EventType::Warning, "BackupFailed"),
    };
    ctx.metrics.operation_event(reason);
    let event = Event {
        type_,
        reason: reason.into(),
        note: note(message),
        action: "Backup".into(),
        secondary: None,
    };
    ctx.publish(&backup.object_ref(&()), event).await;
}

/// Reconcile one PgBackup.
pub async fn reconcile(obj: Arc<DeserializeGuard<PgBackup>>, ctx: Arc<Context>) -> Result<Action> {
    let backup = match &obj.0 {
        Ok(b) => b.clone(),
        Err(invalid) => {
            warn!(name = ?invalid.metadata.name, "a PgBackup that cannot be read is ignored");
            return Ok(Action::await_change());
        }
    };
    let span = info_span!("backup", pgbackup = %backup.name_any());
    reconcile_backup(&backup, &ctx).instrument(span).await
}

async fn reconcile_backup(backup: &PgBackup, ctx: &Context) -> Result<Action> {
    let prior = backup.status.clone().unwrap_or_default();
    if matches!(
        prior.phase,
        Some(BackupPhase::Succeeded | BackupPhase::Failed)
    ) || backup.metadata.deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    match gate(backup, &prior, ctx).await? {
        BackupGate::Fail(message) => {
            info!(%message, "backup refused");
            let next = PgBackupStatus {
                phase: Some(BackupPhase::Failed),
                message: Some(message),
                observed_generation: backup.metadata.generation,
                ..prior.clone()
            };
            write(&ctx.client, backup, &next).await?;
            publish(
                ctx,
                backup,
                BackupPhase::Failed,
                next.message.clone().unwrap_or_default(),
            )
            .await;
            Ok(Action::await_change())
        }
        BackupGate::Wait(message) => {
            let mut next = pending(&prior, message);
            next.observed_generation = backup.metadata.generation;
            write(&ctx.client, backup, &next).await?;
            Ok(Action::requeue(WAIT))
        }
        BackupGate::Go => run_backup(backup, &prior, ctx).await,
    }
}

/// Read the instance (and the other PgBackups) and decide whether the
/// backup may run.
async fn gate(backup: &PgBackup, prior: &PgBackupStatus, ctx: &Context) -> Result<BackupGate> {
    let ns = backup.namespace().unwrap_or_else(|| "default".into());
    let target = &backup.spec.instance_ref.name;
    let instance = Api::<PgInstance>::namespaced(ctx.client.clone(), &ns)
        .get_opt(target)
        .await
        .map_err(|source| Error::Observe {
            kind: "PgInstance".into(),
            name: target.clone(),
            source,
        })?;
    if prior.phase == Some(BackupPhase::Running) && instance.is_some() {
        // Under way: resume whatever the instance does now.
        return Ok(BackupGate::Go);
    }
    let others = Api::<PgBackup>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Observe {
            kind: "PgBackup".into(),
            name: "*".into(),
            source,
        })?
        .items;
    Ok(backup_gate(backup, instance.as_ref(), &others))
}

/// The Running status written before the exec.
fn running_status(
    backup: &PgBackup,
    prior: &PgBackupStatus,
    id: &str,
    pod: &str,
) -> PgBackupStatus {
    // A retry of this same backup (the lock was held, the pod could not be
    // reached) keeps the message that says why: alternating between two
    // texts would make each write a watch event that starts this reconcile,
    // and the exec, again at once (seen against a real API server: 130
    // execs in 30 s).
    let retry = prior.phase == Some(BackupPhase::Running) && prior.backup_id.as_deref() == Some(id);
    let now = Timestamp::now();
    PgBackupStatus {
        phase: Some(BackupPhase::Running),
        started_at: prior.started_at.clone().or_else(|| {
            Some(
                Timestamp::from_second(now.as_second())
                    .unwrap_or(now)
                    .to_string(),
            )
        }),
        backup_id: Some(id.to_string()),
        message: if retry {
            prior.message.clone()
        } else {
            Some(format!("backup.sh --id {id} runs in pod {pod}"))
        },
        observed_generation: backup.metadata.generation,
        ..prior.clone()
    }
}

/// Write Running, exec `backup.sh` in the instance's pod, and write what
/// it reported.
async fn run_backup(backup: &PgBackup, prior: &PgBackupStatus, ctx: &Context) -> Result<Action> {
    let ns = backup.namespace().unwrap_or_else(|| "default".into());
    let id = backup.uid().unwrap_or_else(|| backup.name_any());
    let pod = names::pod(&backup.spec.instance_ref.name, 0);
    let running = running_status(backup, prior, &id, &pod);
    write(&ctx.client, backup, &running).await?;
    let mut current = backup.clone();
    current.status = Some(running.clone());
    let command = backup_command(&id, backup.spec.permanent.unwrap_or(false));
    let out = match ctx.exec.exec(&ns, &pod, command, BACKUP_TIMEOUT).await {
        Ok(out) => out,
        Err(e) => {
            let text = chain(&e);
            warn!(error = %text, "backup exec failed; retrying with the same id");
            let next = PgBackupStatus {
                message: Some(format!(
                    "could not reach pod {pod} ({text}); retrying with the same id"
                )),
                ..running
            };
            write(&ctx.client, &current, &next).await?;
            return Ok(Action::requeue(WAIT));
        }
    };
    let next = match image_state::last_json_object::<BackupResult>(&out.stdout) {
        Ok(result) if result.id == id => {
            backup_status_from_result(&running, &result, out.exit_code)
        }
        _ => match backup_status_without_result(&running, out.exit_code, &out.stderr) {
            Some(s) => s,
            None => {
                let next = PgBackupStatus {
                    message: Some(format!(
                        "another backup holds the lock in pod {pod} (a scheduled one, or this one still running); checking again in {} s",
                        WAIT.as_secs()
                    )),
                    ..running
                };
                write(&ctx.client, &current, &next).await?;
                return Ok(Action::requeue(WAIT));
            }
        },
    };
    info!(phase = ?next.phase, message = ?next.message, "backup finished");
    write(&ctx.client, &current, &next).await?;
    if let Some(phase @ (BackupPhase::Succeeded | BackupPhase::Failed)) = next.phase {
        publish(ctx, backup, phase, next.message.clone().unwrap_or_default()).await;
    }
    Ok(match next.phase {
        Some(BackupPhase::Running) => Action::requeue(WAIT),
        _ => Action::await_change(),
    })
}

/// Retry after an API error.
pub fn error_policy(
    _obj: Arc<DeserializeGuard<PgBackup>>,
    err: &Error,
    _ctx: Arc<Context>,
) -> Action {
    warn!(error = %chain(err), "PgBackup reconcile failed");
    Action::requeue(backoff(3, err.api_status()))
}

/// The PgBackups to look at again when `instance` changes: those in its
/// namespace whose `spec.instanceRef` names it and that have not finished
/// (a finished or deleted PgBackup, or one that cannot be read, has
/// nothing left to do).
pub fn backups_of_instance(
    instance: &impl Resource,
    backups: &[Arc<DeserializeGuard<PgBackup>>],
) -> Vec<ObjectRef<DeserializeGuard<PgBackup>>> {
    let ns = instance.meta().namespace.as_deref();
    let Some(name) = instance.meta().name.as_deref() else {
        return Vec::new();
    };
    backups
        .iter()
        .filter(|guard| match &guard.0 {
            Ok(b) => {
                b.metadata.namespace.as_deref() == ns
                    && b.spec.instance_ref.name == name
                    && b.metadata.deletion_timestamp.is_none()
                    && !matches!(
                        b.status.as_ref().and_then(|s| s.phase),
                        Some(BackupPhase::Succeeded | BackupPhase::Failed)
                    )
            }
            Err(_) => false,
        })
        .map(|guard| ObjectRef::from_obj(guard.as_ref()))
        .collect()
}

/// Run the PgBackup controller for one namespace (or all) until shutdown.
/// It watches PgBackups, and PgInstances in the same scope: an instance
/// event wakes the PgBackups that wait for it ([`backups_of_instance`],
/// looked up in the controller's own PgBackup cache).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::new(
        scoped_api::<DeserializeGuard<PgBackup>>(&ctx.client, &namespace),
        watcher::Config::default(),
    );
    let backups = controller.store();
    controller
        .watches(
            scoped_api::<DeserializeGuard<PgInstance>>(&ctx.client, &namespace),
            watcher::Config::default(),
            move |instance| backups_of_instance(&instance, &backups.state()),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %chain(&e), "backup controller event");
            }
        })
        .await;
}
