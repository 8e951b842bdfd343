//! Property tests of everything the operator parses from a pod (issue 18):
//! the termination message, `pgsteward-status`, result documents and the
//! WAL-G backup list inside backup results. Each target parses the input as
//! the operator does and, when it parses, feeds it to the decisions that use
//! it. None may panic; a document about another request changes nothing.
//!
//! Two sources of input: the kept corpus in `tests/corpus/<target>/` (the
//! image tier's real fixtures plus hostile documents, run every time, with
//! every truncation of each), and generated cases (proptest; the budget is
//! `PGSTEWARD_PARSER_CASES`, default 256, as `make test` runs it, see docs/testing.md).

use std::path::PathBuf;

use k8s_openapi::jiff::Timestamp;
use pgsteward_api::instance::{BackupRecord, FailedUpgrade, OperationRecord, RestoreSpec};
use pgsteward_operator::{
    act::{
        backup_health::{
            archiving_fails, backup_health, backup_record, last_scheduled_backup,
            recoverability_point, refresh_archiver,
        },
        config::config_decision,
        restore::{RestoreDecision, decide_restore},
        upgrade::{UpgradeInputs, decide_upgrade},
    },
    image_state::{
        self, BackupResult, RestoreResult, StatusReport, TerminationMessage, UpgradeResult,
    },
};
use proptest::prelude::*;

const TARGETS: [&str; 5] = ["termination", "status", "backup", "restore", "upgrade"];

fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn upgrade_op(id: &str) -> OperationRecord {
    OperationRecord {
        kind: "upgrade".into(),
        id: id.into(),
        from_major: Some(17),
        to_major: Some(18),
        ..Default::default()
    }
}

fn restore_op(id: &str) -> OperationRecord {
    OperationRecord {
        kind: "restore".into(),
        id: id.into(),
        ..Default::default()
    }
}

fn restore_request(id: &str) -> RestoreSpec {
    serde_json::from_value(serde_json::json!({"requestId": id, "target": {"latest": true}}))
        .expect("a restore request")
}

/// Every upgrade decision that may see `r`, with `r` from exec and from the
/// termination message.
fn upgrade_decisions(r: &UpgradeResult) {
    let op = upgrade_op(&r.id);
    let failed = FailedUpgrade {
        id: r.id.clone(),
        from_major: 17,
        to_major: 18,
        generation: 1,
        ..Default::default()
    };
    for (operation, failed) in [(Some(&op), None), (None, Some(&failed))] {
        for (result, terminated) in [(Some(r), None), (None, Some(r))] {
            let _ = decide_upgrade(&UpgradeInputs {
                spec_major: 18,
                generation: 1,
                running_major: Some(17),
                operation,
                failed,
                result,
                terminated_result: terminated,
                now: Some("2026-01-01T00:00:00Z"),
                ..Default::default()
            });
        }
    }
}

fn restore_decisions(r: &RestoreResult) {
    let req = restore_request(&r.id);
    let op = restore_op(&r.id);
    let _ = decide_restore(Some(&req), None, Some(&op), Some(r), None, now());
}

fn backup_decisions(r: &BackupResult) {
    let prior = BackupRecord {
        finished_at: Some("2025-01-01T00:00:00Z".into()),
        ..Default::default()
    };
    let _ = last_scheduled_backup(Some(&prior), Some(r));
    let _ = last_scheduled_backup(None, Some(r));
    let _ = backup_record(r);
    if let Some(p) = &r.details.first_recoverability_point
        && let Some(kept) = recoverability_point(p)
    {
        assert!(kept.len() <= pgsteward_api::instance::FIRST_RECOVERABILITY_POINT_MAX_LEN);
    }
}

fn status_decisions(s: &StatusReport) {
    let _ = config_decision(s);
    for schedule in [None, Some("0 * * * *")] {
        let _ = backup_health(schedule, Some(s), None, None, now());
    }
    if let Some(a) = &s.archiver {
        let _ = archiving_fails(a);
        let first = refresh_archiver(None, a);
        let _ = refresh_archiver(Some(&first), a);
    }
    if let Some(r) = &s.results.upgrade {
        upgrade_decisions(r);
    }
    if let Some(r) = &s.results.restore {
        restore_decisions(r);
    }
    if let Some(r) = &s.results.backup {
        backup_decisions(r);
    }
}

/// Parse `text` as the operator parses target `target`, then decide on it.
fn run(target: &str, text: &str) {
    match target {
        "termination" => {
            if let Ok(t) = image_state::parse::<TerminationMessage>(text) {
                if let Some(r) = &t.upgrade {
                    upgrade_decisions(r);
                }
                if let Some(r) = &t.restore {
                    restore_decisions(r);
                }
            }
        }
        "status" => {
            if let Ok(s) = image_state::parse::<StatusReport>(text) {
                status_decisions(&s);
            }
        }
        "backup" => {
            // backups.rs reads backup.sh's stdout with last_json_object.
            if let Ok(r) = image_state::last_json_object::<BackupResult>(text) {
                backup_decisions(&r);
            }
            if let Ok(r) = image_state::parse::<BackupResult>(text) {
                backup_decisions(&r);
            }
        }
        "restore" => {
            if let Ok(r) = image_state::parse::<RestoreResult>(text) {
                restore_decisions(&r);
            }
        }
        "upgrade" => {
            if let Ok(r) = image_state::parse::<UpgradeResult>(text) {
                upgrade_decisions(&r);
            }
        }
        other => panic!("no target {other}"),
    }
}

fn run_all(text: &str) {
    for t in TARGETS {
        run(t, text);
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

/// The kept corpus of a target, as the operator receives it: exec output
/// and the termination message arrive as bytes and become text lossily
/// (exec.rs `from_utf8_lossy`).
fn corpus(target: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus {target} missing: {e}"))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "corpus {target} is empty");
    out
}

fn all_corpus() -> Vec<String> {
    TARGETS
        .iter()
        .flat_map(|t| corpus(t).into_iter().map(|(_, text)| text))
        .collect()
}

#[test]
fn corpus_fixtures_parse_as_their_target() {
    for target in TARGETS {
        for (name, text) in corpus(target) {
            if name.starts_with("hostile-") {
                continue;
            }
            let ok = match target {
                "termination" => image_state::parse::<TerminationMessage>(&text).is_ok(),
                "status" => image_state::parse::<StatusReport>(&text).is_ok(),
                "backup" => image_state::last_json_object::<BackupResult>(&text).is_ok(),
                "restore" => image_state::parse::<RestoreResult>(&text).is_ok(),
                _ => image_state::parse::<UpgradeResult>(&text).is_ok(),
            };
            assert!(ok, "corpus {target}/{name} no longer parses");
        }
    }
}

#[test]
fn corpus_and_every_truncation_never_panics() {
    let mut cases = 0usize;
    for target in TARGETS {
        for (_, text) in corpus(target) {
            // Every prefix of the small documents; about 400 of a big one.
            let step = (text.len() / 400).max(1);
            for cut in (0..=text.len()).step_by(step) {
                if text.is_char_boundary(cut) {
                    run_all(&text[..cut]);
                    cases += 1;
                }
            }
        }
    }
    eprintln!("corpus cases run: {cases}");
}

#[test]
fn deeply_nested_json_is_refused_not_a_stack_overflow() {
    for depth in [129, 1_000, 100_000, 1_000_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        for inner in [&arrays, &objects] {
            let status = format!("{{\"inProgress\":{inner}}}");
            assert!(image_state::parse::<StatusReport>(&status).is_err());
            run_all(&status);
            run_all(inner);
        }
    }
}

#[test]
fn oversized_documents_never_panic() {
    // A termination message is capped at 4 KiB by the kubelet, exec output
    // is not: a few MiB of padding and of repeated documents.
    for text in all_corpus().iter().step_by(7) {
        let padded = format!("{}{text}{}", " ".repeat(1 << 20), "\n".repeat(4096));
        run_all(&padded);
    }
    let many = "{\"kind\":\"backup\",\"id\":\"x\",\"outcome\":\"running\",\"details\":{}}\n"
        .repeat(10_000);
    run_all(&many);
    let long_string = format!(
        "{{\"upgrade\":{{\"kind\":\"u\",\"id\":\"{}\",\"outcome\":\"succeeded\",\"details\":{{}}}}}}",
        "i".repeat(2 << 20)
    );
    run_all(&long_string);
}

fn hostile_json() -> impl Strategy<Value = String> {
    // Structured-but-hostile leaves: huge and negative numbers, odd strings.
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-9223372036854775809".to_string()),
        Just("1e309".to_string()),
        Just("-1".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| n.to_string()),
        "\\PC{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"+999999-12-31T23:59:59Z\"".to_string()),
        Just("\"scheduled-\"".to_string()),
        Just("\"succeeded\"".to_string()),
        Just("\"rolled_back\"".to_string()),
        Just("\"start_new\"".to_string()),
    ];
    let keys = prop_oneof![
        Just("kind"),
        Just("id"),
        Just("outcome"),
        Just("step"),
        Just("message"),
        Just("details"),
        Just("backups"),
        Just("finishTime"),
        Just("pgstewardId"),
        Just("upgrade"),
        Just("restore"),
        Just("backup"),
        Just("results"),
        Just("server"),
        Just("running"),
        Just("archiver"),
        Just("failedCount"),
        Just("lastFailedTime"),
        Just("lastArchivedTime"),
        Just("configErrors"),
        Just("pendingRestart"),
        Just("name"),
        Just("line"),
        Just("pgMajor"),
        Just("firstRecoverabilityPoint"),
        Just("toMajor"),
        Just("timeline"),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            // A Vec of pairs, so duplicate keys occur.
            prop::collection::vec((keys.clone(), inner), 0..8).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        // make test's budget (Makefile PGSTEWARD_PARSER_CASES); a longer
        // run sets it higher (docs/testing.md).
        cases: std::env::var("PGSTEWARD_PARSER_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,600}") {
        run_all(&text);
    }

    #[test]
    fn arbitrary_bytes_read_lossily_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        run_all(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_corpus_never_panics(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
    ) {
        let corpus = all_corpus();
        let mut bytes = corpus[pick.index(corpus.len())].clone().into_bytes();
        for (at, b) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let len = bytes.len();
        bytes.truncate(cut.index(len + 1));
        run_all(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn hostile_structured_documents_never_panic(doc in hostile_json()) {
        run_all(&doc);
        run_all(&format!("{{\"results\":{{\"upgrade\":{doc},\"restore\":{doc},\"backup\":{doc}}},\"archiver\":{doc}}}"));
    }

    /// An upgrade result for another id, whatever it claims, decides what
    /// no result decides: from exec and from the termination message.
    #[test]
    fn upgrade_result_for_another_id_changes_nothing(
        other in "[a-z0-9-]{0,30}",
        outcome in prop_oneof![Just("running"), Just("succeeded"), Just("failed"), Just("rolled_back")],
        step in prop_oneof![Just("preflight"), Just("start_new"), Just("done"), Just("cleanup")],
        exit in prop::option::of(0i32..6),
    ) {
        let id = "upgrade-17-to-18-g1";
        prop_assume!(other != id);
        let r: UpgradeResult = serde_json::from_value(serde_json::json!({
            "kind": "upgrade", "id": other, "outcome": outcome, "step": step,
            "message": "hostile", "details": {"fromMajor": 17, "toMajor": 18}
        })).unwrap();
        let op = upgrade_op(id);
        let failed = FailedUpgrade { id: id.into(), from_major: 17, to_major: 18, generation: 1, ..Default::default() };
        for (operation, failed) in [(Some(&op), None), (None, Some(&failed)), (None, None)] {
            let base = UpgradeInputs {
                spec_major: 18, generation: 1, running_major: Some(17), operation, failed,
                container_exit: exit, now: Some("2026-01-01T00:00:00Z"), ..Default::default()
            };
            let expected = decide_upgrade(&base);
            prop_assert_eq!(&decide_upgrade(&UpgradeInputs { result: Some(&r), ..base.clone() }), &expected);
            prop_assert_eq!(&decide_upgrade(&UpgradeInputs { terminated_result: Some(&r), ..base.clone() }), &expected);
        }
    }

    /// A restore result for another request id decides what no result does.
    #[test]
    fn restore_result_for_another_id_changes_nothing(
        other in "[a-z0-9-]{0,30}",
        outcome in prop_oneof![Just("running"), Just("succeeded"), Just("failed"), Just("rolled_back")],
    ) {
        let id = "restore-1";
        prop_assume!(other != id);
        let r: RestoreResult = serde_json::from_value(serde_json::json!({
            "kind": "restore", "id": other, "outcome": outcome, "details": {}
        })).unwrap();
        let req = restore_request(id);
        let op = restore_op(id);
        let expected = decide_restore(Some(&req), None, Some(&op), None, None, now());
        let got = decide_restore(Some(&req), None, Some(&op), Some(&r), None, now());
        prop_assert_eq!(&got, &expected);
        prop_assert!(matches!(got, RestoreDecision::InProgress(..)));
    }

    /// A backup list whose times are absurd or not times never replaces
    /// the last scheduled backup the operator recorded.
    #[test]
    fn absurd_backup_list_keeps_the_recorded_scheduled_backup(
        times in prop::collection::vec(prop_oneof![
            Just("+999999-12-31T23:59:59Z".to_string()),
            Just("-999999-01-01T00:00:00Z".to_string()),
            Just("9999-99-99T99:99:99Z".to_string()),
            Just("".to_string()),
            "\\PC{0,30}",
        ], 0..20),
    ) {
        let backups: Vec<_> = times.iter().enumerate().map(|(n, t)| serde_json::json!({
            "name": format!("base_{n}"), "finishTime": t, "pgstewardId": format!("scheduled-{n}")
        })).collect();
        let r: BackupResult = serde_json::from_value(serde_json::json!({
            "kind": "backup", "id": "scheduled-x", "outcome": "succeeded",
            "details": {"backups": backups}
        })).unwrap();
        let prior = BackupRecord { name: Some("kept".into()), finished_at: Some("2025-06-01T00:00:00Z".into()), ..Default::default() };
        let got = last_scheduled_backup(Some(&prior), Some(&r)).unwrap();
        // Only a real time later than the prior's may replace it.
        if got.name.as_deref() != Some("kept") {
            let t: Timestamp = got.finished_at.as_deref().unwrap().parse().unwrap();
            prop_assert!(t > "2025-06-01T00:00:00Z".parse::<Timestamp>().unwrap());
        }
    }
}
