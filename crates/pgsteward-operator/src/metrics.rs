//! Prometheus metrics, served at `/metrics`. Counted by the controllers,
//! around the pipeline; no pipeline step uses this.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub kind: String,
    pub outcome: String,
}

impl OperationLabels {
    /// The labels of an operation event's reason: `UpgradeRolledBack` is
    /// kind `upgrade`, outcome `rolled_back`. None for other events.
    pub fn from_event_reason(reason: &str) -> Option<Self> {
        const KINDS: [&str; 4] = ["Backup", "Restore", "Upgrade", "Restart"];
        let kind = KINDS.iter().find(|k| reason.starts_with(**k))?;
        let rest = &reason[kind.len()..];
        let mut outcome = String::new();
        for (i, c) in rest.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                outcome.push('_');
            }
            outcome.push(c.to_ascii_lowercase());
        }
        Some(Self {
            kind: kind.to_ascii_lowercase(),
            outcome: if outcome.is_empty() {
                "requested".into()
            } else {
                outcome
            },
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub condition: String,
    pub status: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub status_writes: Family<OutcomeLabels, Counter>,
    pub object_writes: Family<KindLabels, Counter>,
    pub instances: Family<ConditionLabels, Gauge>,
    pub operations: Family<OperationLabels, Counter>,
    /// Each instance's condition statuses, to count instances by condition.
    conditions_by_instance: Mutex<HashMap<String, Vec<(String, String)>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pgsteward");
        let reconciles = Counter::default();
        let reconcile_duration =
            Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let status_writes = Family::<OutcomeLabels, Counter>::default();
        let object_writes = Family::<KindLabels, Counter>::default();
        let instances = Family::<ConditionLabels, Gauge>::default();
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register("reconciliations", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by kind of error",
            reconcile_errors.clone(),
        );
        registry.register(
            "status_writes",
            "PgInstance status writes, by outcome",
            status_writes.clone(),
        );
        registry.register(
            "object_writes",
            "Server-side applies of owned objects, by kind",
            object_writes.clone(),
        );
        registry.register(
            "instances",
            "PgInstances by condition and status",
            instances.clone(),
        );
        registry.register(
            "operations",
            "Operations (backup, restore, upgrade, restart) started and ended, by kind and outcome",
            operations.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            reconcile_errors,
            status_writes,
            object_writes,
            instances,
            operations,
            conditions_by_instance: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, error: Option<&str>) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        if let Some(error) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    error: error.to_string(),
                })
                .inc();
        }
    }

    pub fn status_write(&self, outcome: &str) {
        self.status_writes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn object_written(&self, kind: &str) {
        self.object_writes
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Count an operation event (see `OperationLabels::from_event_reason`).
    pub fn operation_event(&self, reason: &str) {
        if let Some(labels) = OperationLabels::from_event_reason(reason) {
            self.operations.get_or_create(&labels).inc();
        }
    }

    /// Record an instance's conditions (None: it is gone) and recount.
    pub fn set_conditions(&self, instance: &str, conditions: Option<Vec<(String, String)>>) {
        let mut map = self.conditions_by_instance.lock().expect("metrics lock");
        match conditions {
            Some(c) => map.insert(instance.to_string(), c),
            None => map.remove(instance),
        };
        let mut counts: HashMap<ConditionLabels, i64> = HashMap::new();
        for c in map.values().flatten() {
            *counts
                .entry(ConditionLabels {
                    condition: c.0.clone(),
                    status: c.1.clone(),
                })
                .or_default() += 1;
        }
        self.instances.clear();
        for (labels, n) in counts {
            self.instances.get_or_create(&labels).set(n);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_events_become_kind_and_outcome_labels() {
        let table = [
            ("UpgradeRolledBack", Some(("upgrade", "rolled_back"))),
            ("UpgradeStarted", Some(("upgrade", "started"))),
            ("BackupSucceeded", Some(("backup", "succeeded"))),
            ("RestoreFailed", Some(("restore", "failed"))),
            ("Restart", Some(("restart", "requested"))),
            ("Applied", None),
        ];
        for (reason, want) in table {
            let got = OperationLabels::from_event_reason(reason);
            assert_eq!(
                got.as_ref().map(|l| (l.kind.as_str(), l.outcome.as_str())),
                want,
                "{reason}"
            );
        }
        let m = Metrics::default();
        m.operation_event("UpgradeRolledBack");
        m.operation_event("Applied");
        let text = m.render();
        assert!(
            text.contains("pgsteward_operations_total{kind=\"upgrade\",outcome=\"rolled_back\"} 1"),
            "{text}"
        );
    }
}
