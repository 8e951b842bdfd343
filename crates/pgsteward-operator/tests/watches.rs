//! What wakes which reconcile. The PgBackup controller watches PgInstances:
//! an instance event wakes the PgBackups that wait for it, instead of
//! leaving them to the 30 s recheck. The PgInstance controller watches
//! PgBackups (a finished one updates its instance) and the instances' pods
//! (a container that exits is acted on at once).
//!
//! Two levels: the mappers as tables, and the PgBackup controller itself run
//! against a small mocked API server (tower-test) that serves lists and
//! watches, so the wiring (the watch, its namespace, the PgBackup cache the
//! mapper reads) is what is tested.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::channel::mpsc;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use kube::{Client, client::Body, core::error_boundary::DeserializeGuard};
use pgsteward_api::{PgBackup, PgInstance};
use pgsteward_operator::{
    backups::{self, WAIT},
    build::Settings,
    context::Context,
    controller,
    exec::{ExecOutput, Scripted},
    metrics::Metrics,
    rbac,
};
use serde_json::{Value, json};

const NS: &str = "shop";

fn instance_json(ns: &str, name: &str, ready: &str) -> Value {
    json!({
        "apiVersion": "pgsteward.io/v1alpha1", "kind": "PgInstance",
        "metadata": {"name": name, "namespace": ns, "uid": format!("pgi-{ns}-{name}"),
                     "generation": 1, "creationTimestamp": "2026-11-21T09:00:00Z"},
        "spec": {"postgresVersion": 18, "storage": {"size": "10Gi"},
                 "backup": {"schedule": "0 3 * * *", "file": {"path": "/backups"}}},
        "status": {"conditions": [{"type": "Ready", "status": ready,
            "reason": if ready == "True" { "Running" } else { "Starting" },
            "message": "", "lastTransitionTime": "2026-11-21T09:00:00Z"}]},
    })
}

fn pgbackup_json(ns: &str, name: &str, instance: &str, phase: Option<&str>) -> Value {
    let mut b = json!({"apiVersion": "pgsteward.io/v1alpha1", "kind": "PgBackup",
        "metadata": {"name": name, "namespace": ns, "uid": format!("pgb-{name}"),
                     "generation": 1, "creationTimestamp": "2026-11-21T10:00:00Z"},
        "spec": {"instanceRef": {"name": instance}}});
    if let Some(p) = phase {
        b["status"] = json!({"phase": p});
    }
    b
}

fn guard(v: Value) -> Arc<DeserializeGuard<PgBackup>> {
    Arc::new(serde_json::from_value(v).unwrap())
}

// ------------------------------------------------------------- the mapper

#[test]
fn an_instance_event_wakes_its_unfinished_pgbackups_in_its_namespace_only() {
    let db: PgInstance = serde_json::from_value(instance_json(NS, "db", "True")).unwrap();
    let mut deleted = pgbackup_json(NS, "deleted", "db", None);
    deleted["metadata"]["deletionTimestamp"] = json!("2026-11-21T11:00:00Z");
    let unreadable = json!({"apiVersion": "pgsteward.io/v1alpha1", "kind": "PgBackup",
        "metadata": {"name": "unreadable", "namespace": NS}, "spec": {"instanceRef": 7}});
    // (what, PgBackup, woken?)
    let table = [
        (
            "same namespace, names it, new",
            pgbackup_json(NS, "new", "db", None),
            true,
        ),
        (
            "pending",
            pgbackup_json(NS, "pending", "db", Some("Pending")),
            true,
        ),
        (
            "running (resumed)",
            pgbackup_json(NS, "running", "db", Some("Running")),
            true,
        ),
        (
            "succeeded",
            pgbackup_json(NS, "done", "db", Some("Succeeded")),
            false,
        ),
        (
            "failed",
            pgbackup_json(NS, "failed", "db", Some("Failed")),
            false,
        ),
        ("being deleted", deleted, false),
        (
            "another instance",
            pgbackup_json(NS, "other", "db2", None),
            false,
        ),
        (
            "another namespace, same instance name",
            pgbackup_json("lab", "elsewhere", "db", None),
            false,
        ),
        ("cannot be read", unreadable, false),
    ];
    for (what, backup, woken) in &table {
        let got = backups::backups_of_instance(&db, &[guard(backup.clone())]);
        assert_eq!(got.len(), usize::from(*woken), "{what}: {got:?}");
        if *woken {
            assert_eq!(
                got[0].name,
                backup["metadata"]["name"].as_str().unwrap(),
                "{what}"
            );
            assert_eq!(got[0].namespace.as_deref(), Some(NS), "{what}");
        }
    }
    // All at once: exactly the three unfinished ones of shop/db.
    let all: Vec<_> = table.iter().map(|(_, b, _)| guard(b.clone())).collect();
    let mut names: Vec<_> = backups::backups_of_instance(&db, &all)
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    assert_eq!(names, ["new", "pending", "running"]);
    // The watch delivers DeserializeGuard<PgInstance>, readable or not: its
    // metadata is enough.
    let as_watched: DeserializeGuard<PgInstance> =
        serde_json::from_value(instance_json(NS, "db", "False")).unwrap();
    assert_eq!(backups::backups_of_instance(&as_watched, &all).len(), 3);
}

#[test]
fn a_finished_pgbackup_wakes_its_instance_so_last_backup_shows_it_at_once() {
    // (what, PgBackup, instance woken)
    let table = [
        (
            "succeeded",
            pgbackup_json(NS, "a", "db", Some("Succeeded")),
            Some("db"),
        ),
        (
            "failed",
            pgbackup_json(NS, "b", "db", Some("Failed")),
            Some("db"),
        ),
        (
            "running: nothing to show yet",
            pgbackup_json(NS, "c", "db", Some("Running")),
            None,
        ),
        (
            "pending",
            pgbackup_json(NS, "d", "db", Some("Pending")),
            None,
        ),
        ("new", pgbackup_json(NS, "e", "db", None), None),
    ];
    for (what, backup, woken) in table {
        let got = controller::instance_of_finished_backup(&guard(backup));
        assert_eq!(got.as_ref().map(|r| r.name.as_str()), woken, "{what}");
        if let Some(r) = got {
            assert_eq!(
                r.namespace.as_deref(),
                Some(NS),
                "{what}: its own namespace"
            );
        }
    }
    let unreadable: DeserializeGuard<PgBackup> = serde_json::from_value(json!({
        "apiVersion": "pgsteward.io/v1alpha1", "kind": "PgBackup",
        "metadata": {"name": "u", "namespace": NS}, "spec": {"instanceRef": 7}}))
    .unwrap();
    assert_eq!(controller::instance_of_finished_backup(&unreadable), None);
}

// ------------------------------------------------- the controller, mocked API

type RespBody = UnsyncBoxBody<Bytes, Infallible>;
type Chunk = Result<Frame<Bytes>, Infallible>;

/// A tiny API server: namespaced get, list, watch (a streamed response
/// that stays open), status apply and event creation. Every stored change
/// is sent to the open watches of its resource.
#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    watches: Vec<(String, mpsc::UnboundedSender<Chunk>)>,
    /// (verb, group, resource) of every request.
    requests: Vec<(&'static str, String, String)>,
    rv: u64,
}

fn prefix(resource: &str, ns: &str) -> String {
    format!("{resource}/{ns}/")
}

fn body(v: &Value) -> RespBody {
    let bytes = Bytes::from(serde_json::to_vec(v).unwrap());
    StreamBody::new(futures::stream::iter([Ok(Frame::data(bytes))])).boxed_unsync()
}

impl FakeApi {
    fn put(&self, resource: &str, mut obj: Value) {
        let mut st = self.0.lock().unwrap();
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let p = prefix(resource, obj["metadata"]["namespace"].as_str().unwrap());
        let key = format!("{p}{}", obj["metadata"]["name"].as_str().unwrap());
        let kind = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.objects.insert(key, obj.clone());
        let line = format!("{}\n", json!({"type": kind, "object": obj}));
        st.watches.retain(|(w, tx)| {
            *w != p
                || tx
                    .unbounded_send(Ok(Frame::data(line.clone().into())))
                    .is_ok()
        });
    }

    fn get(&self, resource: &str, ns: &str, name: &str) -> Value {
        let st = self.0.lock().unwrap();
        st.objects[&format!("{}{name}", prefix(resource, ns))].clone()
    }

    fn requests(&self) -> Vec<(&'static str, String, String)> {
        self.0.lock().unwrap().requests.clone()
    }

    fn handle(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body_in: Option<Value>,
    ) -> (StatusCode, RespBody) {
        // /apis/<group>/<version>/namespaces/<ns>/<resource>[/<name>[/<sub>]]
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        assert_eq!(
            parts[3], "namespaces",
            "only namespaced requests are expected: {path}"
        );
        let (group, ns, resource) = (parts[1], parts[4], parts[5]);
        let name = parts.get(6).copied();
        let sub = parts.get(7).copied();
        let full = match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_string(),
        };
        let verb = match (&method, name) {
            (&Method::GET, Some(_)) => "get",
            (&Method::GET, None) if query.contains("watch=true") => "watch",
            (&Method::GET, None) => "list",
            (&Method::PATCH, _) => "patch",
            (&Method::POST, _) => "create",
            (m, _) => panic!("unexpected {m} {path}"),
        };
        self.0
            .lock()
            .unwrap()
            .requests
            .push((verb, group.to_string(), full));
        let p = prefix(resource, ns);
        match (method, name) {
            (Method::GET, None) if query.contains("watch=true") => {
                let (tx, rx) = mpsc::unbounded();
                self.0.lock().unwrap().watches.push((p, tx));
                (StatusCode::OK, StreamBody::new(rx).boxed_unsync())
            }
            (Method::GET, None) => {
                let st = self.0.lock().unwrap();
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&p))
                    .map(|(_, v)| v.clone())
                    .collect();
                let list = json!({"apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
                (StatusCode::OK, body(&list))
            }
            (Method::GET, Some(n)) => {
                let st = self.0.lock().unwrap();
                match st.objects.get(&format!("{p}{n}")) {
                    Some(o) => (StatusCode::OK, body(o)),
                    None => (
                        StatusCode::NOT_FOUND,
                        body(
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "NotFound", "code": 404,
                            "message": format!("{resource} {n} not found")}),
                        ),
                    ),
                }
            }
            (Method::PATCH, Some(n)) if sub == Some("status") => {
                let mut obj = self.get(resource, ns, n);
                obj["status"] = body_in.unwrap()["status"].take();
                self.put(resource, obj.clone());
                (StatusCode::OK, body(&self.get(resource, ns, n)))
            }
            (Method::POST, None) if resource == "events" => {
                (StatusCode::CREATED, body(&body_in.unwrap()))
            }
            (m, _) => panic!("unexpected {m} {path}"),
        }
    }

    fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<RespBody>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or_default().to_string();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body_in = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
                let (code, body) = fake.handle(method, &path, &query, body_in);
                send.send_response(Response::builder().status(code).body(body).unwrap());
            }
        });
        Client::new(service, "default")
    }
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pending_backup_starts_as_soon_as_its_instance_becomes_ready() {
    let fake = FakeApi::default();
    fake.put("pginstances", instance_json(NS, "db", "False"));
    fake.put("pginstances", instance_json(NS, "db2", "False"));
    fake.put(
        "pgbackups",
        pgbackup_json(NS, "before-migration", "db", None),
    );
    let pod = Scripted::new();
    let result = {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../e2e/fixtures/state/backup-succeeded.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): the image tier writes it",
                path.display()
            )
        });
        let mut r: Value = serde_json::from_str(&text).unwrap();
        r["id"] = json!("pgb-before-migration");
        r
    };
    pod.always(
        &["backup.sh"],
        ExecOutput {
            exit_code: 0,
            stdout: result.to_string(),
            stderr: String::new(),
        },
    );
    let ctx = Arc::new(
        Context::new(
            fake.client(),
            Settings::default(),
            Arc::new(Metrics::default()),
            Some("test".into()),
        )
        .with_exec(Arc::new(pod.clone())),
    );
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let controller = tokio::spawn(backups::run(ctx, Some(NS.into()), async move {
        let _ = stopped.await;
    }));
    let phase =
        |fake: &FakeApi| fake.get("pgbackups", NS, "before-migration")["status"]["phase"].clone();

    wait_until(
        "the PgBackup waits for its instance",
        Duration::from_secs(10),
        || phase(&fake) == "Pending",
    )
    .await;
    let message = fake.get("pgbackups", NS, "before-migration")["status"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("waiting for PgInstance db to be Ready"),
        "{message}"
    );

    // Another instance of the namespace becomes ready: nothing happens to
    // this PgBackup.
    fake.put("pginstances", instance_json(NS, "db2", "True"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(phase(&fake), "Pending");
    assert!(pod.calls().is_empty(), "{:?}", pod.calls());

    // Its own instance becomes ready: the backup runs at once, long before
    // the 30 s recheck.
    fake.put("pginstances", instance_json(NS, "db", "True"));
    let woken = tokio::time::Instant::now();
    wait_until(
        "the backup ran and succeeded",
        Duration::from_secs(10),
        || phase(&fake) == "Succeeded",
    )
    .await;
    assert!(woken.elapsed() < WAIT / 3, "took {:?}", woken.elapsed());
    let calls = pod.calls();
    assert_eq!(
        calls,
        vec![(
            format!("{NS}/db-0"),
            vec![
                "backup.sh".to_string(),
                "--id".into(),
                "pgb-before-migration".into()
            ]
        )]
    );
    // Both watches (PgBackups and PgInstances), in the watched namespace
    // only (the fake refuses anything else), and every request is in the
    // RBAC table.
    let requests = fake.requests();
    for resource in ["pgbackups", "pginstances"] {
        assert!(
            requests
                .iter()
                .any(|(v, _, r)| *v == "watch" && r == resource),
            "no watch of {resource}: {requests:?}"
        );
    }
    for (verb, group, resource) in &requests {
        assert!(
            rbac::allows(group, resource, verb),
            "{verb} {group}/{resource} is not in src/rbac.rs"
        );
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}

#[test]
fn an_instance_pod_event_wakes_its_instance() {
    use k8s_openapi::api::core::v1::Pod;
    use pgsteward_operator::build;
    // The watch selects the pods by the StatefulSet's template labels.
    let labels = build::selector_labels("db");
    let (key, value) = controller::POD_SELECTOR.split_once('=').unwrap();
    assert_eq!(labels.get(key).map(String::as_str), Some(value));
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "db-0", "namespace": NS, "labels": labels}}))
    .unwrap();
    let r = controller::instance_of_pod(&pod).unwrap();
    assert_eq!((r.name.as_str(), r.namespace.as_deref()), ("db", Some(NS)));
    let unlabelled: Pod =
        serde_json::from_value(json!({"metadata": {"name": "x-0", "namespace": NS}})).unwrap();
    assert!(controller::instance_of_pod(&unlabelled).is_none());
}
