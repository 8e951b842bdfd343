//! Step 2, validate: what the CRD's CEL rules cannot check, because it
//! depends on other objects or on what already ran. No client here: it works
//! on the spec and the observation.
//!
//! Owns [`ValidSpec`] (the values later steps compute from) and the problems
//! a person must fix. May use `observe` and leaf modules; writes nothing.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use pgsteward_api::{
    PgInstance,
    instance::SUPPORTED_MAJORS,
    quantity::{MAX_VOLUME_BYTES, Quantity, volume_size},
};

use crate::{
    error::{Problem, Problems},
    observe::{self, Observed},
};

/// A spec that passed validation, with the values later steps compute from.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    /// `spec.storage.size`, parsed.
    pub data_size: Quantity,
    /// The volume to request: `ceil(sizeFactor × size)`.
    pub volume_size: Quantity,
}

fn secret_has_key(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key))
}

/// Check the spec against the observation.
pub fn validate(instance: &PgInstance, observed: &Observed) -> Result<ValidSpec, Problems> {
    let mut problems = Vec::new();
    check_name_and_version(instance, &mut problems);
    let sizes = check_storage(instance, &mut problems);
    check_secrets(instance, observed, &mut problems);
    check_claims(instance, observed, &mut problems);
    match (problems.is_empty(), sizes) {
        (true, Some((data_size, volume_size))) => Ok(ValidSpec {
            data_size,
            volume_size,
        }),
        _ => Err(Problems(problems)),
    }
}

/// The name must fit a Service; the major must be supported and not lower
/// than the one that runs.
fn check_name_and_version(instance: &PgInstance, problems: &mut Vec<Problem>) {
    let spec = &instance.spec;
    let name = instance.name_any();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.len() > 52 || name.contains('.')
    {
        problems.push(Problem {
            reason: "InvalidName",
            message: format!(
                "PgInstance name {name:?} cannot name a Service: use at most 52 lower-case letters, digits and '-', starting with a letter; recreate it under such a name"
            ),
        });
    }
    if !SUPPORTED_MAJORS.contains(&spec.postgres_version) {
        problems.push(Problem {
            reason: "UnsupportedVersion",
            message: format!(
                "spec.postgresVersion {} is not supported: use one of {SUPPORTED_MAJORS:?}",
                spec.postgres_version
            ),
        });
    }
    let running = instance.status.as_ref().and_then(|s| s.postgres_version);
    if let Some(running) = running
        && spec.postgres_version < running
    {
        problems.push(Problem {
            reason: "VersionDowngrade",
            message: format!(
                "spec.postgresVersion {} is lower than the running major {running}: set it back to {running} or higher; to run an older major, restore a backup into a new PgInstance",
                spec.postgres_version
            ),
        });
    }
}

/// `storage.size` must parse; `sizeFactor` must leave room for a restore,
/// and their product must be a volume Kubernetes can request. Returns the
/// parsed size and the volume's.
fn check_storage(
    instance: &PgInstance,
    problems: &mut Vec<Problem>,
) -> Option<(Quantity, Quantity)> {
    let spec = &instance.spec;
    let data_size = match Quantity::parse(&spec.storage.size) {
        Ok(q) => Some(q),
        Err(e) => {
            problems.push(Problem {
                reason: "InvalidStorageSize",
                message: format!("spec.storage.size: {e}"),
            });
            None
        }
    };
    if spec.storage.size_factor.is_nan() || spec.storage.size_factor < 2.0 {
        problems.push(Problem {
            reason: "InvalidStorageSize",
            message: format!(
                "spec.storage.sizeFactor {} is below 2.0: a restore needs room for two copies of the data",
                spec.storage.size_factor
            ),
        });
    }
    let factor = spec.storage.size_factor;
    let data_size = data_size?;
    let volume = volume_size(data_size, factor);
    if volume.is_none() && factor >= 2.0 {
        problems.push(Problem {
            reason: "InvalidStorageSize",
            message: format!(
                "spec.storage.sizeFactor {factor:e} × spec.storage.size {:?} is larger than any volume Kubernetes can request ({MAX_VOLUME_BYTES} bytes, just under 8 EiB): lower one of them",
                spec.storage.size
            ),
        });
    }
    Some((data_size, volume?))
}

/// Every Secret the spec names must exist and hold the keys it is read for.
fn check_secrets(instance: &PgInstance, observed: &Observed, problems: &mut Vec<Problem>) {
    let ns = instance.namespace().unwrap_or_default();
    for (name, field) in observe::referenced_secrets(instance) {
        match observed.referenced_secrets.get(&name) {
            Some(Some(secret)) => {
                for key in required_keys(instance, field) {
                    if !secret_has_key(secret, &key) {
                        problems.push(Problem {
                            reason: "SecretKeyNotFound",
                            message: format!(
                                "Secret {ns}/{name} (named by {field}) has no key {key:?}: add it, or point {field} at a Secret that has it"
                            ),
                        });
                    }
                }
                if field == "spec.backup.azure.credentialsSecretRef"
                    && !secret_has_key(secret, "AZURE_STORAGE_ACCESS_KEY")
                    && !secret_has_key(secret, "AZURE_STORAGE_SAS_TOKEN")
                {
                    problems.push(Problem {
                        reason: "SecretKeyNotFound",
                        message: format!(
                            "Secret {ns}/{name} (named by {field}) has neither AZURE_STORAGE_ACCESS_KEY nor AZURE_STORAGE_SAS_TOKEN: add one"
                        ),
                    });
                }
            }
            _ => problems.push(Problem {
                reason: "SecretNotFound",
                message: format!(
                    "Secret {ns}/{name} (named by {field}) does not exist: create it, or change {field}"
                ),
            }),
        }
    }
}

/// Every claim the spec names (file backups) must exist.
fn check_claims(instance: &PgInstance, observed: &Observed, problems: &mut Vec<Problem>) {
    let ns = instance.namespace().unwrap_or_default();
    for (claim, found) in &observed.referenced_claims {
        if found.is_none() {
            problems.push(Problem {
                reason: "ClaimNotFound",
                message: format!(
                    "PersistentVolumeClaim {ns}/{claim} (named by spec.backup.file.claimName) does not exist: create it, or change spec.backup.file"
                ),
            });
        }
    }
}

/// The keys a referenced Secret must hold.
fn required_keys(instance: &PgInstance, field: &str) -> Vec<String> {
    let spec = &instance.spec;
    let backup = spec.backup.as_ref();
    match field {
        "spec.superuserSecretRef" => spec
            .superuser_secret_ref
            .iter()
            .map(|r| r.password_key.clone())
            .collect(),
        "spec.backup.s3.credentialsSecretRef" => backup
            .and_then(|b| b.s3.as_ref())
            .and_then(|s| s.credentials_secret_ref.as_ref())
            .map(|c| vec![c.access_key_id_key.clone(), c.secret_access_key_key.clone()])
            .unwrap_or_default(),
        "spec.backup.gcs.credentialsSecretRef" => backup
            .and_then(|b| b.gcs.as_ref())
            .and_then(|g| g.credentials_secret_ref.as_ref())
            .map(|c| vec![c.key.clone()])
            .unwrap_or_default(),
        "spec.backup.encryptionKeySecretRef" => backup
            .and_then(|b| b.encryption_key_secret_ref.as_ref())
            .map(|c| vec![c.key.clone()])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
