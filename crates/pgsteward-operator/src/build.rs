//! Step 3, build: pure functions from a validated spec and the observation to
//! every object the instance should have, for every pod `names::ordinals`
//! lists. No I/O here; `apply` writes what this returns.
//!
//! Owns the shape of every object, the pod's environment and the [`Run`]
//! type in which `act` says what the pod runs. May use `observe`, `validate`
//! and leaf modules; never `act` (it takes act's decision as a value).

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{
            StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
            StatefulSetUpdateStrategy,
        },
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
            EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, KeyToPath, Lifecycle,
            LifecycleHandler, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
            SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource, SecurityContext,
            Service, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity as K8sQuantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};
use pgsteward_api::{PgInstance, instance::BackupSpec, quantity::Quantity};

use crate::{
    names::{self, DATA_VOLUME},
    observe::Observed,
    validate::ValidSpec,
};

/// Where the image keeps everything persistent (`PGSTEWARD_VOLUME`).
pub const VOLUME_PATH: &str = "/var/lib/postgresql";
/// The image's config directory; conf.d is mounted below it.
pub const CONF_D_PATH: &str = "/etc/postgresql/conf.d";
/// The Unix socket directory (`PGSTEWARD_RUN_DIR`).
pub const RUN_DIR: &str = "/var/run/postgresql";
/// Where a GCS service-account key is mounted.
pub const GCS_KEY_DIR: &str = "/etc/pgsteward/gcs";
/// The PostgreSQL port.
pub const PORT: i32 = 5432;
/// uid and gid of `postgres` in the official image.
pub const POSTGRES_UID: i64 = 999;
/// Seconds a pod gets to stop: the preStop fast shutdown (which writes a
/// shutdown checkpoint) has `PRESTOP_TIMEOUT` of them.
pub const TERMINATION_GRACE_SECONDS: i64 = 120;
pub const PRESTOP_TIMEOUT: i64 = 100;
/// The startup probe allows this long for the first start, crash recovery or
/// WAL replay: 24 hours. A database that is replaying WAL must not be killed.
/// It looks every 2 s: the pod turns Ready that much sooner after each
/// restart (an upgrade's downtime included; 10 s added up to 10 s).
pub const STARTUP_PERIOD_SECONDS: i32 = 2;
pub const STARTUP_FAILURE_THRESHOLD: i32 = 43_200;
/// Readiness once started: every 5 s, unready after 3 misses.
pub const READINESS_PERIOD_SECONDS: i32 = 5;

/// Operator-wide settings that shape what is built.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Repository of the default image, e.g. `ghcr.io/pgsteward/postgres`.
    pub image_repository: String,
    /// Tag suffix after the major, e.g. `standard-trixie`.
    pub image_variant: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            image_repository: "ghcr.io/pgsteward/postgres".into(),
            image_variant: "standard-trixie".into(),
        }
    }
}

impl Settings {
    /// The image an instance runs: the spec's override, or
    /// `<repository>:<major>-<variant>`.
    pub fn image_for(&self, instance: &PgInstance) -> String {
        instance.spec.image.clone().unwrap_or_else(|| {
            format!(
                "{}:{}-{}",
                self.image_repository, instance.spec.postgres_version, self.image_variant
            )
        })
    }
}

/// Every object the instance should have. `apply` destructures this without
/// `..`, so adding a field here fails to compile until it is applied.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredObjects {
    pub config_map: ConfigMap,
    /// Only when the operator must create the password: never when the
    /// Secret exists or the spec names one, so an existing password is
    /// never overwritten.
    pub superuser_secret: Option<Secret>,
    pub service: Service,
    pub headless_service: Service,
    pub statefulset: StatefulSet,
    /// A larger request on each pod's existing data claim, when
    /// `storage.size` grew (a StatefulSet's claim templates cannot change).
    pub data_claim_expansions: Vec<PersistentVolumeClaim>,
}

/// What the pod runs, as `act` decided: normally the spec's major and
/// image; the previous ones while a failed upgrade is rolled back. Plus the
/// requests the image reads at start (an upgrade id, an in-place restore).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub major: u32,
    pub image: String,
    /// `PGSTEWARD_UPGRADE_ID` while an upgrade is under way.
    pub upgrade_id: Option<String>,
    /// An in-place restore request (`spec.restore`, once `act` let it run).
    pub restore: Option<RestoreRequest>,
}

/// The image's in-place restore request (docs/image-contract.md, Requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRequest {
    pub id: String,
    pub target: String,
    pub target_value: Option<String>,
    pub backup: String,
}

impl RestoreRequest {
    pub fn of(spec: &pgsteward_api::instance::RestoreSpec) -> Self {
        let (target, value) = spec.target.kind_and_value();
        Self {
            id: spec.request_id.clone(),
            target: target.into(),
            target_value: value.map(String::from),
            backup: spec.backup_name.clone().unwrap_or_else(|| "LATEST".into()),
        }
    }
}

impl Run {
    /// The spec's major and image, no request.
    pub fn from_spec(instance: &PgInstance, settings: &Settings) -> Self {
        Self {
            major: instance.spec.postgres_version,
            image: settings.image_for(instance),
            upgrade_id: None,
            restore: None,
        }
    }
}

/// Build every desired object. `new_password` is used only when the
/// superuser Secret has to be created.
pub fn build(
    instance: &PgInstance,
    valid: &ValidSpec,
    observed: &Observed,
    settings: &Settings,
    new_password: &str,
) -> DesiredObjects {
    build_with(
        instance,
        valid,
        observed,
        new_password,
        &Run::from_spec(instance, settings),
    )
}

/// [`build`] for what `act` decided the pod runs.
pub fn build_with(
    instance: &PgInstance,
    valid: &ValidSpec,
    observed: &Observed,
    new_password: &str,
    run: &Run,
) -> DesiredObjects {
    let name = instance.name_any();
    let needs_secret = instance.spec.superuser_secret_ref.is_none()
        && observed.generated_superuser_secret.is_none();
    DesiredObjects {
        config_map: config_map(instance),
        superuser_secret: needs_secret.then(|| superuser_secret(instance, new_password)),
        service: service(instance, false),
        headless_service: service(instance, true),
        statefulset: statefulset(instance, valid, observed, run),
        data_claim_expansions: data_claim_expansions(&name, instance, valid, observed),
    }
}

/// Labels on every owned object.
pub fn labels(instance: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(instance);
    l.insert("app.kubernetes.io/managed-by".into(), "pgsteward".into());
    l.insert("app.kubernetes.io/component".into(), "database".into());
    l
}

/// The labels a Service and the StatefulSet select pods by.
pub fn selector_labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "pgsteward-postgres".into()),
        ("app.kubernetes.io/instance".into(), instance.into()),
    ])
}

/// The owner reference to the instance: GC removes the object with it.
fn owner(instance: &PgInstance) -> OwnerReference {
    instance
        .controller_owner_ref(&())
        .expect("a PgInstance read from the API has a name and uid")
}

fn meta(instance: &PgInstance, name: String, owned: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: instance.namespace(),
        labels: Some(labels(&instance.name_any())),
        owner_references: owned.then(|| vec![owner(instance)]),
        ..Default::default()
    }
}

// ---------------------------------------------------------------- conf.d

/// Quote a value for postgresql.conf: single quotes, with `'` doubled and
/// `\` doubled (the file parser reads backslash escapes inside quotes).
pub fn quote_conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The conf.d files: the slow-query threshold, then the user's parameters.
/// Both files are always present so the mount never changes shape.
pub fn conf_d(instance: &PgInstance) -> BTreeMap<String, String> {
    let header = format!(
        "# Written by pgsteward from PgInstance {}/{}; edits here are overwritten.\n",
        instance.namespace().unwrap_or_default(),
        instance.name_any()
    );
    let slow = match &instance.spec.slow_query_log {
        Some(s) => format!(
            "log_min_duration_statement = {}\n",
            quote_conf_value(&format!("{}ms", s.threshold_ms))
        ),
        None => format!("log_min_duration_statement = {}\n", quote_conf_value("-1")),
    };
    let mut params = header.clone();
    if let Some(config) = &instance.spec.config {
        for (k, v) in &config.parameters {
            params.push_str(&format!("{k} = {}\n", quote_conf_value(v)));
        }
    }
    BTreeMap::from([
        (
            "00-slow-query-log.conf".to_string(),
            format!("{header}{slow}"),
        ),
        ("10-parameters.conf".to_string(), params),
    ])
}

fn config_map(instance: &PgInstance) -> ConfigMap {
    ConfigMap {
        metadata: meta(instance, names::config_map(&instance.name_any()), true),
        data: Some(conf_d(instance)),
        ..Default::default()
    }
}

// ---------------------------------------------------------------- Secret

fn superuser_secret(instance: &PgInstance, password: &str) -> Secret {
    // Not owned: the password belongs to the data, which outlives the
    // instance unless storage.deleteClaimOnDelete is set (cleanup then
    // deletes it).
    Secret {
        metadata: meta(
            instance,
            names::superuser_secret(&instance.name_any()),
            false,
        ),
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(BTreeMap::from([
            ("username".to_string(), ByteString(b"postgres".to_vec())),
            (
                "password".to_string(),
                ByteString(password.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

/// The Secret and key the superuser password comes from.
pub fn superuser_secret_key(instance: &PgInstance) -> (String, String) {
    match &instance.spec.superuser_secret_ref {
        Some(r) => (r.name.clone(), r.password_key.clone()),
        None => (
            names::superuser_secret(&instance.name_any()),
            "password".into(),
        ),
    }
}

// ---------------------------------------------------------------- Services

fn service(instance: &PgInstance, headless: bool) -> Service {
    let name = instance.name_any();
    let svc_name = if headless {
        names::headless_service(&name)
    } else {
        names::service(&name)
    };
    Service {
        metadata: meta(instance, svc_name, true),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: headless.then(|| "None".into()),
            publish_not_ready_addresses: headless.then_some(true),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("postgres".into()),
                port: PORT,
                target_port: Some(IntOrString::String("postgres".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------- storage

fn current_template_storage(observed: &Observed) -> Option<(String, Option<String>)> {
    let sts = observed.statefulset.as_ref()?;
    let t = sts
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some(DATA_VOLUME))?;
    let spec = t.spec.as_ref()?;
    let size = spec
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?
        .0
        .clone();
    Some((size, spec.storage_class_name.clone()))
}

/// A larger request on each existing data claim, when `storage.size` grew.
fn data_claim_expansions(
    name: &str,
    instance: &PgInstance,
    valid: &ValidSpec,
    observed: &Observed,
) -> Vec<PersistentVolumeClaim> {
    observed
        .pods
        .iter()
        .filter_map(|pod| {
            let claim = pod.data_claim.as_ref()?;
            let current = claim
                .spec
                .as_ref()?
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")
                .and_then(|q| Quantity::parse(&q.0).ok())?;
            (valid.volume_size > current).then(|| PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(names::data_claim(name, pod.ordinal)),
                    namespace: instance.namespace(),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            K8sQuantity(valid.volume_size.to_string()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .collect()
}

// ---------------------------------------------------------------- env

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn env_secret(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The WAL-G and schedule environment for `backup`. Credentials only ever
/// appear as `secretKeyRef`s (or, for GCS, a mounted key file).
pub fn backup_env(backup: &BackupSpec) -> Vec<EnvVar> {
    let mut out = Vec::new();
    if let Some(s3) = &backup.s3 {
        out.push(env("WALG_S3_PREFIX", &s3.prefix));
        if let Some(e) = &s3.endpoint {
            out.push(env("AWS_ENDPOINT", e));
        }
        if let Some(r) = &s3.region {
            out.push(env("AWS_REGION", r));
        }
        if let Some(p) = s3.force_path_style {
            out.push(env("AWS_S3_FORCE_PATH_STYLE", p.to_string()));
        }
        if let Some(c) = &s3.credentials_secret_ref {
            out.push(env_secret(
                "AWS_ACCESS_KEY_ID",
                &c.name,
                &c.access_key_id_key,
                false,
            ));
            out.push(env_secret(
                "AWS_SECRET_ACCESS_KEY",
                &c.name,
                &c.secret_access_key_key,
                false,
            ));
        }
    }
    if let Some(gcs) = &backup.gcs {
        out.push(env("WALG_GS_PREFIX", &gcs.prefix));
        if let Some(c) = &gcs.credentials_secret_ref {
            out.push(env(
                "GOOGLE_APPLICATION_CREDENTIALS",
                format!("{GCS_KEY_DIR}/{}", c.key),
            ));
        }
    }
    if let Some(az) = &backup.azure {
        out.push(env("WALG_AZ_PREFIX", &az.prefix));
        out.push(env("AZURE_STORAGE_ACCOUNT", &az.storage_account));
        if let Some(c) = &az.credentials_secret_ref {
            out.push(env_secret(
                "AZURE_STORAGE_ACCESS_KEY",
                &c.name,
                "AZURE_STORAGE_ACCESS_KEY",
                true,
            ));
            out.push(env_secret(
                "AZURE_STORAGE_SAS_TOKEN",
                &c.name,
                "AZURE_STORAGE_SAS_TOKEN",
                true,
            ));
        }
    }
    if let Some(file) = &backup.file {
        out.push(env("WALG_FILE_PREFIX", &file.path));
    }
    if let Some(c) = backup.compression {
        out.push(env("WALG_COMPRESSION_METHOD", c.as_str()));
    }
    if let Some(k) = &backup.encryption_key_secret_ref {
        out.push(env_secret("WALG_LIBSODIUM_KEY", &k.name, &k.key, false));
    }
    if let Some(s) = &backup.schedule {
        out.push(env("PGSTEWARD_BACKUP_SCHEDULE", s.trim()));
    }
    if let Some(r) = &backup.retention {
        out.push(env(
            "PGSTEWARD_BACKUP_RETAIN_FULL",
            r.full_backups.to_string(),
        ));
    }
    out
}

/// The request id of `spec.bootstrap.recovery`: fixed per instance (its
/// uid), so the image runs it once, on the empty volume of the first start.
pub fn bootstrap_request_id(instance: &PgInstance) -> Option<String> {
    instance
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.recovery.as_ref())
        .map(|_| format!("bootstrap-{}", instance.uid().unwrap_or_default()))
}

/// The image's bootstrap-restore request for `spec.bootstrap.recovery`.
pub fn bootstrap_env(instance: &PgInstance) -> Vec<EnvVar> {
    let Some(recovery) = instance
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.recovery.as_ref())
    else {
        return Vec::new();
    };
    let (target, value) = recovery.target.kind_and_value();
    let mut out = vec![
        env(
            "PGSTEWARD_RESTORE_ID",
            bootstrap_request_id(instance).unwrap_or_default(),
        ),
        env(
            "PGSTEWARD_RESTORE_MODE",
            if recovery.source_prefix.is_some() {
                "clone"
            } else {
                "bootstrap"
            },
        ),
        env("PGSTEWARD_RESTORE_TARGET", target),
    ];
    if let Some(v) = value {
        out.push(env("PGSTEWARD_RESTORE_TARGET_VALUE", v));
    }
    out.push(env(
        "PGSTEWARD_RESTORE_BACKUP",
        recovery.backup_name.as_deref().unwrap_or("LATEST"),
    ));
    if let Some(p) = &recovery.source_prefix {
        out.push(env("PGSTEWARD_RESTORE_SOURCE_PREFIX", p));
    }
    out
}

/// The postgres container's termination message (Kubernetes' default
/// path, named so the image and the pod agree on it).
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The container's whole environment, in a stable order.
pub fn container_env(instance: &PgInstance) -> Vec<EnvVar> {
    container_env_for(instance, &Run::from_spec(instance, &Settings::default()))
}

/// The environment for what `act` decided: PGDATA of the major that runs,
/// and the upgrade or in-place restore request.
pub fn container_env_for(instance: &PgInstance, run: &Run) -> Vec<EnvVar> {
    let major = run.major;
    let (secret, key) = superuser_secret_key(instance);
    let mut out = vec![
        env("PGDATA", format!("{VOLUME_PATH}/{major}/docker")),
        env("PGSTEWARD_MANAGED", "1"),
        // The image keeps its latest upgrade result here, so it outlives a
        // container that exits before `pgsteward-status` can be exec'd.
        env("PGSTEWARD_TERMINATION_LOG", TERMINATION_MESSAGE_PATH),
        env("POSTGRES_USER", "postgres"),
        env_secret("POSTGRES_PASSWORD", &secret, &key, false),
    ];
    if let Some(b) = &instance.spec.backup {
        out.extend(backup_env(b));
    }
    if let Some(id) = &run.upgrade_id {
        out.push(env("PGSTEWARD_UPGRADE_ID", id));
    }
    match &run.restore {
        // The bootstrap request ran on the first start; an in-place request
        // replaces it.
        Some(r) => {
            out.push(env("PGSTEWARD_RESTORE_ID", &r.id));
            out.push(env("PGSTEWARD_RESTORE_MODE", "in-place"));
            out.push(env("PGSTEWARD_RESTORE_TARGET", &r.target));
            if let Some(v) = &r.target_value {
                out.push(env("PGSTEWARD_RESTORE_TARGET_VALUE", v));
            }
            out.push(env("PGSTEWARD_RESTORE_BACKUP", &r.backup));
        }
        None => out.extend(bootstrap_env(instance)),
    }
    out
}

// ---------------------------------------------------------------- probes

fn exec(command: &[&str]) -> Option<ExecAction> {
    Some(ExecAction {
        command: Some(command.iter().map(|s| s.to_string()).collect()),
    })
}

const PG_ISREADY: &[&str] = &["pg_isready", "--quiet", "--host", RUN_DIR, "--port", "5432"];

/// Startup: until the server first accepts connections, however long crash
/// recovery or WAL replay takes (up to `STARTUP_FAILURE_THRESHOLD` periods).
pub fn startup_probe() -> Probe {
    Probe {
        exec: exec(PG_ISREADY),
        period_seconds: Some(STARTUP_PERIOD_SECONDS),
        timeout_seconds: Some(5),
        failure_threshold: Some(STARTUP_FAILURE_THRESHOLD),
        ..Default::default()
    }
}

/// Readiness: accepting connections.
pub fn readiness_probe() -> Probe {
    Probe {
        exec: exec(PG_ISREADY),
        period_seconds: Some(READINESS_PERIOD_SECONDS),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Liveness: the postmaster answers at all. pg_isready exits 1 while the
/// server rejects connections (starting, shutting down, in recovery) and 2
/// when nothing answers; only 2 means the container should be restarted.
pub fn liveness_probe() -> Probe {
    Probe {
        exec: exec(&[
            "sh",
            "-c",
            "pg_isready --quiet --host /var/run/postgresql --port 5432; test $? -ne 2",
        ]),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(6),
        ..Default::default()
    }
}

/// preStop: a fast shutdown (disconnect clients, checkpoint, stop) instead of
/// the smart shutdown SIGTERM would start, which waits for every client.
pub fn pre_stop() -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: exec(&[
                "sh",
                "-c",
                &format!(
                    "pg_ctl stop --pgdata=\"$PGDATA\" --mode=fast --timeout={PRESTOP_TIMEOUT} || true"
                ),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pod security: the image's `postgres` user and group, fsGroup for the
/// volume, RuntimeDefault seccomp.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(POSTGRES_UID),
        run_as_group: Some(POSTGRES_UID),
        fs_group: Some(POSTGRES_UID),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Container security: no privilege escalation, no capabilities.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        run_as_non_root: Some(true),
        run_as_user: Some(POSTGRES_UID),
        run_as_group: Some(POSTGRES_UID),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------- StatefulSet

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn volumes_and_mounts(instance: &PgInstance) -> (Vec<Volume>, Vec<VolumeMount>) {
    let name = instance.name_any();
    let mut volumes = vec![
        Volume {
            name: "conf-d".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(&name),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "run".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        Volume {
            name: "shm".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        mount(DATA_VOLUME, VOLUME_PATH, false),
        mount("conf-d", CONF_D_PATH, true),
        mount("run", RUN_DIR, false),
        mount("shm", "/dev/shm", false),
    ];
    if let Some(backup) = &instance.spec.backup {
        if let Some(c) = backup
            .gcs
            .as_ref()
            .and_then(|g| g.credentials_secret_ref.as_ref())
        {
            volumes.push(Volume {
                name: "gcs-key".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(c.name.clone()),
                    items: Some(vec![KeyToPath {
                        key: c.key.clone(),
                        path: c.key.clone(),
                        ..Default::default()
                    }]),
                    default_mode: Some(0o440),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(mount("gcs-key", GCS_KEY_DIR, true));
        }
        if let Some(file) = &backup.file
            && let Some(claim) = &file.claim_name
        {
            volumes.push(Volume {
                name: "backups".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(mount("backups", &file.path, false));
        }
    }
    (volumes, mounts)
}

fn statefulset(
    instance: &PgInstance,
    valid: &ValidSpec,
    observed: &Observed,
    run: &Run,
) -> StatefulSet {
    let name = instance.name_any();
    let spec = &instance.spec;
    let (volumes, mounts) = volumes_and_mounts(instance);
    // Claim templates cannot change once the StatefulSet exists: keep the
    // size and class it was created with (growth goes to the claim itself).
    let (size, class) = current_template_storage(observed).unwrap_or_else(|| {
        (
            valid.volume_size.to_string(),
            spec.storage.storage_class_name.clone(),
        )
    });
    let container = postgres_container(instance, run, mounts);
    StatefulSet {
        metadata: meta(instance, names::statefulset(&name), true),
        spec: Some(StatefulSetSpec {
            // One pod per ordinal `observe` reads.
            replicas: Some(names::ordinals(instance).len() as i32),
            service_name: Some(names::headless_service(&name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..Default::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(
                        if spec.storage.delete_claim_on_delete {
                            "Delete"
                        } else {
                            "Retain"
                        }
                        .into(),
                    ),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(pod_security_context()),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    node_selector: spec.node_selector.clone(),
                    tolerations: spec.tolerations.clone(),
                    affinity: spec.affinity.clone(),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![data_claim_template(&name, size, class)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The postgres container: the image and environment `act` decided.
fn postgres_container(instance: &PgInstance, run: &Run, mounts: Vec<VolumeMount>) -> Container {
    Container {
        name: "postgres".into(),
        image: Some(run.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(container_env_for(instance, run)),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: instance.spec.resources.clone(),
        startup_probe: Some(startup_probe()),
        readiness_probe: Some(readiness_probe()),
        liveness_probe: Some(liveness_probe()),
        lifecycle: Some(pre_stop()),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        termination_message_path: Some(TERMINATION_MESSAGE_PATH.into()),
        termination_message_policy: Some("File".into()),
        ..Default::default()
    }
}

/// The claim template of every pod's data volume.
fn data_claim_template(name: &str, size: String, class: Option<String>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(labels(name)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: class,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), K8sQuantity(size))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The resource kind of `K`, for messages and metrics.
pub fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}
