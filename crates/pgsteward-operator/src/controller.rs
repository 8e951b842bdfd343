//! The reconcile of one PgInstance: observe → validate → build → apply →
//! status, wrapped in a finalizer for cleanup, with events, metrics and
//! per-instance backoff on errors.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{ConfigMap, ObjectReference, Secret, Service},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::DeleteParams,
    core::error_boundary::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        finalizer::{self, finalizer},
        watcher,
    },
};
use pgsteward_api::{PgInstance, instance::condition_type};
use rand::RngExt;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    apply,
    build::{self, Settings, names},
    error::{Error, Result, chain},
    metrics::Metrics,
    observe, status, validate,
};

/// The finalizer that runs cleanup before a PgInstance goes away.
pub const FINALIZER: &str = "pgsteward.io/cleanup";
/// The label every owned object carries; owned watches select on it.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=pgsteward";
/// Requeue after a successful reconcile of a ready instance (a resync).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Requeue while an instance is not ready yet, to refresh its messages.
pub const RECHECK: Duration = Duration::from_secs(30);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per instance (`namespace/name`), for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: "pgsteward".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            failures: Mutex::default(),
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

/// Events notes are limited to 1 kB.
fn note(text: String) -> Option<String> {
    let mut text = text;
    if text.len() > 1000 {
        let mut cut = 1000;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    Some(text)
}

async fn publish(
    ctx: &Context,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ev: Event,
) {
    if let Err(e) = ctx.recorder.publish(&ev, &reference(meta)).await {
        warn!(error = %chain(&e), reason = %ev.reason, "could not publish event");
    }
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
                ctx.failures.lock().expect("failures lock").remove(&key);
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
    let failures = {
        let mut map = ctx.failures.lock().expect("failures lock");
        let n = map.entry(key_of(meta)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    Action::requeue(backoff(failures, err.api_status()))
}

/// The delay before retry number `failures` (1-based).
pub fn backoff(failures: u32, http_status: Option<u16>) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    let mut secs = (5u64 << exp).min(300) as f64;
    if http_status == Some(429) {
        secs = secs.max(60.0);
    }
    let jitter = rand::rng().random_range(0.8..1.2);
    Duration::from_secs_f64(secs * jitter)
}

async fn reconcile_instance(instance: Arc<PgInstance>, ctx: &Context) -> Result<Action> {
    let api: Api<PgInstance> = Api::namespaced(
        ctx.client.clone(),
        &instance.namespace().unwrap_or_else(|| "default".into()),
    );
    finalizer(&api, FINALIZER, instance, |event| async move {
        match event {
            finalizer::Event::Apply(instance) => apply_instance(&instance, ctx).await,
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

/// observe → validate → build → apply → status.
pub async fn apply_instance(instance: &PgInstance, ctx: &Context) -> Result<Action> {
    let observed = observe::observe(&ctx.client, instance).await?;
    let now = Timestamp::now();
    match validate::validate(instance, &observed) {
        Ok(valid) => {
            let password = if instance.spec.superuser_secret_ref.is_none()
                && observed.generated_superuser_secret.is_none()
            {
                new_password()
            } else {
                String::new()
            };
            let desired = build::build(instance, &valid, &observed, &ctx.settings, &password);
            let applied = apply::apply(&ctx.client, desired, &observed).await?;
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
            let health = status::Health::of_applied(&applied, &observed);
            let image = applied
                .statefulset
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_else(|| ctx.settings.image_for(instance));
            let next = status::desired_status(instance, &health, None, Some(&image), now);
            write_status(instance, &next, ctx).await?;
            let ready = health.ready && health.rolled_out;
            Ok(Action::requeue(if ready { RESYNC } else { RECHECK }))
        }
        Err(problems) => {
            let health = status::Health::of_observed(&observed);
            let next = status::desired_status(instance, &health, Some(&problems), None, now);
            write_status(instance, &next, ctx).await?;
            Err(Error::InvalidSpec(problems))
        }
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
    for (c, before) in status::transitions(&prior, &next.conditions) {
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
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = || watcher::Config::default().labels(MANAGED_SELECTOR);
    info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "controller starting"
    );
    Controller::new(
        api::<DeserializeGuard<PgInstance>>(&client, &namespace),
        watcher::Config::default(),
    )
    .owns(
        api::<DeserializeGuard<StatefulSet>>(&client, &namespace),
        owned(),
    )
    .owns(
        api::<DeserializeGuard<Service>>(&client, &namespace),
        owned(),
    )
    .owns(
        api::<DeserializeGuard<ConfigMap>>(&client, &namespace),
        owned(),
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
