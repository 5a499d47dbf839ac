//! What the datapath holds, as `GET /v1/services`, `/v1/ipcache` and
//! `/v1/policies` report it (and `PUT /v1/services`, `/v1/ipcache` take
//! it): service frontends with their backends, ipcache entries, and each
//! endpoint's compiled policy. The node-agent's `Datapath` trait speaks the
//! same types.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use mesh_api::{Identity, Protocol};
use serde::{Deserialize, Serialize};

/// A node-local endpoint number (like Cilium's endpoint id): the key of the
/// per-endpoint maps (policy). 1-65535, stable while the endpoint lives.
pub type EndpointId = u16;

/// Kind of a service frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrontendKind {
    /// A ClusterIP (virtual IP).
    ClusterIp,
    /// A NodePort on the node's addresses.
    NodePort,
    /// One of a Service's `spec.externalIPs`.
    ExternalIp,
    /// A LoadBalancer address (`status.loadBalancer.ingress`).
    LoadBalancer,
}

/// A service frontend: what clients connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Frontend {
    /// The virtual IP (for NodePort: the node address, or 0.0.0.0 for any).
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// ClusterIP, NodePort, external IP or LoadBalancer address.
    pub kind: FrontendKind,
}

/// One backend of a service frontend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendAddr {
    /// Backend address.
    pub ip: IpAddr,
    /// Backend port.
    pub port: u16,
}

/// A frontend with its backends, as the LB maps hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// The frontend.
    pub frontend: Frontend,
    /// Backends in slot order.
    pub backends: Vec<BackendAddr>,
    /// ClientIP session affinity timeout in seconds (None: no affinity).
    pub affinity_timeout: Option<u32>,
}

/// An ipcache entry: which identity an address range has and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcacheEntry {
    /// The range (a /32 for a pod).
    pub cidr: IpNet,
    /// Its identity.
    pub identity: Identity,
    /// The node hosting it (None: this node or outside the mesh).
    pub node_ip: Option<Ipv4Addr>,
    /// Whether traffic to it must be encrypted.
    pub encrypt: bool,
}

/// Traffic direction relative to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Towards the endpoint.
    Ingress,
    /// From the endpoint.
    Egress,
}

/// Where an ICMP type stands in a policy match's port: 256 + the type, so
/// that type 0 (echo reply) is not "any" (the datapath's
/// `POLICY_ICMP_PORT_BASE`).
pub const ICMP_TYPE_PORT_BASE: u16 = 256;

/// One (peer, port, protocol) match of an endpoint's policy: allowed or
/// denied by the set that holds it ([`EndpointPolicy::allow`],
/// [`EndpointPolicy::deny`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyMatch {
    /// Direction.
    pub direction: Direction,
    /// Peer identity (None: any peer).
    pub identity: Option<Identity>,
    /// Port (0: any port). For ICMP, [`ICMP_TYPE_PORT_BASE`] plus the ICMP
    /// type (0: any type).
    pub port: u16,
    /// Protocol (None: any).
    pub protocol: Option<Protocol>,
    /// The rule that allowed or denied it (a rule id, named by
    /// [`crate::policy::RuleRef`]; 0: none known), carried into flow events.
    #[serde(default)]
    pub rule: u32,
}

/// The compiled policy of one endpoint, as the policy map holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    /// Ingress is default-deny (some policy selects the endpoint for ingress).
    pub ingress_enforced: bool,
    /// Egress is default-deny.
    pub egress_enforced: bool,
    /// What is allowed.
    pub allow: BTreeSet<PolicyMatch>,
    /// What is denied: wins over any allow, whichever is more specific
    /// (`ingressDeny`/`egressDeny`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub deny: BTreeSet<PolicyMatch>,
}

/// The host firewall of a node: what the host policies selecting it add up
/// to, enforced or audited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPolicy {
    /// The rules, as for an endpoint (peers are who talks to or from the
    /// node itself).
    pub policy: EndpointPolicy,
    /// Audit mode: what would be dropped is reported and passes.
    pub audit: bool,
}

/// What a PUT of desired state answers: how the reconcile went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Objects written.
    pub upserted: Vec<String>,
    /// Objects removed.
    pub removed: Vec<String>,
    /// Objects the datapath refused, with the reason (retried periodically).
    pub failed: Vec<String>,
}
