//! What both controllers share: the [`Context`] every reconcile gets, event
//! publishing, retry backoff, the scope of their watches and the reference a
//! watch mapper returns. The PgInstance controller ([`crate::controller`])
//! and the PgBackup controller ([`crate::backups`]) import this, never each
//! other. It knows nothing of the reconcile pipeline.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client, Resource,
    core::error_boundary::DeserializeGuard,
    runtime::{
        events::{Event, Recorder, Reporter},
        reflector::ObjectRef,
    },
};
use pgsteward_api::PgInstance;
use rand::RngExt;
use tracing::warn;

use crate::{
    build::Settings,
    error::chain,
    exec::{KubeExec, PodExec},
    metrics::Metrics,
};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// How operations reach the instance's pod.
    pub exec: Arc<dyn PodExec>,
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
            exec: Arc::new(KubeExec {
                client: client.clone(),
            }),
            client,
            settings,
            metrics,
            failures: Mutex::default(),
        }
    }

    /// Reach pods through `exec` instead of kube's websocket exec (tests).
    pub fn with_exec(mut self, exec: Arc<dyn PodExec>) -> Self {
        self.exec = exec;
        self
    }

    /// Count one more consecutive failure of `key`; returns the count.
    pub fn failed(&self, key: &str) -> u32 {
        let mut map = self.failures.lock().expect("failures lock");
        let n = map.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// `key` reconciled: its next failure is the first again.
    pub fn succeeded(&self, key: &str) {
        self.failures.lock().expect("failures lock").remove(key);
    }

    /// Publish `event` about `reference`; a failure is logged, not returned
    /// (an event is never worth failing a reconcile for).
    pub async fn publish(&self, reference: &ObjectReference, event: Event) {
        if let Err(e) = self.recorder.publish(&event, reference).await {
            warn!(error = %chain(&e), reason = %event.reason, "could not publish event");
        }
    }
}

/// Events notes are limited to 1 kB.
pub fn note(text: String) -> Option<String> {
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

/// The delay before retry number `failures` (1-based): exponential from 5 s
/// to 5 min, at least a minute on HTTP 429, with ±20 % jitter so retries
/// spread out.
pub fn backoff(failures: u32, http_status: Option<u16>) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    let mut secs = (5u64 << exp).min(300) as f64;
    if http_status == Some(429) {
        secs = secs.max(60.0);
    }
    let jitter = rand::rng().random_range(0.8..1.2);
    Duration::from_secs_f64(secs * jitter)
}

/// An `Api` in the namespace the controllers watch, or in all of them.
pub fn scoped_api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The reference a watch mapper returns for the PgInstance `name` in
/// `namespace`.
pub fn instance_ref(
    name: &str,
    namespace: Option<&str>,
) -> ObjectRef<DeserializeGuard<PgInstance>> {
    let r = ObjectRef::new(name);
    match namespace {
        Some(ns) => r.within(ns),
        None => r,
    }
}
