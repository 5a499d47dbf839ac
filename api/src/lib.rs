//! Meshwork's domain model: cluster ids and names, security identities,
//! label sets and selectors, the records a cluster exports (nodes,
//! endpoints, services), the rules for Service annotations and for merging
//! global-service backends, CIDR overlap checks, and the protobuf export/watch
//! API with lossless conversions.
//!
//! It is the core every binary shares. It does no I/O: no Kubernetes client,
//! no network, no files. Its logic is tested without root or a network.

mod cluster;
mod error;

pub use cluster::{ClusterId, ClusterName, NodeName, dns_label_problem, dns_subdomain_problem};
pub use error::{Error, Result};
