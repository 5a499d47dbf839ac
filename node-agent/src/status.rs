//! What the agent reports of itself: the shapes the local API serves
//! (crate mesh-agent-api, which clients use) and the watches the
//! controllers publish their state on.
//!
//! What it is for: the one-way link from the controllers to the API. Each
//! controller owns the sender of its state (the node controller: the
//! device, the routing status and the key annotation; the identity
//! controller: the policy status) and the API holds the receivers
//! ([`StatusFeeds`]), reading the latest value when asked. No controller
//! holds the API's state, and no lock is shared between them.
//!
//! What it is not for: serving (see [`crate::api`]).

use std::sync::Arc;

use tokio::sync::watch;

use crate::encryption::Encryption;
use crate::feed::mesh::MeshFeed;
use crate::node_controller::annotations::AnnotationState;

pub use mesh_agent_api::datapath::ApplyReport;
pub use mesh_agent_api::encryption::{EncryptionReport, RotatedKey};
pub use mesh_agent_api::policy::{EndpointPolicyReport, PolicyStatus};
pub use mesh_agent_api::status::{AgentStatus, RoutingStatus};

/// The controllers' state, as the API reads it.
#[derive(Debug, Clone)]
pub struct StatusFeeds {
    /// The mesh feed (None without `--mesh-apiserver-address`).
    pub mesh: Option<Arc<MeshFeed>>,
    /// The WireGuard device while encryption is on (the node controller).
    pub encryption: watch::Receiver<Option<Arc<Encryption>>>,
    /// Routes, peers and strict mode (the node controller).
    pub routing: watch::Receiver<RoutingStatus>,
    /// Identities and policies (the identity controller).
    pub policy: watch::Receiver<PolicyStatus>,
    /// The Node's key annotation (None without Kubernetes access: the key
    /// cannot be published).
    pub key_annotation: Option<watch::Receiver<AnnotationState>>,
    /// The MTUs derived at start-up ([`crate::mtu`]).
    pub mtu: Option<crate::mtu::MtuStatus>,
}

impl StatusFeeds {
    /// The WireGuard device, while encryption is on.
    pub fn encryption(&self) -> Option<Arc<Encryption>> {
        self.encryption.borrow().clone()
    }

    /// The node controller's last routing status.
    pub fn routing(&self) -> RoutingStatus {
        self.routing.borrow().clone()
    }

    /// The identity controller's last policy status.
    pub fn policy(&self) -> PolicyStatus {
        self.policy.borrow().clone()
    }
}
