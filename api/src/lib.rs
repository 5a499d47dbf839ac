//! Meshwork's domain model: cluster ids and names, security identities,
//! label sets and selectors, the records a cluster exports (nodes,
//! endpoints, services), the rules for Service annotations and for merging
//! global-service backends, and CIDR overlap checks.
//!
//! It is the core every binary shares. It does no I/O: no Kubernetes client,
//! no network, no files, no gRPC (the protobuf API and its conversions to
//! these types live in crate mesh-proto, which depends on this one). Its
//! logic is tested without root or a network.

pub mod annotations;
pub mod cidr;
mod cluster;
pub mod clustermesh;
mod error;
mod identity;
pub mod labels;
pub mod merge;
pub mod records;
pub mod trust;

pub use cluster::{ClusterId, ClusterName, NodeName, dns_label_problem, dns_subdomain_problem};
pub use error::{Error, Result, report};
pub use identity::{Identity, ReservedIdentity};
pub use labels::{LabelSelector, LabelSet, SelectorOperator, SelectorRequirement};
pub use records::{
    Affinity, Backend, EndpointRecord, IdentityRecord, Kind, NamedPort, NodeRecord, Protocol,
    Record, ServiceMeshOptions, ServicePort, ServiceRecord, WireGuardKey,
};
