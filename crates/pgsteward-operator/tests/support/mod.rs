//! The mocked API server, the pod and the `World` that reconciles one
//! PgInstance against them, shared by the tests that drive reconciles
//! (`scenarios`, `steady_state`).
//!
//! The fake server behaves like the real one where it matters here: GET
//! returns 404 for what does not exist; server-side apply creates or
//! replaces the object and keeps its status; it fills in uid,
//! resourceVersion and a few defaults, and drops empty values the way the
//! real API's `omitempty` does, so "nothing changed" is not a trivial
//! byte-for-byte comparison. Every request is recorded.

// Each test target uses some of it.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use futures::{FutureExt, future::BoxFuture};
use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body, core::error_boundary::DeserializeGuard};
use pgsteward_api::PgInstance;
use pgsteward_operator::{
    build::Settings,
    context::Context,
    controller,
    exec::{ExecError, ExecOutput, PodExec, Scripted},
    metrics::Metrics,
    names, rbac,
};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub group: String,
    pub resource: String,
    pub name: Option<String>,
    pub query: String,
    pub content_type: String,
    pub body: Option<Value>,
    /// Whether the object existed before this request.
    pub existed: bool,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
    pub fn describe(&self) -> String {
        format!(
            "{} {}/{}/{}",
            self.method,
            self.group,
            self.resource,
            self.name.as_deref().unwrap_or("")
        )
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    next_rv: u64,
}

#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<State>>);

struct Path {
    group: String,
    namespace: String,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Path {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts[0] {
        "api" => (String::new(), &parts[2..]),
        _ => (parts[1].to_string(), &parts[3..]),
    };
    assert_eq!(
        rest[0], "namespaces",
        "only namespaced requests are expected: {path}"
    );
    Path {
        group,
        namespace: rest[1].to_string(),
        resource: rest[2].to_string(),
        name: rest.get(3).map(|s| s.to_string()),
        subresource: rest.get(4).map(|s| s.to_string()),
    }
}

fn key(group: &str, resource: &str, ns: &str, name: &str) -> String {
    format!("{group}/{resource}/{ns}/{name}")
}

/// What the real API server does to a stored object that matters here.
fn normalize(v: &mut Value) {
    if let Value::Object(m) = v {
        m.retain(|_, v| {
            normalize(v);
            !matches!(v, Value::Bool(false) | Value::Null)
                && !matches!(v, Value::String(s) if s.is_empty())
                && !matches!(v, Value::Array(a) if a.is_empty())
                && !matches!(v, Value::Object(o) if o.is_empty())
        });
    } else if let Value::Array(a) = v {
        a.iter_mut().for_each(normalize);
    }
}

fn server_defaults(resource: &str, obj: &mut Value) {
    match resource {
        "statefulsets" => {
            obj["spec"]["revisionHistoryLimit"] = json!(10);
            obj["spec"]["podManagementPolicy"] = json!("OrderedReady");
            obj["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
            obj["spec"]["template"]["spec"]["dnsPolicy"] = json!("ClusterFirst");
            if obj.get("status").is_none() {
                obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
            }
        }
        "services" => {
            if obj["spec"]["clusterIP"].is_null() {
                obj["spec"]["clusterIP"] = json!("10.96.0.42");
            }
            obj["spec"]["sessionAffinity"] = json!("None");
            obj["spec"]["ipFamilies"] = json!(["IPv4"]);
        }
        _ => {}
    }
}

impl FakeApi {
    pub fn seed(&self, group: &str, resource: &str, obj: Value) {
        let ns = obj["metadata"]["namespace"].as_str().unwrap().to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        self.0
            .lock()
            .unwrap()
            .objects
            .insert(key(group, resource, &ns, &name), obj);
    }

    pub fn get(&self, group: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
        self.0
            .lock()
            .unwrap()
            .objects
            .get(&key(group, resource, ns, name))
            .cloned()
    }

    pub fn update(
        &self,
        group: &str,
        resource: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) {
        let mut st = self.0.lock().unwrap();
        f(st.objects
            .get_mut(&key(group, resource, ns, name))
            .expect("object exists"));
    }

    /// Take the requests recorded so far.
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.0.lock().unwrap().requests)
    }

    fn handle(
        &self,
        method: Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let p = parse_path(path);
        let mut st = self.0.lock().unwrap();
        st.next_rv += 1;
        let rv = st.next_rv.to_string();
        let name = p.name.clone().or_else(|| {
            body.as_ref()
                .and_then(|b| b["metadata"]["name"].as_str().map(String::from))
        });
        let k = key(
            &p.group,
            &p.resource,
            &p.namespace,
            name.as_deref().unwrap_or_default(),
        );
        let existed = st.objects.contains_key(&k);
        st.requests.push(Recorded {
            method: method.clone(),
            group: p.group.clone(),
            resource: match &p.subresource {
                Some(s) => format!("{}/{s}", p.resource),
                None => p.resource.clone(),
            },
            name: name.clone(),
            query: query.to_string(),
            content_type: content_type.to_string(),
            body: body.clone(),
            existed,
        });
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": format!("{} {:?} not found", p.resource, name), "reason": "NotFound", "code": 404}),
            )
        };
        match method {
            Method::GET if name.is_none() => {
                // A list of one resource in one namespace.
                let prefix = key(&p.group, &p.resource, &p.namespace, "");
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items}),
                )
            }
            Method::GET => match st.objects.get(&k) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => not_found(),
            },
            Method::POST => {
                let mut obj = body.unwrap();
                obj["metadata"]["resourceVersion"] = json!(rv);
                obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
                st.objects.insert(k, obj.clone());
                (StatusCode::CREATED, obj)
            }
            Method::DELETE => match st.objects.remove(&k) {
                Some(o) => (StatusCode::OK, o),
                None => not_found(),
            },
            Method::PATCH if content_type.starts_with("application/apply-patch") => {
                let mut applied = body.unwrap();
                if p.subresource.as_deref() == Some("status") {
                    let Some(obj) = st.objects.get_mut(&k) else {
                        return not_found();
                    };
                    let mut status = applied["status"].take();
                    normalize(&mut status);
                    obj["status"] = status;
                    obj["metadata"]["resourceVersion"] = json!(rv);
                    return (StatusCode::OK, obj.clone());
                }
                let previous = st.objects.get(&k).cloned();
                normalize(&mut applied);
                let meta = &mut applied["metadata"];
                meta["resourceVersion"] = json!(rv);
                match &previous {
                    Some(prev) => {
                        meta["uid"] = prev["metadata"]["uid"].clone();
                        meta["creationTimestamp"] = prev["metadata"]["creationTimestamp"].clone();
                        if let Some(status) = prev.get("status") {
                            applied["status"] = status.clone();
                        }
                    }
                    None => {
                        meta["uid"] = json!(format!("uid-{rv}"));
                        meta["creationTimestamp"] = json!("2026-11-21T10:00:00Z");
                    }
                }
                applied["metadata"]["managedFields"] =
                    json!([{"manager": "pgsteward", "operation": "Apply", "apiVersion": "v1"}]);
                server_defaults(&p.resource, &mut applied);
                st.objects.insert(k, applied.clone());
                (
                    if previous.is_some() {
                        StatusCode::OK
                    } else {
                        StatusCode::CREATED
                    },
                    applied,
                )
            }
            Method::PATCH if content_type.starts_with("application/json-patch") => {
                let Some(obj) = st.objects.get_mut(&k) else {
                    return not_found();
                };
                let ops: json_patch::Patch = serde_json::from_value(body.unwrap()).unwrap();
                // The API server's JSON patch treats a missing field as null
                // (kube's finalizer helper tests for that).
                if obj["metadata"].get("finalizers").is_none() {
                    obj["metadata"]["finalizers"] = Value::Null;
                }
                json_patch::patch(obj, &ops).expect("JSON patch applies");
                obj["metadata"]["resourceVersion"] = json!(rv);
                (StatusCode::OK, obj.clone())
            }
            Method::PATCH => {
                // merge patch (event series)
                let Some(obj) = st.objects.get_mut(&k) else {
                    return not_found();
                };
                json_patch::merge(obj, &body.unwrap());
                (StatusCode::OK, obj.clone())
            }
            other => panic!("unexpected {other} {path}"),
        }
    }

    /// A client whose requests this fake answers.
    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or_default().to_string();
                let content_type = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body =
                    (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).expect("JSON body"));
                let (code, value) = fake.handle(method, &path, &query, &content_type, body);
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&value).unwrap()))
                        .unwrap(),
                );
            }
        });
        Client::new(service, "default")
    }
}

/// The pod side, as the kubelet and the image would answer an exec:
/// `pgsteward-status` prints the report the test sets; `cat` prints the
/// mounted conf.d files, which the fake kubelet keeps in sync with the
/// stored ConfigMap; `pg_ctl reload` succeeds; anything else (backup.sh)
/// is answered by a script.
#[derive(Clone)]
pub struct FakePod {
    pub api: FakeApi,
    pub report: Arc<Mutex<Option<Value>>>,
    pub script: Scripted,
    pub calls: Arc<Mutex<Vec<Vec<String>>>>,
}

impl FakePod {
    pub fn new(api: FakeApi) -> Self {
        Self {
            api,
            report: Arc::new(Mutex::new(Some(base_report()))),
            script: Scripted::new(),
            calls: Arc::default(),
        }
    }
    pub fn set_report(&self, report: Option<Value>) {
        *self.report.lock().unwrap() = report;
    }
    pub fn take_calls(&self) -> Vec<Vec<String>> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl PodExec for FakePod {
    fn exec<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a str,
        command: Vec<String>,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        self.calls.lock().unwrap().push(command.clone());
        let ok = |stdout: String| {
            Ok(ExecOutput {
                exit_code: 0,
                stdout,
                stderr: String::new(),
            })
        };
        match command[0].as_str() {
            "pgsteward-status" => {
                let r = match self.report.lock().unwrap().clone() {
                    Some(r) => ok(r.to_string()),
                    None => Err(ExecError::NoStatus {
                        pod: pod.to_string(),
                    }),
                };
                async move { r }.boxed()
            }
            "cat" => {
                // The pod `<instance>-<ordinal>` mounts `<instance>-config`.
                let instance = pod.rsplit_once('-').map_or(pod, |(i, _)| i);
                let cm = self
                    .api
                    .get("", "configmaps", namespace, &names::config_map(instance))
                    .unwrap_or(Value::Null);
                let text: String = command[1..]
                    .iter()
                    .map(|path| {
                        let file = path.rsplit('/').next().unwrap();
                        cm["data"][file].as_str().unwrap_or_default().to_string()
                    })
                    .collect();
                async move { ok(text) }.boxed()
            }
            "pg_ctl" => async move { ok(String::new()) }.boxed(),
            _ => self.script.exec(namespace, pod, command, timeout),
        }
    }
}

pub fn fixture(name: &str) -> Value {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../e2e/fixtures/state")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): the image tier writes it (e2e/image)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The image's real `pgsteward-status` output (`status.json`) for a
/// server with no result yet, no pending restart and no refused setting.
pub fn base_report() -> Value {
    let mut r = fixture("status.json");
    r["results"] = json!({"backup": null, "restore": null, "upgrade": null});
    r["pendingRestart"] = json!([]);
    r["configErrors"] = json!([]);
    r
}

/// The report with an upgrade result (a fixture, under the id in use).
pub fn report_with_upgrade(name: &str, id: &str) -> Value {
    let mut r = base_report();
    let mut u = fixture(name);
    u["id"] = json!(id);
    r["results"]["upgrade"] = u;
    r
}

/// Each pod the fake kubelet creates is a new one.
pub static POD_UIDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub const NS: &str = "shop";
pub const PGI: (&str, &str) = ("pgsteward.io", "pginstances");

pub fn instance_json(spec: Value) -> Value {
    stored_instance(json!({
        "apiVersion": "pgsteward.io/v1alpha1",
        "kind": "PgInstance",
        "metadata": {"name": "db"},
        "spec": spec,
    }))
}

/// A PgInstance as the API server stores it on create: in namespace NS,
/// with the metadata the server fills in.
pub fn stored_instance(mut object: Value) -> Value {
    let meta = &mut object["metadata"];
    for (field, value) in [
        ("namespace", json!(NS)),
        ("uid", json!("pgi-uid-1")),
        ("generation", json!(1)),
        ("resourceVersion", json!("1")),
        ("creationTimestamp", json!("2026-11-21T09:00:00Z")),
    ] {
        if meta.get(field).is_none() {
            meta[field] = value;
        }
    }
    object
}

pub struct World {
    pub fake: FakeApi,
    pub pod: FakePod,
    pub ctx: Arc<Context>,
    /// The PgInstance's name (its objects are named after it).
    pub name: String,
}

impl World {
    /// A PgInstance named `db` with `spec`.
    pub fn new(spec: Value) -> Self {
        Self::with_instance(instance_json(spec))
    }

    /// The PgInstance `object` (as stored: see [`stored_instance`]).
    pub fn with_instance(object: Value) -> Self {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("a named instance")
            .to_string();
        let fake = FakeApi::default();
        fake.seed(PGI.0, PGI.1, object);
        let pod = FakePod::new(fake.clone());
        let ctx = Self::context(&fake, &pod);
        Self {
            fake,
            pod,
            ctx,
            name,
        }
    }

    /// The PgInstance as stored now.
    pub fn stored(&self) -> Value {
        self.fake
            .get(PGI.0, PGI.1, NS, &self.name)
            .expect("instance stored")
    }

    pub fn context(fake: &FakeApi, pod: &FakePod) -> Arc<Context> {
        Arc::new(
            Context::new(
                fake.client(),
                Settings::default(),
                Arc::new(Metrics::default()),
                Some("test".into()),
            )
            .with_exec(Arc::new(pod.clone())),
        )
    }

    /// A new operator process that reaches the pod through `exec`.
    pub fn use_exec(&mut self, exec: Arc<dyn PodExec>) {
        self.ctx = Arc::new(
            Context::new(
                self.fake.client(),
                Settings::default(),
                Arc::new(Metrics::default()),
                Some("test".into()),
            )
            .with_exec(exec),
        );
    }

    /// A new operator process: nothing in memory, same API server and pod.
    pub fn restart_operator(&mut self) {
        self.ctx = Self::context(&self.fake, &self.pod);
    }

    /// Reconcile the instance as stored now; return the result and the requests made.
    pub async fn reconcile(
        &self,
    ) -> (
        Result<kube::runtime::controller::Action, pgsteward_operator::Error>,
        Vec<Recorded>,
    ) {
        self.fake.take_requests();
        let stored = self.stored();
        let guard: DeserializeGuard<PgInstance> = serde_json::from_value(stored).unwrap();
        let result = controller::reconcile(Arc::new(guard), self.ctx.clone()).await;
        (result, self.fake.take_requests())
    }

    /// What the kubelet and the StatefulSet controller would do: the pod
    /// exists and is ready, the StatefulSet reports it.
    pub fn pod_becomes_ready(&self) {
        self.statefulset_reports(true);
        self.fake.seed(
            "",
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": names::pod(&self.name, 0), "namespace": NS},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
    }

    /// What the StatefulSet controller would report: its one pod is of the
    /// current revision, ready or not.
    pub fn statefulset_reports(&self, ready: bool) {
        let revision = format!("{}-1", self.name);
        let ready = i64::from(ready);
        self.fake.update(
            "apps",
            "statefulsets",
            NS,
            &names::statefulset(&self.name),
            |sts| {
                sts["metadata"]["generation"] = json!(1);
                sts["status"] = json!({"replicas": 1, "readyReplicas": ready, "availableReplicas": ready,
                "updatedReplicas": 1, "currentReplicas": 1, "observedGeneration": 1,
                "currentRevision": revision, "updateRevision": revision});
            },
        );
    }

    pub fn condition(&self, type_: &str) -> Value {
        let i = self.stored();
        i["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or(Value::Null)
    }

    pub fn sts_container(&self) -> Value {
        let sts = self
            .fake
            .get("apps", "statefulsets", NS, &names::statefulset(&self.name))
            .unwrap();
        sts["spec"]["template"]["spec"]["containers"][0].clone()
    }

    /// The kubelet replaced the pod: it runs `image`, running or crashing
    /// with `exit`.
    pub fn pod_runs(&self, image: &str, exit: Option<i32>) {
        self.pod_with(image, exit, None);
    }

    /// As `pod_runs`, the container crashing with `exit` and leaving
    /// `message` as its termination message.
    pub fn pod_exits_with_message(&self, image: &str, exit: i32, message: &Value) {
        self.pod_with(image, Some(exit), Some(message.to_string()));
    }

    pub fn pod_with(&self, image: &str, exit: Option<i32>, message: Option<String>) {
        let state = match exit {
            None => {
                json!({"state": {"running": {"startedAt": "2026-11-21T10:00:00Z"}}, "ready": true})
            }
            Some(code) => json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                 "lastState": {"terminated": {"exitCode": code, "message": message}},
                                 "ready": false}),
        };
        let mut cs = json!({"name": "postgres", "image": image, "imageID": "", "restartCount": 1});
        for (k, v) in state.as_object().unwrap() {
            cs[k] = v.clone();
        }
        self.fake.seed(
            "",
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": names::pod(&self.name, 0), "namespace": NS, "uid": format!("pod-{}", POD_UIDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed))},
                   "spec": {"containers": [{"name": "postgres", "image": image}]},
                   "status": {"phase": "Running", "containerStatuses": [cs]}}),
        );
    }
}

pub fn writes(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.is_write())
        .map(Recorded::describe)
        .collect()
}

/// Every request is allowed by the RBAC table; server-side apply that
/// creates an object needs `create` as well as `patch`.
pub fn assert_covered_by_rbac(requests: &[Recorded]) {
    for r in requests {
        let verbs: &[&str] = match r.method {
            Method::GET if r.name.is_none() => &["list"],
            Method::GET => &["get"],
            Method::POST => &["create"],
            Method::DELETE => &["delete"],
            Method::PATCH
                if r.content_type.starts_with("application/apply-patch") && !r.existed =>
            {
                &["patch", "create"]
            }
            Method::PATCH => &["patch"],
            _ => panic!("unexpected method {}", r.method),
        };
        for verb in verbs {
            assert!(
                rbac::allows(&r.group, &r.resource, verb),
                "{} needs '{verb}' on {}/{}, which src/rbac.rs does not list",
                r.describe(),
                r.group,
                r.resource
            );
        }
    }
}
