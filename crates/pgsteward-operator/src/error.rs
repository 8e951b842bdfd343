//! Reconcile errors. Each carries its cause as `#[source]`, so the Warning
//! event and the log show the whole chain; `metric_label` names its kind.
//! A leaf: it uses nothing of the operator, and every step may use it.

use std::fmt;

use kube::core::error_boundary::InvalidObject;

/// One thing a person must fix. `reason` becomes the Degraded condition's
/// reason; `message` names the object and says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The problems of one spec, in the order they were found (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// The first problem's reason: the condition carries one reason.
    pub fn reason(&self) -> &'static str {
        self.0[0].reason
    }
    /// Every message, joined.
    pub fn message(&self) -> String {
        self.0
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message())
    }
}

impl std::error::Error for Problems {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the PgInstance cannot be read as pgsteward.io/v1alpha1")]
    InvalidObject(#[source] Box<InvalidObject>),

    #[error("the spec needs fixing")]
    InvalidSpec(#[source] Problems),

    #[error("failed to read {kind} {name}")]
    Observe {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to apply {kind} {name}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to write the status of PgInstance {name}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("timed out writing the status of PgInstance {name}")]
    StatusTimeout { name: String },

    #[error("failed to {what}")]
    Operate {
        what: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to delete {kind} {name} during cleanup")]
    Cleanup {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("finalizer {finalizer} failed")]
    Finalizer {
        finalizer: &'static str,
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },
}

impl Error {
    /// A short, stable label for metrics and event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidObject(_) => "invalid_object",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Observe { .. } => "observe",
            Error::Apply { .. } => "apply",
            Error::Status { .. } => "status",
            Error::StatusTimeout { .. } => "status_timeout",
            Error::Cleanup { .. } => "cleanup",
            Error::Operate { .. } => "operate",
            Error::Finalizer { source, .. } => match source.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }

    /// The event reason: CamelCase of the label.
    pub fn event_reason(&self) -> &'static str {
        match self.metric_label() {
            "invalid_object" => "InvalidObject",
            "invalid_spec" => "InvalidSpec",
            "observe" => "ObserveFailed",
            "apply" => "ApplyFailed",
            "status" | "status_timeout" => "StatusFailed",
            "cleanup" => "CleanupFailed",
            "operate" => "OperationFailed",
            _ => "FinalizerFailed",
        }
    }

    /// The HTTP status of the API error underneath, if any.
    pub fn api_status(&self) -> Option<u16> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
                return Some(status.code);
            }
            cur = e.source();
        }
        None
    }
}

/// The error and all its causes, `: `-separated, for events and logs.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
