//! pgsteward's operator: one PgInstance in, running PostgreSQL objects out.
//!
//! The reconcile pipeline, one module per step (see DESIGN.md), each using
//! only the steps before it and the leaf modules:
//!
//! [`observe`] → [`validate`] → [`build`] → [`apply`] → [`act`] → [`status`]
//!
//! - leaves: [`names`], [`conditions`], [`error`], [`exec`] (the pod seam),
//!   [`image_state`] (what the image reports);
//! - [`controller`] runs the pipeline for a PgInstance, with the finalizer,
//!   events, metrics and backoff around it; [`backups`] is the PgBackup
//!   controller; both use [`context`], never each other, and `main` runs
//!   them side by side;
//! - the rest serves the binary: [`crds`], [`leader`], [`metrics`],
//!   [`rbac`], [`server`].
//!
//! `tests/module_graph.rs` checks these rules.

pub mod act;
pub mod apply;
pub mod backups;
pub mod build;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crds;
pub mod error;
pub mod exec;
pub mod image_state;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod rbac;
pub mod server;
pub mod status;
pub mod validate;

pub use error::{Error, Result};
