//! Table-driven tests of the pure steps: build, validate and the status
//! computation. No API server, no mocks: plain values in, objects out.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{StatefulSet, StatefulSetStatus},
        core::v1::{Container, EnvVar, PersistentVolumeClaim, Secret},
    },
    jiff::Timestamp,
};
use kube::Resource;
use pgsteward_api::{PgInstance, quantity::Quantity};
use pgsteward_operator::{
    build::{self, DesiredObjects, Settings},
    conditions, names,
    observe::{Observed, ObservedPod},
    status, validate,
};
use serde_json::json;

fn instance(spec: serde_json::Value) -> PgInstance {
    serde_json::from_value(json!({
        "apiVersion": "pgsteward.io/v1alpha1",
        "kind": "PgInstance",
        "metadata": {"name": "db", "namespace": "shop", "uid": "0000-1111", "generation": 3},
        "spec": spec,
    }))
    .expect("test spec deserializes")
}

fn minimal() -> serde_json::Value {
    json!({"postgresVersion": 18, "storage": {"size": "10Gi"}})
}

fn secret(name: &str, keys: &[&str]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            keys.iter()
                .map(|k| (k.to_string(), ByteString(b"x".to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Observe a world where every referenced Secret and claim exists.
fn observed_all_present(i: &PgInstance) -> Observed {
    let mut o = Observed::default();
    for (name, _) in pgsteward_operator::observe::referenced_secrets(i) {
        let keys = [
            "password",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "key.json",
            "AZURE_STORAGE_ACCESS_KEY",
            "libsodium",
            "pw",
        ];
        o.referenced_secrets
            .insert(name.clone(), Some(secret(&name, &keys)));
    }
    if let Some(c) = i
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.file.as_ref())
        .and_then(|f| f.claim_name.clone())
    {
        o.referenced_claims
            .insert(c, Some(PersistentVolumeClaim::default()));
    }
    o
}

fn build_for(i: &PgInstance, observed: &Observed) -> DesiredObjects {
    let valid = validate::validate(i, observed).expect("spec is valid");
    build::build(i, &valid, observed, &Settings::default(), "s3cr3t")
}

fn container(sts: &StatefulSet) -> &Container {
    &sts.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

fn env_map(c: &Container) -> BTreeMap<String, EnvVar> {
    c.env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect()
}

fn template_size(sts: &StatefulSet) -> String {
    sts.spec
        .as_ref()
        .unwrap()
        .volume_claim_templates
        .as_ref()
        .unwrap()[0]
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"]
        .0
        .clone()
}

// ------------------------------------------------------------ PVC size

#[test]
fn pvc_size_is_size_factor_times_data_size_rounded_up_to_a_valid_quantity() {
    let cases = [
        // (data size, factor, volume requested)
        ("10Gi", 2.5, "25Gi"),
        ("3Gi", 2.5, "7680Mi"), // 7.5Gi, exactly
        ("1500Mi", 2.5, "3750Mi"),
        ("3Gi", 2.7, "8295Mi"), // 8294.4Mi, rounded up to whole MiB
        ("1Gi", 2.0, "2Gi"),
        ("1.5Gi", 2.5, "3840Mi"),
        ("100M", 2.5, "250M"),
        ("10G", 2.33, "23300M"), // decimal input stays decimal
        ("1Ki", 2.5, "2560"),    // below a MiB: whole bytes
    ];
    for (size, factor, expected) in cases {
        let q = pgsteward_api::quantity::volume_size(Quantity::parse(size).unwrap(), factor)
            .expect("a volume size that fits");
        let expected_q = Quantity::parse(expected).unwrap();
        // Never smaller than factor × size.
        let exact = Quantity::parse(size).unwrap().ceil_units() as f64 * factor;
        assert!(
            q.ceil_units() as f64 >= exact.floor(),
            "{size} × {factor}: {q} < {exact}"
        );
        assert_eq!(
            q, expected_q,
            "{size} × {factor} = {q}, expected {expected}"
        );
        assert_eq!(
            q.to_string(),
            expected,
            "{size} × {factor} prints canonically"
        );

        let i = instance(
            json!({"postgresVersion": 17, "storage": {"size": size, "sizeFactor": factor}}),
        );
        let d = build_for(&i, &observed_all_present(&i));
        assert_eq!(
            template_size(&d.statefulset),
            expected,
            "claim template for {size} × {factor}"
        );
    }
}

#[test]
fn an_existing_statefulset_keeps_its_claim_template_and_the_claim_grows_instead() {
    let small = instance(minimal());
    let mut observed = observed_all_present(&small);
    observed.statefulset = Some(build_for(&small, &observed).statefulset); // 25Gi template
    let mut claim = PersistentVolumeClaim::default();
    claim.metadata.name = Some(names::data_claim("db", 0));
    claim.spec = Some(k8s_openapi::api::core::v1::PersistentVolumeClaimSpec {
        resources: Some(k8s_openapi::api::core::v1::VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("25Gi".into()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    });
    observed.pods = vec![ObservedPod {
        ordinal: 0,
        name: names::pod("db", 0),
        data_claim: Some(claim),
        ..Default::default()
    }];

    // Same size: no expansion.
    assert!(
        build_for(&small, &observed)
            .data_claim_expansions
            .is_empty()
    );

    // 20Gi of data: the template stays at 25Gi (immutable), the claim asks for 50Gi.
    let grown = instance(json!({"postgresVersion": 18, "storage": {"size": "20Gi"}}));
    let d = build_for(&grown, &observed);
    assert_eq!(template_size(&d.statefulset), "25Gi");
    let [expansion] = <[_; 1]>::try_from(d.data_claim_expansions).expect("the claim grows");
    assert_eq!(expansion.metadata.name.as_deref(), Some("data-db-0"));
    let requested = &expansion.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0;
    assert_eq!(requested, "50Gi");
}

// ------------------------------------------------------------ conf.d

#[test]
fn conf_d_quotes_every_value_and_renders_the_slow_query_threshold() {
    let cases: Vec<(serde_json::Value, &str, Vec<&str>)> = vec![
        // (extra spec, file, lines that must appear)
        (
            json!({}),
            "00-slow-query-log.conf",
            vec!["log_min_duration_statement = '-1'"],
        ),
        (
            json!({"slowQueryLog": {"thresholdMs": 250}}),
            "00-slow-query-log.conf",
            vec!["log_min_duration_statement = '250ms'"],
        ),
        (
            json!({"config": {"parameters": {"work_mem": "16MB", "max_connections": "200"}}}),
            "10-parameters.conf",
            vec!["max_connections = '200'", "work_mem = '16MB'"],
        ),
        (
            json!({"config": {"parameters": {"application_name": "it's"}}}),
            "10-parameters.conf",
            vec!["application_name = 'it''s'"],
        ),
        (
            json!({"config": {"parameters": {"search_path": "\"$user\", public"}}}),
            "10-parameters.conf",
            vec!["search_path = '\"$user\", public'"],
        ),
        (
            json!({"config": {"parameters": {"log_line_prefix": "%m \\ [%p]"}}}),
            "10-parameters.conf",
            vec!["log_line_prefix = '%m \\\\ [%p]'"],
        ),
    ];
    for (extra, file, lines) in cases {
        let mut spec = minimal();
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let i = instance(spec);
        let files = build::conf_d(&i);
        assert_eq!(files.len(), 2, "both conf.d files are always present");
        let text = &files[file];
        assert!(
            text.starts_with("# Written by pgsteward from PgInstance shop/db"),
            "{text}"
        );
        for line in lines {
            assert!(
                text.lines().any(|l| l == line),
                "{file} should contain {line:?}:\n{text}"
            );
        }
        let d = build_for(&i, &observed_all_present(&i));
        assert_eq!(d.config_map.data.as_ref().unwrap(), &files);
    }
}

#[test]
fn quote_conf_value_escapes_quotes_and_backslashes() {
    for (value, quoted) in [
        ("plain", "'plain'"),
        ("it's", "'it''s'"),
        ("''", "''''''"),
        ("a\\b", "'a\\\\b'"),
        ("", "''"),
    ] {
        assert_eq!(build::quote_conf_value(value), quoted, "{value:?}");
    }
}

// ------------------------------------------------------------ env

#[test]
fn env_for_each_storage_kind_has_the_prefix_and_credentials_only_by_secret_ref() {
    // (backup spec, plain env values, env from Secret: (var, secret, key))
    type Case = (
        serde_json::Value,
        Vec<(&'static str, &'static str)>,
        Vec<(&'static str, &'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            json!({"s3": {"prefix": "s3://b/db", "endpoint": "http://minio:9000", "region": "eu-1",
                   "forcePathStyle": true, "credentialsSecretRef": {"name": "s3-creds"}}}),
            vec![
                ("WALG_S3_PREFIX", "s3://b/db"),
                ("AWS_ENDPOINT", "http://minio:9000"),
                ("AWS_REGION", "eu-1"),
                ("AWS_S3_FORCE_PATH_STYLE", "true"),
            ],
            vec![
                ("AWS_ACCESS_KEY_ID", "s3-creds", "AWS_ACCESS_KEY_ID"),
                ("AWS_SECRET_ACCESS_KEY", "s3-creds", "AWS_SECRET_ACCESS_KEY"),
            ],
        ),
        (
            json!({"gcs": {"prefix": "gs://b/db", "credentialsSecretRef": {"name": "gcs", "key": "key.json"}}}),
            vec![
                ("WALG_GS_PREFIX", "gs://b/db"),
                (
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "/etc/pgsteward/gcs/key.json",
                ),
            ],
            vec![],
        ),
        (
            json!({"azure": {"prefix": "azure://c/db", "storageAccount": "acct",
                   "credentialsSecretRef": {"name": "az"}}}),
            vec![
                ("WALG_AZ_PREFIX", "azure://c/db"),
                ("AZURE_STORAGE_ACCOUNT", "acct"),
            ],
            vec![
                ("AZURE_STORAGE_ACCESS_KEY", "az", "AZURE_STORAGE_ACCESS_KEY"),
                ("AZURE_STORAGE_SAS_TOKEN", "az", "AZURE_STORAGE_SAS_TOKEN"),
            ],
        ),
        (
            json!({"file": {"path": "/backups", "claimName": "pg-backups"},
                   "schedule": "0 3 * * *", "retention": {"fullBackups": 7}, "compression": "zstd",
                   "encryptionKeySecretRef": {"name": "enc", "key": "libsodium"}}),
            vec![
                ("WALG_FILE_PREFIX", "/backups"),
                ("PGSTEWARD_BACKUP_SCHEDULE", "0 3 * * *"),
                ("PGSTEWARD_BACKUP_RETAIN_FULL", "7"),
                ("WALG_COMPRESSION_METHOD", "zstd"),
            ],
            vec![("WALG_LIBSODIUM_KEY", "enc", "libsodium")],
        ),
    ];
    let storage_vars = [
        "WALG_S3_PREFIX",
        "WALG_GS_PREFIX",
        "WALG_AZ_PREFIX",
        "WALG_FILE_PREFIX",
    ];
    for (backup, values, secret_refs) in cases {
        let mut spec = minimal();
        spec["backup"] = backup.clone();
        let i = instance(spec);
        let d = build_for(&i, &observed_all_present(&i));
        let env = env_map(container(&d.statefulset));
        for (name, value) in &values {
            assert_eq!(
                env[*name].value.as_deref(),
                Some(*value),
                "{name} for {backup}"
            );
        }
        for (name, secret, key) in &secret_refs {
            let e = &env[*name];
            assert!(e.value.is_none(), "{name} must not carry a value");
            let r = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!((r.name.as_str(), r.key.as_str()), (*secret, *key), "{name}");
        }
        let prefixes: Vec<_> = storage_vars
            .iter()
            .filter(|v| env.contains_key(**v))
            .collect();
        assert_eq!(
            prefixes.len(),
            1,
            "exactly one storage prefix for {backup}: {prefixes:?}"
        );
        // The ConfigMap never holds credentials.
        let cm = serde_json::to_string(&d.config_map).unwrap();
        assert!(!cm.contains("AWS_") && !cm.contains("AZURE_"), "{cm}");
    }
}

#[test]
fn gcs_key_and_file_claim_are_mounted() {
    let mut spec = minimal();
    spec["backup"] = json!({"gcs": {"prefix": "gs://b/db", "credentialsSecretRef": {"name": "gcs", "key": "key.json"}}});
    let i = instance(spec);
    let d = build_for(&i, &observed_all_present(&i));
    let pod = d
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let vol = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "gcs-key")
        .unwrap();
    assert_eq!(
        vol.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("gcs")
    );
    let mounts = container(&d.statefulset).volume_mounts.clone().unwrap();
    assert!(mounts.iter().any(|m| m.name == "gcs-key"
        && m.mount_path == "/etc/pgsteward/gcs"
        && m.read_only == Some(true)));

    let mut spec = minimal();
    spec["backup"] = json!({"file": {"path": "/backups", "claimName": "pg-backups"}});
    let i = instance(spec);
    let d = build_for(&i, &observed_all_present(&i));
    let pod = d
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let vol = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "backups")
        .unwrap();
    assert_eq!(
        vol.persistent_volume_claim.as_ref().unwrap().claim_name,
        "pg-backups"
    );
    assert!(
        container(&d.statefulset)
            .volume_mounts
            .clone()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == "/backups")
    );
}

#[test]
fn base_env_follows_the_image_contract() {
    for major in [16, 17, 18] {
        let i = instance(json!({"postgresVersion": major, "storage": {"size": "1Gi"}}));
        let d = build_for(&i, &observed_all_present(&i));
        let c = container(&d.statefulset);
        let env = env_map(c);
        assert_eq!(
            env["PGDATA"].value.as_deref(),
            Some(format!("/var/lib/postgresql/{major}/docker").as_str())
        );
        assert_eq!(env["PGSTEWARD_MANAGED"].value.as_deref(), Some("1"));
        // The image writes its latest upgrade result where the kubelet reads
        // the termination message.
        assert_eq!(
            env["PGSTEWARD_TERMINATION_LOG"].value.as_deref(),
            c.termination_message_path.as_deref()
        );
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        let pw = env["POSTGRES_PASSWORD"]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (pw.name.as_str(), pw.key.as_str()),
            ("db-superuser", "password")
        );
        assert_eq!(
            c.image.as_deref(),
            Some(format!("ghcr.io/pgsteward/postgres:{major}-standard-trixie").as_str())
        );
        assert!(
            !env.keys().any(|k| k.starts_with("WALG_")),
            "no backup, no WAL-G env"
        );
    }
    // The spec's Secret and image win.
    let i = instance(
        json!({"postgresVersion": 17, "storage": {"size": "1Gi"}, "image": "registry.local/pg:17",
        "superuserSecretRef": {"name": "mine", "passwordKey": "pw"}}),
    );
    let d = build_for(&i, &observed_all_present(&i));
    let c = container(&d.statefulset);
    let pw = env_map(c)["POSTGRES_PASSWORD"]
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!((pw.name.as_str(), pw.key.as_str()), ("mine", "pw"));
    assert_eq!(c.image.as_deref(), Some("registry.local/pg:17"));
    assert!(
        d.superuser_secret.is_none(),
        "no generated Secret when the spec names one"
    );
}

#[test]
fn bootstrap_recovery_requests_a_restore_once_per_instance() {
    let cases = [
        (
            json!({"target": {"latest": true}}),
            "bootstrap",
            "latest",
            None,
            None,
        ),
        (
            json!({"target": {"time": "2026-11-21T10:00:00Z"}, "backupName": "base_0001"}),
            "bootstrap",
            "time",
            Some("2026-11-21T10:00:00Z"),
            None,
        ),
        (
            json!({"target": {"lsn": "0/3000060"}, "sourcePrefix": "s3://b/other"}),
            "clone",
            "lsn",
            Some("0/3000060"),
            Some("s3://b/other"),
        ),
        (
            json!({"target": {"immediate": true}}),
            "bootstrap",
            "immediate",
            None,
            None,
        ),
        (
            json!({"target": {"xid": "7421"}}),
            "bootstrap",
            "xid",
            Some("7421"),
            None,
        ),
        (
            json!({"target": {"name": "before-migration"}, "sourcePrefix": "s3://b/other"}),
            "clone",
            "name",
            Some("before-migration"),
            Some("s3://b/other"),
        ),
    ];
    for (recovery, mode, target, value, source) in cases {
        let mut spec = minimal();
        spec["backup"] = json!({"s3": {"prefix": "s3://b/db"}});
        spec["bootstrap"] = json!({"recovery": recovery});
        let i = instance(spec);
        let env = env_map(container(
            &build_for(&i, &observed_all_present(&i)).statefulset,
        ));
        let v = |k: &str| env.get(k).and_then(|e| e.value.clone());
        assert_eq!(
            v("PGSTEWARD_RESTORE_ID").as_deref(),
            Some("bootstrap-0000-1111")
        );
        assert_eq!(v("PGSTEWARD_RESTORE_MODE").as_deref(), Some(mode));
        assert_eq!(v("PGSTEWARD_RESTORE_TARGET").as_deref(), Some(target));
        assert_eq!(v("PGSTEWARD_RESTORE_TARGET_VALUE").as_deref(), value);
        assert_eq!(v("PGSTEWARD_RESTORE_SOURCE_PREFIX").as_deref(), source);
        assert!(v("PGSTEWARD_RESTORE_BACKUP").is_some());
    }
}

// ------------------------------------------------------------ pod shape

#[test]
fn probes_give_wal_replay_time_and_restart_only_a_dead_server() {
    let i = instance(minimal());
    let d = build_for(&i, &observed_all_present(&i));
    let c = container(&d.statefulset);
    let startup = c.startup_probe.as_ref().unwrap();
    let allowed =
        startup.period_seconds.unwrap() as i64 * startup.failure_threshold.unwrap() as i64;
    assert!(
        allowed >= 6 * 3600,
        "startup allows {allowed} s: WAL replay needs hours"
    );
    // Ready soon after each (re)start: downtime is counted from it.
    assert!(startup.period_seconds.unwrap() <= 2);
    let cmd = |p: &k8s_openapi::api::core::v1::Probe| {
        p.exec.as_ref().unwrap().command.clone().unwrap().join(" ")
    };
    assert!(cmd(startup).starts_with("pg_isready"));
    let readiness = c.readiness_probe.as_ref().unwrap();
    assert!(
        cmd(readiness).contains("pg_isready") && cmd(readiness).contains("/var/run/postgresql")
    );
    let liveness = c.liveness_probe.as_ref().unwrap();
    assert!(
        cmd(liveness).contains("test $? -ne 2"),
        "liveness fails only when nothing answers: {}",
        cmd(liveness)
    );
    assert!(liveness.failure_threshold.unwrap() * liveness.period_seconds.unwrap() >= 60);

    let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    let stop = pre_stop
        .exec
        .as_ref()
        .unwrap()
        .command
        .clone()
        .unwrap()
        .join(" ");
    assert!(
        stop.contains("pg_ctl stop") && stop.contains("--mode=fast"),
        "{stop}"
    );
    let grace = d
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .termination_grace_period_seconds
        .unwrap();
    assert!(
        grace > build::PRESTOP_TIMEOUT,
        "grace {grace} s must outlast the fast shutdown"
    );
}

#[test]
fn pod_runs_as_postgres_without_privileges() {
    let i = instance(minimal());
    let d = build_for(&i, &observed_all_present(&i));
    let pod = d
        .statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    let psc = pod.security_context.unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(999), Some(999), Some(999))
    );
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let csc = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(
        csc.capabilities.unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    for (path, ro) in [
        ("/var/lib/postgresql", None),
        ("/etc/postgresql/conf.d", Some(true)),
    ] {
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_path == path && m.read_only == ro),
            "mount {path}"
        );
    }
}

#[test]
fn every_owned_object_has_the_owner_reference_and_labels_but_not_the_secret() {
    let i = instance(minimal());
    let d = build_for(&i, &observed_all_present(&i));
    let DesiredObjects {
        config_map,
        superuser_secret,
        service,
        headless_service,
        statefulset,
        data_claim_expansions,
    } = d;
    assert!(data_claim_expansions.is_empty());
    for meta in [
        &config_map.metadata,
        &service.metadata,
        &headless_service.metadata,
        &statefulset.metadata,
    ] {
        let owners = meta.owner_references.clone().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].controller
            ),
            ("PgInstance", "db", Some(true))
        );
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        assert_eq!(
            meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "pgsteward"
        );
    }
    let secret = superuser_secret.expect("generated when missing");
    assert!(
        secret.metadata.owner_references.is_none(),
        "the password outlives the instance with its data"
    );
    assert_eq!(secret.data.unwrap()["password"].0, b"s3cr3t");
    assert_eq!(
        headless_service
            .spec
            .as_ref()
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some("None")
    );
    assert_eq!(service.spec.as_ref().unwrap().cluster_ip, None);
    let retention = statefulset
        .spec
        .unwrap()
        .persistent_volume_claim_retention_policy
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));

    let mut spec = minimal();
    spec["storage"]["deleteClaimOnDelete"] = json!(true);
    let i = instance(spec);
    let sts = build_for(&i, &observed_all_present(&i)).statefulset;
    assert_eq!(
        sts.spec
            .unwrap()
            .persistent_volume_claim_retention_policy
            .unwrap()
            .when_deleted
            .as_deref(),
        Some("Delete")
    );
}

#[test]
fn an_existing_superuser_secret_is_never_rebuilt() {
    let i = instance(minimal());
    let mut observed = observed_all_present(&i);
    observed.generated_superuser_secret = Some(secret("db-superuser", &["password"]));
    assert!(build_for(&i, &observed).superuser_secret.is_none());
}

// ------------------------------------------------------------ validate

#[test]
fn missing_objects_become_problems_that_name_them() {
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            json!({"superuserSecretRef": {"name": "pw"}}),
            "SecretNotFound",
            "Secret shop/pw (named by spec.superuserSecretRef) does not exist",
        ),
        (
            json!({"backup": {"s3": {"prefix": "s3://b/x", "credentialsSecretRef": {"name": "s3"}}}}),
            "SecretNotFound",
            "Secret shop/s3 (named by spec.backup.s3.credentialsSecretRef)",
        ),
        (
            json!({"backup": {"file": {"path": "/backups", "claimName": "nope"}}}),
            "ClaimNotFound",
            "PersistentVolumeClaim shop/nope",
        ),
        (
            json!({"storage": {"size": "ten gigs"}}),
            "InvalidStorageSize",
            "spec.storage.size",
        ),
    ];
    for (extra, reason, message) in cases {
        let mut spec = minimal();
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let i = instance(spec);
        let mut observed = Observed::default();
        for (name, _) in pgsteward_operator::observe::referenced_secrets(&i) {
            observed.referenced_secrets.insert(name, None);
        }
        if let Some(c) = i
            .spec
            .backup
            .as_ref()
            .and_then(|b| b.file.as_ref())
            .and_then(|f| f.claim_name.clone())
        {
            observed.referenced_claims.insert(c, None);
        }
        let problems = validate::validate(&i, &observed).expect_err("invalid");
        assert_eq!(problems.reason(), reason);
        assert!(
            problems.message().contains(message),
            "{} should contain {message}",
            problems.message()
        );
    }

    // A Secret without the key.
    let mut spec = minimal();
    spec["backup"] = json!({"s3": {"prefix": "s3://b/x", "credentialsSecretRef": {"name": "s3"}}});
    let i = instance(spec);
    let mut observed = Observed::default();
    observed
        .referenced_secrets
        .insert("s3".into(), Some(secret("s3", &["AWS_ACCESS_KEY_ID"])));
    let problems = validate::validate(&i, &observed).expect_err("missing key");
    assert_eq!(problems.reason(), "SecretKeyNotFound");
    assert!(
        problems.message().contains("AWS_SECRET_ACCESS_KEY"),
        "{}",
        problems.message()
    );
}

#[test]
fn a_downgrade_below_the_running_major_is_a_problem() {
    let mut i = instance(json!({"postgresVersion": 17, "storage": {"size": "1Gi"}}));
    i.status = Some(pgsteward_api::PgInstanceStatus {
        postgres_version: Some(18),
        ..Default::default()
    });
    let problems = validate::validate(&i, &Observed::default()).expect_err("downgrade");
    assert_eq!(problems.reason(), "VersionDowngrade");
}

// ------------------------------------------------------------ status

fn sts_with(status: StatefulSetStatus) -> StatefulSet {
    let mut s = StatefulSet::default();
    s.metadata.generation = Some(1);
    s.status = Some(status);
    s
}

fn ready_sts() -> StatefulSet {
    sts_with(StatefulSetStatus {
        replicas: 1,
        ready_replicas: Some(1),
        updated_replicas: Some(1),
        observed_generation: Some(1),
        current_revision: Some("r1".into()),
        update_revision: Some("r1".into()),
        ..Default::default()
    })
}

#[test]
fn conditions_follow_the_statefulset() {
    let i = instance(minimal());
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let cases: Vec<(Option<StatefulSet>, bool, &str, &str, &str)> = vec![
        // (statefulset, pod exists, Ready, Ready reason, Progressing)
        (None, false, "False", "Creating", "True"),
        (
            Some(sts_with(StatefulSetStatus {
                replicas: 1,
                ..Default::default()
            })),
            false,
            "False",
            "Creating",
            "True",
        ),
        (
            Some(sts_with(StatefulSetStatus {
                replicas: 1,
                ..Default::default()
            })),
            true,
            "False",
            "Starting",
            "True",
        ),
        (Some(ready_sts()), true, "True", "Running", "False"),
    ];
    for (sts, pod, ready, reason, progressing) in cases {
        let pod = pod.then(k8s_openapi::api::core::v1::Pod::default);
        let health = status::health(sts.as_ref(), pod.as_ref());
        let st = status::desired_status(&i, &health, None, Some("img"), now);
        let c = |t: &str| st.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(
            (c("Ready").status.as_str(), c("Ready").reason.as_str()),
            (ready, reason)
        );
        assert_eq!(c("Progressing").status, progressing);
        assert_eq!(c("Degraded").status, "False");
        assert_eq!(c("BackupHealthy").reason, "NotConfigured");
        assert_eq!(st.conditions.len(), 6);
        assert_eq!(st.observed_generation, Some(3));
        assert_eq!(st.postgres_version, (ready == "True").then_some(18));
    }
}

#[test]
fn last_transition_time_moves_only_when_the_status_changes() {
    let i0 = instance(minimal());
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let t1 = Timestamp::from_second(1_800_000_100).unwrap();
    let starting = status::health(
        Some(&sts_with(StatefulSetStatus {
            replicas: 1,
            ..Default::default()
        })),
        Some(&Default::default()),
    );
    let first = status::desired_status(&i0, &starting, None, Some("img"), t0);

    let mut i1 = i0.clone();
    i1.status = Some(first.clone());
    // Same observation later: identical status, so nothing to write.
    assert_eq!(
        status::desired_status(&i1, &starting, None, Some("img"), t1),
        first
    );

    // Ready flips: only Ready and Progressing get the new time.
    let ready = status::health(Some(&ready_sts()), Some(&Default::default()));
    let second = status::desired_status(&i1, &ready, None, Some("img"), t1);
    for c in &second.conditions {
        let before = first
            .conditions
            .iter()
            .find(|p| p.type_ == c.type_)
            .unwrap();
        let expected = if before.status == c.status {
            before.last_transition_time.0
        } else {
            t1
        };
        assert_eq!(c.last_transition_time.0, expected, "{}", c.type_);
    }
    let changed: Vec<_> = conditions::transitions(&first.conditions, &second.conditions)
        .into_iter()
        .map(|(c, _)| c.type_.clone())
        .collect();
    assert_eq!(changed, vec!["Ready", "Progressing"]);
}

#[test]
fn problems_set_degraded_with_their_reason_and_message() {
    let i = instance(
        json!({"postgresVersion": 18, "storage": {"size": "1Gi"}, "superuserSecretRef": {"name": "pw"}}),
    );
    let mut observed = Observed::default();
    observed.referenced_secrets.insert("pw".into(), None);
    let problems = validate::validate(&i, &observed).unwrap_err();
    let st = status::desired_status(
        &i,
        &status::Health::of_observed(&observed),
        Some(&problems),
        None,
        Timestamp::UNIX_EPOCH,
    );
    let c = |t: &str| st.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
    assert_eq!(
        (c("Degraded").status.as_str(), c("Degraded").reason.as_str()),
        ("True", "SecretNotFound")
    );
    assert!(c("Degraded").message.contains("Secret shop/pw"));
    assert_eq!(
        (c("Ready").status.as_str(), c("Ready").reason.as_str()),
        ("False", "SecretNotFound")
    );
    assert_eq!(c("Progressing").reason, "Blocked");
}

#[test]
fn the_instance_is_the_owner() {
    let i = instance(minimal());
    let d = build_for(&i, &observed_all_present(&i));
    assert_eq!(
        d.statefulset.metadata.owner_references.unwrap()[0].uid,
        i.meta().uid.clone().unwrap()
    );
}
