//! Withdrawing what the store holds of clusters that are no longer
//! configured: a remote removed while this replica was down, or while
//! another one led, leaves its records behind unless someone compares the
//! store with the config. Run on every config apply, when leadership is
//! gained, and periodically (a failed delete is retried, never forgotten).

use std::collections::BTreeSet;
use std::sync::Arc;

use mesh_api::ClusterName;

use crate::error::Result;
use crate::leader::Leadership;
use crate::state::{self, ParsedKey, Writer};
use crate::store::Store;

/// Clusters in `store` that are neither this one nor in `keep`.
pub(super) async fn strays(
    store: &dyn Store,
    local: &ClusterName,
    keep: &BTreeSet<String>,
) -> Result<BTreeSet<String>> {
    let (items, _) = store.list(state::ROOT).await?;
    Ok(items
        .iter()
        .filter_map(|kv| match state::parse_key(&kv.key).ok()? {
            ParsedKey::Record { cluster, .. } | ParsedKey::Synced { cluster, .. } => Some(cluster),
        })
        .filter(|c| c != local.as_str() && !keep.contains(c))
        .collect())
}

/// Deletes every stray cluster's prefix (leader only); returns what was
/// withdrawn, per cluster. Each is logged and counted by the caller.
pub(super) async fn sweep(
    store: &Arc<dyn Store>,
    local: &ClusterName,
    keep: &BTreeSet<String>,
    leadership: &Leadership,
) -> Result<Vec<(String, usize)>> {
    if !leadership.is_leader() {
        return Ok(Vec::new());
    }
    let mut swept = Vec::new();
    for cluster in strays(store.as_ref(), local, keep).await? {
        let Ok(name) = ClusterName::new(cluster.clone()) else {
            tracing::warn!(%cluster, "store holds records under a name that is not a cluster name; left alone");
            continue;
        };
        let n = Writer::new(store.clone(), name, leadership.clone())
            .delete_all()
            .await?;
        tracing::warn!(%cluster, records = n, "cluster not in the config: its cached state is withdrawn");
        swept.push((cluster, n));
    }
    Ok(swept)
}
