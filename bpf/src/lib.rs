//! Meshwork's eBPF datapath: the C programs in `bpf/*.c` (compiled by
//! build.rs, embedded in this crate) and everything userspace needs to load
//! and drive them.
//!
//! What it is for: [`Datapath::load`] loads the socket load balancer (cgroup
//! `connect4`/`sendmsg4`/`recvmsg4`/`getpeername4`) and the per-packet
//! programs for pod veths (TC `from_pod`/`to_pod`: service DNAT with
//! conntrack, reverse NAT, ipcache identity, policy verdicts, flow events,
//! counters), pins every map under a configurable root and reuses pinned maps
//! on restart without flushing them. Typed wrappers ([`ServiceMap`],
//! [`BackendMap`], [`IpcacheMap`], [`PolicyMap`], [`ConntrackMap`],
//! [`FlowReader`], [`MetricsReader`]) check key/value layouts against the C
//! structs and offer idempotent upserts/deletes for a reconciler;
//! [`maglev::table`] builds consistent-hashing tables.
//!
//! What it is not for: deciding desired state (services, identities,
//! policies come from the node-agent's reconciler), routing, or WireGuard.

mod datapath;
pub mod dump;
mod error;
pub mod maglev;
pub mod maps;
pub mod mounts;
pub mod netns;

pub use datapath::{DEFAULT_PIN_ROOT, Datapath};
pub use dump::{Dump, MapUsage, dump, usage};
pub use error::{Error, Result};
pub use maps::{
    Backend, BackendId, BackendMap, ConntrackMap, CtDirection, CtEntry, Direction, DropReason,
    EncryptConfig, EncryptMap, EncryptSync, EndpointInfo, EndpointPolicy, FlowEvent,
    FlowObservation, FlowReader, FlowVerdict, Frontend, HOST_ENDPOINT, ICMP_PORT_BASE,
    IpcacheEntry, IpcacheMap, LbAlgorithm, LoadBalancer, MASQ_PORT_TRIES, MasqueradeConfig,
    MasqueradeMap, Metrics, MetricsReader, PolicyAction, PolicyEntry, PolicyKey, PolicyMap,
    Protocol, ServiceEntry, ServiceId, ServiceMap, ServiceView, SnatEntry, ports_outside,
};
