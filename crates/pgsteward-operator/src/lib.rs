//! pgsteward's operator: one PgInstance in, running PostgreSQL objects out.
//!
//! The reconcile pipeline, one module per step (see DESIGN.md):
//! [`observe`] → [`validate`] → [`act`] (decide) → [`build`] → [`apply`] →
//! [`act`] (in the pod, through [`exec`]) → [`status`], wired together in
//! [`controller`]. On-demand backups (`PgBackup`) are [`backups`].

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
