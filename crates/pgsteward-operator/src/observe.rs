//! Step 1, observe: read what exists for one instance, and what its pods
//! report of themselves. Only GETs, one per object, then one exec of
//! `pgsteward-status` per running pod (the image's own report, which the API
//! cannot show), so the exact requests a reconcile makes are easy to state.
//!
//! It may use only leaf modules (names, error, exec, image_state, API
//! types); it changes nothing, in the cluster or in a pod.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
};
use kube::{Api, Client, Resource, ResourceExt};
use pgsteward_api::PgInstance;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::{
    error::{Error, Result, chain},
    exec::{CONTAINER, PodExec},
    image_state::{self, StatusReport, TerminationMessage},
    names,
};

/// How long a short exec (`pgsteward-status`, `cat`, `pg_ctl reload`) may
/// take.
pub const SHORT_EXEC: Duration = Duration::from_secs(30);

/// Everything the later steps need to know about the cluster.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub config_map: Option<ConfigMap>,
    /// `<name>-superuser`, when the spec names no Secret and it exists.
    pub generated_superuser_secret: Option<Secret>,
    pub service: Option<Service>,
    pub headless_service: Option<Service>,
    pub statefulset: Option<StatefulSet>,
    /// The StatefulSet's pods, by ordinal (none before it exists).
    pub pods: Vec<ObservedPod>,
    /// Every Secret the spec refers to, by name (None: it does not exist).
    pub referenced_secrets: BTreeMap<String, Option<Secret>>,
    /// Every other claim the spec refers to (file backups), by name.
    pub referenced_claims: BTreeMap<String, Option<PersistentVolumeClaim>>,
}

impl Observed {
    /// The pod operations act on: the only one today (ordinal 0).
    pub fn target_pod(&self) -> Option<&ObservedPod> {
        self.pods.first()
    }
}

/// One pod of the StatefulSet, its claim, and what it says of itself.
#[derive(Clone, Debug, Default)]
pub struct ObservedPod {
    pub ordinal: u32,
    /// The pod's name (it exists or not).
    pub name: String,
    pub pod: Option<Pod>,
    /// `data-<instance>-<ordinal>`, the pod's claim.
    pub data_claim: Option<PersistentVolumeClaim>,
    /// The postgres container, from the pod's status.
    pub container: ContainerState,
    /// `pgsteward-status`, when the container runs and the exec worked.
    pub report: Option<StatusReport>,
}

/// What the pod's status says about the postgres container.
#[derive(Clone, Debug, Default)]
pub struct ContainerState {
    pub running: bool,
    /// The last exit code while it is not running.
    pub exit: Option<i32>,
    /// The image the container was created with.
    pub image: Option<String>,
    /// The results in the termination message of its current or last run
    /// (anything else, such as a message from another image, reads as none).
    pub terminated: TerminationMessage,
}

/// The Secrets a spec refers to, with the field that names each.
pub fn referenced_secrets(instance: &PgInstance) -> Vec<(String, &'static str)> {
    let spec = &instance.spec;
    let mut out = Vec::new();
    if let Some(r) = &spec.superuser_secret_ref {
        out.push((r.name.clone(), "spec.superuserSecretRef"));
    }
    if let Some(b) = &spec.backup {
        if let Some(c) =
            b.s3.as_ref()
                .and_then(|s| s.credentials_secret_ref.as_ref())
        {
            out.push((c.name.clone(), "spec.backup.s3.credentialsSecretRef"));
        }
        if let Some(c) = b
            .gcs
            .as_ref()
            .and_then(|s| s.credentials_secret_ref.as_ref())
        {
            out.push((c.name.clone(), "spec.backup.gcs.credentialsSecretRef"));
        }
        if let Some(c) = b
            .azure
            .as_ref()
            .and_then(|s| s.credentials_secret_ref.as_ref())
        {
            out.push((c.name.clone(), "spec.backup.azure.credentialsSecretRef"));
        }
        if let Some(k) = &b.encryption_key_secret_ref {
            out.push((k.name.clone(), "spec.backup.encryptionKeySecretRef"));
        }
    }
    out
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| Error::Observe {
            kind: K::kind(&()).into_owned(),
            name: name.to_string(),
            source,
        })
}

fn container_state(pod: &Pod) -> ContainerState {
    let status = pod.status.as_ref();
    let phase_running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.image.clone());
    let Some(cs) = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == CONTAINER))
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
    let terminated_results = terminated
        .and_then(|t| t.message.as_deref())
        .and_then(|m| image_state::parse::<TerminationMessage>(m).ok())
        .unwrap_or_default();
    let running = state.is_some_and(|s| s.running.is_some());
    ContainerState {
        running,
        exit: terminated.filter(|_| !running).map(|t| t.exit_code),
        image,
        terminated: terminated_results,
    }
}

/// Run `pgsteward-status` in the pod. None when it cannot run or prints
/// something else: the reconcile goes on without the report.
pub async fn read_report(exec: &dyn PodExec, ns: &str, pod: &str) -> Option<StatusReport> {
    match exec
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

/// Read the instance's objects, whatever its spec refers to, then the report
/// of each pod whose container runs.
pub async fn observe(
    client: &Client,
    exec: &dyn PodExec,
    instance: &PgInstance,
) -> Result<Observed> {
    let ns = instance.namespace().unwrap_or_else(|| "default".into());
    let name = instance.name_any();
    let mut observed = Observed {
        config_map: get(client, &ns, &names::config_map(&name)).await?,
        generated_superuser_secret: None,
        service: get(client, &ns, &names::service(&name)).await?,
        headless_service: get(client, &ns, &names::headless_service(&name)).await?,
        statefulset: get(client, &ns, &names::statefulset(&name)).await?,
        pods: Vec::new(),
        referenced_secrets: BTreeMap::new(),
        referenced_claims: BTreeMap::new(),
    };
    if instance.spec.superuser_secret_ref.is_none() {
        observed.generated_superuser_secret =
            get(client, &ns, &names::superuser_secret(&name)).await?;
    }
    if observed.statefulset.is_some() {
        for ordinal in names::ordinals(instance) {
            let pod_name = names::pod(&name, ordinal);
            let data_claim = get(client, &ns, &names::data_claim(&name, ordinal)).await?;
            let pod: Option<Pod> = get(client, &ns, &pod_name).await?;
            observed.pods.push(ObservedPod {
                container: pod.as_ref().map(container_state).unwrap_or_default(),
                ordinal,
                name: pod_name,
                pod,
                data_claim,
                report: None,
            });
        }
    }
    for (secret, _) in referenced_secrets(instance) {
        if let std::collections::btree_map::Entry::Vacant(entry) =
            observed.referenced_secrets.entry(secret.clone())
        {
            entry.insert(get(client, &ns, &secret).await?);
        }
    }
    if let Some(claim) = instance
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.file.as_ref())
        .and_then(|f| f.claim_name.clone())
    {
        let found = get(client, &ns, &claim).await?;
        observed.referenced_claims.insert(claim, found);
    }
    for pod in observed.pods.iter_mut().filter(|p| p.container.running) {
        pod.report = read_report(exec, &ns, &pod.name).await;
    }
    Ok(observed)
}
