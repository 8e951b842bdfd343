//! Spec fuzzing (issue 18), behind the non-default `fuzz` feature: a
//! deterministic generator of PgInstance and PgBackup objects, valid and
//! invalid alike, creates and updates (old → new), and an offline judge that
//! decides as the API server does: null pruning, defaults, the structural
//! schema with unknown fields refused (kubectl's strict field validation),
//! the metadata.name rules of the API server, then every CEL rule,
//! transition rules included.
//!
//! Test code only. Two test targets use it: `pgsteward-api`'s `spec_fuzz`
//! (the verdicts, and the sample the cluster tier replays) and
//! `pgsteward-operator`'s `steady_state` (a reconcile of every accepted
//! PgInstance). Both read the committed CRDs in `crds/`.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

/// The committed PgInstance CRD's file in `crds/`.
pub const INSTANCES: &str = "pginstances.pgsteward.io.yaml";
/// The committed PgBackup CRD's file in `crds/`.
pub const BACKUPS: &str = "pgbackups.pgsteward.io.yaml";
/// The seed of the default run (`PGSTEWARD_FUZZ_SEED` overrides it).
pub const DEFAULT_SEED: u64 = 18;
/// The cases of the default run (`PGSTEWARD_FUZZ_CASES` overrides it).
pub const DEFAULT_CASES: usize = 2000;

/// The repository's top folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed CRD file, as JSON.
pub fn committed_crd(file: &str) -> Value {
    let path = repo_root().join("crds").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e} (run `make crds`)", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// The openAPIV3Schema of a committed CRD's only version.
pub fn schema(file: &str) -> Value {
    committed_crd(file)["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

// ------------------------------------------------------------------ generator

/// A string field: usually valid values, sometimes the edges around them.
fn pick(values: &[&'static str]) -> BoxedStrategy<Value> {
    proptest::sample::select(values.to_vec())
        .prop_map(|s| json!(s))
        .boxed()
}

/// Strings around the edges that matter to the API server and to CEL:
/// Unicode whitespace, control characters, multi-byte characters, lengths.
fn odd_string() -> BoxedStrategy<Value> {
    prop_oneof![
        pick(&[
            "", " ", "a", "é", "\u{a0}", "\u{2003}", "\t", "\n", "x\ny", "\u{0}"
        ]),
        "[a-z0-9./_-]{1,12}".prop_map(|s| json!(s)),
        "\\PC{0,8}".prop_map(|s| json!(s)),
        (250usize..260).prop_map(|n| json!("a".repeat(n))),
    ]
    .boxed()
}

/// A value of the wrong JSON type, or null.
fn wrong_type() -> BoxedStrategy<Value> {
    pick_values(vec![
        Value::Null,
        json!(true),
        json!(1),
        json!(1.5),
        json!("1"),
        json!([]),
        json!({}),
    ])
}

fn pick_values(values: Vec<Value>) -> BoxedStrategy<Value> {
    proptest::sample::select(values).boxed()
}

/// An optional field: absent (None) most of the time, else a value.
fn opt(s: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![4 => Just(None), 1 => s.prop_map(Some)].boxed()
}

fn quantity() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => pick(&["10Gi", "1Gi", "500Mi", "20Gi", "10240Mi", "12800Mi", "11Gi", "100G", "1Ti"]),
        2 => pick(&[
            "0", "0Gi", "-1Gi", "1gi", "10 GB", " 1Gi", "1Gi ", "1.5Gi", ".5Gi", "1.Gi",
            "1e3", "1E3", "1e-3", "+1Gi", "1m", "1n", "0.0000000001", "1Ki", "1k", "1K",
            "999999999999999999999Ei", "1Ei", "9223372036854775807", "1e18", "1Gi1", "Gi",
            "１Gi",
        ]),
        1 => (1u64..100_000).prop_map(|n| json!(format!("{n}Mi"))),
        1 => wrong_type(),
    ]
    .boxed()
}

fn size_factor() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => pick_values(vec![json!(2.0), json!(2.5), json!(3), json!(2), json!(4.75)]),
        2 => pick_values(vec![
            json!(1.999999), json!(0), json!(-2.5), json!(1e300), json!(2.0000001),
            json!(1e-300), json!("2.5"),
        ]),
        1 => (0.0f64..10.0).prop_map(|f| json!(f)),
        1 => wrong_type(),
    ]
    .boxed()
}

fn cron() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => pick(&["0 3 * * *", "*/15 * * * *", " 0 3 * * * ", "0 3 * * 1-5"]),
        2 => pick(&[
            "daily", "0 3 * *", "0 3 * * * *", "0\u{a0}3 * * *", "0 3 * * *\u{2003}x",
            "0\t3\t*\t*\t*", "0\n3 * * *", "0 3 * * *\n* * * * * x", "0 3\u{2003}* * * *",
            "",
        ]),
        1 => odd_string(),
    ]
    .boxed()
}

fn time() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => pick(&[
            "2026-11-21T10:00:00Z", "2026-11-20T03:00:00.25Z", "2026-11-20T02:59:59Z",
            "2026-11-20T03:30:00+01:00", "2028-02-29T10:00:00Z", "2026-11-20T03:00:00.123456789Z",
        ]),
        2 => pick(&[
            "2026-02-30T10:00:00Z", "2026-11-21T24:00:00Z", "2026-11-21T10:00:00",
            "2026-11-21 10:00:00Z", "2026-11-21T10:00:00z", "2026-11-21T10:00:00.Z",
            "2026-11-21T10:00:00.1234567890Z", "2026-11-21T10:00:60Z", "yesterday",
            "2026-11-21T10:00:00+24:00", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
            "2026-11-21T10:00:00+01:00\n",
        ]),
        1 => odd_string(),
    ]
    .boxed()
}

fn target() -> BoxedStrategy<Value> {
    let field = |name: &'static str, s: BoxedStrategy<Value>| opt(s).prop_map(move |v| (name, v));
    (
        prop_oneof![4 => Just(0u8), 1 => Just(1u8)],
        field(
            "latest",
            pick_values(vec![json!(true), json!(false), json!("true")]),
        ),
        field("time", time()),
        field(
            "lsn",
            prop_oneof![
                pick(&[
                    "0/3000060",
                    "FFFFFFFF/FFFFFFFF",
                    "3000060",
                    "0/",
                    "0/123456789",
                    "g/1",
                    "0/3000060 "
                ]),
                odd_string(),
            ]
            .boxed(),
        ),
        field(
            "xid",
            prop_oneof![
                pick(&[
                    "100",
                    "0",
                    "12a",
                    "",
                    "99999999999999999999",
                    "999999999999999999999",
                    "-1",
                    "１２"
                ]),
                odd_string(),
            ]
            .boxed(),
        ),
        field("name", odd_string()),
        field("immediate", pick_values(vec![json!(true), json!(false)])),
    )
        .prop_map(|(shape, a, b, c, d, e, f)| {
            let mut m = Map::new();
            for (k, v) in [a, b, c, d, e, f] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            // Mostly exactly one kind, as a person writes it.
            if shape == 0 && m.len() > 1 {
                let first = m.keys().next().unwrap().clone();
                m.retain(|k, _| *k == first);
            }
            if m.is_empty() && shape == 0 {
                m.insert("latest".into(), json!(true));
            }
            Value::Object(m)
        })
        .boxed()
}

fn request_id() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => pick(&["r1", "r2", "r-2026-11-21.1", "R_1"]),
        1 => pick(&["../../etc", "-r1", ".r", "", "r 1", "é"]),
        1 => (60usize..66).prop_map(|n| json!("r".repeat(n))),
    ]
    .boxed()
}

fn storage() -> BoxedStrategy<Value> {
    (
        quantity(),
        opt(size_factor()),
        opt(prop_oneof![pick(&["standard", "fast"]), odd_string()].boxed()),
        opt(pick_values(vec![json!(true), json!(false), json!("yes")])),
    )
        .prop_map(|(size, factor, class, del)| {
            let mut m = Map::new();
            m.insert("size".into(), size);
            put(&mut m, "sizeFactor", factor);
            put(&mut m, "storageClassName", class);
            put(&mut m, "deleteClaimOnDelete", del);
            Value::Object(m)
        })
        .boxed()
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.into(), v);
    }
}

fn parameters() -> BoxedStrategy<Value> {
    let key = prop_oneof![
        4 => proptest::sample::select(vec!["work_mem", "shared_buffers", "max_connections", "pg_stat_statements.max"]),
        1 => proptest::sample::select(vec![
            "port", "archive_command", "log_min_duration_statement", "Work_Mem", "work-mem",
            "a.b.c", "_x", "x.", "é", "",
        ]),
        1 => Just("shared_preload_libraries"),
    ];
    let value = prop_oneof![
        4 => pick(&["16MB", "200", "on", "pg_stat_statements", "auto_explain, pg_stat_statements"]),
        2 => pick(&[
            "1MB\nport = 1", "x\ry", "auto_explain", " pg_stat_statements ", "pg_stat_statements,",
            "\u{2028}", "PG_STAT_STATEMENTS", "pg_stat_statements\u{a0}", "",
        ]),
        1 => odd_string(),
        1 => (1020usize..1030).prop_map(|n| json!("a".repeat(n))),
    ];
    prop_oneof![
        6 => proptest::collection::btree_map(key.prop_map(String::from), value, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => (127usize..130).prop_map(|n| {
            Value::Object((0..n).map(|i| (format!("p{i}"), json!("1"))).collect())
        }),
        1 => wrong_type(),
    ]
    .boxed()
}

fn backup() -> BoxedStrategy<Value> {
    let s3 = prop_oneof![
        3 => pick(&["s3://bucket/db", "s3://b"]),
        1 => pick(&["s3://", "bucket/db", "S3://bucket", "s3://é", "gs://x/y"]),
    ]
    .prop_map(|p| json!({"prefix": p}));
    let gcs = pick(&["gs://bucket/db", "gs://", "s3://x/y"]).prop_map(|p| json!({"prefix": p}));
    let azure = (
        pick(&["azure://container/x", "azure://", "container/x"]),
        pick(&["acct", ""]),
    )
        .prop_map(|(p, a)| json!({"prefix": p, "storageAccount": a}));
    let file = pick(&[
        "/backups",
        "/var/lib/postgresql/backups",
        "backups",
        "/var/lib/postgresqlx",
        "/",
    ])
    .prop_map(|p| json!({"path": p}));
    (
        opt(cron()),
        opt(s3.boxed()),
        opt(gcs.boxed()),
        opt(azure.boxed()),
        opt(file.boxed()),
        opt(pick_values(vec![
            json!(0),
            json!(1),
            json!(7),
            json!(1000),
            json!(1001),
            json!(2.5),
        ])),
        opt(pick(&["lz4", "zstd", "brotli", "lzma", "LZ4", "gzip", ""])),
    )
        .prop_map(|(schedule, s3, gcs, azure, file, full, compression)| {
            let mut m = Map::new();
            put(&mut m, "schedule", schedule);
            put(&mut m, "s3", s3);
            put(&mut m, "gcs", gcs);
            put(&mut m, "azure", azure);
            put(&mut m, "file", file);
            put(&mut m, "retention", full.map(|f| json!({"fullBackups": f})));
            put(&mut m, "compression", compression);
            Value::Object(m)
        })
        .boxed()
}

fn pod_fields() -> BoxedStrategy<Vec<(&'static str, Value)>> {
    let resources = prop_oneof![pick_values(vec![
        json!({"requests": {"cpu": "500m", "memory": "1Gi"}}),
        json!({"limits": {"memory": "2Gi"}}),
        json!({"requests": {"cpu": 2}}),
        json!({"requests": {"cpu": "banana"}}),
        json!({"requests": {"memory": "-1Gi"}}),
        json!({"requests": {"cpu": 1.5}}),
        json!({"claims": [{"name": "gpu"}]}),
        json!({"requests": {"cpu": true}}),
    ]),];
    let tolerations = pick_values(vec![
        json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]),
        json!([{"operator": "Exists"}]),
        json!([{"key": "k", "operator": "Sideways", "effect": "Never"}]),
        json!([{"key": "k", "tolerationSeconds": 1.5}]),
        json!([{"key": "k", "tolerationSeconds": 9223372036854775807u64}]),
    ]);
    let node_selector = pick_values(vec![
        json!({"disk": "ssd"}),
        json!({"": ""}),
        json!({"k": 1}),
    ]);
    let affinity = pick_values(vec![
        Value::Null,
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}),
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}),
        json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 4294967296u64, "podAffinityTerm": {"topologyKey": "zone"}}]}}),
    ]);
    (
        opt(resources.boxed()),
        opt(tolerations),
        opt(node_selector),
        opt(affinity),
        opt(pick_values(vec![
            json!("ghcr.io/x/postgres:17"),
            json!(""),
            json!("a".repeat(513)),
        ])),
        opt(pick_values(vec![
            json!({"thresholdMs": 250}),
            json!({"thresholdMs": -1}),
            json!({"thresholdMs": 86400001}),
            json!({"thresholdMs": 1.5}),
            json!({}),
        ])),
        opt(pick_values(vec![
            json!({"name": "su"}),
            json!({"name": "su", "passwordKey": ""}),
            json!({"name": ""}),
        ])),
        opt(pick_values(vec![json!("surprise"), json!({"nested": 1})])),
    )
        .prop_map(|(r, t, n, a, i, s, su, unknown)| {
            let mut out = Vec::new();
            let fields = [
                ("resources", r),
                ("tolerations", t),
                ("nodeSelector", n),
                ("affinity", a),
                ("image", i),
                ("slowQueryLog", s),
                ("superuserSecretRef", su),
                ("sizeFactr", unknown),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    out.push((k, v));
                }
            }
            out
        })
        .boxed()
}

fn version() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => pick_values(vec![json!(16), json!(17), json!(18)]),
        1 => pick_values(vec![json!(15), json!(19), json!(17.0), json!(17.5), json!("17"), json!(-1), json!(4294967312u64)]),
    ]
    .boxed()
}

fn instance_spec() -> BoxedStrategy<Value> {
    (
        version(),
        storage(),
        opt(parameters().prop_map(|p| json!({"parameters": p})).boxed()),
        prop_oneof![1 => Just(None), 2 => backup().prop_map(Some)],
        opt((opt(pick(&["s3://other/db", ""])), target())
            .prop_map(|(source, t)| {
                let mut r = json!({"target": t});
                if let Some(s) = source {
                    r["sourcePrefix"] = s;
                }
                json!({"recovery": r})
            })
            .boxed()),
        opt((request_id(), target())
            .prop_map(|(id, t)| json!({"requestId": id, "target": t}))
            .boxed()),
        pod_fields(),
    )
        .prop_map(|(v, storage, config, backup, bootstrap, restore, pod)| {
            let mut m = Map::new();
            m.insert("postgresVersion".into(), v);
            m.insert("storage".into(), storage);
            put(&mut m, "config", config);
            put(&mut m, "backup", backup);
            put(&mut m, "bootstrap", bootstrap);
            put(&mut m, "restore", restore);
            for (k, v) in pod {
                m.insert(k.into(), v);
            }
            Value::Object(m)
        })
        .boxed()
}

/// A spec the API server stores: the old object of an update.
fn valid_instance_spec() -> BoxedStrategy<Value> {
    (
        pick_values(vec![json!(16), json!(17), json!(18)]),
        pick(&["10Gi", "1Gi", "500Mi", "20Gi"]),
        opt(pick_values(vec![json!(2.0), json!(2.5), json!(3)])),
        opt(pick(&["standard", "fast"])),
        opt(pick(&["0 3 * * *", "*/15 * * * *"])),
        prop_oneof![Just(false), Just(true)],
        opt(pick_values(vec![
            json!({"requestId": "r1", "target": {"latest": true}}),
            json!({"requestId": "r1", "target": {"time": "2026-11-21T10:00:00Z"}}),
            json!({"requestId": "r1", "target": {"lsn": "0/3000060"}}),
        ])),
    )
        .prop_map(|(v, size, factor, class, schedule, backup, restore)| {
            let mut storage = json!({"size": size});
            if let Some(f) = factor {
                storage["sizeFactor"] = f;
            }
            if let Some(c) = class {
                storage["storageClassName"] = c;
            }
            let mut spec = json!({"postgresVersion": v, "storage": storage});
            if backup || restore.is_some() {
                spec["backup"] = json!({"s3": {"prefix": "s3://bucket/db"}});
                if let Some(s) = schedule {
                    spec["backup"]["schedule"] = s;
                }
            }
            if let Some(r) = restore {
                spec["restore"] = r;
            }
            spec
        })
        .boxed()
}

/// What an update changes: a few fields of the old spec, as people do.
fn instance_change() -> BoxedStrategy<Vec<(&'static str, Option<Value>)>> {
    let change = prop_oneof![
        version().prop_map(|v| ("postgresVersion", Some(v))),
        quantity().prop_map(|v| ("storage.size", Some(v))),
        opt(size_factor()).prop_map(|v| ("storage.sizeFactor", v)),
        opt(pick(&["standard", "fast"])).prop_map(|v| ("storage.storageClassName", v)),
        opt((request_id(), target())
            .prop_map(|(id, t)| json!({"requestId": id, "target": t}))
            .boxed())
        .prop_map(|v| ("restore", v)),
        time().prop_map(|v| ("restore.target.time", Some(v))),
        request_id().prop_map(|v| ("restore.requestId", Some(v))),
        opt(backup()).prop_map(|v| ("backup", v)),
    ];
    proptest::collection::vec(change, 1..3).boxed()
}

/// How metadata.name is written. The name itself is made unique per case.
#[derive(Clone, Copy, Debug)]
enum NameShape {
    Plain,
    Longest,
    TooLong,
    Dot,
    Upper,
}

fn name_shape() -> BoxedStrategy<NameShape> {
    prop_oneof![
        8 => Just(NameShape::Plain),
        1 => Just(NameShape::Longest),
        1 => Just(NameShape::TooLong),
        1 => Just(NameShape::Dot),
        1 => Just(NameShape::Upper),
    ]
    .boxed()
}

fn name(shape: NameShape, i: usize) -> String {
    let base = format!("fz-{i}");
    let pad = |n: usize| format!("{base}-{}", "a".repeat(n - base.len() - 1));
    match shape {
        NameShape::Plain => base,
        NameShape::Longest => pad(52),
        NameShape::TooLong => pad(53),
        NameShape::Dot => format!("{base}.eu"),
        NameShape::Upper => format!("Fz-{i}"),
    }
}

/// One generated case, before its name is fixed.
#[derive(Clone, Debug)]
enum Gen {
    Instance {
        shape: NameShape,
        old: Option<(Value, Option<Value>)>,
        new: Value,
    },
    Backup {
        old: Option<Value>,
        new: Value,
    },
}

fn first_point() -> BoxedStrategy<Option<Value>> {
    opt(pick(&[
        "2026-11-20T03:00:00.25Z",
        "2026-11-20T03:00:00Z",
        "not a time",
        "2026-02-30T10:00:00Z",
    ]))
}

fn set_path(spec: &mut Value, path: &str, v: Option<Value>) {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cursor = spec;
    for p in &parts[..parts.len() - 1] {
        if !cursor.get(*p).is_some_and(Value::is_object) {
            if v.is_none() {
                return;
            }
            cursor[*p] = json!({});
        }
        cursor = cursor.get_mut(*p).unwrap();
    }
    let last = parts[parts.len() - 1];
    match v {
        Some(v) => cursor[last] = v,
        None => {
            cursor.as_object_mut().unwrap().remove(last);
        }
    }
}

fn generator() -> BoxedStrategy<Gen> {
    let backup_spec = (
        prop_oneof![
            4 => pick(&["db", "orders"]),
            1 => pick(&["", "x.y", "UPPER"]),
            1 => (252usize..256).prop_map(|n| json!("a".repeat(n))),
            1 => wrong_type(),
        ],
        opt(pick_values(vec![json!(true), json!(false), json!("yes")])),
    )
        .prop_map(|(n, permanent)| {
            let mut m = Map::new();
            m.insert("instanceRef".into(), json!({"name": n}));
            put(&mut m, "permanent", permanent);
            Value::Object(m)
        });
    prop_oneof![
        5 => (name_shape(), instance_spec()).prop_map(|(shape, new)| Gen::Instance { shape, old: None, new }),
        4 => (valid_instance_spec(), first_point(), instance_change()).prop_map(|(old, first, changes)| {
            let mut new = old.clone();
            for (path, v) in changes {
                set_path(&mut new, path, v);
            }
            Gen::Instance { shape: NameShape::Plain, old: Some((old, first)), new }
        }),
        1 => backup_spec.clone().prop_map(|new| Gen::Backup { old: None, new }),
        1 => (backup_spec.clone(), any::<bool>(), backup_spec).prop_map(|(old, same, other)| {
            Gen::Backup { new: if same { old.clone() } else { other }, old: Some(old) }
        }),
    ]
    .boxed()
}

/// A case with its name fixed: what the offline check judges and the
/// cluster tier replays.
#[derive(Clone, Debug)]
pub struct Case {
    pub crd: &'static str,
    pub old: Option<Value>,
    pub new: Value,
}

pub fn object(kind: &str, name: &str, spec: Value, first: Option<&Value>) -> Value {
    let mut o = json!({
        "apiVersion": "pgsteward.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    });
    if let Some(f) = first {
        o["status"] = json!({"firstRecoverabilityPoint": f});
    }
    o
}

fn materialize(g: Gen, i: usize) -> Case {
    match g {
        Gen::Instance { shape, old, new } => {
            let n = name(shape, i);
            match old {
                None => Case {
                    crd: INSTANCES,
                    old: None,
                    new: object("PgInstance", &n, new, None),
                },
                // On an update the API server keeps the stored status.
                Some((old, first)) => Case {
                    crd: INSTANCES,
                    old: Some(object("PgInstance", &n, old, first.as_ref())),
                    new: object("PgInstance", &n, new, first.as_ref()),
                },
            }
        }
        Gen::Backup { old, new } => {
            let n = format!("fz-{i}");
            Case {
                crd: BACKUPS,
                old: old.map(|o| object("PgBackup", &n, o, None)),
                new: object("PgBackup", &n, new, None),
            }
        }
    }
}

// ------------------------------------------------------------------ offline API server

/// The API server's view of one CRD: its schema made strict, and its CEL
/// rules compiled once.
pub struct Server {
    schema: Value,
    validator: jsonschema::Validator,
    compiled: kube::core::cel::CompiledSchema,
}

/// `nullable: true` as JSON Schema says it (`type` also allows null), and
/// unknown fields refused.
fn as_json_schema(schema: &mut Value) {
    if let Value::Object(map) = schema {
        let preserve = map
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserve
        {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        if map
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            == Some(true)
            && !map.contains_key("anyOf")
        {
            map.insert(
                "anyOf".into(),
                json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
        if map.get("nullable").and_then(Value::as_bool) == Some(true) {
            if let Some(Value::String(t)) = map.get("type").cloned() {
                map.insert("type".into(), json!([t, "null"]));
            } else if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                any.push(json!({"type": "null"}));
            }
        }
        for v in map.values_mut() {
            as_json_schema(v);
        }
    } else if let Value::Array(items) = schema {
        items.iter_mut().for_each(as_json_schema);
    }
}

impl Server {
    fn new(crd: &str) -> Self {
        let schema = schema(crd);
        let mut strict = schema.clone();
        // apiVersion, kind and metadata are the API server's own.
        for (field, ty) in [
            ("apiVersion", "string"),
            ("kind", "string"),
            ("metadata", "object"),
        ] {
            strict["properties"][field] = json!({ "type": ty });
        }
        as_json_schema(&mut strict);
        let validator = jsonschema::validator_for(&strict).expect("the CRD schema compiles");
        let compiled = kube::core::cel::compile_schema(&schema);
        Server {
            schema,
            validator,
            compiled,
        }
    }
}

/// Null for a field that is not nullable is dropped before defaulting, as the
/// API server does (apiextensions' PruneNonNullableNullsWithoutDefaults).
fn prune_nulls(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|s| s.is_object());
            map.retain(|k, v| {
                let sub = props.and_then(|p| p.get(k)).or(extra);
                let nullable = sub
                    .and_then(|s| s.get("nullable"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                !(v.is_null()
                    && sub.is_some()
                    && !nullable
                    && sub.unwrap().get("default").is_none())
            });
            for (k, v) in map.iter_mut() {
                if let Some(sub) = props.and_then(|p| p.get(k)).or(extra) {
                    prune_nulls(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                items.iter_mut().for_each(|v| prune_nulls(sub, v));
            }
        }
        // CEL sees a `type: number` field as a double even when the JSON
        // has no fraction (`sizeFactor: 3`), as on the API server; kube-cel
        // would keep it an int and fail `double * int`.
        Value::Number(n) if schema.get("type") == Some(&json!("number")) && !n.is_f64() => {
            *value = json!(n.as_f64().unwrap());
        }
        _ => {}
    }
}

/// The object as the API server stores and returns it: Go writes a whole
/// float64 without its fraction (`17.0` comes back as `17`).
pub fn round_trip(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), round_trip(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(round_trip).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => value.clone(),
        },
        v => v.clone(),
    }
}

/// Integer fields written with a fraction (`17.0`) whose own rules would
/// run: rules with `oldSelf` only when the old object has the field.
fn float_in_integer_rule(
    schema: &Value,
    new: &Value,
    old: Option<&Value>,
    path: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        new.as_object(),
    ) {
        for (k, v) in obj {
            if let Some(sub) = props.get(k) {
                let old_v = old.and_then(|o| o.get(k));
                out.extend(float_in_integer_rule(sub, v, old_v, &format!("{path}.{k}")));
            }
        }
    }
    let rules = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array);
    if schema.get("type") == Some(&json!("integer")) && new.is_f64() {
        for r in rules.into_iter().flatten() {
            let transition = r["rule"].as_str().unwrap_or_default().contains("oldSelf");
            if !transition || old.is_some() {
                out.push(format!(
                    "{path}: invalid data, expected int, got float64 evaluating rule: {}",
                    r["message"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    out
}

/// metadata.name as the API server checks it for every custom resource: a
/// DNS-1123 subdomain.
fn name_errors(object: &Value) -> Vec<String> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label) {
        vec![]
    } else {
        vec![format!(
            "metadata.name: {name:?} is not a lowercase RFC 1123 subdomain"
        )]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub accepted: bool,
    pub messages: Vec<String>,
    /// CEL rules that failed to evaluate (not a refusal a person can act on).
    pub evaluation_errors: Vec<String>,
}

fn judge_one(server: &Server, old: Option<&Value>, new: &Value) -> Verdict {
    let prune = |o: &Value| {
        let mut o = o.clone();
        prune_nulls(&server.schema, &mut o);
        o
    };
    let new = prune(new);
    let old = old.map(prune);
    let mut messages = name_errors(&new);
    messages.extend(
        server
            .validator
            .iter_errors(&new)
            .map(|e| format!("{}: {e}", e.instance_path())),
    );
    // The API server's CEL sees `17.0` in an integer field as a double and
    // fails a rule that reads it ("invalid data, expected int, got
    // float64"); kube-cel reads it as an int.
    if messages.is_empty() {
        messages.extend(float_in_integer_rule(
            &server.schema,
            &new,
            old.as_ref(),
            "",
        ));
    }
    let mut evaluation_errors = Vec::new();
    // The API server runs the CEL rules on a well-typed object only.
    let cel = || {
        kube::core::cel::Validator::new().validate_compiled(&server.compiled, &new, old.as_ref())
    };
    if let Some(Err(errors)) = messages.is_empty().then(cel) {
        for e in errors.iter() {
            if e.kind != kube::core::cel::ErrorKind::ValidationFailure {
                evaluation_errors.push(format!("{:?} {}: {}", e.kind, e.field_path, e.message));
            }
            messages.push(format!("{}: {}", e.field_path, e.message));
        }
    }
    // kube-cel reports sibling fields in no fixed order.
    messages.sort();
    evaluation_errors.sort();
    Verdict {
        accepted: messages.is_empty(),
        messages,
        evaluation_errors,
    }
}

/// A case's verdict. On an update the old object must be one the API server
/// stored: `None` when offline refuses the old object itself.
pub fn judge(servers: &Servers, case: &Case) -> Option<Verdict> {
    let server = if case.crd == INSTANCES {
        &servers.0
    } else {
        &servers.1
    };
    if let Some(old) = &case.old {
        let stored = judge_one(server, None, old);
        if !stored.accepted {
            return None;
        }
    }
    Some(judge_one(server, case.old.as_ref(), &case.new))
}

/// The object as the API server stores it and the operator then reads it:
/// nulls of non-nullable fields pruned, defaults applied, whole floats
/// written back as integers.
pub fn stored(servers: &Servers, crd: &str, object: &Value) -> Value {
    let server = if crd == INSTANCES {
        &servers.0
    } else {
        &servers.1
    };
    let mut o = object.clone();
    prune_nulls(&server.schema, &mut o);
    round_trip(&kube::core::cel::apply_defaults(&server.schema, &o))
}

/// The two CRDs' offline API servers: PgInstance, PgBackup.
pub struct Servers(Server, Server);

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The generated cases whose old object (if any) would be stored, with their
/// verdicts, in generation order.
pub fn run(seed: u64, count: usize, servers: &Servers) -> Vec<(Case, Verdict)> {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = generator();
    let mut out = Vec::new();
    let mut i = 0;
    // Updates whose old object is refused are drawn again: they say nothing.
    while out.len() < count {
        let g = strategy
            .new_tree(&mut runner)
            .expect("the generator draws")
            .current();
        let case = materialize(g, i);
        i += 1;
        if let Some(v) = judge(servers, &case) {
            out.push((case, v));
        }
    }
    out
}

pub fn servers() -> Servers {
    Servers(Server::new(INSTANCES), Server::new(BACKUPS))
}
