//! Merging a global service's backends across clusters.
//!
//! The rules, as ClusterMesh users know them:
//! - a Service takes part only when it is global in the local cluster; remote
//!   backends are merged by namespace/name (ClusterIPs may differ);
//! - a cluster whose Service says `shared: "false"` keeps its backends to
//!   itself: they serve its own clients only;
//! - affinity `local` uses local ready backends and falls back to remote ones
//!   when none is ready; `remote` the reverse; `none` uses all;
//! - backends of a remote cluster that became unreachable are kept (marked
//!   stale) so established traffic continues, until the cluster is removed.

use serde::Serialize;

use crate::cluster::ClusterName;
use crate::records::{Affinity, Backend, ServiceRecord};

/// A remote cluster's record of a global service.
#[derive(Debug, Clone, Copy)]
pub struct RemoteService<'a> {
    /// The remote cluster's record.
    pub record: &'a ServiceRecord,
    /// The remote cluster is unreachable; its last known state is used.
    pub stale: bool,
}

/// A backend with the cluster it lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergedBackend {
    /// Its cluster.
    pub cluster: ClusterName,
    /// The backend.
    pub backend: Backend,
    /// It comes from the last known state of an unreachable cluster.
    pub stale: bool,
}

/// The ready backends local clients should use for `local`, given the
/// same-named Services of remote clusters.
pub fn merge_global_backends(
    local: &ServiceRecord,
    remotes: &[RemoteService<'_>],
) -> Vec<MergedBackend> {
    let local_ready: Vec<MergedBackend> = local
        .backends
        .iter()
        .filter(|b| b.ready)
        .map(|b| MergedBackend {
            cluster: local.cluster.clone(),
            backend: b.clone(),
            stale: false,
        })
        .collect();
    if !local.options.global {
        return local_ready;
    }
    let remote_ready: Vec<MergedBackend> = remotes
        .iter()
        .filter(|r| {
            r.record.cluster != local.cluster
                && r.record.options.global
                && r.record.options.shared
                && r.record.namespace == local.namespace
                && r.record.name == local.name
        })
        .flat_map(|r| {
            r.record
                .backends
                .iter()
                .filter(|b| b.ready)
                .map(move |b| MergedBackend {
                    cluster: r.record.cluster.clone(),
                    backend: b.clone(),
                    stale: r.stale,
                })
        })
        .collect();
    match local.options.affinity {
        Affinity::Local if !local_ready.is_empty() => local_ready,
        Affinity::Remote if !remote_ready.is_empty() => remote_ready,
        _ => local_ready.into_iter().chain(remote_ready).collect(),
    }
}

#[cfg(test)]
mod tests;
