//! What `GET /v1/status` returns: the agent, its datapath, and the state
//! of each controller (mesh feed, routing, encryption, policy).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

/// What `GET /v1/status` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Cluster name.
    pub cluster_name: String,
    /// Cluster id.
    pub cluster_id: u8,
    /// Node name.
    pub node_name: String,
    /// The node's pod CIDR (what mesh-cni allocates from), if known.
    pub pod_cidr: Option<IpNet>,
    /// Which datapath implementation is attached ("memory": no eBPF yet).
    pub datapath: String,
    /// Number of endpoints.
    pub endpoints: usize,
    /// Where `/metrics` is served.
    pub metrics_address: Option<SocketAddr>,
    /// Agent version.
    pub version: String,
    /// The mesh feed (absent without `--mesh-apiserver-address`).
    #[serde(default)]
    pub mesh_feed: Option<MeshFeedStatus>,
    /// Routes to other nodes.
    #[serde(default)]
    pub routing: RoutingStatus,
    /// Encryption and WireGuard peers (absent when off).
    #[serde(default)]
    pub encryption: Option<crate::encryption::EncryptionStatus>,
    /// Identities and policies: rules by id, refused policies.
    #[serde(default)]
    pub policy: crate::policy::PolicyStatus,
    /// The MTUs the agent derived (None: an agent of an earlier version).
    #[serde(default)]
    pub mtu: Option<MtuStatus>,
}

/// The MTUs of this node: its interface's, the WireGuard device's, and the
/// one pods get (the CNI plugin asks for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtuStatus {
    /// The node interface's MTU (the underlay).
    pub underlay: u32,
    /// The WireGuard device's: the underlay's less the encryption overhead.
    pub tunnel: u32,
    /// The pods' veth MTU.
    pub pod: u32,
    /// `--mtu` set it (else derived).
    pub configured: bool,
}

/// The feed's state as `/v1/status` and `/metrics` report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshFeedStatus {
    /// The mesh-apiserver address.
    pub address: String,
    /// Whether a watch is open.
    pub connected: bool,
    /// Whether the mirror completed a snapshot or resume.
    pub synced: bool,
    /// The last revision applied.
    pub revision: u64,
    /// Seconds since the last event (the feed's lag while connected).
    pub last_event_seconds_ago: Option<u64>,
    /// Connections opened so far (1 + reconnects).
    pub connects: u64,
    /// The last error, if the feed is or was broken.
    pub last_error: Option<String>,
    /// Records held, by kind.
    pub counts: BTreeMap<String, usize>,
    /// Records of other clusters the agent refuses to use (they would
    /// relabel a local identity or take a local address), by kind. The
    /// mesh-apiserver should have refused them first.
    #[serde(default)]
    pub refused: BTreeMap<String, usize>,
    /// Seconds until the client certificate it presents expires
    /// (negative once expired; the mesh-apiserver renews it).
    #[serde(default)]
    pub certificate_expiry_seconds: Option<i64>,
}

/// The routing part of `/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingStatus {
    /// This node's IP (Node InternalIP, else its record from the mesh feed).
    pub node_ip: Option<IpAddr>,
    /// The routes the agent wants (and, after a clean pass, holds).
    pub routes: Vec<Route>,
    /// Passes run.
    pub passes: u64,
    /// Routes written in the last pass that changed something.
    pub last_changes: Vec<String>,
    /// Failures of the last pass (retried on the next).
    pub failures: Vec<String>,
    /// Whether the datapath enforces strict-mode encryption.
    #[serde(default)]
    pub strict_mode: bool,
    /// Strict mode is on but no WireGuard device is up: traffic to the
    /// strict-mode set is dropped (`encryption_required`), never plaintext.
    #[serde(default)]
    pub strict_closed: bool,
    /// CIDRs the datapath requires to leave encrypted (listed even while
    /// strict mode is off).
    #[serde(default)]
    pub must_encrypt: Vec<Ipv4Net>,
    /// With encryption on: other nodes' pod CIDRs that have no usable
    /// WireGuard peer (no key yet, removed, refused) and so are routed
    /// natively — in clear without strict mode, dropped by the datapath
    /// with it. Never silent: logged when it changes, and a gauge.
    #[serde(default)]
    pub unencrypted: Vec<Ipv4Net>,
    /// BPF masquerade and NodePort SNAT (None: before the first pass).
    #[serde(default)]
    pub masquerade: Option<MasqueradeStatus>,
}

/// BPF masquerade as the last pass left it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasqueradeStatus {
    /// `--enable-bpf-masquerade`.
    pub enabled: bool,
    /// The datapath masquerades now.
    pub active: bool,
    /// The address masqueraded traffic, and NodePort traffic to other
    /// nodes, leaves with (None: no SNAT at all).
    pub node_ip: Option<Ipv4Addr>,
    /// The ports translated flows get (`61000-65535`).
    pub ports: String,
    /// Destinations that keep the pod's address.
    pub exempt: Vec<Ipv4Net>,
    /// Why it is not active.
    pub reason: Option<String>,
}

/// Where a route sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NextHop {
    /// Native routing: via the node's IP on the underlay.
    Via(Ipv4Addr),
    /// Through an interface (the WireGuard device).
    Dev(String),
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Via(ip) => write!(f, "via {ip}"),
            NextHop::Dev(dev) => write!(f, "dev {dev}"),
        }
    }
}

/// One route of the agent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Destination (a node's pod CIDR).
    pub dst: Ipv4Net,
    /// Next hop.
    pub next_hop: NextHop,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.dst, self.next_hop)
    }
}
