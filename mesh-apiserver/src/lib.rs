//! The mesh-apiserver: each cluster's export/import service.
//!
//! What it is for: keeping the cluster's nodes, identities, endpoints and
//! global services in a store (etcd, or in-memory for one replica), serving
//! them over mutual-TLS gRPC (`Export`) to remote clusters (global services
//! only) and to this cluster's node-agents (every cluster), importing remote
//! clusters' exports into its own store (the KVStoreMesh design), electing
//! one writing leader among replicas, and reporting status and metrics.
//!
//! What it is not for: programming any datapath (the node-agent does that),
//! issuing certificates (mesh-certs and meshctl do), or being linked by
//! clients: the wire types are crate mesh-proto, the `Export` client and
//! `Mirror` crate mesh-export-client.

pub mod config;
mod error;
pub mod export;
pub mod import;
pub mod kube_feed;
pub mod lb_ipam;
pub mod leader;
pub mod publish;
pub mod renew;
pub mod server;
pub mod state;
pub mod status;
pub mod store;

#[cfg(feature = "test-util")]
pub mod testutil;

pub use error::{Error, Result};
