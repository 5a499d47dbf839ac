//! The local multi-cluster lab: N Meshwork clusters × M nodes on one Linux
//! host, built from network namespaces on an underlay bridge that lives in a
//! namespace of its own and is never joined to the host's uplink.
//!
//! Per cluster: a control namespace (test Kubernetes API server, etcd,
//! mesh-apiserver) and node namespaces running the real node-agent; the lab
//! acts as the kubelet (one per node, running the Pods bound to it through
//! the real mesh-cni), so `kubectl create deployment` works as on a cluster. A kubeconfig
//! with contexts `lab-c1…lab-cN` reaches each API server through a host
//! loopback port forwarder, as kind's port mapping does.
//!
//! What it is for: `make demo`, the end-to-end suite, and people exploring.
//! What it is not for: production. It is never shipped.

pub mod bins;
pub mod bpffs;
pub mod config_sync;
pub mod control;
pub mod echo;
pub mod forward;
pub mod kubelet;
pub mod netns;
pub mod plan;
pub mod state;
pub mod syn_flood;
pub mod teardown;
pub mod up;
