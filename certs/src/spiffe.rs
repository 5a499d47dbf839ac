//! SPIFFE ids: who a Meshwork certificate speaks for.
//!
//! A cluster's mesh-apiserver presents `spiffe://<trust-domain>/cluster/<name>`
//! to other clusters; a node-agent presents
//! `spiffe://<trust-domain>/cluster/<name>/node/<node>` to its own
//! mesh-apiserver. The kind matters for authorization: a node certificate is
//! never accepted where a cluster certificate is required, and vice versa.

use std::fmt;
use std::str::FromStr;

use mesh_api::{ClusterName, NodeName};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The trust domain every id of one mesh shares (default `meshwork.local`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The default trust domain.
    pub const DEFAULT: &'static str = "meshwork.local";

    /// Validates a trust domain: a lowercase DNS name.
    pub fn new(domain: impl Into<String>) -> Result<Self> {
        let domain = domain.into();
        if mesh_api::dns_subdomain_problem(&domain).is_some() {
            return Err(Error::InvalidTrustDomain { domain });
        }
        Ok(TrustDomain(domain))
    }

    /// The domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        TrustDomain(Self::DEFAULT.to_string())
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TrustDomain::new(s)
    }
}

impl From<TrustDomain> for String {
    fn from(t: TrustDomain) -> String {
        t.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an id names a cluster or a node-agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// A cluster's mesh-apiserver.
    Cluster,
    /// A node-agent.
    Node,
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerKind::Cluster => "cluster",
            PeerKind::Node => "node",
        })
    }
}

/// A Meshwork SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// The mesh's trust domain.
    pub trust_domain: TrustDomain,
    /// The cluster the id belongs to.
    pub cluster: ClusterName,
    /// The node, for a node-agent's id.
    pub node: Option<NodeName>,
}

impl SpiffeId {
    /// The id of a cluster's mesh-apiserver.
    pub fn cluster(trust_domain: TrustDomain, cluster: ClusterName) -> Self {
        SpiffeId {
            trust_domain,
            cluster,
            node: None,
        }
    }

    /// The id of a node-agent.
    pub fn node(trust_domain: TrustDomain, cluster: ClusterName, node: NodeName) -> Self {
        SpiffeId {
            trust_domain,
            cluster,
            node: Some(node),
        }
    }

    /// Cluster or node.
    pub fn kind(&self) -> PeerKind {
        if self.node.is_some() {
            PeerKind::Node
        } else {
            PeerKind::Cluster
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/cluster/{}", self.trust_domain, self.cluster)?;
        if let Some(node) = &self.node {
            write!(f, "/node/{node}")?;
        }
        Ok(())
    }
}

impl FromStr for SpiffeId {
    type Err = Error;
    fn from_str(id: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidSpiffeId {
            id: id.to_string(),
            reason,
        };
        let rest = id
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("it does not start with spiffe://"))?;
        let mut parts = rest.split('/');
        let domain = parts.next().unwrap_or_default();
        let trust_domain =
            TrustDomain::new(domain).map_err(|_| bad("the trust domain is not a DNS name"))?;
        if parts.next() != Some("cluster") {
            return Err(bad("the path does not start with /cluster/"));
        }
        let cluster = ClusterName::new(parts.next().unwrap_or_default())
            .map_err(|_| bad("the cluster name is not a DNS label of at most 32 characters"))?;
        let node = match parts.next() {
            None => None,
            Some("node") => Some(
                NodeName::new(parts.next().unwrap_or_default())
                    .map_err(|_| bad("the node name is not a DNS subdomain"))?,
            ),
            Some(_) => return Err(bad("unexpected path segment after the cluster name")),
        };
        if parts.next().is_some() {
            return Err(bad("unexpected path segments after the node name"));
        }
        Ok(SpiffeId {
            trust_domain,
            cluster,
            node,
        })
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests;
