//! Remote clusters a node-agent's snapshot must not present as withdrawn.
//!
//! A mesh-apiserver whose store was replaced (a sidecar etcd lost with its
//! pod, a wiped volume) starts with no remote state. If an agent's snapshot
//! then said "complete", the agent would drop every remote's routes,
//! identities and services although no remote was removed, and keep them
//! dropped for as long as the remote stays unreachable. So the snapshot
//! waits a little for configured remotes to sync; a remote still not synced
//! is named *pending* in `SyncComplete` and the agent keeps what it holds
//! of it. Pending is bounded like any stale state: by the stale timeout,
//! counted from this process's start. When a pending remote syncs, or that
//! window ends, the watch sends `Reset` and a complete snapshot.

use std::collections::BTreeSet;
use std::time::Duration;

use mesh_api::Kind;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Result;
use crate::state::{self, ParsedKey};
use crate::store::Store;

/// How long an agent's snapshot waits for configured remotes to sync
/// before it names them pending.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// A remote cluster in the config, as node-agents are told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredRemote {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: u8,
    /// Its declared pod CIDRs.
    pub pod_cidrs: Vec<ipnet::IpNet>,
}

impl From<&mesh_api::clustermesh::RemoteClusterConfig> for ConfiguredRemote {
    fn from(r: &mesh_api::clustermesh::RemoteClusterConfig) -> Self {
        ConfiguredRemote {
            name: r.name.to_string(),
            id: r.id.get(),
            pod_cidrs: r.pod_cidrs.clone(),
        }
    }
}

/// The configured remotes and how long an unsynced one stays pending.
#[derive(Debug, Clone)]
pub struct PendingRemotes {
    configured: watch::Receiver<Vec<ConfiguredRemote>>,
    until: Instant,
}

impl PendingRemotes {
    /// Remotes follow `configured`; an unsynced one is pending for
    /// `stale_timeout` from now (the process's start).
    pub fn new(
        configured: watch::Receiver<Vec<ConfiguredRemote>>,
        stale_timeout: Duration,
    ) -> Self {
        PendingRemotes {
            configured,
            until: Instant::now() + stale_timeout,
        }
    }

    /// The configured remotes now.
    pub fn configured(&self) -> Vec<ConfiguredRemote> {
        self.configured.borrow().clone()
    }

    /// When pending ends for every remote.
    pub fn until(&self) -> Instant {
        self.until
    }

    /// Configured remotes without a synced marker for every kind, while
    /// the window lasts (empty after it).
    pub async fn now(&self, store: &dyn Store) -> Result<BTreeSet<String>> {
        if Instant::now() >= self.until {
            return Ok(BTreeSet::new());
        }
        let mut pending = BTreeSet::new();
        for remote in self.configured() {
            if !is_synced(store, &remote.name).await? {
                pending.insert(remote.name);
            }
        }
        Ok(pending)
    }

    /// [`PendingRemotes::now`] after waiting up to [`SNAPSHOT_WAIT`] for it
    /// to empty.
    pub async fn after_wait(&self, store: &dyn Store) -> Result<BTreeSet<String>> {
        let deadline = Instant::now() + SNAPSHOT_WAIT;
        loop {
            let pending = self.now(store).await?;
            if pending.is_empty() || Instant::now() >= deadline {
                return Ok(pending);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether the importer marked every kind of `cluster` synced in `store`.
pub async fn is_synced(store: &dyn Store, cluster: &str) -> Result<bool> {
    for kind in Kind::ALL {
        if store
            .get(&state::synced_key(cluster, kind))
            .await?
            .is_none()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The cluster whose synced marker `key` is, if it is one.
pub fn synced_marker_of(key: &str) -> Option<String> {
    match state::parse_key(key).ok()? {
        ParsedKey::Synced { cluster, .. } => Some(cluster),
        ParsedKey::Record { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_api::ClusterName;

    use super::*;
    use crate::leader::Leadership;
    use crate::state::Writer;
    use crate::store::MemoryStore;

    async fn mark(store: &Arc<dyn Store>, cluster: &str, kinds: &[Kind]) {
        let w = Writer::new(
            store.clone(),
            ClusterName::new(cluster).unwrap(),
            Leadership::always(),
        );
        for kind in kinds {
            w.mark_synced(*kind).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_remote_is_pending_until_every_kind_is_synced_and_never_after_the_window() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let remote = |name: &str| ConfiguredRemote {
            name: name.into(),
            id: 2,
            pod_cidrs: Vec::new(),
        };
        let (_tx, rx) = watch::channel(vec![remote("b"), remote("c")]);
        let remotes = PendingRemotes::new(rx.clone(), Duration::from_secs(600));
        mark(&store, "b", &Kind::ALL).await;
        mark(&store, "c", &[Kind::Node]).await;
        let pending = remotes.now(store.as_ref()).await.unwrap();
        assert_eq!(pending.into_iter().collect::<Vec<_>>(), vec!["c"]);
        let expired = PendingRemotes::new(rx, Duration::ZERO);
        assert!(expired.now(store.as_ref()).await.unwrap().is_empty());
    }

    #[test]
    fn only_synced_markers_name_a_cluster() {
        assert_eq!(
            synced_marker_of(&state::synced_key("b", Kind::Node)).as_deref(),
            Some("b")
        );
        assert_eq!(
            synced_marker_of(&state::record_key("b", Kind::Node, "n1")),
            None
        );
    }
}
