//! Spec fuzzing, property 2 (issue 18): every PgInstance the CRD accepts
//! reconciles, against the mocked API, to a steady state without a panic.
//!
//! The objects are exactly the accepted PgInstance cases of the api crate's
//! generator and offline judge (`pgsteward_api::fuzz`, the same seed and
//! count as `spec_fuzz`): the creates, and for the updates the old object
//! then the new one. Each is stored as the API server would store it (nulls
//! pruned, defaults applied) and reconciled up to [`BOUND`] times. Between
//! reconciles a fake kubelet plays the pod: healthy (running the
//! StatefulSet's image, ready, `pgsteward-status` reporting the spec's
//! major), absent (never scheduled), or crash-looping.
//!
//! A case passes when
//! - no reconcile panics;
//! - within the bound a reconcile makes no write, and the one after it makes
//!   none either (a reconcile that fails may only add to its Warning
//!   event's series: that is the retry's backoff, not a change);
//! - the instance then says where it is: Ready=True, Progressing=True, or
//!   Degraded=True with a message; and Degraded=True with a message
//!   whenever the reconcile itself fails;
//! - every write would pass the real API server's own checks that the CRD
//!   does not carry: an event's note at most 1 kB and its reason and
//!   action at most 128 characters; a condition's reason and message
//!   within `metav1.Condition`'s limits (1,024 and 32,768 bytes).
//!
//! `PGSTEWARD_FUZZ_CASES` and `PGSTEWARD_FUZZ_SEED` choose the run, as for
//! `spec_fuzz`. Every failure found is a fixed case at the end of this file.

mod support;

use std::sync::Arc;

use kube::core::error_boundary::DeserializeGuard;
use pgsteward_api::{
    PgInstance,
    fuzz::{self, DEFAULT_CASES, DEFAULT_SEED, INSTANCES, Servers},
};
use pgsteward_operator::{controller, names};
use serde_json::{Value, json};
use support::*;

/// Reconciles a case may take to settle (the no-write one included).
const BOUND: usize = 8;

/// What the fake kubelet does with the instance's pod.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PodPlay {
    /// Runs the StatefulSet's image, ready; `pgsteward-status` reports a
    /// healthy server of the spec's major.
    Healthy,
    /// Never created (unschedulable, say).
    Absent,
    /// Created with the StatefulSet's image, its container crash-looping.
    CrashLooping,
}

const ALL_PLAYS: [PodPlay; 3] = [PodPlay::Healthy, PodPlay::Absent, PodPlay::CrashLooping];

/// `pgsteward-status` of a healthy server of `major` with nothing pending.
fn report_of(major: u64) -> Value {
    let mut r = base_report();
    r["pgMajor"] = json!(major);
    r["server"]["version"] = json!(format!("{major}.6"));
    r["server"]["versionNum"] = json!(major * 10_000 + 6);
    r["storage"]["major"] = json!(major);
    r
}

/// The kubelet and the StatefulSet controller, once the StatefulSet
/// exists: a pod that runs another image than the StatefulSet's is
/// replaced by one that runs it. Changes nothing when nothing changed.
fn kubelet(world: &World, play: PodPlay) {
    if world
        .fake
        .get("apps", "statefulsets", NS, &names::statefulset(&world.name))
        .is_none()
    {
        return;
    }
    let image = world.sts_container()["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let major = world.stored()["spec"]["postgresVersion"]
        .as_u64()
        .unwrap_or_default();
    let pod = world.fake.get("", "pods", NS, &names::pod(&world.name, 0));
    let current = pod
        .as_ref()
        .is_some_and(|p| p["spec"]["containers"][0]["image"] == json!(image));
    match play {
        PodPlay::Absent => {}
        PodPlay::Healthy => {
            world.statefulset_reports(true);
            world.pod.set_report(Some(report_of(major)));
            if !current {
                world.pod_runs(&image, None);
            }
        }
        PodPlay::CrashLooping => {
            world.statefulset_reports(false);
            world.pod.set_report(None);
            if !current {
                world.pod_runs(&image, Some(1));
            }
        }
    }
}

type Reconciled = (
    Result<kube::runtime::controller::Action, pgsteward_operator::Error>,
    Vec<Recorded>,
);

/// One reconcile of the instance as stored, in its own task so that a
/// panic is caught and reported (as Err) instead of ending the run.
async fn reconcile_caught(world: &World) -> Result<Reconciled, String> {
    world.fake.take_requests();
    let guard: DeserializeGuard<PgInstance> = serde_json::from_value(world.stored())
        .map_err(|e| format!("the stored instance does not deserialize: {e}"))?;
    let task = tokio::spawn(controller::reconcile(Arc::new(guard), world.ctx.clone()));
    match task.await {
        Ok(result) => Ok((result, world.fake.take_requests())),
        Err(e) => {
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("the reconcile panicked: {text}"))
        }
    }
}

/// The writes that change something: every write, except the events of a
/// reconcile that failed (its Warning, counted in a series on a retry).
fn changes(reconciled: &Reconciled) -> Vec<String> {
    let (result, requests) = reconciled;
    requests
        .iter()
        .filter(|r| r.is_write())
        .filter(|r| result.is_ok() || r.resource != "events")
        .map(Recorded::describe)
        .collect()
}

/// The real API server's limits that the mocked one does not enforce.
fn over_limits(requests: &[Recorded]) -> Vec<String> {
    let mut out = Vec::new();
    for r in requests.iter().filter(|r| r.is_write()) {
        let Some(body) = &r.body else { continue };
        if r.resource == "events" {
            for (field, max) in [("note", 1024), ("reason", 128), ("action", 128)] {
                let len = body[field].as_str().map_or(0, str::len);
                if len > max {
                    out.push(format!("event {field} of {len} bytes (at most {max})"));
                }
            }
        }
        for c in body["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for (field, max) in [("reason", 1024), ("message", 32_768)] {
                let len = c[field].as_str().map_or(0, str::len);
                if len > max {
                    out.push(format!(
                        "condition {} {field} of {len} bytes (at most {max})",
                        c["type"]
                    ));
                }
            }
            if c["reason"].as_str().is_none_or(str::is_empty) {
                out.push(format!("condition {} without a reason", c["type"]));
            }
        }
    }
    out
}

/// The stored instance's condition of `type_`: (status, message).
fn condition(instance: &Value, type_: &str) -> (String, String) {
    let c = instance["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or(Value::Null);
    let text = |f: &str| c[f].as_str().unwrap_or_default().to_string();
    (text("status"), text("message"))
}

/// Why the instance, after a reconcile that changed nothing, is not in a
/// steady state (None: it is).
fn not_steady(instance: &Value, failed: bool) -> Option<String> {
    let (ready, _) = condition(instance, "Ready");
    let (progressing, _) = condition(instance, "Progressing");
    let (degraded, message) = condition(instance, "Degraded");
    let degraded_said = degraded == "True" && !message.trim().is_empty();
    if failed && !degraded_said {
        return Some(format!(
            "the reconcile fails but Degraded is {degraded:?} ({message:?})"
        ));
    }
    if ready == "True" || progressing == "True" || degraded_said {
        return None;
    }
    Some(format!(
        "Ready {ready:?}, Progressing {progressing:?}, Degraded {degraded:?} ({message:?})"
    ))
}

/// What one settle did, for the summary.
#[derive(Default)]
struct Tally {
    reconciles: usize,
    ready: usize,
    progressing: usize,
    degraded: usize,
    longest_message: usize,
}

/// Reconcile until a reconcile changes nothing, then once more; check the
/// state it ends in. Err says what went wrong, with each reconcile's writes.
async fn settle(world: &World, play: PodPlay, tally: &mut Tally) -> Result<(), String> {
    let mut history = Vec::new();
    let mut quiet = 0;
    for _ in 0..BOUND + 1 {
        let reconciled = reconcile_caught(world).await?;
        tally.reconciles += 1;
        let over = over_limits(&reconciled.1);
        if !over.is_empty() {
            return Err(format!("a write the API server refuses: {over:?}"));
        }
        let changed = changes(&reconciled);
        let failed = reconciled.0.as_ref().err().map(|e| e.to_string());
        history.push(format!(
            "{changed:?} -> {}",
            failed.as_deref().unwrap_or("ok")
        ));
        kubelet(world, play);
        if !changed.is_empty() {
            quiet = 0;
            continue;
        }
        quiet += 1;
        if quiet < 2 {
            continue;
        }
        let instance = world.stored();
        if let Some(why) = not_steady(&instance, failed.is_some()) {
            return Err(format!(
                "no steady state: {why}\n    {}",
                history.join("\n    ")
            ));
        }
        for c in instance["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let len = c["message"].as_str().map_or(0, str::len);
            tally.longest_message = tally.longest_message.max(len);
        }
        match () {
            _ if condition(&instance, "Ready").0 == "True" => tally.ready += 1,
            _ if condition(&instance, "Degraded").0 == "True" => tally.degraded += 1,
            _ => tally.progressing += 1,
        }
        return Ok(());
    }
    Err(format!(
        "still writing after {BOUND} reconciles:\n    {}",
        history.join("\n    ")
    ))
}

/// A create: the object reconciled from nothing.
async fn run_create(
    servers: &Servers,
    object: &Value,
    play: PodPlay,
    tally: &mut Tally,
) -> Result<(), String> {
    let world = World::with_instance(stored_instance(fuzz::stored(servers, INSTANCES, object)));
    settle(&world, play, tally).await
}

/// An update: the old object settles, then the spec becomes the new one's
/// (the API server keeps the status and bumps the generation), and the
/// instance settles again.
async fn run_update(
    servers: &Servers,
    old: &Value,
    new: &Value,
    play: PodPlay,
    tally: &mut Tally,
) -> Result<(), String> {
    let world = World::with_instance(stored_instance(fuzz::stored(servers, INSTANCES, old)));
    settle(&world, play, tally)
        .await
        .map_err(|e| format!("before the update: {e}"))?;
    let new = fuzz::stored(servers, INSTANCES, new);
    world.fake.update(PGI.0, PGI.1, NS, &world.name, |i| {
        i["spec"] = new["spec"].clone();
        i["metadata"]["generation"] = json!(2);
    });
    settle(&world, play, tally)
        .await
        .map_err(|e| format!("after the update: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_instance_reconciles_to_a_steady_state() {
    let seed = fuzz::env_or("PGSTEWARD_FUZZ_SEED", DEFAULT_SEED);
    let count = fuzz::env_or("PGSTEWARD_FUZZ_CASES", DEFAULT_CASES);
    let servers = fuzz::servers();
    let cases = fuzz::run(seed, count, &servers);
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let (mut creates, mut updates) = (0, 0);
    let mut failures = Vec::new();
    let accepted = cases
        .iter()
        .filter(|(case, verdict)| verdict.accepted && case.crd == INSTANCES);
    for (i, (case, _)) in accepted.enumerate() {
        // Every accepted object settles from nothing, with each pod
        // behaviour (the new side of an update is accepted on create too:
        // the update only adds transition rules).
        let mut outcome = Ok(());
        creates += 1;
        for play in ALL_PLAYS {
            outcome = run_create(&servers, &case.new, play, &mut tally)
                .await
                .map_err(|e| format!("{play:?}, created: {e}"));
            if outcome.is_err() {
                break;
            }
        }
        // An update settles from the old object's steady state, with one
        // pod behaviour per update, in turn.
        if let (Ok(()), Some(old)) = (&outcome, &case.old) {
            updates += 1;
            let play = ALL_PLAYS[i % ALL_PLAYS.len()];
            outcome = run_update(&servers, old, &case.new, play, &mut tally)
                .await
                .map_err(|e| format!("{play:?}, updated: {e}"));
        }
        if let Err(e) = outcome {
            failures.push(format!(
                "{e}\n  old: {}\n  new: {}",
                case.old.as_ref().map_or("-".into(), Value::to_string),
                case.new
            ));
        }
    }
    eprintln!(
        "steady state: seed {seed}, {creates} instances (x{} pod behaviours), {updates} updates, {} reconciles, \
         {} failures in {:.1} s; settled Ready {}, Progressing {}, Degraded {}; longest condition message {} bytes",
        ALL_PLAYS.len(),
        tally.reconciles,
        failures.len(),
        started.elapsed().as_secs_f64(),
        tally.ready,
        tally.progressing,
        tally.degraded,
        tally.longest_message,
    );
    assert!(
        failures.is_empty(),
        "{} cases do not settle:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The run reaches many objects and updates (seed 18, 2,000 cases: 342
    // accepted PgInstance objects, 306 of them updates).
    assert!(
        creates > count / 10 && updates > count / 10,
        "{creates} instances, {updates} updates"
    );
}

// ------------------------------------------------------------ found, fixed

/// A fixed case: `new` (after `old`, for an update) as a PgInstance named
/// `fz-reg`. Asserts that the CRD accepts it, so the case stays one the
/// property could draw.
fn accepted_case(servers: &Servers, old: Option<Value>, new: Value) -> fuzz::Case {
    let object = |spec| fuzz::object("PgInstance", "fz-reg", spec, None);
    let case = fuzz::Case {
        crd: INSTANCES,
        old: old.map(object),
        new: object(new),
    };
    let verdict = fuzz::judge(servers, &case).expect("the old object is stored");
    assert!(verdict.accepted, "the CRD refuses it: {verdict:?}");
    case
}

/// Found by the property: `storage.sizeFactor: 1e300` (the CRD only asks
/// for at least 2.0) overflowed the volume size's arithmetic, a panic in a
/// debug build and a wrapped size in a release one. A size factor that
/// asks for more than any volume is now Degraded, InvalidStorageSize.
#[tokio::test]
async fn a_size_factor_beyond_any_volume_is_degraded_not_a_panic() {
    let servers = fuzz::servers();
    let spec = |storage: Value| json!({"postgresVersion": 18, "storage": storage});
    let huge = [
        json!({"size": "11Gi", "sizeFactor": 1e300}),
        json!({"size": "79719Mi", "sizeFactor": 1e300, "storageClassName": "standard"}),
        // Just under 8 EiB of data: 2.5 times that is no volume either.
        json!({"size": "9223372036854775807"}),
    ];
    let mut tally = Tally::default();
    for storage in huge {
        let case = accepted_case(&servers, None, spec(storage.clone()));
        for play in ALL_PLAYS {
            let world = World::with_instance(stored_instance(fuzz::stored(
                &servers, INSTANCES, &case.new,
            )));
            let settled = settle(&world, play, &mut tally).await;
            assert!(settled.is_ok(), "{storage} {play:?}: {settled:?}");
            let degraded = world.condition("Degraded");
            assert_eq!(degraded["reason"], "InvalidStorageSize", "{storage}");
            assert!(
                degraded["message"]
                    .as_str()
                    .unwrap()
                    .contains("larger than any volume Kubernetes can request"),
                "{degraded}"
            );
        }
    }
    // The same factor as an update of a running instance (it only raises
    // the volume, so the transition rules accept it).
    let case = accepted_case(
        &servers,
        Some(spec(json!({"size": "10Gi"}))),
        spec(json!({"size": "10Gi", "sizeFactor": 1e300})),
    );
    let updated = run_update(
        &servers,
        case.old.as_ref().unwrap(),
        &case.new,
        PodPlay::Absent,
        &mut tally,
    )
    .await;
    assert!(updated.is_ok(), "{updated:?}");
}
