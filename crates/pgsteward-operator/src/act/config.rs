//! Configuration: reload after a ConfigMap change, and restart for settings
//! that need one. Owns the reload exec (`pg_ctl reload`, once the mounted
//! conf.d files match the ConfigMap), `status.configRevision`,
//! `pendingRestart` and `lastRestart`, the restart operation, and the
//! Progressing conditions that say a configuration is not loaded yet.
//!
//! A restart waits for any other operation, and so does a reload.

use std::collections::BTreeMap;

use pgsteward_api::{
    PgInstance,
    instance::{OperationRecord, RestartRecord, condition_type::PROGRESSING},
};
use tracing::{debug, info, warn};

use super::{Inputs, Notices, Plan, PlanEvent, RECHECK, kind};
use crate::{
    build,
    conditions::condition,
    error::chain,
    exec::PodExec,
    image_state::StatusReport,
    observe::{self, ObservedPod, SHORT_EXEC},
};

/// The configuration the server runs, after this reconcile's reload.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The conf.d revision the server has loaded (`status.configRevision`).
    pub revision: Option<String>,
    /// The pod's report, read again after a reload.
    pub report: Option<StatusReport>,
}

/// Reload the configuration once the kubelet has updated the mounted files,
/// when the server runs another revision and no operation is under way.
/// Then read the pod's report again: it says whether a setting was refused
/// or needs a restart.
pub async fn reload_if_changed(
    exec: &dyn PodExec,
    ns: &str,
    instance: &PgInstance,
    pod: Option<&ObservedPod>,
) -> Loaded {
    let prior = instance.status.clone().unwrap_or_default();
    let report = pod.and_then(|p| p.report.clone());
    let desired = config_revision(&build::conf_d(instance));
    let mut loaded = Loaded {
        revision: prior.config_revision.clone(),
        report,
    };
    let Some(pod) = pod else {
        return loaded;
    };
    if loaded.report.as_ref().is_some_and(|r| r.server.running)
        && loaded.revision.as_deref() != Some(desired.as_str())
        && prior.operation.is_none()
        && Box::pin(reload(exec, ns, &pod.name, instance)).await
    {
        info!(revision = %desired, "configuration reloaded");
        loaded.revision = Some(desired);
        loaded.report = Box::pin(observe::read_report(exec, ns, &pod.name))
            .await
            .or(loaded.report);
    }
    loaded
}

/// Reload the configuration once the mounted files match the ConfigMap.
/// Returns whether the server re-read them.
async fn reload(exec: &dyn PodExec, ns: &str, pod: &str, instance: &PgInstance) -> bool {
    let files = build::conf_d(instance);
    if !files.is_empty() {
        match exec
            .exec(ns, pod, mounted_config_command(&files), SHORT_EXEC)
            .await
        {
            Ok(out) if out.exit_code == 0 && mounted_config_matches(&files, &out.stdout) => {}
            Ok(_) => {
                debug!(pod, "the mounted conf.d does not match the ConfigMap yet");
                return false;
            }
            Err(e) => {
                debug!(pod, error = %chain(&e), "could not read the mounted conf.d");
                return false;
            }
        }
    }
    match exec.exec(ns, pod, reload_command(), SHORT_EXEC).await {
        Ok(out) if out.exit_code == 0 => true,
        Ok(out) => {
            warn!(pod, code = out.exit_code, stderr = %out.stderr.trim(), "pg_ctl reload failed");
            false
        }
        Err(e) => {
            debug!(pod, error = %chain(&e), "could not reload");
            false
        }
    }
}

/// Record what the server has loaded, and say so while it is not the
/// ConfigMap's: between a ConfigMap change and the reload (the kubelet
/// updates mounted files within a minute or so) every object matches the
/// spec, but the server does not run it yet.
pub(super) fn contribute_loaded(instance: &PgInstance, loaded: &Loaded, p: &mut Plan) {
    let desired = config_revision(&build::conf_d(instance));
    p.config_revision = loaded.revision.clone();
    p.config_pending = loaded.revision.as_deref() != Some(desired.as_str());
    if loaded.report.as_ref().is_some_and(|r| r.server.running)
        && p.config_pending
        && !p.conditions.iter().any(|c| c.type_ == PROGRESSING)
    {
        p.conditions.push(condition(
            PROGRESSING,
            "True",
            "ConfigPending",
            format!(
                "the configuration changed; PostgreSQL reloads it once the kubelet has updated the mounted conf.d files (checked every {} s)",
                RECHECK.as_secs()
            ),
            instance.metadata.generation,
        ));
    }
}

/// Settings that need a restart, once no other operation runs.
pub(super) fn contribute(i: &Inputs, p: &mut Plan, n: &mut Notices) {
    match i.report.map(config_decision) {
        Some(ConfigDecision::Invalid(message)) => {
            n.degraded.push((
                "InvalidParameter",
                format!(
                    "PostgreSQL refused a setting and keeps its previous value: {message}; fix spec.config.parameters"
                ),
            ));
        }
        Some(ConfigDecision::NeedsRestart(names)) => needs_restart(i, p, n, names),
        Some(ConfigDecision::Loaded) => p.pending_restart = None,
        None => {}
    }
}

fn needs_restart(i: &Inputs, p: &mut Plan, n: &mut Notices, names: Vec<String>) {
    p.pending_restart = Some(names.clone());
    let list = names.join(", ");
    let revision = config_revision(&build::conf_d(i.instance));
    let already = i
        .prior
        .last_restart
        .as_ref()
        .filter(|r| r.config_revision == revision);
    match (&p.operation, i.pod.uid) {
        (None, Some(_)) if already.is_some() => {
            let message = format!(
                "PostgreSQL still reports {list} as waiting for a restart, after the pod was restarted for this configuration at {}; another restart would not help, so the operator does not restart it again. Compare `SELECT name, setting, pending_restart FROM pg_settings WHERE pending_restart` with spec.config.parameters (ALTER SYSTEM or a -c option overrides conf.d), then change spec.config",
                already
                    .and_then(|r| r.restarted_at.as_deref())
                    .unwrap_or("?")
            );
            n.degraded.push(("RestartDidNotApply", message.clone()));
            p.conditions.push(condition(
                PROGRESSING,
                "False",
                "RestartDidNotApply",
                message,
                i.generation,
            ));
        }
        (None, Some(uid)) => start_restart(i, p, names, revision, uid),
        (Some(op), _) if op.kind != kind::RESTART => {
            let message = format!(
                "a restart for {list} waits for the {} {} to finish",
                op.kind, op.id
            );
            n.waiting.push(message.clone());
            p.conditions.push(condition(
                PROGRESSING,
                "True",
                "PendingRestart",
                message,
                i.generation,
            ));
        }
        _ => {
            p.conditions.push(condition(
                PROGRESSING,
                "True",
                "PendingRestart",
                format!("waiting for the pod to restart for {list}"),
                i.generation,
            ));
        }
    }
}

fn start_restart(i: &Inputs, p: &mut Plan, names: Vec<String>, revision: String, uid: &str) {
    let list = names.join(", ");
    p.operation = Some(OperationRecord {
        kind: kind::RESTART.into(),
        id: format!("restart-{}", names.join("-")),
        started_at: Some(i.now_text.clone()),
        pod_uid: Some(uid.to_string()),
        ..Default::default()
    });
    p.record_first = true;
    p.restart_pod = true;
    p.last_restart = Some(RestartRecord {
        config_revision: revision,
        settings: names,
        restarted_at: Some(i.now_text.clone()),
    });
    let message = format!("restarting the pod: changed settings need a restart ({list})");
    p.conditions.push(condition(
        PROGRESSING,
        "True",
        "PendingRestart",
        message.clone(),
        i.generation,
    ));
    p.events.push(PlanEvent {
        warning: false,
        reason: "Restart",
        note: message,
    });
}

/// A restart is over once the pod is a new one. (Whether the new pod has
/// the settings, its own report says next.)
pub(super) fn end_restart(i: &Inputs, p: &mut Plan) {
    if let Some(op) = &p.operation
        && op.kind == kind::RESTART
        && !p.restart_pod
        && i.pod.uid.is_some()
        && op.pod_uid.as_deref() != i.pod.uid
    {
        p.operation = None;
    }
}

/// What the server says about its configuration after a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigDecision {
    /// Every setting is loaded.
    Loaded,
    /// A value was refused (`pg_file_settings.error`): the server keeps its
    /// old value. The message is PostgreSQL's.
    Invalid(String),
    /// These settings need a restart (`pending_restart`).
    NeedsRestart(Vec<String>),
}

/// Reload or restart, from `pgsteward-status` after `pg_reload_conf()`.
/// An invalid value wins over a pending restart: restarting would not help.
pub fn config_decision(report: &StatusReport) -> ConfigDecision {
    let errors = report.config_errors.as_deref().unwrap_or_default();
    if !errors.is_empty() {
        return ConfigDecision::Invalid(
            errors
                .iter()
                .map(|e| {
                    format!(
                        "{} (line {} of {}): {}",
                        e.name.as_deref().unwrap_or("?"),
                        e.line.unwrap_or(0),
                        e.file.as_deref().unwrap_or("?"),
                        e.error.as_deref().unwrap_or("invalid")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    let pending = report.pending_restart.as_deref().unwrap_or_default();
    if !pending.is_empty() {
        return ConfigDecision::NeedsRestart(pending.iter().map(|p| p.name.clone()).collect());
    }
    ConfigDecision::Loaded
}

/// The command that makes the server re-read its configuration (`PGDATA`
/// is in the container's environment, which exec inherits).
pub fn reload_command() -> Vec<String> {
    ["pg_ctl", "reload", "--silent"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The command that prints the mounted conf.d files, in the order
/// [`build::conf_d`] lists them, to compare with the ConfigMap: the
/// kubelet updates a mounted ConfigMap a while after it changes.
pub fn mounted_config_command(files: &BTreeMap<String, String>) -> Vec<String> {
    std::iter::once("cat".to_string())
        .chain(files.keys().map(|k| format!("{}/{k}", build::CONF_D_PATH)))
        .collect()
}

/// Whether the mounted files are the ones the ConfigMap holds.
pub fn mounted_config_matches(files: &BTreeMap<String, String>, cat_stdout: &str) -> bool {
    files.values().map(String::as_str).collect::<String>() == cat_stdout
}

/// A stable fingerprint of the conf.d content (FNV-1a, hex).
pub fn config_revision(files: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in files {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
