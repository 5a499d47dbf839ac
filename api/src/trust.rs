//! The cross-cluster trust boundary: what a remote cluster may say.
//!
//! A remote speaks only for itself. Its identities carry its own cluster id
//! and name it in `meshwork.io/cluster`; it exports no reserved or
//! node-local identity; every pod address it names (node pod CIDRs,
//! endpoint and backend IPs) lies inside the pod CIDRs it declared, and no
//! address it names (node IPs included) lies inside the pod CIDRs of this
//! cluster or of another remote. Identities from every cluster share one
//! map in the agent, and routes, ipcache and WireGuard AllowedIPs are keyed
//! by address: without this check a remote could relabel a local identity
//! or steer another cluster's pods.
//!
//! [`check_record`] judges one record; [`Quotas`] bound how much a remote
//! may keep in the store. The mesh-apiserver runs both before it caches an
//! import, and the node-agent runs [`check_record`] again before it merges.
//! Pure: no I/O.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterId, ClusterName};
use crate::labels::CLUSTER_LABEL;
use crate::records::{Kind, Record};

/// What a remote cluster is allowed to speak for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteScope {
    /// The remote's name.
    pub cluster: ClusterName,
    /// The remote's id.
    pub id: ClusterId,
    /// The pod CIDRs it declared (config, else its Info). Empty: it may name
    /// no pod address at all.
    pub pod_cidrs: Vec<IpNet>,
    /// Pod CIDRs that belong to someone else: this cluster's and every other
    /// remote's, each with its owner.
    pub foreign: Vec<(ClusterName, Vec<IpNet>)>,
}

/// Why a record was refused: a stable code (metric label) and its detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Stable code, snake_case: see [`RefusalCode`].
    pub code: RefusalCode,
    /// What is wrong, for people.
    pub detail: String,
}

/// The kinds of refusal, as they appear in metrics and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The record names another cluster.
    ForeignCluster,
    /// An identity number without the remote's cluster id.
    ForeignIdentity,
    /// A reserved (1–255) or node-local identity.
    ReservedIdentity,
    /// `meshwork.io/cluster` missing or naming another cluster.
    ClusterLabel,
    /// A pod address outside the remote's declared pod CIDRs.
    OutsidePodCidrs,
    /// An address inside this cluster's or another remote's pod CIDRs.
    ForeignAddress,
    /// An address no node or pod may have (loopback, multicast, unspecified…).
    BadAddress,
    /// Over a per-remote quota.
    OverQuota,
}

impl RefusalCode {
    /// The code as written in metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::ForeignCluster => "foreign_cluster",
            RefusalCode::ForeignIdentity => "foreign_identity",
            RefusalCode::ReservedIdentity => "reserved_identity",
            RefusalCode::ClusterLabel => "cluster_label",
            RefusalCode::OutsidePodCidrs => "outside_pod_cidrs",
            RefusalCode::ForeignAddress => "foreign_address",
            RefusalCode::BadAddress => "bad_address",
            RefusalCode::OverQuota => "over_quota",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

fn refuse(code: RefusalCode, detail: String) -> Result<(), Refusal> {
    Err(Refusal { code, detail })
}

impl RemoteScope {
    /// The cluster whose pod CIDRs hold `ip`, if it is not the remote.
    fn foreign_owner_of_ip(&self, ip: &IpAddr) -> Option<(&ClusterName, &IpNet)> {
        self.foreign
            .iter()
            .find_map(|(owner, cidrs)| cidrs.iter().find(|c| c.contains(ip)).map(|c| (owner, c)))
    }

    fn foreign_owner_of_net(&self, net: &IpNet) -> Option<(&ClusterName, &IpNet)> {
        self.foreign.iter().find_map(|(owner, cidrs)| {
            cidrs
                .iter()
                .find(|c| crate::cidr::overlaps(c, net))
                .map(|c| (owner, c))
        })
    }

    /// An address any node may have: not special, not someone else's pod.
    fn check_node_ip(&self, what: &str, ip: &IpAddr) -> Result<(), Refusal> {
        if !usable_unicast(ip) {
            return refuse(
                RefusalCode::BadAddress,
                format!("{what} {ip} is not a unicast host address"),
            );
        }
        if let Some((owner, cidr)) = self.foreign_owner_of_ip(ip) {
            return refuse(
                RefusalCode::ForeignAddress,
                format!("{what} {ip} lies in {owner}'s pod CIDR {cidr}"),
            );
        }
        Ok(())
    }

    /// A pod address: inside the remote's declared pod CIDRs.
    fn check_pod_ip(&self, what: &str, ip: &IpAddr) -> Result<(), Refusal> {
        self.check_node_ip(what, ip)?;
        if !self.pod_cidrs.iter().any(|c| c.contains(ip)) {
            return refuse(
                RefusalCode::OutsidePodCidrs,
                format!(
                    "{what} {ip} is outside {}'s declared pod CIDRs {}",
                    self.cluster,
                    cidr_list(&self.pod_cidrs)
                ),
            );
        }
        Ok(())
    }

    fn check_pod_cidr(&self, what: &str, net: &IpNet) -> Result<(), Refusal> {
        if let Some((owner, cidr)) = self.foreign_owner_of_net(net) {
            return refuse(
                RefusalCode::ForeignAddress,
                format!("{what} {net} overlaps {owner}'s pod CIDR {cidr}"),
            );
        }
        if !self.pod_cidrs.iter().any(|c| contains_net(c, net)) {
            return refuse(
                RefusalCode::OutsidePodCidrs,
                format!(
                    "{what} {net} is not inside {}'s declared pod CIDRs {}",
                    self.cluster,
                    cidr_list(&self.pod_cidrs)
                ),
            );
        }
        Ok(())
    }

    fn check_identity(&self, what: &str, id: crate::Identity) -> Result<(), Refusal> {
        if id.is_reserved() || id.is_node_local() {
            return refuse(
                RefusalCode::ReservedIdentity,
                format!(
                    "{what} {} is reserved or node-local; a remote exports only its own label-based identities",
                    id.get()
                ),
            );
        }
        if id.cluster() != Some(self.id) {
            return refuse(
                RefusalCode::ForeignIdentity,
                format!(
                    "{what} {} carries cluster id {}, not {}'s id {}",
                    id.get(),
                    id.cluster().map_or(0, |c| c.get()),
                    self.cluster,
                    self.id.get()
                ),
            );
        }
        Ok(())
    }
}

/// Whether `outer` holds all of `inner`.
fn contains_net(outer: &IpNet, inner: &IpNet) -> bool {
    outer.contains(&inner.network()) && outer.contains(&inner.broadcast())
}

fn cidr_list(cidrs: &[IpNet]) -> String {
    if cidrs.is_empty() {
        return "(none declared)".into();
    }
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether an address can be a node's or a pod's: not unspecified,
/// loopback, multicast, broadcast or link-local.
pub fn usable_unicast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_link_local())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// Judges one record a remote sent: `Ok` to cache it, or why not.
pub fn check_record(scope: &RemoteScope, record: &Record) -> Result<(), Refusal> {
    if record.cluster() != &scope.cluster {
        return refuse(
            RefusalCode::ForeignCluster,
            format!(
                "{} sent a record of cluster {}; a remote speaks only for itself",
                scope.cluster,
                record.cluster()
            ),
        );
    }
    match record {
        Record::Node(n) => {
            for ip in &n.ips {
                scope.check_node_ip("node address", ip)?;
            }
            for cidr in &n.pod_cidrs {
                scope.check_pod_cidr("node pod CIDR", cidr)?;
            }
        }
        Record::Identity(i) => {
            scope.check_identity("identity", i.id)?;
            match i.labels.get(CLUSTER_LABEL) {
                Some(c) if c == scope.cluster.as_str() => {}
                other => {
                    return refuse(
                        RefusalCode::ClusterLabel,
                        format!(
                            "identity {} has {CLUSTER_LABEL}={}; it must name {}",
                            i.id.get(),
                            other.unwrap_or("(missing)"),
                            scope.cluster
                        ),
                    );
                }
            }
        }
        Record::Endpoint(e) => {
            scope.check_identity("endpoint identity", e.identity)?;
            for ip in &e.ips {
                scope.check_pod_ip("endpoint address", ip)?;
            }
        }
        Record::Service(s) => {
            for b in &s.backends {
                scope.check_pod_ip("backend address", &b.ip)?;
            }
        }
    }
    Ok(())
}

/// The node-agent's second line: what it can check of a record from
/// another cluster knowing only its own (name, id, pod CIDRs). The
/// mesh-apiserver judged the record fully with [`check_record`]; this keeps
/// a bug or a compromise there from relabelling a local identity or
/// stealing a local address. Records of the local cluster pass.
pub fn check_foreign_record(
    local: &ClusterName,
    local_id: ClusterId,
    local_cidrs: &[IpNet],
    record: &Record,
) -> Result<(), Refusal> {
    let cluster = record.cluster();
    if cluster == local {
        return Ok(());
    }
    let identity = |what: &str, id: crate::Identity| -> Result<(), Refusal> {
        if id.is_reserved() || id.is_node_local() {
            return refuse(
                RefusalCode::ReservedIdentity,
                format!(
                    "{what} {} of cluster {cluster} is reserved or node-local",
                    id.get()
                ),
            );
        }
        if id.cluster() == Some(local_id) {
            return refuse(
                RefusalCode::ForeignIdentity,
                format!(
                    "{what} {} of cluster {cluster} carries this cluster's id {}",
                    id.get(),
                    local_id.get()
                ),
            );
        }
        Ok(())
    };
    let address = |what: &str, ip: &IpAddr| -> Result<(), Refusal> {
        if !usable_unicast(ip) {
            return refuse(
                RefusalCode::BadAddress,
                format!("{what} {ip} of cluster {cluster} is not a unicast host address"),
            );
        }
        match local_cidrs.iter().find(|c| c.contains(ip)) {
            Some(c) => refuse(
                RefusalCode::ForeignAddress,
                format!("{what} {ip} of cluster {cluster} lies in this cluster's pod CIDR {c}"),
            ),
            None => Ok(()),
        }
    };
    match record {
        Record::Node(n) => {
            for ip in &n.ips {
                address("node address", ip)?;
            }
            for net in &n.pod_cidrs {
                if let Some(c) = local_cidrs.iter().find(|c| crate::cidr::overlaps(c, net)) {
                    return refuse(
                        RefusalCode::ForeignAddress,
                        format!(
                            "node pod CIDR {net} of cluster {cluster} overlaps this cluster's {c}"
                        ),
                    );
                }
            }
        }
        Record::Identity(i) => {
            identity("identity", i.id)?;
            if i.labels.get(CLUSTER_LABEL) != Some(cluster.as_str()) {
                return refuse(
                    RefusalCode::ClusterLabel,
                    format!(
                        "identity {} of cluster {cluster} has {CLUSTER_LABEL}={}",
                        i.id.get(),
                        i.labels.get(CLUSTER_LABEL).unwrap_or("(missing)")
                    ),
                );
            }
        }
        Record::Endpoint(e) => {
            identity("endpoint identity", e.identity)?;
            for ip in &e.ips {
                address("endpoint address", ip)?;
            }
        }
        Record::Service(s) => {
            for b in &s.backends {
                address("backend address", &b.ip)?;
            }
        }
    }
    Ok(())
}

/// The exporter's side of the boundary: a cluster exports only nodes whose
/// pod CIDRs lie inside the pod CIDRs it declares (`--pod-cidrs`), so that
/// whoever may create a Node in it cannot steer the mesh's routes. A
/// cluster that declares none exports no node pod CIDR.
pub fn check_own_node_cidrs(
    cluster: &ClusterName,
    declared: &[IpNet],
    node_cidrs: &[IpNet],
) -> Result<(), Refusal> {
    for net in node_cidrs {
        let inside = declared.iter().any(|c| contains_net(c, net));
        if !inside {
            return refuse(
                RefusalCode::OutsidePodCidrs,
                format!(
                    "pod CIDR {net} is not inside cluster {cluster}'s pod CIDRs {} (--pod-cidrs): the node is not exported; fix spec.podCIDRs or the cluster's declared pod CIDRs",
                    cidr_list(declared)
                ),
            );
        }
    }
    Ok(())
}

/// How much one remote may keep: records per kind, bytes in all, labels per
/// identity. Zero means no limit for that figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Nodes.
    pub nodes: usize,
    /// Identities.
    pub identities: usize,
    /// Endpoints.
    pub endpoints: usize,
    /// Services.
    pub services: usize,
    /// Encoded bytes of all its records together.
    pub bytes: usize,
    /// Labels on one identity.
    pub labels_per_identity: usize,
}

impl Default for Quotas {
    /// Room for a large cluster (5k nodes, 150k pods), well under the 1 GiB
    /// default quota of the store it shares with this cluster.
    fn default() -> Self {
        Quotas {
            nodes: 5_000,
            identities: 65_280,
            endpoints: 200_000,
            services: 20_000,
            bytes: 128 << 20,
            labels_per_identity: 64,
        }
    }
}

impl Quotas {
    /// The record limit of a kind (0: none).
    pub fn records(&self, kind: Kind) -> usize {
        match kind {
            Kind::Node => self.nodes,
            Kind::Identity => self.identities,
            Kind::Endpoint => self.endpoints,
            Kind::Service => self.services,
        }
    }

    /// Refuses an identity with too many labels.
    pub fn check_labels(&self, record: &Record) -> Result<(), Refusal> {
        if let Record::Identity(i) = record
            && self.labels_per_identity > 0
            && i.labels.len() > self.labels_per_identity
        {
            return refuse(
                RefusalCode::OverQuota,
                format!(
                    "identity {} has {} labels, over the quota of {} per identity",
                    i.id.get(),
                    i.labels.len(),
                    self.labels_per_identity
                ),
            );
        }
        Ok(())
    }

    /// Refuses a new record of `kind` when `held` are already kept.
    pub fn check_count(&self, kind: Kind, held: usize) -> Result<(), Refusal> {
        let max = self.records(kind);
        if max > 0 && held >= max {
            return refuse(
                RefusalCode::OverQuota,
                format!("{held} {kind} already kept, the quota per remote"),
            );
        }
        Ok(())
    }

    /// Refuses a record that would take the remote's bytes past the quota.
    pub fn check_bytes(&self, held: usize, adding: usize) -> Result<(), Refusal> {
        if self.bytes > 0 && held.saturating_add(adding) > self.bytes {
            return refuse(
                RefusalCode::OverQuota,
                format!(
                    "{adding} more bytes would exceed the quota of {} bytes per remote ({held} kept)",
                    self.bytes
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
