//! Step 1, observe: read what exists for one instance. Only GETs, one per
//! object, so the exact requests a reconcile makes are easy to state.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service},
};
use kube::{Api, Client, Resource, ResourceExt};
use pgsteward_api::PgInstance;
use serde::de::DeserializeOwned;

use crate::{
    error::{Error, Result},
    names,
};

/// Everything the later steps need to know about the cluster.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub config_map: Option<ConfigMap>,
    /// `<name>-superuser`, when the spec names no Secret and it exists.
    pub generated_superuser_secret: Option<Secret>,
    pub service: Option<Service>,
    pub headless_service: Option<Service>,
    pub statefulset: Option<StatefulSet>,
    /// `data-<name>-0`, the StatefulSet's claim.
    pub data_claim: Option<PersistentVolumeClaim>,
    pub pod: Option<Pod>,
    /// Every Secret the spec refers to, by name (None: it does not exist).
    pub referenced_secrets: BTreeMap<String, Option<Secret>>,
    /// Every other claim the spec refers to (file backups), by name.
    pub referenced_claims: BTreeMap<String, Option<PersistentVolumeClaim>>,
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

/// Read the instance's objects and whatever its spec refers to.
pub async fn observe(client: &Client, instance: &PgInstance) -> Result<Observed> {
    let ns = instance.namespace().unwrap_or_else(|| "default".into());
    let name = instance.name_any();
    let mut observed = Observed {
        config_map: get(client, &ns, &names::config_map(&name)).await?,
        generated_superuser_secret: None,
        service: get(client, &ns, &names::service(&name)).await?,
        headless_service: get(client, &ns, &names::headless_service(&name)).await?,
        statefulset: get(client, &ns, &names::statefulset(&name)).await?,
        data_claim: None,
        pod: None,
        referenced_secrets: BTreeMap::new(),
        referenced_claims: BTreeMap::new(),
    };
    if instance.spec.superuser_secret_ref.is_none() {
        observed.generated_superuser_secret =
            get(client, &ns, &names::superuser_secret(&name)).await?;
    }
    if observed.statefulset.is_some() {
        observed.data_claim = get(client, &ns, &names::data_claim(&name)).await?;
        observed.pod = get(client, &ns, &names::pod(&name)).await?;
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
    Ok(observed)
}
