//! The agent's sources of desired state beyond the CNI, each feeding the
//! [`crate::reconcile::Reconciler`] under its own source name or driving
//! routes and peers: the mesh feed (one Watch to the local mesh-apiserver,
//! all clusters), its own Node, and the Kubernetes Services/EndpointSlices
//! (kube-proxy replacement).

pub mod global;
pub mod health_check;
pub mod mesh;
pub mod node;
pub mod policy;
pub mod service_entries;
pub mod services;
