//! The lab's topology: which namespaces, addresses and CIDRs exist, derived
//! from the cluster and node counts alone, so `up`, `status`, `down` and the
//! end-to-end suite agree without asking each other.
//!
//! Layout (cluster `c` and node `n` count from 1):
//! - underlay bridge `br0` in namespace `<prefix>-ul`, subnet 192.168.77.0/24;
//! - cluster `c{c}`: control namespace `<prefix>-c{c}-ctl` at 192.168.77.{20c}
//!   (test API server, etcd, mesh-apiserver); pod CIDR 10.{c}.0.0/16; service
//!   CIDR 10.96.0.0/16 in every cluster (service CIDRs may overlap);
//! - node `c{c}-n{n}`: namespace `<prefix>-c{c}-n{n}` at 192.168.77.{20c+n},
//!   pod CIDR 10.{c}.{n}.0/24;
//! - cluster `c{c}`'s LB-IPAM pool `lab`: 192.168.77.{176+4(c-1)}/30 (two
//!   addresses, so a test can exhaust it), which the outside host reaches
//!   through whichever node a test routes it to;
//! - a host outside every cluster, namespace `<prefix>-out` at
//!   192.168.77.250 and .251 (two sources, for CIDR rules with exceptions),
//!   routing each node's pod CIDR via that node: what an external client
//!   is to the clusters.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use mesh_api::{ClusterId, ClusterName, NodeName};
use serde::{Deserialize, Serialize};

/// Most clusters a lab can hold (addresses 192.168.77.20c+n must fit).
pub const MAX_CLUSTERS: u8 = 8;
/// Most nodes per cluster.
pub const MAX_NODES: u8 = 8;
/// The underlay subnet.
pub const UNDERLAY: &str = "192.168.77.0/24";
/// The outside host's addresses (its first is its primary).
pub const OUTSIDE_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(192, 168, 77, 250),
    Ipv4Addr::new(192, 168, 77, 251),
];

/// Cluster `cluster`'s (1-8) LB-IPAM pool (chart `lbIPAM.pools`, name
/// `lab`).
pub fn lb_pool(cluster: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(192, 168, 77, 176 + 4 * (cluster - 1)), 30).expect("/30")
}

/// The port of the outside host's echo server.
pub const OUTSIDE_ECHO_PORT: u16 = 8080;

/// Every cluster's service CIDR.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Port of each cluster's test Kubernetes API server (in its control namespace).
pub const KUBE_API_PORT: u16 = 6443;
/// Port of each cluster's mesh-apiserver (in its control namespace).
pub const MESH_API_PORT: u16 = 32379;

/// Why a lab cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Too few or too many clusters.
    #[error("--clusters {0}: a lab has 1-{MAX_CLUSTERS} clusters")]
    Clusters(u8),
    /// Too few or too many nodes.
    #[error("--nodes {0}: a cluster in the lab has 1-{MAX_NODES} nodes")]
    Nodes(u8),
    /// A prefix that would make unusable names.
    #[error(
        "lab name {0:?}: use 1-7 lowercase letters or digits (WireGuard interface names must stay within 15 characters)"
    )]
    Name(String),
}

/// A whole lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPlan {
    /// Prefix of every namespace and directory the lab creates.
    pub prefix: String,
    /// The underlay namespace.
    pub underlay_ns: String,
    /// The clusters.
    pub clusters: Vec<ClusterPlan>,
    /// WireGuard between nodes.
    pub encryption: bool,
    /// How long a mesh-apiserver keeps an unreachable remote's state
    /// (chart value `clustermesh.apiserver.staleTimeout`; None: the chart's
    /// default).
    #[serde(default)]
    pub stale_timeout_seconds: Option<u64>,
    /// MTU of every underlay interface (`mesh-lab up --underlay-mtu`;
    /// None: the kernel's 1500).
    #[serde(default)]
    pub underlay_mtu: Option<u32>,
    /// Lifetime of every certificate the lab issues and the mesh renews
    /// (chart value `clustermesh.apiserver.tls.certLifetimeSeconds`; None:
    /// 30 days for the lab's, the chart's default for renewals).
    #[serde(default)]
    pub cert_lifetime_seconds: Option<u64>,
    /// Further chart values by dotted path (`mesh-lab up --set`).
    #[serde(default)]
    pub values: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `PATH=VALUE` of `--set`: the value as JSON when it parses (`true`, `3`,
/// `["a"]`), else as a string.
pub fn parse_set(s: &str) -> anyhow::Result<(String, serde_json::Value)> {
    let Some((path, value)) = s.split_once('=') else {
        anyhow::bail!("--set {s:?}: expected PATH=VALUE, e.g. --set compat.ciliumPolicies=true");
    };
    if path.is_empty() || path.split('.').any(str::is_empty) {
        anyhow::bail!("--set {s:?}: the path must be dotted names, e.g. compat.ciliumPolicies");
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.into()));
    Ok((path.to_string(), value))
}

/// `values` with `value` put at the dotted `path` (objects created on the
/// way).
pub fn set_value(values: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut at = values;
    for key in path.split('.') {
        if !at.is_object() {
            *at = serde_json::json!({});
        }
        at = at
            .as_object_mut()
            .expect("an object")
            .entry(key.to_string())
            .or_insert(serde_json::Value::Null);
    }
    *at = value;
}

/// One cluster of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPlan {
    /// `c1`, `c2`, …
    pub name: ClusterName,
    /// 1, 2, …
    pub id: ClusterId,
    /// kube context name: `lab-c1`, …
    pub context: String,
    /// Control namespace (API server, etcd, mesh-apiserver).
    pub control_ns: String,
    /// Control namespace's underlay address.
    pub control_ip: Ipv4Addr,
    /// The cluster's pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// The cluster's service CIDR.
    pub service_cidr: Ipv4Net,
    /// Its nodes.
    pub nodes: Vec<NodePlan>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// Kubernetes node name: `c1-n1`, …
    pub name: NodeName,
    /// Its namespace.
    pub ns: String,
    /// Its underlay address (the node IP).
    pub ip: Ipv4Addr,
    /// Its pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// Its WireGuard interface (unique on the host: the UAPI socket path is shared).
    pub wg_interface: String,
}

impl LabPlan {
    /// Plans `clusters` × `nodes`.
    pub fn new(
        prefix: &str,
        clusters: u8,
        nodes: u8,
        encryption: bool,
    ) -> Result<LabPlan, PlanError> {
        if prefix.is_empty()
            || prefix.len() > 7
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(PlanError::Name(prefix.to_string()));
        }
        if !(1..=MAX_CLUSTERS).contains(&clusters) {
            return Err(PlanError::Clusters(clusters));
        }
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err(PlanError::Nodes(nodes));
        }
        let prefix = format!("mw{prefix}");
        let clusters = (1..=clusters)
            .map(|c| {
                let name = ClusterName::new(format!("c{c}")).expect("c<digit> is a DNS label");
                ClusterPlan {
                    id: ClusterId::new(i64::from(c)).expect("1-8 is a cluster id"),
                    context: format!("lab-{name}"),
                    control_ns: format!("{prefix}-{name}-ctl"),
                    control_ip: Ipv4Addr::new(192, 168, 77, 20 * c),
                    pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, c, 0, 0), 16).expect("/16"),
                    service_cidr: SERVICE_CIDR.parse().expect("constant CIDR"),
                    nodes: (1..=nodes)
                        .map(|n| NodePlan {
                            name: NodeName::new(format!("{name}-n{n}"))
                                .expect("c<d>-n<d> is a DNS name"),
                            ns: format!("{prefix}-{name}-n{n}"),
                            ip: Ipv4Addr::new(192, 168, 77, 20 * c + n),
                            pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, c, n, 0), 24).expect("/24"),
                            // "mwg-" + "mw" + ≤7 + two digits: at most 15, never truncated.
                            wg_interface: format!("mwg-{prefix}{c}{n}"),
                        })
                        .collect(),
                    name,
                }
            })
            .collect();
        Ok(LabPlan {
            underlay_ns: format!("{prefix}-ul"),
            prefix,
            clusters,
            encryption,
            stale_timeout_seconds: None,
            underlay_mtu: None,
            cert_lifetime_seconds: None,
            values: Default::default(),
        })
    }

    /// Every namespace of the lab, underlay first.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![self.underlay_ns.clone()];
        for c in &self.clusters {
            out.push(c.control_ns.clone());
            out.extend(c.nodes.iter().map(|n| n.ns.clone()));
        }
        out.push(self.outside_ns());
        out
    }

    /// The namespace of the host outside every cluster ([`OUTSIDE_IPS`]).
    pub fn outside_ns(&self) -> String {
        format!("{}-out", self.prefix)
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterPlan> {
        self.clusters.iter().find(|c| c.name.as_str() == name)
    }
}

#[cfg(test)]
mod tests;
