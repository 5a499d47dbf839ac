//! The records a cluster exports: nodes, identities, endpoints and global
//! services. Each is validated when built, so a record that exists is a
//! record every consumer can use.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterName, NodeName, dns_label_problem};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::labels::LabelSet;

/// A transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP (the Kubernetes default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
    /// ICMP: only in policy, where an ICMP type stands in the port's
    /// place (Cilium's `icmps`); never a service's (not parsed from text,
    /// not carried on the wire).
    Icmp,
}

impl Protocol {
    /// The IP protocol number (as in the eBPF maps).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp => 1,
        }
    }
}

impl FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "TCP" | "tcp" | "" => Ok(Protocol::Tcp),
            "UDP" | "udp" => Ok(Protocol::Udp),
            "SCTP" | "sctp" => Ok(Protocol::Sctp),
            _ => Err(Error::InvalidProtocol {
                protocol: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
        })
    }
}

/// Validates a port number (1–65535); `what` names it in the error.
pub fn port(what: impl fmt::Display, value: i64) -> Result<u16> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Error::InvalidPort {
            what: what.to_string(),
            port: value,
        }),
    }
}

/// A port with its name, as pods and EndpointSlices list them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    /// Port name ("" when the Service has a single unnamed port).
    pub name: String,
    /// Port number.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// A Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    /// Port name ("" when unnamed).
    pub name: String,
    /// The frontend port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// The backend port, when numeric (0: resolved per backend by name).
    pub target_port: u16,
}

/// A WireGuard public key (X25519, 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WireGuardKey([u8; 32]);

impl WireGuardKey {
    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        WireGuardKey(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for WireGuardKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidWireGuardKey {
            key: s.to_string(),
            reason,
        };
        let bytes = BASE64
            .decode(s.trim())
            .map_err(|_| bad("it is not base64"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("it does not decode to 32 bytes"))?;
        Ok(WireGuardKey(arr))
    }
}

impl TryFrom<String> for WireGuardKey {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<WireGuardKey> for String {
    fn from(k: WireGuardKey) -> String {
        k.to_string()
    }
}

impl fmt::Display for WireGuardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for WireGuardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WireGuardKey({self})")
    }
}

/// The kinds of records a cluster exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// [`NodeRecord`]s.
    Node,
    /// [`IdentityRecord`]s.
    Identity,
    /// [`EndpointRecord`]s.
    Endpoint,
    /// [`ServiceRecord`]s.
    Service,
}

impl Kind {
    /// All kinds, in the order a snapshot sends them (nodes and identities
    /// before the endpoints and services that refer to them).
    pub const ALL: [Kind; 4] = [Kind::Node, Kind::Identity, Kind::Endpoint, Kind::Service];

    /// The store path segment: `nodes`, `identities`, `endpoints`, `services`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Identity => "identities",
            Kind::Endpoint => "endpoints",
            Kind::Service => "services",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

/// Any exported record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// A node.
    Node(NodeRecord),
    /// An identity.
    Identity(IdentityRecord),
    /// An endpoint.
    Endpoint(EndpointRecord),
    /// A service.
    Service(ServiceRecord),
}

impl Record {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Record::Node(_) => Kind::Node,
            Record::Identity(_) => Kind::Identity,
            Record::Endpoint(_) => Kind::Endpoint,
            Record::Service(_) => Kind::Service,
        }
    }

    /// Its key within its cluster and kind.
    pub fn key(&self) -> String {
        match self {
            Record::Node(r) => r.key(),
            Record::Identity(r) => r.key(),
            Record::Endpoint(r) => r.key(),
            Record::Service(r) => r.key(),
        }
    }

    /// The cluster it belongs to.
    pub fn cluster(&self) -> &ClusterName {
        match self {
            Record::Node(r) => &r.cluster,
            Record::Identity(r) => &r.cluster,
            Record::Endpoint(r) => &r.cluster,
            Record::Service(r) => &r.cluster,
        }
    }
}

/// A node of some cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its cluster.
    pub cluster: ClusterName,
    /// Its name.
    pub name: NodeName,
    /// Its addresses (InternalIP first).
    pub ips: Vec<IpAddr>,
    /// Its pod CIDRs.
    pub pod_cidrs: Vec<IpNet>,
    /// Its WireGuard public key (Node annotation `network.meshwork.io/wg-pub-key`).
    pub wireguard_key: Option<WireGuardKey>,
}

impl NodeRecord {
    /// Store key: the node name.
    pub fn key(&self) -> String {
        self.name.to_string()
    }
}

/// A security identity and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// The cluster that allocated it.
    pub cluster: ClusterName,
    /// The number.
    pub id: Identity,
    /// The labels it stands for.
    pub labels: LabelSet,
}

impl IdentityRecord {
    /// Store key: the number.
    pub fn key(&self) -> String {
        self.id.get().to_string()
    }
}

/// Validates a Kubernetes namespace or Service name (DNS label, ≤63).
pub fn object_name(kind: &'static str, name: &str) -> Result<()> {
    match dns_label_problem(name, 63) {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidLabel {
            key: kind.to_string(),
            value: name.to_string(),
            reason,
        }),
    }
}

/// A pod's addresses and identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Its cluster.
    pub cluster: ClusterName,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod IPs.
    pub ips: Vec<IpAddr>,
    /// Its security identity.
    pub identity: Identity,
    /// The node it runs on.
    pub node: NodeName,
    /// Its named container ports.
    pub ports: Vec<NamedPort>,
}

impl EndpointRecord {
    /// Store key: `namespace/pod`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}

/// Backend preference of a global service (`service.meshwork.io/affinity`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// Use all backends of all clusters.
    #[default]
    None,
    /// Prefer this cluster's backends; use remote ones when none is ready.
    Local,
    /// Prefer remote backends; use local ones when no remote one is ready.
    Remote,
}

impl FromStr for Affinity {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        match s {
            "none" | "" => Ok(Affinity::None),
            "local" => Ok(Affinity::Local),
            "remote" => Ok(Affinity::Remote),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Affinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Affinity::None => "none",
            Affinity::Local => "local",
            Affinity::Remote => "remote",
        })
    }
}

/// How a Service takes part in the mesh, from its annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceMeshOptions {
    /// Merged with same-named Services of other clusters.
    pub global: bool,
    /// This cluster's backends are offered to other clusters.
    pub shared: bool,
    /// Backend preference.
    pub affinity: Affinity,
}

impl Default for ServiceMeshOptions {
    fn default() -> Self {
        ServiceMeshOptions {
            global: false,
            shared: true,
            affinity: Affinity::None,
        }
    }
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Backend {
    /// Pod IP.
    pub ip: IpAddr,
    /// Its ports by name.
    pub ports: Vec<NamedPort>,
    /// Ready to receive traffic.
    pub ready: bool,
    /// Node it runs on, when known.
    pub node: Option<NodeName>,
    /// Topology zone, when known.
    pub zone: Option<String>,
}

/// A Service with this cluster's backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Its cluster.
    pub cluster: ClusterName,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIPs (may differ between clusters: global services match by
    /// namespace/name).
    pub cluster_ips: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Backends in this cluster.
    pub backends: Vec<Backend>,
    /// Mesh options from annotations.
    pub options: ServiceMeshOptions,
}

impl ServiceRecord {
    /// Store key: `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests;
