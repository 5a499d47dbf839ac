//! The policy feed: MeshNetworkPolicy and MeshClusterwideNetworkPolicy
//! objects of the agent's cluster, watched with kube-rs.
//!
//! What it is for: handing [`crate::identity_sync`] the current policies as
//! [`PolicySource`]s, and telling it when they change. It reports "ready"
//! once both watches have listed, so a restarted agent keeps the installed
//! policies until it knows the current ones (never an allow-all window).
//!
//! When the CRDs are not installed the watches fail and retry (a warning
//! names the kind); the agent stays "not ready" for policies and keeps what
//! is installed.

use std::sync::Arc;

use kube::{Api, Client};
use mesh_apiserver::kube_feed::{Reflected, reflect};
use tokio::sync::Notify;

use crate::policy::compile::PolicySource;
use crate::policy::crd::{MeshClusterwideNetworkPolicy, MeshNetworkPolicy};

/// The two watches and their change signal.
pub struct PolicyFeed {
    namespaced: Reflected<MeshNetworkPolicy>,
    clusterwide: Reflected<MeshClusterwideNetworkPolicy>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for PolicyFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyFeed")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl PolicyFeed {
    /// Starts watching both kinds in every namespace.
    pub fn start(client: &Client) -> PolicyFeed {
        let notify = Arc::new(Notify::new());
        PolicyFeed {
            namespaced: reflect(Api::all(client.clone()), notify.clone()),
            clusterwide: reflect(Api::all(client.clone()), notify.clone()),
            notify,
        }
    }

    /// Whether both kinds have been listed at least once.
    pub fn ready(&self) -> bool {
        use futures::FutureExt as _;
        let listed = |ready: Option<Result<(), _>>| ready.is_some_and(|r| r.is_ok());
        listed(self.namespaced.0.wait_until_ready().now_or_never())
            && listed(self.clusterwide.0.wait_until_ready().now_or_never())
    }

    /// Every policy, both kinds.
    pub fn sources(&self) -> Vec<PolicySource> {
        let mut out: Vec<PolicySource> = self
            .namespaced
            .0
            .state()
            .iter()
            .map(|p| {
                PolicySource::namespaced(
                    p.metadata.namespace.as_deref().unwrap_or("default"),
                    p.metadata.name.as_deref().unwrap_or_default(),
                    &p.spec,
                )
            })
            .collect();
        out.extend(self.clusterwide.0.state().iter().map(|p| {
            PolicySource::clusterwide(p.metadata.name.as_deref().unwrap_or_default(), &p.spec)
        }));
        out
    }

    /// Resolves on the next change (or watch error) of either kind.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}
