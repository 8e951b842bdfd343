//! Every CEL rule in the CRDs, evaluated offline (kube's `cel` feature, which
//! runs the Kubernetes CEL libraries, `quantity()` included) against objects
//! that break it. The cluster tier (`e2e/cluster/`) repeats these cases
//! against a real API server when one is reachable.

mod common;

use std::collections::BTreeSet;

use serde_json::{Value, json};

const INSTANCES: &str = "pginstances.pgsteward.io.yaml";
const BACKUPS: &str = "pgbackups.pgsteward.io.yaml";

fn valid_instance() -> Value {
    json!({
        "apiVersion": "pgsteward.io/v1alpha1",
        "kind": "PgInstance",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {
            "postgresVersion": 17,
            "storage": {"size": "10Gi", "storageClassName": "standard"},
            "config": {"parameters": {"work_mem": "16MB"}},
            "backup": {"schedule": "0 3 * * *", "s3": {"prefix": "s3://bucket/db"}}
        }
    })
}

/// Set `value` at a `/`-separated path (creating objects on the way), or
/// remove the field when `value` is null.
fn with(mut object: Value, path: &str, value: Value) -> Value {
    let parts: Vec<&str> = path.split('/').collect();
    let mut cursor = &mut object;
    for part in &parts[..parts.len() - 1] {
        if cursor.get(*part).is_none() {
            cursor[*part] = json!({});
        }
        cursor = cursor.get_mut(*part).unwrap();
    }
    let last = parts[parts.len() - 1];
    if value.is_null() {
        cursor.as_object_mut().unwrap().remove(last);
    } else {
        cursor[last] = value;
    }
    object
}

/// `status.firstRecoverabilityPoint` in the restore cases.
const FIRST: &str = "2026-11-20T03:00:00.25Z";

/// The object with `status.firstRecoverabilityPoint` set. On an update the
/// API server keeps the stored status (the status subresource), so a case's
/// new object carries the old one's status; the cluster tier writes it
/// through the status subresource.
fn recoverable_from(object: Value, first: &str) -> Value {
    with(object, "status/firstRecoverabilityPoint", json!(first))
}

struct Case {
    name: &'static str,
    crd: &'static str,
    old: Option<Value>,
    new: Value,
    /// Parts of the message the person sees, separated by `|` (all must appear).
    message: &'static str,
}

fn cases() -> Vec<Case> {
    let base = valid_instance;
    let target = |t: Value| {
        with(
            base(),
            "spec/restore",
            json!({"requestId": "r1", "target": t}),
        )
    };
    vec![
        Case {
            name: "version never decreases",
            crd: INSTANCES,
            old: Some(with(base(), "spec/postgresVersion", json!(18))),
            new: base(),
            message: "postgresVersion cannot decrease",
        },
        Case {
            name: "name fits a StatefulSet",
            crd: INSTANCES,
            old: None,
            new: with(base(), "metadata/name", json!("a".repeat(53))),
            message: "metadata.name must be at most 52 characters",
        },
        Case {
            name: "name has no dot",
            crd: INSTANCES,
            old: None,
            new: with(base(), "metadata/name", json!("orders.eu")),
            message: "contain no '.'",
        },
        Case {
            name: "sizeFactor at least 2.0",
            crd: INSTANCES,
            old: None,
            new: with(base(), "spec/storage/sizeFactor", json!(1.5)),
            message: "storage.sizeFactor must be at least 2.0",
        },
        Case {
            name: "storage size cannot shrink",
            crd: INSTANCES,
            old: Some(with(base(), "spec/storage/size", json!("20Gi"))),
            new: with(base(), "spec/storage/size", json!("19000Mi")),
            message: "storage.size cannot shrink",
        },
        Case {
            name: "lowering sizeFactor cannot shrink the volume",
            crd: INSTANCES,
            old: Some(with(base(), "spec/storage/sizeFactor", json!(2.5))),
            new: with(base(), "spec/storage/sizeFactor", json!(2.0)),
            message: "storage.size × storage.sizeFactor cannot shrink: the volume was requested for storage.size 10Gi",
        },
        Case {
            name: "a larger size can pay for a lower sizeFactor only in full",
            crd: INSTANCES,
            old: Some(with(base(), "spec/storage/sizeFactor", json!(2.5))),
            new: with(
                with(base(), "spec/storage/sizeFactor", json!(2.0)),
                "spec/storage/size",
                json!("12Gi"),
            ),
            message: "storage.size × storage.sizeFactor cannot shrink",
        },
        Case {
            name: "storage size is a quantity",
            crd: INSTANCES,
            old: None,
            new: with(base(), "spec/storage/size", json!("10 GB")),
            message: "storage.size must be a positive quantity",
        },
        Case {
            name: "storage size is positive",
            crd: INSTANCES,
            old: None,
            new: with(base(), "spec/storage/size", json!("0")),
            message: "storage.size must be a positive quantity",
        },
        Case {
            name: "storage class cannot change",
            crd: INSTANCES,
            old: Some(base()),
            new: with(base(), "spec/storage/storageClassName", json!("fast")),
            message: "storage.storageClassName cannot change",
        },
        Case {
            name: "backup needs a storage kind",
            crd: INSTANCES,
            old: None,
            new: with(base(), "spec/backup/s3", Value::Null),
            message: "backup needs exactly one storage kind",
        },
        Case {
            name: "backup takes only one storage kind",
            crd: INSTANCES,
            old: None,
            new: with(base(), "spec/backup/file", json!({"path": "/backups"})),
            message: "backup needs exactly one storage kind",
        },
        Case {
            name: "backup schedule is cron",
            crd: INSTANCES,
            old: None,
            new: with(base(), "spec/backup/schedule", json!("daily")),
            message: "backup.schedule must be a 5-field cron expression",
        },
        Case {
            name: "s3 prefix",
            crd: INSTANCES,
            old: None,
            new: with(base(), "spec/backup/s3/prefix", json!("bucket/db")),
            message: "backup.s3.prefix must look like s3://bucket/path",
        },
        Case {
            name: "gcs prefix",
            crd: INSTANCES,
            old: None,
            new: with(
                with(base(), "spec/backup/s3", Value::Null),
                "spec/backup/gcs",
                json!({"prefix": "s3://x/y"}),
            ),
            message: "backup.gcs.prefix must look like gs://bucket/path",
        },
        Case {
            name: "azure prefix",
            crd: INSTANCES,
            old: None,
            new: with(
                with(base(), "spec/backup/s3", Value::Null),
                "spec/backup/azure",
                json!({"prefix": "container/x", "storageAccount": "acct"}),
            ),
            message: "backup.azure.prefix must look like azure://container/path",
        },
        Case {
            name: "file path outside the data volume",
            crd: INSTANCES,
            old: None,
            new: with(
                with(base(), "spec/backup/s3", Value::Null),
                "spec/backup/file",
                json!({"path": "/var/lib/postgresql/backups"}),
            ),
            message: "backup.file.path must be an absolute directory outside /var/lib/postgresql",
        },
        Case {
            name: "image-managed parameter",
            crd: INSTANCES,
            old: None,
            new: with(base(), "spec/config/parameters/port", json!("5433")),
            message: "config.parameters may not set port",
        },
        Case {
            name: "image-managed parameters are all named",
            crd: INSTANCES,
            old: None,
            new: with(
                with(
                    base(),
                    "spec/config/parameters/archive_command",
                    json!("/bin/true"),
                ),
                "spec/config/parameters/data_directory",
                json!("/tmp"),
            ),
            message: "config.parameters may not set |archive_command|data_directory",
        },
        Case {
            name: "slow query threshold has its own field",
            crd: INSTANCES,
            old: None,
            new: with(
                base(),
                "spec/config/parameters/log_min_duration_statement",
                json!("100"),
            ),
            message: "use spec.slowQueryLog",
        },
        Case {
            name: "shared_preload_libraries keeps pg_stat_statements",
            crd: INSTANCES,
            old: None,
            new: with(
                base(),
                "spec/config/parameters/shared_preload_libraries",
                json!("auto_explain"),
            ),
            message: "shared_preload_libraries must keep pg_stat_statements",
        },
        Case {
            name: "parameter names are lower case",
            crd: INSTANCES,
            old: None,
            new: with(base(), "spec/config/parameters/Work_Mem", json!("1MB")),
            message: "config.parameters names must be lower-case",
        },
        Case {
            name: "parameter values are one line",
            crd: INSTANCES,
            old: None,
            new: with(
                base(),
                "spec/config/parameters/work_mem",
                json!("1MB\nport = 1"),
            ),
            message: "config.parameters values must be a single line",
        },
        Case {
            name: "recovery needs backup storage",
            crd: INSTANCES,
            old: None,
            new: with(
                with(base(), "spec/backup", Value::Null),
                "spec/bootstrap/recovery",
                json!({"target": {"latest": true}}),
            ),
            message: "bootstrap.recovery reads from backup storage",
        },
        Case {
            name: "restore needs backup storage",
            crd: INSTANCES,
            old: None,
            new: with(
                with(base(), "spec/backup", Value::Null),
                "spec/restore",
                json!({"requestId": "r1", "target": {"latest": true}}),
            ),
            message: "restore reads from backup storage",
        },
        Case {
            name: "restore target has one kind, not two",
            crd: INSTANCES,
            old: None,
            new: target(json!({"time": "2026-11-21T10:00:00Z", "lsn": "0/3000060"})),
            message: "target needs exactly one of latest, time, lsn, xid, name or immediate",
        },
        Case {
            name: "restore target has one kind, not none",
            crd: INSTANCES,
            old: None,
            new: target(json!({})),
            message: "target needs exactly one of",
        },
        Case {
            name: "recovery target has one kind",
            crd: INSTANCES,
            old: None,
            new: with(
                base(),
                "spec/bootstrap/recovery",
                json!({"target": {"latest": true, "xid": "100"}}),
            ),
            message: "target needs exactly one of",
        },
        Case {
            name: "a restore request cannot change under the same id",
            crd: INSTANCES,
            old: Some(target(json!({"time": "2026-11-21T10:00:00Z"}))),
            new: target(json!({"time": "2026-11-21T09:00:00Z"})),
            message: "a restore request cannot change once made|new requestId",
        },
        Case {
            name: "a restore target before the first recoverability point",
            crd: INSTANCES,
            old: Some(recoverable_from(base(), FIRST)),
            new: recoverable_from(target(json!({"time": "2026-11-20T02:59:59Z"})), FIRST),
            message: "spec.restore.target.time 2026-11-20T02:59:59Z is before the first recoverability point|the earliest time you can restore to is 2026-11-20T03:00:00.25Z",
        },
        Case {
            name: "a restore target before the first recoverability point, in another offset",
            crd: INSTANCES,
            old: Some(recoverable_from(base(), FIRST)),
            new: recoverable_from(target(json!({"time": "2026-11-20T03:30:00+01:00"})), FIRST),
            message: "the earliest time you can restore to is 2026-11-20T03:00:00.25Z",
        },
        Case {
            name: "a new restore request id with a time before the first recoverability point",
            crd: INSTANCES,
            old: Some(recoverable_from(
                target(json!({"time": "2026-11-19T12:00:00Z"})),
                FIRST,
            )),
            new: recoverable_from(
                with(
                    target(json!({"time": "2026-11-19T12:00:00Z"})),
                    "spec/restore/requestId",
                    json!("r2"),
                ),
                FIRST,
            ),
            message: "is before the first recoverability point|2026-11-20T03:00:00.25Z",
        },
        Case {
            name: "target latest is true",
            crd: INSTANCES,
            old: None,
            new: target(json!({"latest": false})),
            message: "target.latest can only be true",
        },
        Case {
            name: "target immediate is true",
            crd: INSTANCES,
            old: None,
            new: target(json!({"immediate": false})),
            message: "target.immediate can only be true",
        },
        Case {
            name: "target time is RFC 3339",
            crd: INSTANCES,
            old: None,
            new: target(json!({"time": "yesterday"})),
            message: "target.time must be an RFC 3339 time",
        },
        Case {
            name: "target lsn",
            crd: INSTANCES,
            old: None,
            new: target(json!({"lsn": "3000060"})),
            message: "target.lsn must be a WAL location",
        },
        Case {
            name: "target xid",
            crd: INSTANCES,
            old: None,
            new: target(json!({"xid": "12a"})),
            message: "target.xid must be a transaction id",
        },
        Case {
            name: "restore request id",
            crd: INSTANCES,
            old: None,
            new: with(
                base(),
                "spec/restore",
                json!({"requestId": "../../etc", "target": {"latest": true}}),
            ),
            message: "restore.requestId must be 1-63 letters",
        },
        Case {
            name: "PgBackup spec is immutable",
            crd: BACKUPS,
            old: Some(
                json!({"apiVersion": "pgsteward.io/v1alpha1", "kind": "PgBackup",
                "metadata": {"name": "b"}, "spec": {"instanceRef": {"name": "db"}}}),
            ),
            new: json!({"apiVersion": "pgsteward.io/v1alpha1", "kind": "PgBackup",
                "metadata": {"name": "b"}, "spec": {"instanceRef": {"name": "other"}}}),
            message: "a PgBackup's spec cannot change",
        },
    ]
}

fn validate(case: &Case) -> Result<(), kube::core::cel::ValidationErrors> {
    kube::core::cel::Validator::new().validate(
        &common::schema(case.crd),
        &case.new,
        case.old.as_ref(),
    )
}

/// Every rule of a CRD, with its message (or message expression).
fn rules(crd: &str) -> Vec<(String, Option<String>)> {
    fn walk(v: &Value, out: &mut Vec<(String, Option<String>)>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
                    for r in rules {
                        let message = r
                            .get("message")
                            .or_else(|| r.get("messageExpression"))
                            .and_then(Value::as_str)
                            .map(String::from);
                        out.push((r["rule"].as_str().unwrap().to_string(), message));
                    }
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&common::schema(crd), &mut out);
    out
}

#[test]
fn each_bad_object_is_rejected_with_its_message() {
    let mut failures = Vec::new();
    for case in cases() {
        match validate(&case) {
            Ok(()) => failures.push(format!("{}: accepted", case.name)),
            Err(errors) => {
                let messages: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
                let parts: Vec<&str> = case.message.split('|').collect();
                if !messages.iter().any(|m| parts.iter().all(|p| m.contains(p))) {
                    failures.push(format!(
                        "{}: expected a message containing {:?}, got {messages:?}",
                        case.name, case.message
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The cluster tier (`e2e/cluster/run.sh`) sends these same cases to a real
/// API server; this keeps its copy current. Regenerate with
/// `PGSTEWARD_UPDATE_FIXTURES=1 cargo test -p pgsteward-api --test cel_rules`.
#[test]
fn cluster_tier_cases_match_these_cases() {
    let cases: Vec<Value> = cases()
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "crd": c.crd,
                "old": c.old,
                "new": c.new,
                "messageParts": c.message.split('|').collect::<Vec<_>>(),
            })
        })
        .collect();
    let expected = serde_json::to_string_pretty(&cases).unwrap() + "\n";
    common::assert_generated_file_current("e2e/cluster/cel-cases.json", &expected, "cel_rules");
}

#[test]
fn the_valid_object_and_its_allowed_updates_are_accepted() {
    let ok = |old: Option<Value>, new: Value, what: &str| {
        let r = kube::core::cel::Validator::new().validate(
            &common::schema(INSTANCES),
            &new,
            old.as_ref(),
        );
        assert!(r.is_ok(), "{what} should be accepted: {r:?}");
    };
    ok(None, valid_instance(), "the base object");
    ok(
        Some(valid_instance()),
        with(valid_instance(), "spec/postgresVersion", json!(18)),
        "a version upgrade",
    );
    ok(
        Some(valid_instance()),
        with(valid_instance(), "spec/storage/size", json!("10240Mi")),
        "the same size in other units",
    );
    ok(
        Some(valid_instance()),
        with(valid_instance(), "spec/storage/size", json!("11Gi")),
        "a larger volume",
    );
    ok(
        Some(valid_instance()),
        with(valid_instance(), "spec/storage/sizeFactor", json!(3.0)),
        "a larger sizeFactor",
    );
    ok(
        Some(valid_instance()),
        with(
            with(valid_instance(), "spec/storage/sizeFactor", json!(2.0)),
            "spec/storage/size",
            json!("12800Mi"),
        ),
        "a lower sizeFactor paid for in full by a larger size (10Gi x 2.5 = 12800Mi x 2.0)",
    );
    ok(
        None,
        with(
            valid_instance(),
            "spec/config/parameters/shared_preload_libraries",
            json!("auto_explain, pg_stat_statements"),
        ),
        "extra preloaded libraries",
    );
    ok(
        None,
        with(
            valid_instance(),
            "spec/restore",
            json!({"requestId": "r-2026-11-21.1", "target": {"lsn": "0/3000060"}}),
        ),
        "a restore to an LSN",
    );
    let restore = |id: &str, target: Value| {
        with(
            valid_instance(),
            "spec/restore",
            json!({"requestId": id, "target": target}),
        )
    };
    ok(
        Some(restore("r1", json!({"latest": true}))),
        restore("r2", json!({"lsn": "0/3000060"})),
        "a new restore request under a new id",
    );
    ok(
        Some(restore("r1", json!({"latest": true}))),
        with(
            restore("r1", json!({"latest": true})),
            "spec/postgresVersion",
            json!(18),
        ),
        "another change while a restore request stays",
    );
    ok(
        Some(restore("r1", json!({"latest": true}))),
        valid_instance(),
        "removing the restore request",
    );
}

/// The rule at the root compares `spec.restore.target.time` with
/// `status.firstRecoverabilityPoint` only when `spec.restore` changes on an
/// update: never on create, never for a status write or another spec change.
#[test]
fn a_restore_target_is_checked_against_status_only_when_the_request_changes() {
    let validate = |old: Option<&Value>, new: &Value| {
        kube::core::cel::Validator::new().validate(&common::schema(INSTANCES), new, old)
    };
    let restore = |id: &str, target: Value| {
        with(
            valid_instance(),
            "spec/restore",
            json!({"requestId": id, "target": target}),
        )
    };
    let at = |time: &str| restore("r2", json!({"time": time}));
    let before_first = "2026-11-19T12:00:00Z";
    let no_request = recoverable_from(valid_instance(), FIRST);
    let accepted: Vec<(&str, Option<Value>, Value)> = vec![
        (
            "a target at the first recoverability point",
            Some(no_request.clone()),
            recoverable_from(at(FIRST), FIRST),
        ),
        (
            "a target after it",
            Some(no_request.clone()),
            recoverable_from(at("2026-11-20T03:00:01Z"), FIRST),
        ),
        (
            "a target after it in another offset",
            Some(no_request.clone()),
            recoverable_from(at("2026-11-20T05:00:00+01:00"), FIRST),
        ),
        (
            "a leap day after it",
            Some(recoverable_from(valid_instance(), "2028-02-28T23:00:00Z")),
            recoverable_from(at("2028-02-29T10:00:00Z"), "2028-02-28T23:00:00Z"),
        ),
        (
            "an early target when status has no first recoverability point",
            Some(valid_instance()),
            at(before_first),
        ),
        (
            "an early target when status has no first recoverability point yet",
            Some(with(valid_instance(), "status/conditions", json!([]))),
            with(at(before_first), "status/conditions", json!([])),
        ),
        (
            "an early target on create (no status yet; left to the operator)",
            None,
            recoverable_from(at(before_first), FIRST),
        ),
        (
            "a status write that moves the point past a request already made",
            Some(recoverable_from(at(before_first), "2026-11-19T00:00:00Z")),
            recoverable_from(at(before_first), FIRST),
        ),
        (
            "another spec change while an old early request stays",
            Some(recoverable_from(at(before_first), FIRST)),
            with(
                recoverable_from(at(before_first), FIRST),
                "spec/postgresVersion",
                json!(18),
            ),
        ),
        (
            "removing an early request",
            Some(recoverable_from(at(before_first), FIRST)),
            no_request.clone(),
        ),
        (
            "targets without a time",
            Some(no_request.clone()),
            recoverable_from(restore("r2", json!({"lsn": "0/3000060"})), FIRST),
        ),
        (
            "a time the target's own rule accepts but CEL cannot parse (left to the operator)",
            Some(no_request.clone()),
            recoverable_from(at("2026-02-30T10:00:00Z"), FIRST),
        ),
        (
            "a first recoverability point that is not a time",
            Some(recoverable_from(valid_instance(), "not a time")),
            recoverable_from(at(before_first), "not a time"),
        ),
    ];
    for (what, old, new) in accepted {
        let r = validate(old.as_ref(), &new);
        assert!(r.is_ok(), "{what} should be accepted: {r:?}");
    }
    // An early target's refusal names the earliest time and nothing else
    // fails (no evaluation error from timestamp()).
    let errors = validate(
        Some(&no_request),
        &recoverable_from(at(before_first), FIRST),
    )
    .expect_err("an early target is refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].kind,
        kube::core::cel::ErrorKind::ValidationFailure,
        "{errors:?}"
    );
    assert!(errors[0].message.contains(FIRST), "{errors:?}");
    assert!(
        errors[0].field_path.ends_with("spec.restore.target.time"),
        "{errors:?}"
    );
}

#[test]
fn every_rule_has_a_message_and_a_rejecting_case() {
    let mut fired: BTreeSet<String> = BTreeSet::new();
    for case in cases() {
        if let Err(errors) = validate(&case) {
            fired.extend(errors.iter().map(|e| e.rule.clone()));
        }
    }
    for crd in [INSTANCES, BACKUPS] {
        for (rule, message) in rules(crd) {
            assert!(message.is_some(), "rule {rule:?} in {crd} has no message");
            assert!(
                fired.contains(&rule),
                "rule {rule:?} in {crd} has no case in cases() that breaks it"
            );
        }
    }
}

/// Every schema node that carries rules, with those rules.
fn rule_nodes(crd: &str) -> Vec<(Value, Vec<String>)> {
    fn walk(v: &Value, out: &mut Vec<(Value, Vec<String>)>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
                    let rules = rules
                        .iter()
                        .map(|r| r["rule"].as_str().unwrap().to_string());
                    out.push((v.clone(), rules.collect()));
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&common::schema(crd), &mut out);
    out
}

/// kube-cel 0.8's scope check also reports the variables a macro binds
/// (`x` in `list.filter(x, x)`); those are in scope.
fn is_comprehension_variable(rule: &str, w: &kube::core::cel::AnalysisWarning) -> bool {
    let Some(var) = w
        .message
        .strip_prefix("variable '")
        .and_then(|m| m.split('\'').next())
    else {
        return false;
    };
    matches!(w.kind, kube::core::cel::WarningKind::WrongScope)
        && rule.contains(&format!("({var}, "))
}

/// kube-cel's static analysis: each rule compiles, uses only the variables a
/// CRD rule has, and its (coarse) cost estimate stays in the API server's
/// budget given the schema's bounds. The real check is the API server's, in
/// the cluster tier.
#[test]
fn every_rule_compiles_and_stays_within_the_cost_budget() {
    use kube::core::cel::{ScopeContext, analyze_rule, compile_schema};
    for crd in [INSTANCES, BACKUPS] {
        let compiled = compile_schema(&common::schema(crd));
        assert!(
            !compiled.has_errors(),
            "{crd}: {:?}",
            compiled.compilation_errors()
        );
        for (node, rules) in rule_nodes(crd) {
            let compiled = compile_schema(&node);
            for rule in rules {
                let warnings: Vec<_> = analyze_rule(&rule, &compiled, ScopeContext::CrdValidation)
                    .into_iter()
                    .filter(|w| !is_comprehension_variable(&rule, w))
                    .collect();
                assert!(warnings.is_empty(), "{crd}: rule {rule:?}: {warnings:?}");
            }
        }
    }
}
