//! Meshwork's node-agent library: what the per-node daemon `node-agent` and
//! the CNI plugin `mesh-cni` share.
//!
//! What it is for:
//! - [`config`]: the agent's flags, which are the Helm chart's ConfigMap keys,
//!   parsed from the command line and from a mounted ConfigMap directory by
//!   the same clap parser, and validated at start-up;
//! - [`cni`]: the CNI 1.0 plugin (veth, IPAM under the state dir, routes,
//!   registration with the agent), errors in CNI's error format;
//! - [`datapath`]: the [`Datapath`](datapath::Datapath) trait, the seam between
//!   the agent's logic and the eBPF maps (implemented over mesh-bpf), and an
//!   in-memory implementation;
//! - [`bpf_datapath`]: the `Datapath` over mesh-bpf's pinned maps (the one
//!   the agent runs with);
//! - [`feed`]: sources of desired state (Kubernetes Services/EndpointSlices:
//!   kube-proxy replacement);
//! - [`reconcile`]: desired datapath state from every source, reconciled into
//!   a `Datapath` by diffing against what it holds (never flush and re-add);
//! - [`endpoint`]: the endpoint manager: endpoints registered by the CNI,
//!   persisted under the state dir so a restarted agent recovers them;
//! - [`api`]: the local HTTP/JSON API on a unix socket (its JSON types and
//!   the blocking client mesh-cni and meshctl use are crate mesh-agent-api;
//!   the modules here re-export the types they share with it), over the
//!   [`shared_manager`] and the controllers' [`status`] watches;
//! - [`metrics`]: Prometheus text exposition;
//! - [`flows`]: the datapath's flow events, named (pod, cluster, node) and
//!   kept in a bounded log for `GET /v1/flows` and `meshctl observe`;
//! - [`feed`]: the mesh feed (one Watch to the local mesh-apiserver, every
//!   cluster's records) and the agent's own Node (pod CIDR, InternalIP, the
//!   published WireGuard key);
//! - [`routes`], [`encryption`], [`node_sync`]: nodes of every cluster →
//!   native routes (`<pod CIDR> via <node IP>`) or, with encryption on,
//!   WireGuard peers and routes through the device, and the datapath's
//!   strict-mode set; [`node_controller`] runs them (encryption on/off,
//!   the Node's key annotation) behind traits for its I/O;
//! - [`masquerade`]: BPF masquerade's exempt set (every known pod CIDR and
//!   node address) and switch, kept by the same passes;
//! - [`config_watch`]: re-reads the config directory so `encryption.*`
//!   changes apply without a restart.
//!
//! What it is not for: the eBPF programs themselves (crate mesh-bpf), the
//! WireGuard device (mesh-wireguard), the local API's contract
//! (mesh-agent-api), the Export client (mesh-export-client).

pub mod api;
pub mod bpf_datapath;
pub mod cni;
pub mod config;
pub mod config_watch;
pub mod datapath;
pub mod encryption;
pub mod endpoint;
mod error;
pub mod feed;
pub mod flows;
pub mod identity_sync;
pub mod masquerade;
pub mod metrics;
pub mod mtu;
pub mod netdev;
pub mod node_controller;
pub mod node_sync;
pub mod policy;
pub mod reconcile;
pub mod routes;
pub mod shared_manager;
pub mod status;

pub use error::{Error, Result};
