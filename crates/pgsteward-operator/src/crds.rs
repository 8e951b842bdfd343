//! Installing the CRDs (`install-crds`, `run --install-crds`): server-side
//! apply of what crdgen prints, then a wait until each is Established. Used
//! by the binary only.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{conditions, wait::await_condition},
};
use tracing::info;

use crate::names::FIELD_MANAGER;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("failed to apply CustomResourceDefinition {name}")]
    Apply {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("CustomResourceDefinition {name} did not become Established within {seconds} s")]
    NotEstablished { name: String, seconds: u64 },
}

pub async fn install(client: &Client) -> Result<(), InstallError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in pgsteward_api::crds() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|source| InstallError::Apply {
            name: name.clone(),
            source,
        })?;
        let seconds = 30;
        tokio::time::timeout(
            Duration::from_secs(seconds),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| InstallError::NotEstablished {
            name: name.clone(),
            seconds,
        })?
        .map_err(|_| InstallError::NotEstablished {
            name: name.clone(),
            seconds,
        })?;
        info!(crd = %name, "CustomResourceDefinition applied and established");
    }
    Ok(())
}
