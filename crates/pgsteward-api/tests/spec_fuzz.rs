//! Spec fuzzing (issue 18): generated PgInstance and PgBackup objects, valid
//! and invalid alike, creates and updates (old → new), judged offline the way
//! the API server judges them: null pruning, defaults, the structural schema
//! with unknown fields refused (kubectl's strict field validation), the
//! metadata.name rules of the API server, then every CEL rule, transition
//! rules included. The generator and the judge are `pgsteward_api::fuzz`
//! (feature `fuzz`), which the operator's `steady_state` test shares.
//!
//! The generator is deterministic: a fixed seed (`PGSTEWARD_FUZZ_SEED`
//! overrides it) and a fixed count (`PGSTEWARD_FUZZ_CASES`, default 2,000).
//! A bounded sample of the default run, with its offline verdicts, is
//! committed as `e2e/cluster/fuzz-cases.json`; the cluster tier replays it on
//! a real API server and fails on any verdict that differs.
//! Regenerate it with
//! `PGSTEWARD_UPDATE_FIXTURES=1 cargo test -p pgsteward-api --test spec_fuzz`.

mod common;

use pgsteward_api::fuzz::{
    Case, DEFAULT_CASES, DEFAULT_SEED, INSTANCES, Servers, env_or, judge, object, round_trip, run,
    servers,
};
use serde_json::{Value, json};

/// Cases of each verdict in the committed sample (creates and updates).
const SAMPLE_PER_VERDICT: usize = 150;

#[test]
fn generated_specs_are_judged_consistently_offline() {
    let seed = env_or("PGSTEWARD_FUZZ_SEED", DEFAULT_SEED);
    let count = env_or("PGSTEWARD_FUZZ_CASES", DEFAULT_CASES);
    let servers = servers();
    let cases = run(seed, count, &servers);
    let mut problems = Vec::new();
    let (mut accepted, mut updates) = (0, 0);
    for (case, verdict) in &cases {
        accepted += usize::from(verdict.accepted);
        updates += usize::from(case.old.is_some());
        // The same object gets the same verdict (no hidden state).
        if judge(&servers, case).as_ref() != Some(verdict) {
            problems.push(format!("verdict changed on a second look: {case:?}"));
        }
        // A refusal is a rule's message, never a CEL evaluation error.
        if !verdict.evaluation_errors.is_empty() {
            problems.push(format!("{:?}\n  {case:?}", verdict.evaluation_errors));
        }
        // Every refusal a person reads names what to change.
        if !verdict.accepted && verdict.messages.iter().any(|m| m.trim().is_empty()) {
            problems.push(format!("empty message: {case:?}"));
        }
        // What the API server accepts, the operator can read.
        let stored = round_trip(&case.new);
        let unreadable = if case.crd == INSTANCES {
            serde_json::from_value::<pgsteward_api::PgInstance>(stored).err()
        } else {
            serde_json::from_value::<pgsteward_api::PgBackup>(stored).err()
        };
        if let Some(e) = unreadable.filter(|_| verdict.accepted) {
            problems.push(format!(
                "accepted but the operator cannot read it ({e}): {case:?}"
            ));
        }
    }
    eprintln!(
        "spec fuzz: seed {seed}, {} cases offline ({accepted} accepted, {} refused, {updates} updates)",
        cases.len(),
        cases.len() - accepted
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The generator reaches both verdicts, creates and updates.
    assert!(
        accepted > count / 5 && cases.len() - accepted > count / 5,
        "{accepted} accepted of {}",
        cases.len()
    );
    assert!(updates > count / 5, "{updates} updates of {}", cases.len());
}

/// Every disagreement the fuzzing found between the offline check and a real
/// API server, kept as a fixed case with the API server's verdict. The
/// cluster tier replays them first.
fn regressions() -> Vec<(&'static str, Case, bool)> {
    let spec = |extra: Value| {
        let mut s = json!({"postgresVersion": 17, "storage": {"size": "10Gi"}});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    let create = |i: usize, extra: Value| Case {
        crd: INSTANCES,
        old: None,
        new: object("PgInstance", &format!("fz-reg-{i}"), spec(extra), None),
    };
    let update = |i: usize, old: Value, new: Value| Case {
        crd: INSTANCES,
        old: Some(object(
            "PgInstance",
            &format!("fz-reg-{i}"),
            spec(old),
            None,
        )),
        new: object("PgInstance", &format!("fz-reg-{i}"), spec(new), None),
    };
    vec![
        (
            // kube-cel's isQuantity trims; Kubernetes' does not. The rule now
            // says so itself (self.trim() == self).
            "a size with a trailing space is refused (was accepted offline)",
            update(1, json!({}), json!({"storage": {"size": "10Gi "}})),
            false,
        ),
        (
            "a size with a leading tab is refused on create",
            create(2, json!({"storage": {"size": "\t10Gi"}})),
            false,
        ),
        (
            // x-kubernetes-int-or-string: an integer or a string, never 1.5.
            "a CPU request of 1.5 (a JSON number) is refused (was accepted offline)",
            create(3, json!({"resources": {"requests": {"cpu": 1.5}}})),
            false,
        ),
        (
            "a CPU request of 2 (an integer) is accepted",
            create(4, json!({"resources": {"requests": {"cpu": 2}}})),
            true,
        ),
        (
            // The transition rule reads a double; the API server refuses it
            // (kube-cel read it as an int and accepted it).
            "postgresVersion 17.0 on an update is refused (was accepted offline)",
            update(
                5,
                json!({"postgresVersion": 16}),
                json!({"postgresVersion": 17.0}),
            ),
            false,
        ),
        (
            "postgresVersion 17.0 on create is accepted (no rule reads it)",
            create(6, json!({"postgresVersion": 17.0})),
            true,
        ),
        (
            // format: int32 is not enforced; crdgen now adds the range.
            "an affinity weight beyond int32 is refused (was accepted by both, unreadable by the operator)",
            create(
                7,
                json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 4294967296u64, "podAffinityTerm": {"topologyKey": "zone"}}]}}}),
            ),
            false,
        ),
        (
            // kube-cel kept sizeFactor 3 an int and failed double * int.
            "an integer sizeFactor on an update is read as a double",
            update(
                8,
                json!({"storage": {"size": "10Gi", "sizeFactor": 2.5}}),
                json!({"storage": {"size": "10Gi", "sizeFactor": 3}}),
            ),
            true,
        ),
        (
            // Refused by the size's own rule only, without evaluation errors
            // from the rules that compare sizes.
            "a size that is not a quantity, on an update",
            update(9, json!({}), json!({"storage": {"size": "10 GB"}})),
            false,
        ),
    ]
}

#[test]
fn every_disagreement_found_stays_fixed_offline() {
    let servers = servers();
    for (what, case, accepted) in regressions() {
        let v =
            judge(&servers, &case).unwrap_or_else(|| panic!("{what}: the old object is refused"));
        assert_eq!(v.accepted, accepted, "{what}: {v:?}");
        assert!(v.evaluation_errors.is_empty(), "{what}: {v:?}");
    }
}

/// The sample the cluster tier replays: the regression cases, then the
/// first cases of each verdict of the default run, in generation order.
fn sample(servers: &Servers) -> Vec<Value> {
    let cases = run(DEFAULT_SEED, DEFAULT_CASES, servers);
    let (mut yes, mut no) = (0, 0);
    let mut out = Vec::new();
    for (what, case, accepted) in regressions() {
        let verdict = judge(servers, &case).expect("a regression's old object is stored");
        assert_eq!(verdict.accepted, accepted, "{what}");
        out.push(json!({
            "name": what,
            "plural": "pginstances",
            "old": case.old,
            "new": case.new,
            "accepted": verdict.accepted,
            "messages": verdict.messages,
        }));
    }
    for (case, verdict) in cases {
        let n = if verdict.accepted { &mut yes } else { &mut no };
        if *n >= SAMPLE_PER_VERDICT {
            continue;
        }
        *n += 1;
        out.push(json!({
            "plural": if case.crd == INSTANCES { "pginstances" } else { "pgbackups" },
            "old": case.old,
            "new": case.new,
            "accepted": verdict.accepted,
            "messages": verdict.messages,
        }));
    }
    out
}

#[test]
fn cluster_tier_fuzz_sample_is_current() {
    let expected = serde_json::to_string_pretty(&sample(&servers())).unwrap() + "\n";
    common::assert_generated_file_current("e2e/cluster/fuzz-cases.json", &expected, "spec_fuzz");
}
