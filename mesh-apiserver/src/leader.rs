//! Leader election among replicas sharing one store: the leader holds a key
//! attached to a lease it keeps alive; when it dies the lease expires and
//! another replica takes the key. Only the leader writes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::{Condition, Op, Store};

/// Whether this replica is the leader now. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    /// Keeps a fixed leadership's channel open.
    _fixed: Option<Arc<watch::Sender<bool>>>,
}

impl Leadership {
    /// A single replica: always the leader.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Leadership {
            rx,
            _fixed: Some(Arc::new(tx)),
        }
    }

    /// Leader right now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until this replica leads (returns at once if it does).
    pub async fn wait_leader(&mut self) {
        let _ = self.rx.wait_for(|l| *l).await;
    }

    /// Waits until this replica stops leading.
    pub async fn wait_lost(&mut self) {
        let _ = self.rx.wait_for(|l| !*l).await;
    }
}

/// Settings of an election.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// The lock key (e.g. `meshwork/internal/<cluster>/leader`).
    pub key: String,
    /// This replica's name, stored as the key's value.
    pub identity: String,
    /// Lease TTL: a dead leader is replaced within about this long.
    pub ttl_seconds: i64,
}

/// Runs the election until the task is aborted; the [`Leadership`] follows it.
pub fn spawn_election(
    store: Arc<dyn Store>,
    config: ElectionConfig,
) -> (Leadership, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let ttl = config.ttl_seconds.max(2);
        let refresh = Duration::from_millis((ttl as u64 * 1000) / 3);
        loop {
            let lease = match store.grant_lease(ttl).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: cannot grant a lease");
                    let _ = tx.send(false);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let won = store
                .txn(
                    vec![Condition::Absent(config.key.clone())],
                    vec![Op::Put {
                        key: config.key.clone(),
                        value: config.identity.clone().into_bytes(),
                        lease: Some(lease),
                    }],
                )
                .await;
            match won {
                Ok(Some(_)) => {
                    tracing::info!(identity = %config.identity, key = %config.key, "became the leader");
                    let _ = tx.send(true);
                    loop {
                        tokio::time::sleep(refresh).await;
                        if let Err(e) = store.keep_alive(lease).await {
                            tracing::warn!(error = %e, identity = %config.identity, "lost leadership");
                            let _ = tx.send(false);
                            break;
                        }
                    }
                }
                Ok(None) => {
                    let _ = store.revoke_lease(lease).await;
                    let _ = tx.send(false);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election: campaign failed");
                    let _ = tx.send(false);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    (Leadership { rx, _fixed: None }, handle)
}
