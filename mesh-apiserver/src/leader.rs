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
    /// The condition every write is made under: the leader key still holds
    /// this replica's identity. A replica that only believes it leads (it
    /// was paused past its lease) has its writes refused by the store.
    fence: Option<Condition>,
}

impl Leadership {
    /// A single replica: always the leader.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Leadership {
            rx,
            _fixed: Some(Arc::new(tx)),
            fence: None,
        }
    }

    /// A replica that believes it leads under `key` as `identity`, whatever
    /// the store says: what a leader paused past its lease believes when it
    /// resumes. For tests of the fence.
    #[cfg(feature = "test-util")]
    pub fn believed(key: &str, identity: &str) -> Self {
        let (tx, rx) = watch::channel(true);
        Leadership {
            rx,
            _fixed: Some(Arc::new(tx)),
            fence: Some(Condition::Value(
                key.to_string(),
                identity.as_bytes().to_vec(),
            )),
        }
    }

    /// The conditions a write must carry (none without an election).
    pub fn fence(&self) -> Vec<Condition> {
        self.fence.iter().cloned().collect()
    }

    /// Leader right now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until this replica leads (returns at once if it does).
    pub async fn wait_leader(&mut self) {
        let _ = self.rx.wait_for(|l| *l).await;
    }

    /// Whether the election ended (its task stopped): leadership no longer
    /// changes.
    pub fn ended(&self) -> bool {
        self.rx.has_changed().is_err()
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
    let (key, identity) = (config.key.clone(), config.identity.clone().into_bytes());
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
                    let lease_ttl = Duration::from_secs(ttl as u64);
                    let mut refreshed = tokio::time::Instant::now();
                    loop {
                        tokio::time::sleep(refresh).await;
                        // Paused (or starved) past the lease: another replica
                        // may lead by now. Stop writing before asking.
                        if refreshed.elapsed() >= lease_ttl {
                            tracing::warn!(identity = %config.identity, late = ?refreshed.elapsed(), "lease deadline passed without a refresh: leadership dropped");
                            let _ = tx.send(false);
                            let _ = store.revoke_lease(lease).await;
                            break;
                        }
                        let held = match store.keep_alive(lease).await {
                            Ok(()) => match store.get(&config.key).await {
                                Ok(Some(kv)) if kv.value == config.identity.as_bytes() => Ok(()),
                                Ok(_) => Err("the leader key is no longer ours".to_string()),
                                Err(e) => Err(e.to_string()),
                            },
                            Err(e) => Err(e.to_string()),
                        };
                        if let Err(e) = held {
                            tracing::warn!(error = %e, identity = %config.identity, "lost leadership");
                            let _ = tx.send(false);
                            break;
                        }
                        refreshed = tokio::time::Instant::now();
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
    (
        Leadership {
            rx,
            _fixed: None,
            fence: Some(Condition::Value(key, identity)),
        },
        handle,
    )
}
