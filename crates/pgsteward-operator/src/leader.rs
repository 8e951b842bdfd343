//! Leader election on a coordination.k8s.io Lease (kube-lease-manager), so
//! two replicas are safe: only the holder reconciles. A replica that loses
//! the lease stops at once; its pod restarts and waits as a standby. Used
//! by the binary only.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tracing::{info, warn};

/// Lease timing: held for 15 s after each renewal, renewed 5 s early.
pub const LEASE_SECONDS: u64 = 15;
pub const GRACE_SECONDS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot use Lease {namespace}/{name}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error(
        "lost Lease {namespace}/{name} to another replica; stopping so this one restarts as a standby"
    )]
    Lost { namespace: String, name: String },
}

/// Wait for the lease, run `work` while holding it; return when `work` ends
/// (Ok) or the lease is lost (Err).
pub async fn run_as_leader<F, Fut>(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
    work: F,
) -> Result<(), LeaderError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let lease_err = |source| LeaderError::Lease {
        namespace: namespace.into(),
        name: name.into(),
        source,
    };
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await
        .map_err(lease_err)?;
    let (mut holder, task) = manager.watch().await;
    info!(lease = %name, %identity, "waiting to become the leader");
    while !*holder.borrow_and_update() {
        if holder.changed().await.is_err() {
            let result = task.await;
            warn!(?result, "leader election task ended");
            return Err(LeaderError::Lost {
                namespace: namespace.into(),
                name: name.into(),
            });
        }
    }
    info!(lease = %name, "became the leader");
    let lost = async {
        loop {
            if holder.changed().await.is_err() || !*holder.borrow_and_update() {
                return;
            }
        }
    };
    tokio::select! {
        _ = work() => Ok(()),
        _ = lost => Err(LeaderError::Lost { namespace: namespace.into(), name: name.into() }),
    }
}
