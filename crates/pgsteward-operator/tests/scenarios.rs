//! Mocked-API scenarios (tower-test): the reconcile runs against a small
//! in-memory API server that records every request, so the tests state
//! exactly which requests a reconcile makes, and that it makes none when
//! there is nothing to do. The server, the pod and the `World` are in
//! `support/` (the `steady_state` property uses them too).

mod support;

use std::sync::Arc;

use http::Method;
use kube::core::error_boundary::DeserializeGuard;
use pgsteward_operator::{
    context, controller,
    exec::{ExecOutput, LocalExec, PodExec},
};
use serde_json::{Value, json};
use support::*;

fn minimal_spec() -> Value {
    json!({"postgresVersion": 18, "storage": {"size": "10Gi"},
           "backup": {"schedule": "0 3 * * *", "file": {"path": "/backups"}}})
}

#[tokio::test]
async fn a_new_instance_gets_its_finalizer_then_every_object_with_one_field_manager() {
    let world = World::new(minimal_spec());

    // First reconcile: only the finalizer is added.
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(writes(&requests), vec!["PATCH pgsteward.io/pginstances/db"]);
    let i = world.fake.get(PGI.0, PGI.1, NS, "db").unwrap();
    assert_eq!(i["metadata"]["finalizers"], json!(["pgsteward.io/cleanup"]));

    // Second: every object, by server-side apply.
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_covered_by_rbac(&requests);
    let applies: Vec<&Recorded> = requests
        .iter()
        .filter(|r| {
            r.method == Method::PATCH && r.content_type.starts_with("application/apply-patch")
        })
        .collect();
    let applied: Vec<String> = applies.iter().map(|r| r.describe()).collect();
    assert_eq!(
        applied,
        vec![
            "PATCH /configmaps/db-config",
            "PATCH /secrets/db-superuser",
            "PATCH /services/db",
            "PATCH /services/db-hl",
            "PATCH apps/statefulsets/db",
            "PATCH pgsteward.io/pginstances/status/db",
        ]
    );
    for r in &applies {
        assert!(
            r.query.contains("fieldManager=pgsteward"),
            "{}: {}",
            r.describe(),
            r.query
        );
        assert!(
            r.query.contains("force=true"),
            "{}: {}",
            r.describe(),
            r.query
        );
        let body = r.body.as_ref().unwrap();
        assert!(
            body["apiVersion"].is_string() && body["kind"].is_string(),
            "{}",
            r.describe()
        );
        if !r.resource.ends_with("status") && r.resource != "secrets" {
            let owner = &body["metadata"]["ownerReferences"][0];
            assert_eq!(
                (owner["kind"].as_str(), owner["uid"].as_str()),
                (Some("PgInstance"), Some("pgi-uid-1"))
            );
        }
    }
    // The other writes are events only.
    let others: Vec<String> = requests
        .iter()
        .filter(|r| r.is_write() && !r.content_type.starts_with("application/apply-patch"))
        .map(|r| r.describe())
        .collect();
    assert!(
        others.iter().all(|w| w.contains("events.k8s.io/events")),
        "{others:?}"
    );

    // The PVC size, the password and the status.
    let sts = world.fake.get("apps", "statefulsets", NS, "db").unwrap();
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "25Gi"
    );
    let secret = world.fake.get("", "secrets", NS, "db-superuser").unwrap();
    assert_eq!(
        secret["data"]["password"].as_str().unwrap().len(),
        44,
        "32 random characters, base64"
    );
    assert_eq!(world.condition("Ready")["reason"], "Creating");
    assert_eq!(world.condition("Progressing")["status"], "True");
}

#[tokio::test]
async fn an_up_to_date_instance_makes_no_write_requests() {
    let world = World::new(minimal_spec());
    let _ = world.reconcile().await; // finalizer
    let _ = world.reconcile().await; // objects
    world.pod_becomes_ready();
    let (result, requests) = world.reconcile().await; // status: Ready
    assert!(result.is_ok(), "{result:?}");
    assert!(writes(&requests).contains(&"PATCH pgsteward.io/pginstances/status/db".to_string()));
    assert_eq!(world.condition("Ready")["status"], "True");
    assert_eq!(world.condition("Ready")["reason"], "Running");
    let ready_since = world.condition("Ready")["lastTransitionTime"].clone();
    let secret_before = world.fake.get("", "secrets", NS, "db-superuser").unwrap();

    // Nothing changed since: no write at all, only reads.
    for _ in 0..2 {
        let (result, requests) = world.reconcile().await;
        assert_eq!(
            result.unwrap(),
            kube::runtime::controller::Action::requeue(controller::RESYNC)
        );
        assert_eq!(
            writes(&requests),
            Vec::<String>::new(),
            "an idle reconcile must not write"
        );
        assert!(!requests.is_empty());
        assert_covered_by_rbac(&requests);
    }
    assert_eq!(world.condition("Ready")["lastTransitionTime"], ready_since);
    assert_eq!(
        world.fake.get("", "secrets", NS, "db-superuser").unwrap(),
        secret_before,
        "the password is never rewritten"
    );
}

#[tokio::test]
async fn a_spec_change_rewrites_only_what_it_changes() {
    let world = World::new(minimal_spec());
    let _ = world.reconcile().await;
    let _ = world.reconcile().await;
    world.pod_becomes_ready();
    let _ = world.reconcile().await;

    world.fake.update(PGI.0, PGI.1, NS, "db", |i| {
        i["spec"]["config"] = json!({"parameters": {"work_mem": "32MB"}});
        i["metadata"]["generation"] = json!(2);
    });
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    let w: Vec<String> = writes(&requests)
        .into_iter()
        .filter(|w| !w.contains("events"))
        .collect();
    assert_eq!(
        w,
        vec![
            "PATCH /configmaps/db-config",
            "PATCH pgsteward.io/pginstances/status/db"
        ]
    );
    let cm = world.fake.get("", "configmaps", NS, "db-config").unwrap();
    assert!(
        cm["data"]["10-parameters.conf"]
            .as_str()
            .unwrap()
            .contains("work_mem = '32MB'")
    );
}

#[tokio::test]
async fn a_deleted_instance_runs_cleanup_and_keeps_the_data_by_default() {
    let world = World::new(minimal_spec());
    let _ = world.reconcile().await;
    let _ = world.reconcile().await;
    world.fake.update(PGI.0, PGI.1, NS, "db", |i| {
        i["metadata"]["deletionTimestamp"] = json!("2026-11-21T11:00:00Z");
    });
    let (result, requests) = world.reconcile().await;
    assert_eq!(
        result.unwrap(),
        kube::runtime::controller::Action::await_change()
    );
    assert_covered_by_rbac(&requests);
    let w = writes(&requests);
    assert!(
        !w.iter().any(|w| w.starts_with("DELETE")),
        "nothing is deleted by default: {w:?}"
    );
    assert!(
        !w.iter()
            .any(|w| w.contains("configmaps") || w.contains("statefulsets")),
        "no apply during cleanup: {w:?}"
    );
    assert_eq!(
        w.last().unwrap(),
        "PATCH pgsteward.io/pginstances/db",
        "the finalizer is removed last"
    );
    let i = world.fake.get(PGI.0, PGI.1, NS, "db").unwrap();
    assert_eq!(i["metadata"]["finalizers"], json!([]));
    assert!(
        world.fake.get("", "secrets", NS, "db-superuser").is_some(),
        "the password stays with the data"
    );
    let event = requests
        .iter()
        .find(|r| r.resource == "events" && r.body.as_ref().unwrap()["reason"] == "Cleanup")
        .unwrap();
    assert!(
        event.body.as_ref().unwrap()["note"]
            .as_str()
            .unwrap()
            .contains("data-db-0")
    );
}

#[tokio::test]
async fn a_deleted_instance_with_delete_claim_on_delete_deletes_its_secret() {
    let mut spec = minimal_spec();
    spec["storage"]["deleteClaimOnDelete"] = json!(true);
    let world = World::new(spec);
    let _ = world.reconcile().await;
    let _ = world.reconcile().await;
    let sts = world.fake.get("apps", "statefulsets", NS, "db").unwrap();
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Delete"
    );
    world.fake.update(PGI.0, PGI.1, NS, "db", |i| {
        i["metadata"]["deletionTimestamp"] = json!("2026-11-21T11:00:00Z");
    });
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_covered_by_rbac(&requests);
    let w = writes(&requests);
    assert!(
        w.contains(&"DELETE /secrets/db-superuser".to_string()),
        "{w:?}"
    );
    assert_eq!(w.last().unwrap(), "PATCH pgsteward.io/pginstances/db");
    assert!(world.fake.get("", "secrets", NS, "db-superuser").is_none());
}

#[tokio::test]
async fn a_missing_secret_degrades_the_instance_writes_nothing_else_and_backs_off() {
    let mut spec = minimal_spec();
    spec["superuserSecretRef"] = json!({"name": "db-password"});
    let world = World::new(spec);
    let _ = world.reconcile().await; // finalizer
    let (result, requests) = world.reconcile().await;
    let err = result.expect_err("a missing Secret is an error");
    assert_eq!(err.metric_label(), "invalid_spec");
    assert_covered_by_rbac(&requests);
    let w: Vec<String> = writes(&requests)
        .into_iter()
        .filter(|w| !w.contains("events"))
        .collect();
    assert_eq!(
        w,
        vec!["PATCH pgsteward.io/pginstances/status/db"],
        "no object is applied"
    );
    let degraded = world.condition("Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("SecretNotFound"))
    );
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("Secret shop/db-password")
    );
    assert_eq!(world.condition("Ready")["reason"], "SecretNotFound");
    let warning = requests
        .iter()
        .filter(|r| r.resource == "events")
        .find(|r| r.body.as_ref().unwrap()["reason"] == "InvalidSpec")
        .expect("a Warning event");
    let note = warning.body.as_ref().unwrap()["note"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        note.starts_with("the spec needs fixing: ") && note.contains("db-password"),
        "the whole chain: {note}"
    );
    assert_eq!(warning.body.as_ref().unwrap()["type"], "Warning");

    // Retrying changes no status; the delay grows and has jitter.
    let (result, requests) = world.reconcile().await;
    assert!(result.is_err());
    let w: Vec<String> = writes(&requests)
        .into_iter()
        .filter(|w| !w.contains("events"))
        .collect();
    assert!(w.is_empty(), "{w:?}");
    let d1 = context::backoff(1, None);
    let d5 = context::backoff(5, None);
    let d_429 = context::backoff(1, Some(429));
    assert!(d1.as_secs_f64() >= 4.0 && d1.as_secs_f64() <= 6.0, "{d1:?}");
    assert!(d5.as_secs_f64() >= 64.0, "{d5:?}");
    assert!(d_429.as_secs_f64() >= 48.0, "{d_429:?}");
    assert!(context::backoff(50, None).as_secs_f64() <= 360.0);

    // The Secret appears: the next retry recovers.
    world.fake.seed(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-password", "namespace": NS}, "data": {"password": "cHc="}}),
    );
    let (result, _) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(world.condition("Degraded")["status"], "False");
    assert!(
        world.fake.get("", "secrets", NS, "db-superuser").is_none(),
        "no generated Secret"
    );
}

#[tokio::test]
async fn a_malformed_instance_is_reported_not_fatal() {
    let world = World::new(json!({"postgresVersion": "eighteen", "storage": {"size": "1Gi"}}));
    let (result, requests) = world.reconcile().await;
    let err = result.expect_err("cannot be read");
    assert_eq!(err.metric_label(), "invalid_object");
    let w = writes(&requests);
    assert_eq!(w.len(), 1, "only the Warning event: {w:?}");
    assert!(w[0].contains("events"));
}

// ------------------------------------------------------------ operations

const IMAGE_17: &str = "ghcr.io/pgsteward/postgres:17-standard-trixie";
const IMAGE_18: &str = "ghcr.io/pgsteward/postgres:18-standard-trixie";

impl World {
    /// An instance that runs: finalizer, objects, pod ready, status.
    async fn running(spec: Value) -> Self {
        let world = World::new(spec);
        let _ = world.reconcile().await;
        let _ = world.reconcile().await;
        world.pod_becomes_ready();
        let (result, _) = world.reconcile().await;
        assert!(result.is_ok(), "{result:?}");
        world
    }

    fn instance(&self) -> Value {
        self.fake.get(PGI.0, PGI.1, NS, "db").unwrap()
    }

    fn set_spec(&self, f: impl FnOnce(&mut Value), generation: i64) {
        self.fake.update(PGI.0, PGI.1, NS, "db", |i| {
            f(&mut i["spec"]);
            i["metadata"]["generation"] = json!(generation);
        });
    }
}

fn env_of(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(String::from))
}

/// The reasons of the events a reconcile published.
fn event_reasons(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.resource == "events" && r.method == Method::POST)
        .filter_map(|r| r.body.as_ref()?["reason"].as_str().map(String::from))
        .collect()
}

fn non_event_writes(requests: &[Recorded]) -> Vec<String> {
    writes(requests)
        .into_iter()
        .filter(|w| !w.contains("events"))
        .collect()
}

fn spec_at(major: u32) -> Value {
    let mut s = minimal_spec();
    s["postgresVersion"] = json!(major);
    s
}

#[tokio::test]
async fn an_upgrade_moves_the_image_follows_the_result_and_records_the_new_major() {
    let world = World::running(spec_at(17)).await;
    assert_eq!(world.instance()["status"]["postgresVersion"], 17);
    assert_eq!(world.instance()["status"]["image"], IMAGE_17);

    world.set_spec(|s| s["postgresVersion"] = json!(18), 2);
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_covered_by_rbac(&requests);
    // The operation is recorded before the StatefulSet changes.
    let w = non_event_writes(&requests);
    assert_eq!(
        w,
        vec![
            "PATCH pgsteward.io/pginstances/status/db",
            "PATCH apps/statefulsets/db",
            "PATCH pgsteward.io/pginstances/status/db",
        ]
    );
    let first = requests
        .iter()
        .find(|r| r.resource == "pginstances/status")
        .unwrap();
    assert_eq!(
        first.body.as_ref().unwrap()["status"]["operation"]["id"],
        "upgrade-17-to-18-g2"
    );
    let c = world.sts_container();
    assert_eq!(c["image"], IMAGE_18);
    assert_eq!(
        env_of(&c, "PGSTEWARD_UPGRADE_ID").as_deref(),
        Some("upgrade-17-to-18-g2")
    );
    assert_eq!(
        env_of(&c, "PGDATA").as_deref(),
        Some("/var/lib/postgresql/18/docker")
    );
    assert_eq!(world.condition("Upgrading")["status"], "True");
    assert_eq!(world.condition("Upgrading")["reason"], "InProgress");
    assert!(event_reasons(&requests).contains(&"UpgradeStarted".to_string()));

    // The new image upgraded the data; post-upgrade work runs.
    world.pod_runs(IMAGE_18, None);
    world.pod.set_report(Some(report_with_upgrade(
        "upgrade-running-cleanup.json",
        "upgrade-17-to-18-g2",
    )));
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        !non_event_writes(&requests)
            .iter()
            .any(|w| w.contains("statefulsets"))
    );
    assert_eq!(world.condition("Upgrading")["reason"], "PostUpgrade");
    assert!(
        world.condition("Upgrading")["message"]
            .as_str()
            .unwrap()
            .contains("step cleanup")
    );

    // Backed up and cleaned up: done.
    world.pod.set_report(Some(report_with_upgrade(
        "upgrade-succeeded.json",
        "upgrade-17-to-18-g2",
    )));
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    let i = world.instance();
    assert_eq!(i["status"]["postgresVersion"], 18);
    assert_eq!(i["status"]["image"], IMAGE_18);
    assert!(i["status"]["operation"].is_null(), "{}", i["status"]);
    assert_eq!(world.condition("Upgrading")["status"], "False");
    assert_eq!(world.condition("Upgrading")["reason"], "Succeeded");
    assert!(
        world.condition("Upgrading")["message"]
            .as_str()
            .unwrap()
            .contains("old data directory removed")
    );
    assert_eq!(world.condition("Degraded")["status"], "False");
    assert!(event_reasons(&requests).contains(&"UpgradeSucceeded".to_string()));
    // The request id stays on the template: removing it would restart the pod.
    assert_eq!(
        env_of(&world.sts_container(), "PGSTEWARD_UPGRADE_ID").as_deref(),
        Some("upgrade-17-to-18-g2")
    );
    assert!(
        !non_event_writes(&requests)
            .iter()
            .any(|w| w.contains("statefulsets"))
    );
    // Nor at the reconciles after it, once no operation is recorded (seen
    // against a real kubelet: a second restart, 13 s more downtime), and
    // Upgrading keeps saying how the last upgrade ended.
    for _ in 0..2 {
        let (result, requests) = world.reconcile().await;
        assert!(result.is_ok(), "{result:?}");
        assert!(
            !non_event_writes(&requests)
                .iter()
                .any(|w| w.contains("statefulsets")),
            "{:?}",
            writes(&requests)
        );
        assert_eq!(
            env_of(&world.sts_container(), "PGSTEWARD_UPGRADE_ID").as_deref(),
            Some("upgrade-17-to-18-g2")
        );
        assert_eq!(world.condition("Upgrading")["reason"], "Succeeded");
    }
}

#[tokio::test]
async fn a_failed_upgrade_puts_the_previous_image_back_and_waits_for_a_spec_change() {
    let world = World::running(spec_at(17)).await;
    world.set_spec(|s| s["postgresVersion"] = json!(18), 2);
    let (_, requests) = world.reconcile().await;
    assert_eq!(world.sts_container()["image"], IMAGE_18);
    assert!(
        !writes(&requests).iter().any(|w| w.starts_with("DELETE")),
        "a running pod is replaced by the StatefulSet's rolling update"
    );

    // The new image rolls the upgrade back and exits 1 at every start, so
    // exec cannot reach it: the exit code decides.
    world.pod_runs(IMAGE_18, Some(1));
    world.pod.set_report(None);
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_covered_by_rbac(&requests);
    let c = world.sts_container();
    assert_eq!(c["image"], IMAGE_17, "the previous image is back");
    assert_eq!(
        env_of(&c, "PGDATA").as_deref(),
        Some("/var/lib/postgresql/17/docker")
    );
    assert_eq!(env_of(&c, "PGSTEWARD_UPGRADE_ID"), None);
    // The StatefulSet does not replace a pod that is not Ready (seen against
    // a real kubelet: it stayed on the new image, crash-looping): the
    // operator deletes it, so it is created again on the previous image.
    assert!(
        writes(&requests).contains(&"DELETE /pods/db-0".to_string()),
        "{:?}",
        writes(&requests)
    );
    assert!(event_reasons(&requests).contains(&"PodReplaced".to_string()));
    assert_eq!(world.condition("Degraded")["status"], "True");
    assert_eq!(world.condition("Degraded")["reason"], "UpgradeFailed");
    assert_eq!(world.condition("Upgrading")["reason"], "RolledBack");
    assert!(event_reasons(&requests).contains(&"UpgradeRolledBack".to_string()));
    let failed = world.instance()["status"]["failedUpgrade"].clone();
    assert_eq!(failed["id"], "upgrade-17-to-18-g2");
    assert_eq!(failed["generation"], 2);

    // The old image runs the old cluster; its report has the image's
    // result, which fills in the failing step and pg_upgrade's message.
    world.pod_runs(IMAGE_17, None);
    world.pod.set_report(Some(report_with_upgrade(
        "upgrade-rolled_back-check.json",
        "upgrade-17-to-18-g2",
    )));
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        !non_event_writes(&requests)
            .iter()
            .any(|w| w.contains("statefulsets"))
    );
    let i = world.instance();
    assert_eq!(i["status"]["failedUpgrade"]["step"], "check");
    assert_eq!(i["status"]["postgresVersion"], 17);
    let degraded = world.condition("Degraded")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(degraded.contains("at step check"), "{degraded}");
    assert!(degraded.contains("could not access file"), "{degraded}");
    assert!(
        degraded.contains("not retried until the spec changes"),
        "{degraded}"
    );

    // Not retried while the spec stays: no write at all.
    let (_, requests) = world.reconcile().await;
    assert_eq!(non_event_writes(&requests), Vec::<String>::new());
    assert_eq!(world.sts_container()["image"], IMAGE_17);

    // A spec change retries, under a new id.
    world.set_spec(
        |s| s["config"] = json!({"parameters": {"work_mem": "8MB"}}),
        3,
    );
    let (result, _) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    let c = world.sts_container();
    assert_eq!(c["image"], IMAGE_18);
    assert_eq!(
        env_of(&c, "PGSTEWARD_UPGRADE_ID").as_deref(),
        Some("upgrade-17-to-18-g3")
    );
    assert!(world.instance()["status"]["failedUpgrade"].is_null());
}

#[tokio::test]
async fn a_new_image_that_dies_past_the_point_of_no_return_is_never_replaced_by_the_old_one() {
    let world = World::running(spec_at(17)).await;
    world.set_spec(|s| s["postgresVersion"] = json!(18), 2);
    let _ = world.reconcile().await;
    assert_eq!(world.sts_container()["image"], IMAGE_18);
    let mut past = fixture("upgrade-termination-start_new.json");
    past["id"] = json!("upgrade-17-to-18-g2");
    let past = json!({"upgrade": past, "restore": null});

    // The new image started the new cluster, then its container died (exit
    // 1) before exec could read anything: the termination message says the
    // data is 18 now, so the new image stays.
    world.pod_exits_with_message(IMAGE_18, 1, &past);
    world.pod.set_report(None);
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(world.sts_container()["image"], IMAGE_18);
    assert!(
        !non_event_writes(&requests)
            .iter()
            .any(|w| w.contains("statefulsets"))
    );
    assert_eq!(world.condition("Upgrading")["status"], "True");
    assert!(
        world.condition("Upgrading")["message"]
            .as_str()
            .unwrap()
            .contains("step start_new")
    );
    assert!(world.instance()["status"]["failedUpgrade"].is_null());

    // Had the image been put back on an exit code alone (a container that
    // left no message), the previous image refuses the upgraded data, exits
    // 2 and publishes the upgrade's result: the pod moves forward again,
    // under the same request id.
    world.pod_runs(IMAGE_18, Some(1));
    let _ = world.reconcile().await;
    assert_eq!(world.sts_container()["image"], IMAGE_17);
    world.pod_exits_with_message(IMAGE_17, 2, &past);
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_covered_by_rbac(&requests);
    let c = world.sts_container();
    assert_eq!(c["image"], IMAGE_18, "forward again");
    assert!(writes(&requests).contains(&"DELETE /pods/db-0".to_string()));
    assert_eq!(
        env_of(&c, "PGSTEWARD_UPGRADE_ID").as_deref(),
        Some("upgrade-17-to-18-g2")
    );
    assert!(event_reasons(&requests).contains(&"UpgradeResumed".to_string()));
    let i = world.instance();
    assert!(i["status"]["failedUpgrade"].is_null());
    assert_eq!(i["status"]["operation"]["id"], "upgrade-17-to-18-g2");
    assert_eq!(world.condition("Upgrading")["reason"], "Resumed");
}

#[tokio::test]
async fn an_operator_restarted_mid_upgrade_resumes_without_starting_again() {
    let mut world = World::running(spec_at(17)).await;
    world.set_spec(|s| s["postgresVersion"] = json!(18), 2);
    // The operator recorded the upgrade, then died before moving the
    // StatefulSet (status written, StatefulSet still on 17).
    world.fake.update(PGI.0, PGI.1, NS, "db", |i| {
        i["status"]["operation"] = json!({"kind": "upgrade", "id": "upgrade-17-to-18-g2",
            "startedAt": "2026-11-21T10:00:00Z", "fromMajor": 17, "fromImage": IMAGE_17, "toMajor": 18});
    });
    assert_eq!(world.sts_container()["image"], IMAGE_17);
    world.restart_operator();
    // Meanwhile the spec changed again: the recorded request still wins.
    world.set_spec(
        |s| s["config"] = json!({"parameters": {"work_mem": "8MB"}}),
        3,
    );
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!event_reasons(&requests).contains(&"UpgradeStarted".to_string()));
    let c = world.sts_container();
    assert_eq!(c["image"], IMAGE_18);
    assert_eq!(
        env_of(&c, "PGSTEWARD_UPGRADE_ID").as_deref(),
        Some("upgrade-17-to-18-g2")
    );
    assert_eq!(
        world.instance()["status"]["operation"]["id"],
        "upgrade-17-to-18-g2"
    );
    assert_eq!(
        world.instance()["status"]["operation"]["startedAt"],
        "2026-11-21T10:00:00Z"
    );

    // Restarted again while the image works: nothing is re-applied.
    world.pod_runs(IMAGE_18, None);
    world.pod.set_report(Some(report_with_upgrade(
        "upgrade-running-cleanup.json",
        "upgrade-17-to-18-g2",
    )));
    world.restart_operator();
    world.pod.take_calls();
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        !non_event_writes(&requests)
            .iter()
            .any(|w| w.contains("statefulsets"))
    );
    assert!(!event_reasons(&requests).contains(&"UpgradeStarted".to_string()));
    let calls = world.pod.take_calls();
    assert!(calls.iter().all(|c| c[0] != "backup.sh"), "{calls:?}");
    assert_eq!(world.condition("Upgrading")["status"], "True");
    assert_eq!(
        world.instance()["status"]["operation"]["id"],
        "upgrade-17-to-18-g2"
    );
}

fn pgbackup_json(name: &str, instance: &str, created: &str, status: Option<Value>) -> Value {
    let mut b = json!({"apiVersion": "pgsteward.io/v1alpha1", "kind": "PgBackup",
        "metadata": {"name": name, "namespace": NS, "uid": format!("pgb-{name}"),
                     "generation": 1, "creationTimestamp": created},
        "spec": {"instanceRef": {"name": instance}}});
    if let Some(s) = status {
        b["status"] = s;
    }
    b
}

async fn reconcile_backup(
    world: &World,
    name: &str,
) -> (
    Result<kube::runtime::controller::Action, pgsteward_operator::Error>,
    Vec<Recorded>,
) {
    world.fake.take_requests();
    let stored = world.fake.get(PGI.0, "pgbackups", NS, name).unwrap();
    let guard: DeserializeGuard<pgsteward_api::PgBackup> = serde_json::from_value(stored).unwrap();
    let result = pgsteward_operator::backups::reconcile(Arc::new(guard), world.ctx.clone()).await;
    (result, world.fake.take_requests())
}

#[tokio::test]
async fn a_backup_request_runs_backup_sh_in_the_pod_and_reports_the_result() {
    let world = World::running(minimal_spec()).await;
    assert_eq!(world.condition("Ready")["status"], "True");
    world.fake.seed(
        PGI.0,
        "pgbackups",
        pgbackup_json("nightly", "db", "2026-11-21T10:00:00Z", None),
    );
    let mut result = fixture("backup-succeeded.json");
    result["id"] = json!("pgb-nightly");
    world.pod.script.once(
        &["backup.sh"],
        ExecOutput {
            exit_code: 0,
            stdout: serde_json::to_string_pretty(&result).unwrap(),
            stderr: "backup.sh: backup-push ...\n".into(),
        },
    );
    world.pod.take_calls();
    let (r, requests) = reconcile_backup(&world, "nightly").await;
    assert!(r.is_ok(), "{r:?}");
    assert_covered_by_rbac(&requests);
    assert_eq!(
        world.pod.take_calls(),
        vec![vec![
            "backup.sh".to_string(),
            "--id".into(),
            "pgb-nightly".into()
        ]]
    );
    assert_eq!(
        non_event_writes(&requests),
        vec![
            "PATCH pgsteward.io/pgbackups/status/nightly",
            "PATCH pgsteward.io/pgbackups/status/nightly"
        ],
        "Running, then the result"
    );
    assert_eq!(event_reasons(&requests), vec!["BackupSucceeded"]);
    let running = &requests
        .iter()
        .find(|r| r.is_write())
        .unwrap()
        .body
        .as_ref()
        .unwrap()["status"];
    assert_eq!(running["phase"], "Running");
    let b = world.fake.get(PGI.0, "pgbackups", NS, "nightly").unwrap();
    let st = &b["status"];
    assert_eq!(st["phase"], "Succeeded");
    assert_eq!(st["backupName"], result["details"]["backupName"]);
    assert_eq!(st["startLsn"], result["details"]["startLsn"]);
    assert_eq!(st["finishLsn"], result["details"]["finishLsn"]);
    assert_eq!(st["startedAt"], result["details"]["startTime"]);
    assert_eq!(st["finishedAt"], result["details"]["finishTime"]);
    assert_eq!(st["backupId"], "pgb-nightly");
    assert!(st["message"].as_str().unwrap().contains("taken"));

    // Finished: reconciling again does nothing.
    let (r, requests) = reconcile_backup(&world, "nightly").await;
    assert!(r.is_ok());
    assert!(requests.is_empty(), "{:?}", writes(&requests));
    assert!(world.pod.take_calls().is_empty());
}

#[tokio::test]
async fn backups_of_a_missing_instance_fail_and_a_second_one_waits() {
    let world = World::running(minimal_spec()).await;
    world.fake.seed(
        PGI.0,
        "pgbackups",
        pgbackup_json("orphan", "nope", "2026-11-21T10:00:00Z", None),
    );
    world.fake.seed(
        PGI.0,
        "pgbackups",
        pgbackup_json(
            "first",
            "db",
            "2026-11-21T09:00:00Z",
            Some(json!({"phase": "Running", "backupId": "pgb-first"})),
        ),
    );
    world.fake.seed(
        PGI.0,
        "pgbackups",
        pgbackup_json("second", "db", "2026-11-21T10:00:00Z", None),
    );
    let (r, requests) = reconcile_backup(&world, "orphan").await;
    assert!(r.is_ok(), "{r:?}");
    assert_covered_by_rbac(&requests);
    let st = world.fake.get(PGI.0, "pgbackups", NS, "orphan").unwrap()["status"].clone();
    assert_eq!(st["phase"], "Failed");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("PgInstance shop/nope does not exist")
    );
    assert_eq!(event_reasons(&requests), vec!["BackupFailed"]);

    let (r, requests) = reconcile_backup(&world, "second").await;
    assert_eq!(
        r.unwrap(),
        kube::runtime::controller::Action::requeue(pgsteward_operator::backups::WAIT)
    );
    assert_covered_by_rbac(&requests);
    let st = world.fake.get(PGI.0, "pgbackups", NS, "second").unwrap()["status"].clone();
    assert_eq!(st["phase"], "Pending");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("waiting for PgBackup first, which is running")
    );
    assert!(world.pod.take_calls().iter().all(|c| c[0] != "backup.sh"));

    // The running one is resumed with its id; backup.sh says another run
    // (itself) still holds the lock: it stays Running.
    world.pod.script.once(
        &["backup.sh"],
        ExecOutput {
            exit_code: 5,
            stdout: String::new(),
            stderr: "another backup holds the lock\n".into(),
        },
    );
    let (r, _) = reconcile_backup(&world, "first").await;
    assert!(r.is_ok(), "{r:?}");
    let st = world.fake.get(PGI.0, "pgbackups", NS, "first").unwrap()["status"].clone();
    assert_eq!(st["phase"], "Running");
    assert!(st["message"].as_str().unwrap().contains("holds the lock"));
    let calls = world.pod.take_calls();
    assert!(
        calls.contains(&vec![
            "backup.sh".to_string(),
            "--id".into(),
            "pgb-first".into()
        ]),
        "{calls:?}"
    );
    // Still locked at the next try: nothing to write, so the status write
    // does not wake the controller again at once (each write is a watch
    // event; alternating texts made a hot loop against a real API server).
    world.pod.script.once(
        &["backup.sh"],
        ExecOutput {
            exit_code: 5,
            stdout: String::new(),
            stderr: "another backup holds the lock\n".into(),
        },
    );
    let (r, requests) = reconcile_backup(&world, "first").await;
    assert_eq!(
        r.unwrap(),
        kube::runtime::controller::Action::requeue(pgsteward_operator::backups::WAIT)
    );
    assert_eq!(writes(&requests), Vec::<String>::new());
}

fn report_with(kind: &str, name: &str, id: &str) -> Value {
    let mut r = base_report();
    let mut v = fixture(name);
    v["id"] = json!(id);
    r["results"][kind] = v;
    r
}

#[tokio::test]
async fn an_in_place_restore_is_requested_on_the_pod_and_its_result_recorded() {
    let world = World::running(minimal_spec()).await;
    world.pod_runs(IMAGE_18, None);
    // The image reports a backup: the recoverability window starts there.
    let report = report_with("backup", "backup-succeeded.json", "b-first");
    let first = report["results"]["backup"]["details"]["firstRecoverabilityPoint"]
        .as_str()
        .unwrap()
        .to_string();
    world.pod.set_report(Some(report.clone()));
    let _ = world.reconcile().await;
    assert_eq!(
        world.instance()["status"]["firstRecoverabilityPoint"],
        first.as_str()
    );
    assert_eq!(
        world.instance()["status"]["lastBackup"]["name"],
        report["results"]["backup"]["details"]["backupName"]
    );

    // A target before the first backup is refused before anything changes.
    let before: k8s_openapi::jiff::Timestamp = first.parse().unwrap();
    let before = before - k8s_openapi::jiff::SignedDuration::from_secs(60);
    world.set_spec(
        |s| s["restore"] = json!({"requestId": "r-early", "target": {"time": before.to_string()}}),
        2,
    );
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        !non_event_writes(&requests)
            .iter()
            .any(|w| w.contains("statefulsets"))
    );
    assert_eq!(
        world.condition("Degraded")["reason"],
        "RestoreTargetBeforeFirstBackup"
    );
    assert_eq!(world.condition("Restoring")["reason"], "Rejected");
    assert_eq!(
        world.instance()["status"]["lastRestore"]["outcome"],
        "rejected"
    );
    assert_eq!(env_of(&world.sts_container(), "PGSTEWARD_RESTORE_ID"), None);
    // It stays refused (a new request needs a new id): nothing changes.
    let (_, requests) = world.reconcile().await;
    assert_eq!(non_event_writes(&requests), Vec::<String>::new());
    assert_eq!(
        world.condition("Degraded")["reason"],
        "RestoreTargetBeforeFirstBackup"
    );

    // A valid request: recorded, then on the pod template.
    world.set_spec(
        |s| s["restore"] = json!({"requestId": "r-1", "target": {"latest": true}}),
        3,
    );
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        non_event_writes(&requests),
        vec![
            "PATCH pgsteward.io/pginstances/status/db",
            "PATCH apps/statefulsets/db",
            "PATCH pgsteward.io/pginstances/status/db",
        ]
    );
    let c = world.sts_container();
    assert_eq!(env_of(&c, "PGSTEWARD_RESTORE_ID").as_deref(), Some("r-1"));
    assert_eq!(
        env_of(&c, "PGSTEWARD_RESTORE_MODE").as_deref(),
        Some("in-place")
    );
    assert_eq!(
        env_of(&c, "PGSTEWARD_RESTORE_TARGET").as_deref(),
        Some("latest")
    );
    assert_eq!(
        env_of(&c, "PGSTEWARD_RESTORE_BACKUP").as_deref(),
        Some("LATEST")
    );
    assert_eq!(world.condition("Restoring")["status"], "True");
    assert_eq!(world.condition("Degraded")["status"], "False");
    assert_eq!(
        world.instance()["status"]["lastRestore"]["outcome"],
        "running"
    );

    // The image restored in place.
    world.pod.set_report(Some(report_with(
        "restore",
        "restore-succeeded-in-place.json",
        "r-1",
    )));
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    let st = world.instance()["status"].clone();
    assert_eq!(st["lastRestore"]["requestId"], "r-1");
    assert_eq!(st["lastRestore"]["outcome"], "succeeded");
    assert!(st["lastRestore"]["finishedAt"].is_string());
    assert!(st["operation"].is_null());
    assert_eq!(world.condition("Restoring")["status"], "False");
    assert_eq!(world.condition("Restoring")["reason"], "Succeeded");
    assert!(event_reasons(&requests).contains(&"RestoreSucceeded".to_string()));
    // The request stays on the template (the image never runs it twice).
    assert!(
        !non_event_writes(&requests)
            .iter()
            .any(|w| w.contains("statefulsets"))
    );
    let (_, requests) = world.reconcile().await;
    assert_eq!(non_event_writes(&requests), Vec::<String>::new());
    assert_eq!(world.condition("Restoring")["reason"], "Succeeded");

    // A request the image rolls back: Degraded until it is replaced.
    world.set_spec(
        |s| s["restore"] = json!({"requestId": "r-2", "target": {"xid": "1759"}}),
        4,
    );
    let _ = world.reconcile().await;
    world.pod.set_report(Some(report_with(
        "restore",
        "restore-rolled_back-recovery.json",
        "r-2",
    )));
    let (_, requests) = world.reconcile().await;
    assert!(event_reasons(&requests).contains(&"RestoreFailed".to_string()));
    for _ in 0..2 {
        let _ = world.reconcile().await;
        assert_eq!(world.condition("Degraded")["reason"], "RestoreFailed");
        assert_eq!(world.condition("Restoring")["reason"], "RolledBack");
        assert!(
            world.condition("Degraded")["message"]
                .as_str()
                .unwrap()
                .contains("the previous data is back in place")
        );
    }
    assert_eq!(
        world.instance()["status"]["lastRestore"]["outcome"],
        "rolled_back"
    );
    world.set_spec(|s| s["restore"] = Value::Null, 5);
    let _ = world.reconcile().await;
    assert_eq!(world.condition("Degraded")["status"], "False");
}

#[tokio::test]
async fn a_config_change_is_reloaded_and_restarts_the_pod_only_when_needed() {
    let world = World::running(minimal_spec()).await;
    world.pod_runs(IMAGE_18, None);
    let revision = world.instance()["status"]["configRevision"].clone();
    assert!(revision.is_string(), "the first config is loaded");
    world.pod.take_calls();

    world.set_spec(
        |s| s["config"] = json!({"parameters": {"work_mem": "32MB"}}),
        2,
    );
    let _ = world.reconcile().await; // the ConfigMap is written
    // Until the kubelet has updated the mounted files, status says so.
    let progressing = world.condition("Progressing");
    assert_eq!(
        (&progressing["status"], &progressing["reason"]),
        (&json!("True"), &json!("ConfigPending")),
        "{progressing}"
    );
    let (result, _) = world.reconcile().await; // mounted: reload
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(world.condition("Progressing")["status"], "False");
    let calls = world.pod.take_calls();
    assert!(
        calls.iter().any(|c| c[0] == "pg_ctl" && c[1] == "reload"),
        "{calls:?}"
    );
    assert_ne!(world.instance()["status"]["configRevision"], revision);
    assert!(world.instance()["status"]["pendingRestart"].is_null());

    // A setting that needs a restart: the pod is deleted once.
    world.set_spec(
        |s| s["config"] = json!({"parameters": {"work_mem": "32MB", "shared_buffers": "64MB"}}),
        3,
    );
    let _ = world.reconcile().await;
    let mut needs_restart = base_report();
    needs_restart["pendingRestart"] = fixture("status.json")["pendingRestart"].clone();
    world.pod.set_report(Some(needs_restart.clone()));
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert_covered_by_rbac(&requests);
    assert!(
        writes(&requests).contains(&"DELETE /pods/db-0".to_string()),
        "{:?}",
        writes(&requests)
    );
    assert_eq!(world.condition("Progressing")["reason"], "PendingRestart");
    assert_eq!(
        world.instance()["status"]["pendingRestart"],
        json!(["shared_buffers"])
    );
    assert_eq!(world.instance()["status"]["operation"]["kind"], "restart");
    // Until the new pod runs, no second delete.
    let (_, requests) = world.reconcile().await;
    assert!(!writes(&requests).iter().any(|w| w.starts_with("DELETE")));
    let last = world.instance()["status"]["lastRestart"].clone();
    assert_eq!(last["settings"], json!(["shared_buffers"]), "{last}");
    assert!(last["configRevision"].is_string(), "{last}");

    // The new pod still reports the setting as pending: one restart per
    // configuration, so no second delete, and Degraded says what to check.
    world.pod_runs(IMAGE_18, None);
    for _ in 0..3 {
        let (result, requests) = world.reconcile().await;
        assert!(result.is_ok(), "{result:?}");
        assert!(
            !writes(&requests).iter().any(|w| w.starts_with("DELETE")),
            "{:?}",
            writes(&requests)
        );
    }
    assert!(world.instance()["status"]["operation"].is_null());
    assert_eq!(world.condition("Degraded")["reason"], "RestartDidNotApply");
    assert!(
        world.condition("Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("shared_buffers"),
    );

    // The new pod has the setting.
    world.pod_runs(IMAGE_18, None);
    world.pod.set_report(Some(base_report()));
    let (result, _) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert!(world.instance()["status"]["operation"].is_null());
    assert!(world.instance()["status"]["pendingRestart"].is_null());

    // A value PostgreSQL refuses: Degraded with its message, no restart.
    let mut refused = base_report();
    refused["configErrors"] = fixture("status.json")["configErrors"].clone();
    world.pod.set_report(Some(refused));
    let (result, requests) = world.reconcile().await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!writes(&requests).iter().any(|w| w.starts_with("DELETE")));
    assert_eq!(world.condition("Degraded")["reason"], "InvalidParameter");
    assert!(
        world.condition("Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("work_mem (line 1 of")
    );
}

// ----------------------------------------- the image's real scripts, locally

/// The pod's side run for real: the image's scripts on this machine, with
/// a volume in a temporary directory (no server: the kubelet and
/// PostgreSQL are what is missing). Panics, naming the tool, when one the
/// scripts need is not installed: such tests are `#[ignore]`d for a bare
/// `cargo test` and run by `make test`, after `make test-deps`.
fn local_pod(volume: &std::path::Path) -> LocalExec {
    for tool in ["bash", "jq", "flock"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            panic!("the image's scripts need {tool} on PATH: run `make test-deps`");
        }
    }
    let scripts =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../images/postgres/scripts");
    let v = volume.display().to_string();
    LocalExec {
        scripts_dir: scripts,
        prefix: vec![],
        mounts: vec![],
        env: vec![
            ("PG_MAJOR".into(), "18".into()),
            ("PGSTEWARD_VOLUME".into(), v.clone()),
            ("PGDATA".into(), format!("{v}/18/docker")),
            ("PGSTEWARD_RUN_DIR".into(), format!("{v}/run")),
            ("PGHOST".into(), format!("{v}/run")),
            ("PGCONNECT_TIMEOUT".into(), "2".into()),
        ],
    }
}

fn temp_volume(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("pgsteward-scenario-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("pgsteward")).unwrap();
    dir
}

#[ignore = "runs the image's scripts for real: needs `make test-deps`; `make test` runs it"]
#[tokio::test]
async fn a_backup_request_runs_the_real_backup_sh_and_its_result_reaches_both_statuses() {
    let volume = temp_volume("backup");
    let local = local_pod(&volume);
    let mut world = World::running(minimal_spec()).await;
    world.pod_runs(IMAGE_18, None);
    world.use_exec(Arc::new(local));
    world.fake.seed(
        PGI.0,
        "pgbackups",
        pgbackup_json("adhoc", "db", "2026-11-21T10:00:00Z", None),
    );
    // The pod has no storage variables here: the real backup.sh refuses at
    // its `check` step, exit 3, and records the result on the volume.
    let (r, _) = reconcile_backup(&world, "adhoc").await;
    assert!(r.is_ok(), "{r:?}");
    let st = world.fake.get(PGI.0, "pgbackups", NS, "adhoc").unwrap()["status"].clone();
    assert_eq!(st["phase"], "Failed", "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("failed at step check: no backup storage configured"),
        "{st}"
    );
    assert!(
        volume
            .join("pgsteward/results/backup/pgb-adhoc.json")
            .is_file()
    );

    // The real pgsteward-status (server down) carries that result into the
    // instance's backup health.
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(world.condition("BackupHealthy")["status"], "False");
    assert_eq!(world.condition("BackupHealthy")["reason"], "BackupFailed");
    assert!(
        world.condition("BackupHealthy")["message"]
            .as_str()
            .unwrap()
            .contains("pgb-adhoc")
    );
    let _ = std::fs::remove_dir_all(&volume);
}

#[ignore = "runs the image's scripts for real: needs `make test-deps`; `make test` runs it"]
#[tokio::test]
async fn a_rolled_back_upgrade_is_explained_from_the_state_file_through_the_real_pgsteward_status()
{
    let volume = temp_volume("upgrade");
    let local = local_pod(&volume);
    let mut world = World::running(spec_at(17)).await;
    world.set_spec(|s| s["postgresVersion"] = json!(18), 2);
    let _ = world.reconcile().await;
    // The new image exits 1 after rolling back: the old image goes back
    // without a message yet.
    world.pod_runs(IMAGE_18, Some(1));
    world.pod.set_report(None);
    let _ = world.reconcile().await;
    assert_eq!(world.sts_container()["image"], IMAGE_17);
    assert!(world.instance()["status"]["failedUpgrade"]["step"].is_null());

    // The old image runs; the upgrade's state file is on the volume.
    let mut result = fixture("upgrade-rolled_back-check.json");
    result["id"] = json!("upgrade-17-to-18-g2");
    std::fs::write(
        volume.join("pgsteward/upgrade.json"),
        serde_json::to_string_pretty(&result).unwrap(),
    )
    .unwrap();
    world.pod_runs(IMAGE_17, None);
    world.use_exec(Arc::new(local));
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    let failed = world.instance()["status"]["failedUpgrade"].clone();
    assert_eq!(failed["step"], "check", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("pg_stat_statements")
    );
    assert_eq!(world.sts_container()["image"], IMAGE_17);
    let _ = std::fs::remove_dir_all(&volume);
}

// ------------------------------- the whole path against a real PostgreSQL

/// A PostgreSQL server started by the image's real entrypoint on this
/// machine, laid out as in the pod (as `e2e/image/harness.py` does), run as
/// the unprivileged `postgres` user. Stopped (fast) when dropped.
struct RealPod {
    root: std::path::PathBuf,
    repo: std::path::PathBuf,
    port: u16,
    root_user: bool,
    major: u32,
    child: Option<std::process::Child>,
    exec: LocalExec,
}

fn pg_bindir(major: u32) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/var/cache/pgsteward/pg/{major}/bin"))
}

impl RealPod {
    /// Panics, saying what is missing, when this machine cannot run it
    /// (`make test-deps` installs it all). Its tests are `#[ignore]`d for a
    /// bare `cargo test`; `make test` runs them.
    fn start(major: u32, needs: &[u32]) -> Self {
        let have = |cmd: &str| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {cmd}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let root_user = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mut missing: Vec<String> = needs
            .iter()
            .filter(|m| !pg_bindir(**m).join("postgres").is_file())
            .map(|m| format!("PostgreSQL {m} in /var/cache/pgsteward/pg/{m} (make test-deps)"))
            .collect();
        for (lacks, what) in [
            (!have("jq"), "jq"),
            (!have("flock"), "flock"),
            (root_user && !have("setpriv"), "setpriv"),
            (
                root_user
                    && !std::process::Command::new("id")
                        .arg("postgres")
                        .output()
                        .is_ok_and(|o| o.status.success()),
                "a `postgres` user",
            ),
        ] {
            if lacks {
                missing.push(what.into());
            }
        }
        if !missing.is_empty() {
            panic!(
                "the real-PostgreSQL scenario needs {}: run `make test-deps`",
                missing.join(", ")
            );
        }
        let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = std::path::PathBuf::from(format!(
            "/tmp/pgsteward-e2e-operator-{}-{}",
            std::process::id(),
            POD_UIDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["volume", "run", "storage"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        // The kubelet's terminationMessagePath: an empty file the container
        // can write.
        std::fs::write(root.join("termination-log"), "").unwrap();
        sh(format!(
            "cp -r {} {}/etc && mkdir -p {}/etc/conf.d && chmod 755 {}",
            repo.join("images/postgres/config").display(),
            root.display(),
            root.display(),
            root.display()
        ));
        if root_user {
            sh(format!("chown -R postgres:postgres {}", root.display()));
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut pod = RealPod {
            root,
            repo,
            port,
            root_user,
            major,
            child: None,
            exec: LocalExec::default(),
        };
        pod.run(major, &[]);
        pod
    }

    /// Start the entrypoint of `major`'s image with the pod template's extra
    /// environment (what the kubelet does with a changed StatefulSet), and
    /// wait until the server it execs answers.
    fn run(&mut self, major: u32, extra: &[(String, String)]) {
        if let Err(code) = self.try_run(major, extra) {
            panic!("the entrypoint exited {code}:\n{}", self.log());
        }
    }

    /// [`run`], or the entrypoint's exit code when it stops before the
    /// server is up (as a crashing container does).
    fn try_run(&mut self, major: u32, extra: &[(String, String)]) -> Result<(), i32> {
        self.stop();
        self.major = major;
        let scripts = self.repo.join("images/postgres/scripts");
        let r = self.root.display().to_string();
        let path = format!(
            "{}:{}:{}:{}",
            pg_bindir(major).display(),
            scripts.display(),
            self.repo.join("e2e/standins").display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
        );
        let mut env: Vec<(String, String)> = [
            ("PATH", path),
            ("PG_MAJOR", major.to_string()),
            ("PGSTEWARD_VOLUME", format!("{r}/volume")),
            ("PGDATA", format!("{r}/volume/{major}/docker")),
            ("PGSTEWARD_CONFIG_DIR", format!("{r}/etc")),
            ("PGSTEWARD_RUN_DIR", format!("{r}/run")),
            ("PGHOST", format!("{r}/run")),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "postgres".into()),
            ("POSTGRES_PASSWORD", "s3cr3t-test-password".into()),
            ("PGSTEWARD_MANAGED", "1".into()),
            ("PGSTEWARD_TERMINATION_LOG", format!("{r}/termination-log")),
            (
                "WALG_BIN",
                self.repo.join("e2e/standins/wal-g").display().to_string(),
            ),
            ("WALG_FILE_PREFIX", format!("{r}/storage")),
            (
                "DOCKER_ENTRYPOINT",
                self.repo
                    .join("e2e/standins/docker-entrypoint.sh")
                    .display()
                    .to_string(),
            ),
            ("LC_ALL", "C.UTF-8".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra.iter().cloned());
        let prefix: Vec<String> = if self.root_user {
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        } else {
            vec![]
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("server.log"))
            .unwrap();
        let mut argv = prefix.clone();
        argv.push(scripts.join("entrypoint.sh").display().to_string());
        argv.push("postgres".into());
        let child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env.iter().cloned())
            .current_dir(&self.root)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.exec = LocalExec {
            scripts_dir: scripts,
            env,
            prefix,
            mounts: vec![
                ("/etc/postgresql".into(), self.root.join("etc")),
                ("/var/lib/postgresql".into(), self.root.join("volume")),
            ],
        };
        let pid = child.id().to_string();
        self.child = Some(child);
        // Ready when the server the entrypoint execs (same pid) answers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                return Err(status.code().unwrap_or(128));
            }
            let server = std::fs::read_to_string(
                self.root
                    .join(format!("volume/{major}/docker/postmaster.pid")),
            )
            .ok()
            .and_then(|t| t.lines().next().map(str::to_string));
            let ready = std::process::Command::new(pg_bindir(major).join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    &format!("{r}/run"),
                    "-p",
                    &self.port.to_string(),
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ready && server.as_deref() == Some(pid.as_str()) {
                return Ok(());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not ready after 180 s:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// What the kubelet would report as the container's termination message.
    fn termination_message(&self) -> Value {
        let text = std::fs::read_to_string(self.root.join("termination-log")).unwrap();
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("termination message {text:?}: {e}\n{}", self.log()))
    }

    /// Fast shutdown (SIGINT, the image's STOPSIGNAL) of the server.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    /// What the kubelet does with the ConfigMap: write its files into the
    /// mounted conf.d.
    fn mount_config(&self, config_map: &Value) {
        let dir = self.root.join("etc/conf.d");
        for (name, text) in config_map["data"].as_object().unwrap() {
            std::fs::write(dir.join(name), text.as_str().unwrap()).unwrap();
        }
    }
}

fn sh(cmd: String) {
    let ok = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{cmd}");
}

impl Drop for RealPod {
    fn drop(&mut self) {
        self.stop();
        // Background work of `upgrade.sh post` may still hold files briefly.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[ignore = "runs the image's scripts for real: needs `make test-deps`; `make test` runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_against_a_real_postgresql_backup_health_reload_and_restart() {
    let real = RealPod::start(18, &[18]);
    let mut world = World::running(minimal_spec()).await;
    world.pod_runs(IMAGE_18, None);
    real.mount_config(&world.fake.get("", "configmaps", NS, "db-config").unwrap());
    world.use_exec(Arc::new(real.exec.clone()));

    // The real pgsteward-status: the server runs, the archiver reports, the
    // mounted conf.d matches, so the configuration is reloaded for real.
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}\n{}", real.log());
    let st = world.instance()["status"].clone();
    assert!(st["configRevision"].is_string(), "{st}");
    assert_eq!(
        world.condition("BackupHealthy")["reason"],
        "NoScheduledBackupYet",
        "{st}"
    );

    // An on-demand backup through the real backup.sh (WAL-G stand-in on a
    // local directory): real LSNs and times in the PgBackup's status.
    world.fake.seed(
        PGI.0,
        "pgbackups",
        pgbackup_json("real", "db", "2026-11-21T10:00:00Z", None),
    );
    let (r, _) = reconcile_backup(&world, "real").await;
    assert!(r.is_ok(), "{r:?}");
    let b = world.fake.get(PGI.0, "pgbackups", NS, "real").unwrap()["status"].clone();
    assert_eq!(b["phase"], "Succeeded", "{b}\n{}", real.log());
    assert!(
        b["backupName"].as_str().unwrap().starts_with("base_"),
        "{b}"
    );
    assert!(b["startLsn"].as_str().unwrap().contains('/'), "{b}");
    // The instance shows it, with the recoverability window and archiving.
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    let st = world.instance()["status"].clone();
    assert_eq!(st["lastBackup"]["name"], b["backupName"], "{st}");
    assert!(st["firstRecoverabilityPoint"].is_string(), "{st}");
    assert!(st["archiver"]["lastArchivedWal"].is_string(), "{st}");
    // An on-demand backup does not show that the schedule works.
    assert!(st["lastScheduledBackup"].is_null(), "{st}");
    let health = world.condition("BackupHealthy");
    assert_eq!(health["reason"], "NoScheduledBackupYet", "{st}");
    assert!(
        health["message"]
            .as_str()
            .unwrap()
            .contains("on demand do not count"),
        "{health}"
    );

    // One scheduled run, exactly as cron starts it (`cron-job ENVFILE`; the
    // environment is already the pod's, so the file adds nothing): the real
    // scheduler tags it scheduled-<UTC>, and it counts.
    let out = real
        .exec
        .exec(
            NS,
            "db-0",
            vec![
                "backup-scheduler.sh".into(),
                "cron-job".into(),
                "/dev/null".into(),
            ],
            std::time::Duration::from_secs(300),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{}\n{}", out.stdout, out.stderr);
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    let st = world.instance()["status"].clone();
    assert_ne!(st["lastScheduledBackup"]["name"], b["backupName"], "{st}");
    assert_eq!(st["lastScheduledBackup"], st["lastBackup"], "{st}");
    assert_eq!(
        world.condition("BackupHealthy")["reason"],
        "Healthy",
        "{st}"
    );

    // A setting that needs a restart: reloaded, PostgreSQL says it is
    // pending, the pod is deleted once.
    world.set_spec(
        |s| s["config"] = json!({"parameters": {"shared_buffers": "64MB"}}),
        2,
    );
    let _ = world.reconcile().await; // the ConfigMap is written
    real.mount_config(&world.fake.get("", "configmaps", NS, "db-config").unwrap());
    let (r, requests) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        world.instance()["status"]["pendingRestart"],
        json!(["shared_buffers"]),
        "{}",
        world.instance()["status"]
    );
    assert!(writes(&requests).contains(&"DELETE /pods/db-0".to_string()));

    // A value PostgreSQL refuses: Degraded with PostgreSQL's own words.
    world.pod_runs(IMAGE_18, None); // the new pod (same server here)
    world.set_spec(
        |s| s["config"] = json!({"parameters": {"work_mem": "lots"}}),
        3,
    );
    let _ = world.reconcile().await;
    real.mount_config(&world.fake.get("", "configmaps", NS, "db-config").unwrap());
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    let degraded = world.condition("Degraded");
    assert_eq!(degraded["reason"], "InvalidParameter", "{degraded}");
    assert!(
        degraded["message"].as_str().unwrap().contains("work_mem"),
        "{degraded}"
    );
}

#[ignore = "runs the image's scripts for real: needs `make test-deps`; `make test` runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_of_a_major_upgrade_against_real_postgresql() {
    let mut real = RealPod::start(17, &[17, 18]);
    let mut world = World::running(spec_at(17)).await;
    world.pod_runs(IMAGE_17, None);
    real.mount_config(&world.fake.get("", "configmaps", NS, "db-config").unwrap());
    world.use_exec(Arc::new(real.exec.clone()));
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(world.instance()["status"]["postgresVersion"], 17);

    // Raise the version: the operator records the request and moves the
    // StatefulSet; the kubelet starts the new image with its environment.
    world.set_spec(|s| s["postgresVersion"] = json!(18), 2);
    let (r, requests) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    assert!(event_reasons(&requests).contains(&"UpgradeStarted".to_string()));
    let c = world.sts_container();
    assert_eq!(c["image"], IMAGE_18);
    let id = env_of(&c, "PGSTEWARD_UPGRADE_ID").unwrap();
    assert_eq!(id, "upgrade-17-to-18-g2");
    real.mount_config(&world.fake.get("", "configmaps", NS, "db-config").unwrap());
    real.run(18, &[("PGSTEWARD_UPGRADE_ID".into(), id.clone())]);
    world.pod_runs(IMAGE_18, None);
    world.use_exec(Arc::new(real.exec.clone()));

    // Follow the image's real upgrade result until `upgrade.sh post`
    // (analyze, extensions, backup, cleanup) is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let mut reasons = Vec::new();
    let mut events = Vec::new();
    loop {
        let (r, requests) = world.reconcile().await;
        assert!(r.is_ok(), "{r:?}");
        events.extend(event_reasons(&requests));
        let reason = world.condition("Upgrading")["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if reasons.last() != Some(&reason) {
            reasons.push(reason.clone());
        }
        if reason == "Succeeded" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no success within 180 s: {reasons:?}, {}\n{}",
            world.condition("Upgrading"),
            real.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let st = world.instance()["status"].clone();
    assert_eq!(st["postgresVersion"], 18, "{st}");
    assert_eq!(st["image"], IMAGE_18);
    assert!(st["operation"].is_null(), "{st}");
    assert!(
        events.contains(&"UpgradeSucceeded".to_string()),
        "{events:?}"
    );
    assert!(
        !events.contains(&"UpgradeStarted".to_string()),
        "started once: {events:?}"
    );
    assert_eq!(world.condition("Degraded")["status"], "False");
    // The post-upgrade full backup went to the new major's storage.
    assert!(real.root.join("storage/18").is_dir(), "{}", real.log());
    assert!(
        !real.root.join("volume/17/docker").exists(),
        "the old data directory is removed"
    );
}

#[ignore = "runs the image's scripts for real: needs `make test-deps`; `make test` runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_upgrade_that_fails_its_check_is_rolled_back_to_the_old_image() {
    let mut real = RealPod::start(17, &[17, 18]);
    // Break it as the image tier does: the old server preloads a library
    // that the stash (pg_upgrade's --old-bindir) lacks.
    let out = real
        .exec
        .exec(
            NS,
            "db-0",
            vec![
                "psql".into(),
                "-XAtq".into(),
                "-c".into(),
                "alter system set shared_preload_libraries = 'pg_stat_statements'".into(),
            ],
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    real.stop();
    let stash_lib = std::fs::canonicalize(real.root.join("volume/pgsteward/stash/17/lib"))
        .unwrap()
        .join("pg_stat_statements.so");
    std::fs::remove_file(&stash_lib).unwrap();
    real.run(17, &[]);

    let mut world = World::running(spec_at(17)).await;
    world.pod_runs(IMAGE_17, None);
    real.mount_config(&world.fake.get("", "configmaps", NS, "db-config").unwrap());
    world.use_exec(Arc::new(real.exec.clone()));
    let _ = world.reconcile().await;
    world.set_spec(|s| s["postgresVersion"] = json!(18), 2);
    let _ = world.reconcile().await;
    let id = env_of(&world.sts_container(), "PGSTEWARD_UPGRADE_ID").unwrap();

    // The new image rolls back and exits 1: the container crashes.
    let code = real
        .try_run(18, &[("PGSTEWARD_UPGRADE_ID".into(), id.clone())])
        .expect_err("the upgrade must fail");
    assert_eq!(code, 1, "{}", real.log());
    // Exec cannot reach it; its termination message already says why.
    world.pod_exits_with_message(IMAGE_18, code, &real.termination_message());
    let (r, requests) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    assert!(event_reasons(&requests).contains(&"UpgradeRolledBack".to_string()));
    let c = world.sts_container();
    assert_eq!(c["image"], IMAGE_17, "the previous image is back");
    assert_eq!(env_of(&c, "PGSTEWARD_UPGRADE_ID"), None);
    assert_eq!(
        world.instance()["status"]["failedUpgrade"]["step"],
        "check",
        "the step is known before the old image runs"
    );

    // The kubelet starts the old image: the old cluster runs as it was, and
    // its report explains the failure.
    real.run(17, &[]);
    world.pod_runs(IMAGE_17, None);
    world.use_exec(Arc::new(real.exec.clone()));
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    let st = world.instance()["status"].clone();
    assert_eq!(st["postgresVersion"], 17, "{st}");
    assert_eq!(st["failedUpgrade"]["id"], id.as_str());
    assert_eq!(st["failedUpgrade"]["step"], "check", "{st}");
    assert!(
        st["failedUpgrade"]["message"]
            .as_str()
            .unwrap()
            .contains("pg_stat_statements"),
        "{st}"
    );
    assert_eq!(world.condition("Degraded")["reason"], "UpgradeFailed");
    assert_eq!(world.condition("Ready")["status"], "True");
}

#[ignore = "runs the image's scripts for real: needs `make test-deps`; `make test` runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_upgrade_that_dies_past_the_point_of_no_return_is_finished_never_reverted() {
    let mut real = RealPod::start(17, &[17, 18]);
    let mut world = World::running(spec_at(17)).await;
    world.pod_runs(IMAGE_17, None);
    real.mount_config(&world.fake.get("", "configmaps", NS, "db-config").unwrap());
    world.use_exec(Arc::new(real.exec.clone()));
    let _ = world.reconcile().await;
    world.set_spec(|s| s["postgresVersion"] = json!(18), 2);
    let _ = world.reconcile().await;
    let id = env_of(&world.sts_container(), "PGSTEWARD_UPGRADE_ID").unwrap();
    let request = [("PGSTEWARD_UPGRADE_ID".to_string(), id.clone())];

    // The new image links the data, records the point of no return, starts
    // the new cluster, and dies (a node loss would do the same).
    let mut dying = request.to_vec();
    dying.push(("PGSTEWARD_FAULT_AT".into(), "start_new:done".into()));
    let code = real.try_run(18, &dying).expect_err("the fault kills it");
    let message = real.termination_message();
    assert_eq!(message["upgrade"]["step"], "start_new", "{message}");
    world.pod_exits_with_message(IMAGE_18, code, &message);
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        world.sts_container()["image"],
        IMAGE_18,
        "never the old image past the point of no return"
    );
    assert_eq!(world.condition("Upgrading")["status"], "True");
    assert!(world.instance()["status"]["failedUpgrade"].is_null());

    // Had it been put back anyway (a crash that left no message), the real
    // old image refuses the data, says so in its termination message, and
    // the operator moves forward again under the same id.
    world.pod_runs(IMAGE_18, Some(1));
    let _ = world.reconcile().await;
    assert_eq!(world.sts_container()["image"], IMAGE_17);
    let refused = real.try_run(17, &[]).expect_err("17 must refuse 18's data");
    assert_eq!(refused, 2, "{}", real.log());
    world.pod_exits_with_message(IMAGE_17, refused, &real.termination_message());
    let (r, requests) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    assert!(event_reasons(&requests).contains(&"UpgradeResumed".to_string()));
    let c = world.sts_container();
    assert_eq!(c["image"], IMAGE_18);
    assert_eq!(
        env_of(&c, "PGSTEWARD_UPGRADE_ID").as_deref(),
        Some(id.as_str())
    );

    // The kubelet starts the new image again: the upgrade finishes.
    real.run(18, &request);
    world.pod_runs(IMAGE_18, None);
    world.use_exec(Arc::new(real.exec.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while world.condition("Upgrading")["reason"] != "Succeeded" {
        assert!(
            std::time::Instant::now() < deadline,
            "no success within 180 s: {}\n{}",
            world.condition("Upgrading"),
            real.log()
        );
        let (r, _) = world.reconcile().await;
        assert!(r.is_ok(), "{r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let st = world.instance()["status"].clone();
    assert_eq!(st["postgresVersion"], 18, "{st}");
    assert!(
        st["operation"].is_null() && st["failedUpgrade"].is_null(),
        "{st}"
    );
    assert_eq!(world.condition("Degraded")["status"], "False");
}

#[ignore = "runs the image's scripts for real: needs `make test-deps`; `make test` runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_in_place_restore_requested_through_spec_restore() {
    let mut real = RealPod::start(18, &[18]);
    let psql = |sql: &str| {
        vec![
            "psql".to_string(),
            "-XAtq".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-c".into(),
            sql.to_string(),
        ]
    };
    let sql = |exec: LocalExec, q: &'static str| async move {
        let out = exec
            .exec(NS, "db-0", psql(q), std::time::Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(out.exit_code, 0, "{out:?}");
        out.stdout.trim().to_string()
    };
    sql(
        real.exec.clone(),
        "create table t (v text); insert into t values ('in the backup')",
    )
    .await;

    let mut world = World::running(minimal_spec()).await;
    world.pod_runs(IMAGE_18, None);
    real.mount_config(&world.fake.get("", "configmaps", NS, "db-config").unwrap());
    world.use_exec(Arc::new(real.exec.clone()));
    world.fake.seed(
        PGI.0,
        "pgbackups",
        pgbackup_json("base", "db", "2026-11-21T10:00:00Z", None),
    );
    let (r, _) = reconcile_backup(&world, "base").await;
    assert!(r.is_ok(), "{r:?}");
    let b = world.fake.get(PGI.0, "pgbackups", NS, "base").unwrap()["status"].clone();
    assert_eq!(b["phase"], "Succeeded", "{b}");
    sql(
        real.exec.clone(),
        "insert into t values ('after the backup')",
    )
    .await;
    let _ = world.reconcile().await;
    assert!(world.instance()["status"]["firstRecoverabilityPoint"].is_string());

    // Restore to the end of that backup, in place.
    world.set_spec(
        |s| s["restore"] = json!({"requestId": "r-real", "target": {"immediate": true}}),
        2,
    );
    let (r, _) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(world.condition("Restoring")["status"], "True");
    let c = world.sts_container();
    let request: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with("PGSTEWARD_RESTORE"))
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(request.contains(&("PGSTEWARD_RESTORE_MODE".into(), "in-place".into())));
    // The kubelet restarts the pod with the new template; the image
    // restores before the server starts.
    real.run(18, &request);
    world.pod_runs(IMAGE_18, None);
    world.use_exec(Arc::new(real.exec.clone()));
    let (r, requests) = world.reconcile().await;
    assert!(r.is_ok(), "{r:?}");
    let st = world.instance()["status"].clone();
    assert_eq!(st["lastRestore"]["requestId"], "r-real", "{st}");
    assert_eq!(
        st["lastRestore"]["outcome"],
        "succeeded",
        "{st}\n{}",
        real.log()
    );
    assert!(st["operation"].is_null(), "{st}");
    assert_eq!(world.condition("Restoring")["reason"], "Succeeded");
    assert!(event_reasons(&requests).contains(&"RestoreSucceeded".to_string()));
    let rows = sql(
        real.exec.clone(),
        "select string_agg(v, ',' order by v) from t",
    )
    .await;
    assert_eq!(
        rows, "in the backup",
        "the row written after the backup is gone"
    );
}

#[tokio::test]
async fn an_upgrade_in_an_invalid_spec_starts_nothing_and_says_nothing_runs() {
    let world = World::running(spec_at(17)).await;
    assert_eq!(world.condition("Upgrading")["reason"], "NoUpgrade");
    world.set_spec(
        |s| {
            s["postgresVersion"] = json!(18);
            s["superuserSecretRef"] = json!({"name": "missing"});
        },
        2,
    );
    let (result, requests) = world.reconcile().await;
    assert!(result.is_err());
    assert_eq!(
        non_event_writes(&requests),
        vec!["PATCH pgsteward.io/pginstances/status/db"]
    );
    assert_eq!(world.condition("Degraded")["reason"], "SecretNotFound");
    assert_eq!(world.condition("Upgrading")["status"], "False");
    assert_eq!(world.condition("Upgrading")["reason"], "NoUpgrade");
    assert!(world.instance()["status"]["operation"].is_null());
    assert_eq!(world.sts_container()["image"], IMAGE_17);
}
