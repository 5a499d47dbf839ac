//! The client side of Meshwork's control-plane feeds, for whoever consumes
//! them without being the server.
//!
//! What it is for:
//! - [`client`]: the `Export` gRPC client over mutual TLS ([`ExportClient`]:
//!   `Info`, `Watch` decoded into domain [`mesh_proto::WatchEvent`]s) and
//!   the [`Mirror`] that applies a watch to a local copy. The node-agent
//!   watches its local mesh-apiserver with it; the mesh-apiserver's importer
//!   watches remote clusters with it.
//! - [`reflect`]: the kube-rs reflector both the mesh-apiserver's and the
//!   node-agent's Kubernetes feeds are built on.
//!
//! What it is not for: serving `Export`, storing records, electing leaders
//! or resolving remote endpoints' DNS names (all in mesh-apiserver; the
//! client connects to addresses it is given). Depending on this crate
//! instead of mesh-apiserver keeps etcd-client and hickory out of the
//! node-agent.

pub mod client;
mod error;
pub mod reflect;

pub use client::{Change, ExportClient, Mirror, MirrorKey, mirror_key};
pub use error::{Error, Result};
